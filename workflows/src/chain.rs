//! `chain3`: three steps in a row, each adding one. The benchmark's multi-step workload.

use tributary::workflow::{Error, StepContext, StepError, Workflow};

async fn add_one(_: StepContext, x: u64) -> Result<u64, StepError> {
    Ok(x + 1)
}

/// Builds the workflow: `a → b → c`, input a number, output the number plus three.
///
/// # Errors
/// Never in practice; the definition is validated like any other.
pub fn workflow() -> Result<Workflow, Error> {
    let mut wf = Workflow::builder::<u64>("chain3", 1);
    let input = wf.input();
    let a = wf.step("a", &input, add_one);
    let b = wf.step("b", &a, add_one);
    let c = wf.step("c", &b, add_one);
    wf.build(&c)
}

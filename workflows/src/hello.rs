//! `hello`: one step that returns "Hello World", the old stack's smoke test.

use tributary::workflow::{Error, ScheduleSpec, StepContext, StepError, Workflow};

async fn hello(_: StepContext, _: serde_json::Value) -> Result<String, StepError> {
    Ok("Hello World".to_owned())
}

/// Builds the workflow. Its input is ignored (any JSON). Scheduled hourly as a heartbeat
/// (`hello-heartbeat`): a run that does not succeed means the engine is not working.
///
/// # Errors
/// Never in practice; the definition is validated like any other.
pub fn workflow() -> Result<Workflow, Error> {
    let mut wf = Workflow::builder::<serde_json::Value>("hello", 1);
    let input = wf.input();
    let out = wf.step("hello", &input, hello);
    wf.schedule(ScheduleSpec::new("hello-heartbeat", "0 * * * *"), |tick| {
        serde_json::to_value(tick).unwrap_or_default()
    });
    wf.build(&out)
}

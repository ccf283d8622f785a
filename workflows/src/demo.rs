//! `demo`: static fan-out, a dynamic map and a fan-in, with knobs to make steps slow or flaky.
//! Used by the tests and the benchmark.
//!
//! ```text
//!            ┌─> sum ───────────────┐
//! numbers ───┤                      ├─> report
//!            └─> square[0..n] (map) ┘
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tributary::workflow::{
    Error, RetryPolicy, RunOutcome, StepContext, StepError, StepOptions, Workflow,
};

/// The run's input.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoInput {
    /// Numbers 1..=n are squared, one durable child step each.
    pub n: u64,
    /// Each `square` item sleeps this long (to test crashes mid-step).
    pub sleep_ms: u64,
    /// Each `square` item fails this many first attempts with a retryable error.
    pub fail_times: u32,
    /// `report` fails with a fatal error (to test failed runs and `retry`).
    pub fail_report: bool,
    /// `report` sleeps this long.
    pub report_sleep_ms: u64,
}

/// The run's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoReport {
    /// 1 + 2 + … + n.
    pub sum: u64,
    /// 1² + 2² + … + n².
    pub sum_of_squares: u64,
    /// How many items were squared.
    pub items: usize,
}

async fn numbers(_: StepContext, input: DemoInput) -> Result<Vec<(u64, DemoInput)>, StepError> {
    Ok((1..=input.n).map(|x| (x, input.clone())).collect())
}

async fn sum(_: StepContext, items: Vec<(u64, DemoInput)>) -> Result<u64, StepError> {
    Ok(items.iter().map(|(x, _)| x).sum())
}

async fn square(ctx: StepContext, (x, input): (u64, DemoInput)) -> Result<u64, StepError> {
    if input.sleep_ms > 0 {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(input.sleep_ms)) => {}
            _ = ctx.cancelled() => return Err(StepError::retryable("cancelled")),
        }
    }
    if ctx.attempt() <= input.fail_times {
        return Err(StepError::retryable(format!(
            "planned failure of attempt {}",
            ctx.attempt()
        )));
    }
    Ok(x * x)
}

async fn report(
    _: StepContext,
    ((squares, total), input): ((Vec<u64>, u64), DemoInput),
) -> Result<DemoReport, StepError> {
    if input.report_sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(input.report_sleep_ms)).await;
    }
    if input.fail_report {
        return Err(StepError::fatal("report refused: fail_report is set"));
    }
    Ok(DemoReport {
        sum: total,
        sum_of_squares: squares.iter().sum(),
        items: squares.len(),
    })
}

async fn on_failure(ctx: StepContext, outcome: RunOutcome) -> Result<(), StepError> {
    tracing::warn!(run = %ctx.run_id(), error = ?outcome.error, "demo run failed");
    Ok(())
}

/// Builds the workflow.
///
/// # Errors
/// Never in practice; the definition is validated like any other.
pub fn workflow() -> Result<Workflow, Error> {
    let mut wf = Workflow::builder::<DemoInput>("demo", 1);
    wf.defaults(
        StepOptions::default()
            .retry(RetryPolicy::attempts(4).initial_delay(Duration::from_millis(100))),
    );
    let input = wf.input();
    let items = wf.step("numbers", &input, numbers);
    let total = wf.step("sum", &items, sum);
    let squares = wf.map("square", &items, square);
    let both = wf.step(
        "join",
        (&squares, &total),
        |_: StepContext, pair: (Vec<u64>, u64)| async move { Ok(pair) },
    );
    let out = wf.step("report", (&both, &input), report);
    wf.on_failure(on_failure);
    wf.build(&out)
}

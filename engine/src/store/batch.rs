//! The set-based half of [`Store::complete_batch`](super::Store::complete_batch): once a batch
//! of checkpoints has updated its step rows, this readies the successors of every *plain*
//! member and finishes the runs they complete, in a constant number of statements whatever the
//! batch size (a read of the statuses and outputs it needs, then one statement inserting the
//! readied steps, finishing the runs and recording their events). The per-member path
//! (`advance` in `postgres.rs`) costs two to four round trips per member and stays for the
//! rest: map items (a map's join), steps followed by a map (its expansion) and hooks.
//!
//! It decides exactly what the per-member path decides, member by member in the batch's
//! order, on the statuses as they stand after the batch's own updates (and after the
//! per-member path ran for the other members): a successor is readied once, when all its
//! dependencies are `completed`; a run finishes when all its graph steps are.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sqlx::PgConnection;

use super::error::{Error, QueryExt};
use super::postgres::{Dispatch, RunStatus, finish_run};
use crate::ids::RunId;
use crate::workflow::{ON_SUCCESS, Source, Workflow};

/// A committed member taking the set-based path.
pub(super) struct Plain<'a> {
    /// Its position in the batch.
    pub(super) member: usize,
    pub(super) workflow: &'a Workflow,
    pub(super) run_id: RunId,
    /// The completed graph step.
    pub(super) step: usize,
}

/// Whether a completed graph step can take the set-based path: it is not a map (whose join
/// completes it), and none of its successors is a map step.
pub(super) fn is_plain(workflow: &Workflow, step: usize) -> bool {
    !workflow.step(step).is_map()
        && workflow
            .successors(step)
            .iter()
            .all(|&s| !workflow.step(s).is_map())
}

/// What the set-based path produced.
pub(super) struct Advanced {
    /// (member, step to publish); the caller adds the run's trace context.
    pub(super) dispatch: Vec<(usize, Dispatch)>,
    /// The runs that finished (succeeded).
    pub(super) finished: HashSet<uuid::Uuid>,
}

/// Readies the successors of `members` (in this order) and finishes the runs they complete.
/// The members' runs are locked and `running`.
pub(super) async fn advance(
    tx: &mut PgConnection,
    members: &[Plain<'_>],
) -> Result<Advanced, Error> {
    let mut out = Advanced {
        dispatch: Vec::new(),
        finished: HashSet::new(),
    };
    if members.is_empty() {
        return Ok(out);
    }
    // The statuses a decision needs: around a step with successors, its successors and their
    // dependencies; for a last step, all graph steps (does the run finish?) and the output of
    // the run's output step (its result, if it does).
    let mut keys: HashMap<(uuid::Uuid, &str), bool> = HashMap::new();
    for m in members {
        let run = m.run_id.0;
        if m.workflow.successors(m.step).is_empty() {
            for (_, s) in m.workflow.graph_steps() {
                keys.entry((run, s.name.as_str())).or_default();
            }
            if let Source::Step(i) = m.workflow.output {
                keys.insert((run, m.workflow.step(i).name.as_str()), true);
            }
        } else {
            for n in m.workflow.names_around(m.step) {
                keys.entry((run, n)).or_default();
            }
        }
    }
    let mut runs = Vec::with_capacity(keys.len());
    let mut names = Vec::with_capacity(keys.len());
    let mut want = Vec::with_capacity(keys.len());
    for ((run, name), output) in keys {
        runs.push(run);
        names.push(name);
        want.push(output);
    }
    let rows: Vec<(uuid::Uuid, String, String, Option<Value>)> = sqlx::query_as(
        "SELECT s.run_id, s.step, s.status, CASE WHEN k.want THEN s.output END
         FROM tributary_steps s
         JOIN unnest($1::uuid[], $2::text[], $3::bool[]) AS k(run_id, step, want)
           ON s.run_id = k.run_id AND s.step = k.step",
    )
    .bind(&runs)
    .bind(&names)
    .bind(&want)
    .fetch_all(&mut *tx)
    .await
    .op("read successor state")?;
    let mut status: HashMap<(uuid::Uuid, String), String> = HashMap::with_capacity(rows.len());
    let mut outputs: HashMap<(uuid::Uuid, String), Value> = HashMap::new();
    for (run, step, st, output) in rows {
        if let Some(output) = output {
            outputs.insert((run, step.clone()), output);
        }
        status.insert((run, step), st);
    }
    let completed = |status: &HashMap<(uuid::Uuid, String), String>, run, name: &str| {
        status
            .get(&(run, name.to_owned()))
            .is_some_and(|s| s == "completed")
    };

    let mut readied: (Vec<uuid::Uuid>, Vec<String>) = (Vec::new(), Vec::new());
    let mut finishing: Vec<Finishing> = Vec::new();
    for m in members {
        let run = m.run_id.0;
        if out.finished.contains(&run) {
            continue; // finished by an earlier member of the batch
        }
        let workflow = m.workflow;
        for &next in workflow.successors(m.step) {
            let def = workflow.step(next);
            if status.contains_key(&(run, def.name.clone())) {
                continue; // already readied by an earlier completion
            }
            let all_done = def.deps.iter().all(|d| match d {
                Source::Input => true,
                Source::Step(d) => completed(&status, run, &workflow.step(*d).name),
            });
            if !all_done {
                continue;
            }
            status.insert((run, def.name.clone()), "ready".into());
            readied.0.push(run);
            readied.1.push(def.name.clone());
            out.dispatch.push((
                m.member,
                Dispatch {
                    trace_context: None,
                    run_id: m.run_id,
                    workflow: workflow.name().to_owned(),
                    step: def.name.clone(),
                    attempt: 1,
                },
            ));
        }
        if workflow.successors(m.step).is_empty()
            && workflow
                .graph_steps()
                .all(|(_, s)| completed(&status, run, &s.name))
        {
            out.finished.insert(run);
            let output = match workflow.output {
                Source::Step(i) => outputs.remove(&(run, workflow.step(i).name.clone())),
                Source::Input => None,
            };
            finishing.push(Finishing {
                member: m.member,
                run,
                workflow,
                output,
            });
        }
    }
    let finished = finish(tx, finishing, &mut out).await?;
    if readied.0.is_empty() && finished.0.is_empty() {
        return Ok(out);
    }
    // One statement writes the rest: the readied steps, the finished runs and their events.
    sqlx::query(
        "WITH ready AS (
             INSERT INTO tributary_steps (run_id, step, status)
             SELECT r, s, 'ready' FROM unnest($1::uuid[], $2::text[]) AS t(r, s)
             ON CONFLICT DO NOTHING),
         finished AS (
             UPDATE tributary_runs r SET status = 'succeeded', output = f.output, error = NULL,
                    finished_at = now(), updated_at = now()
             FROM unnest($3::uuid[], $4::jsonb[]) AS f(run_id, output)
             WHERE r.run_id = f.run_id
             RETURNING r.run_id)
         INSERT INTO tributary_events (run_id, kind)
         SELECT run_id, 'run_succeeded' FROM finished ORDER BY run_id",
    )
    .bind(&readied.0)
    .bind(&readied.1)
    .bind(&finished.0)
    .bind(&finished.1)
    .execute(&mut *tx)
    .await
    .op("ready steps and finish runs")?;
    Ok(out)
}

/// A run whose graph steps all completed.
struct Finishing<'a> {
    member: usize,
    run: uuid::Uuid,
    workflow: &'a Workflow,
    /// Its output step's output (`None` when the output is the run's input).
    output: Option<Value>,
}

/// Settles the outputs of the finishing runs (a run whose output is its input reads it) and
/// finishes the runs with an `on_success` hook through `finish_run`, which readies the hook.
/// Returns the other runs with their outputs, for the caller's one update.
async fn finish(
    tx: &mut PgConnection,
    finishing: Vec<Finishing<'_>>,
    out: &mut Advanced,
) -> Result<(Vec<uuid::Uuid>, Vec<Value>), Error> {
    let mut plain: (Vec<uuid::Uuid>, Vec<Value>) = (Vec::new(), Vec::new());
    if finishing.is_empty() {
        return Ok(plain);
    }
    let from_input: Vec<uuid::Uuid> = finishing
        .iter()
        .filter(|f| matches!(f.workflow.output, Source::Input))
        .map(|f| f.run)
        .collect();
    let mut inputs: HashMap<uuid::Uuid, Value> = HashMap::new();
    if !from_input.is_empty() {
        let rows: Vec<(uuid::Uuid, Value)> =
            sqlx::query_as("SELECT run_id, input FROM tributary_runs WHERE run_id = ANY($1)")
                .bind(&from_input)
                .fetch_all(&mut *tx)
                .await
                .op("read run output")?;
        inputs.extend(rows);
    }
    for f in finishing {
        let output = f
            .output
            .or_else(|| inputs.remove(&f.run))
            .ok_or_else(|| Error::Corrupt {
                what: "run output",
                problem: format!("run {} finished, but its output step has no row", f.run),
            })?;
        if f.workflow.hook(ON_SUCCESS).is_some() {
            let mut dispatch = Vec::new();
            finish_run(
                tx,
                f.workflow,
                RunId(f.run),
                RunStatus::Succeeded,
                Some(output),
                None,
                &mut dispatch,
            )
            .await?;
            // The hook goes out with the member that finished the run.
            out.dispatch
                .extend(dispatch.into_iter().map(|d| (f.member, d)));
        } else {
            plain.0.push(f.run);
            plain.1.push(output);
        }
    }
    Ok(plain)
}

//! The set-based half of [`Store::complete_batch`](super::Store::complete_batch): once a batch
//! of checkpoints has updated its step rows, this readies the successors of every *plain*
//! member and finishes the runs they complete, in a constant number of statements whatever the
//! batch size (a status read, one insert of the readied steps, and for finishing runs an output
//! read, one run update and one event insert). The per-member path (`advance` in
//! `postgres.rs`) costs two to four round trips per member and stays for the rest: map items
//! (a map's join), steps followed by a map (its expansion) and hooks.
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
    // dependencies; for a last step, all graph steps (does the run finish?).
    let mut keys: HashSet<(uuid::Uuid, &str)> = HashSet::new();
    for m in members {
        if m.workflow.successors(m.step).is_empty() {
            keys.extend(
                m.workflow
                    .graph_steps()
                    .map(|(_, s)| (m.run_id.0, s.name.as_str())),
            );
        } else {
            keys.extend(
                m.workflow
                    .names_around(m.step)
                    .into_iter()
                    .map(|n| (m.run_id.0, n)),
            );
        }
    }
    let (runs, names): (Vec<uuid::Uuid>, Vec<&str>) = keys.into_iter().unzip();
    let rows: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        "SELECT s.run_id, s.step, s.status FROM tributary_steps s
         JOIN unnest($1::uuid[], $2::text[]) AS k(run_id, step)
           ON s.run_id = k.run_id AND s.step = k.step",
    )
    .bind(&runs)
    .bind(&names)
    .fetch_all(&mut *tx)
    .await
    .op("read successor state")?;
    let mut status: HashMap<(uuid::Uuid, String), String> = rows
        .into_iter()
        .map(|(run, step, st)| ((run, step), st))
        .collect();
    let completed = |status: &HashMap<(uuid::Uuid, String), String>, run, name: &str| {
        status
            .get(&(run, name.to_owned()))
            .is_some_and(|s| s == "completed")
    };

    let mut readied: (Vec<uuid::Uuid>, Vec<String>) = (Vec::new(), Vec::new());
    let mut finishing: Vec<(usize, uuid::Uuid, &Workflow)> = Vec::new();
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
            finishing.push((m.member, run, workflow));
        }
    }
    if !readied.0.is_empty() {
        sqlx::query(
            "INSERT INTO tributary_steps (run_id, step, status)
             SELECT r, s, 'ready' FROM unnest($1::uuid[], $2::text[]) AS t(r, s)
             ON CONFLICT DO NOTHING",
        )
        .bind(&readied.0)
        .bind(&readied.1)
        .execute(&mut *tx)
        .await
        .op("ready steps")?;
    }
    finish(tx, &finishing, &mut out).await?;
    Ok(out)
}

/// Finishes the runs whose graph steps all completed: their output read in one statement per
/// kind of source, then one update and one event insert for all runs without an `on_success`
/// hook; a run with the hook goes through `finish_run`, which readies the hook.
async fn finish(
    tx: &mut PgConnection,
    finishing: &[(usize, uuid::Uuid, &Workflow)],
    out: &mut Advanced,
) -> Result<(), Error> {
    if finishing.is_empty() {
        return Ok(());
    }
    let mut from_steps: (Vec<uuid::Uuid>, Vec<&str>) = (Vec::new(), Vec::new());
    let mut from_input: Vec<uuid::Uuid> = Vec::new();
    for (_, run, workflow) in finishing {
        match workflow.output {
            Source::Step(i) => {
                from_steps.0.push(*run);
                from_steps.1.push(&workflow.step(i).name);
            }
            Source::Input => from_input.push(*run),
        }
    }
    let mut outputs: HashMap<uuid::Uuid, Value> = HashMap::new();
    if !from_steps.0.is_empty() {
        let rows: Vec<(uuid::Uuid, Value)> = sqlx::query_as(
            "SELECT s.run_id, s.output FROM tributary_steps s
             JOIN unnest($1::uuid[], $2::text[]) AS k(run_id, step)
               ON s.run_id = k.run_id AND s.step = k.step",
        )
        .bind(&from_steps.0)
        .bind(&from_steps.1)
        .fetch_all(&mut *tx)
        .await
        .op("read run output")?;
        outputs.extend(rows);
    }
    if !from_input.is_empty() {
        let rows: Vec<(uuid::Uuid, Value)> =
            sqlx::query_as("SELECT run_id, input FROM tributary_runs WHERE run_id = ANY($1)")
                .bind(&from_input)
                .fetch_all(&mut *tx)
                .await
                .op("read run output")?;
        outputs.extend(rows);
    }
    let mut plain: (Vec<uuid::Uuid>, Vec<Value>) = (Vec::new(), Vec::new());
    for &(member, ref run, workflow) in finishing {
        let output = outputs.remove(run).ok_or_else(|| Error::Corrupt {
            what: "run output",
            problem: format!("run {run} finished, but its output step has no row"),
        })?;
        if workflow.hook(ON_SUCCESS).is_some() {
            let mut dispatch = Vec::new();
            finish_run(
                tx,
                workflow,
                RunId(*run),
                RunStatus::Succeeded,
                Some(output),
                None,
                &mut dispatch,
            )
            .await?;
            // The hook goes out with the member that finished the run.
            out.dispatch
                .extend(dispatch.into_iter().map(|d| (member, d)));
        } else {
            plain.0.push(*run);
            plain.1.push(output);
        }
    }
    if plain.0.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE tributary_runs r SET status = 'succeeded', output = f.output, error = NULL,
                finished_at = now(), updated_at = now()
         FROM unnest($1::uuid[], $2::jsonb[]) AS f(run_id, output)
         WHERE r.run_id = f.run_id",
    )
    .bind(&plain.0)
    .bind(&plain.1)
    .execute(&mut *tx)
    .await
    .op("finish runs")?;
    sqlx::query(
        "INSERT INTO tributary_events (run_id, kind)
         SELECT r, 'run_succeeded' FROM unnest($1::uuid[]) AS t(r)",
    )
    .bind(&plain.0)
    .execute(&mut *tx)
    .await
    .op("record finished runs")?;
    Ok(())
}

-- Runs, their step checkpoints, and the audit trail. PostgreSQL is the source of truth:
-- everything on the Redis streams can be rebuilt from these tables.

CREATE TABLE tributary_runs (
    run_id          uuid PRIMARY KEY,
    workflow        text        NOT NULL,
    version         integer     NOT NULL,
    status          text        NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    input           jsonb       NOT NULL,
    output          jsonb,
    error           text,
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

-- An idempotency key names at most one run per workflow.
CREATE UNIQUE INDEX tributary_runs_idempotency
    ON tributary_runs (workflow, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Retention deletes finished runs oldest first.
CREATE INDEX tributary_runs_finished ON tributary_runs (finished_at) WHERE finished_at IS NOT NULL;

-- One row per step of a run, created when the step becomes ready. Its status:
--   waiting    due-time state (retry back-off, or a start not yet handed to Redis): the
--              due-time poller puts it on the stream once due_at has passed;
--   ready      on the stream (or to be re-published from here after Redis lost it);
--   expanded   a map step whose items run as child rows (parent = this step);
--   completed  checkpointed: output is final and the step never runs again;
--   failed     out of attempts, or a fatal error;
--   cancelled  its run was cancelled.
CREATE TABLE tributary_steps (
    run_id        uuid        NOT NULL REFERENCES tributary_runs (run_id) ON DELETE CASCADE,
    step          text        NOT NULL,
    status        text        NOT NULL
                  CHECK (status IN ('waiting', 'ready', 'expanded', 'completed', 'failed', 'cancelled')),
    -- The current attempt, from 1: the fencing token of checkpoint commits.
    attempt       integer     NOT NULL DEFAULT 1,
    -- Attempts before this number do not count against the retry policy (set by a manual retry).
    attempt_base  integer     NOT NULL DEFAULT 0,
    -- For the items of a map step: the map step's name, the item's index and value.
    parent        text,
    item_index    integer,
    input         jsonb,
    output        jsonb,
    error         text,
    due_at        timestamptz,
    ready_at      timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    PRIMARY KEY (run_id, step)
);

CREATE INDEX tributary_steps_due ON tributary_steps (due_at) WHERE status = 'waiting';
CREATE INDEX tributary_steps_ready ON tributary_steps (run_id) WHERE status = 'ready';
CREATE INDEX tributary_steps_items ON tributary_steps (run_id, parent, item_index) WHERE parent IS NOT NULL;

CREATE TABLE tributary_events (
    id       bigserial   PRIMARY KEY,
    run_id   uuid        NOT NULL REFERENCES tributary_runs (run_id) ON DELETE CASCADE,
    step     text,
    attempt  integer,
    kind     text        NOT NULL,
    detail   text,
    at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX tributary_events_run ON tributary_events (run_id, id);

-- Cron schedules' state. Exactly one run per tick is guaranteed by the runs' idempotency key
-- (`schedule:<name>:<tick>`); this table remembers how far each schedule has fired, whether it
-- is paused, and its last run.
CREATE TABLE tributary_schedules (
    name        text        PRIMARY KEY,
    workflow    text        NOT NULL,
    paused      boolean     NOT NULL DEFAULT false,
    last_tick   timestamptz NOT NULL,
    last_run_id uuid,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

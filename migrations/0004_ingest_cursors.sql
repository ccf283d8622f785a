-- Where each ingestion source has got to. A source keeps one cursor per key (FRED: one per
-- series; ReliefWeb: one for the whole feed, key ''), advanced in the same transaction as the
-- rows it covers, so a crash never leaves rows without their cursor or a cursor ahead of its
-- rows. `value` is whatever the source needs (a date, a timestamp, a batch id) as JSON; the
-- ingestion code only ever moves it forward (GREATEST).
CREATE TABLE ingest_cursors (
    source      text        NOT NULL,
    key         text        NOT NULL DEFAULT '',
    value       jsonb       NOT NULL,
    last_run_id uuid,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, key)
);

-- `tributary sources` shows each source's last successful run.
CREATE INDEX tributary_runs_workflow_succeeded
    ON tributary_runs (workflow, finished_at DESC) WHERE status = 'succeeded';

-- The audit trail loses its foreign key to tributary_runs. Every event is written inside a
-- transaction that holds (or just inserted) its run's row, so the key checked nothing the
-- engine does not already guarantee, and it cost a trigger query per event row: about 10 µs
-- of PostgreSQL's time each, two events per step (docs/decisions.md, "Fewer statements, one
-- planning per batch"). Retention deletes a run's events together with the run
-- (Store::delete_finished) instead of through ON DELETE CASCADE.
ALTER TABLE tributary_events DROP CONSTRAINT tributary_events_run_id_fkey;

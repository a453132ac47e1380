-- Scheduled job runs (scheduler crate). A scheduled run is claimed by inserting
-- its (job, scheduled_for) row: the unique index lets one node of a cluster
-- sharing this database win each tick. Runs on demand have scheduled_for NULL.
CREATE TABLE job_runs (
    run_id        INTEGER PRIMARY KEY,
    job           TEXT    NOT NULL,
    scheduled_for INTEGER,
    instance      TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,  -- Unix milliseconds
    finished_at   INTEGER,           -- Unix milliseconds; NULL while running
    outcome       TEXT    NOT NULL,  -- running | ok | error | panicked
    summary       TEXT,
    error         TEXT
);
CREATE UNIQUE INDEX job_runs_tick ON job_runs (job, scheduled_for);
CREATE INDEX job_runs_recent ON job_runs (job, run_id);

-- When a payload was hidden, so prune can purge deleted payloads after a grace period.
ALTER TABLE payloads ADD COLUMN hidden_at INTEGER;
CREATE INDEX payloads_hidden ON payloads (hidden_at) WHERE hidden;

-- The admin API's audit log and the dashboard's samples (PROTOCOL.md 7).
CREATE TABLE audit_log (
    entry_id  INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,  -- Unix seconds
    action    TEXT    NOT NULL,  -- the verb: approve, block, ...
    target    TEXT    NOT NULL,  -- what it was done to: a node key, an author key, a payload id, a job name, ...
    from_addr TEXT    NOT NULL,  -- the client address of the request
    via       TEXT    NOT NULL,  -- api | dashboard
    detail    TEXT               -- what came of it, when there is more to say
);
CREATE INDEX audit_log_recent ON audit_log (entry_id DESC);

-- One row a minute: what the dashboard charts over the last 24 hours.
CREATE TABLE stats_samples (
    at             INTEGER PRIMARY KEY NOT NULL,  -- Unix seconds
    stored_total   INTEGER NOT NULL,  -- payloads ever stored here (highest rid)
    forwarded      INTEGER NOT NULL,  -- items delivered to peers since the previous sample
    outbox_pending INTEGER NOT NULL,
    outbox_dead    INTEGER NOT NULL
);

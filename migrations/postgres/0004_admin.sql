-- The admin API's audit log and the dashboard's samples (PROTOCOL.md 7).
CREATE TABLE audit_log (
    entry_id  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        BIGINT NOT NULL,  -- Unix seconds
    action    TEXT   NOT NULL,  -- the verb: approve, block, ...
    target    TEXT   NOT NULL,  -- what it was done to: a node key, an author key, a payload id, a job name, ...
    from_addr TEXT   NOT NULL,  -- the client address of the request
    via       TEXT   NOT NULL,  -- api | dashboard
    detail    TEXT              -- what came of it, when there is more to say
);

-- One row a minute: what the dashboard charts over the last 24 hours.
CREATE TABLE stats_samples (
    at             BIGINT PRIMARY KEY NOT NULL,  -- Unix seconds
    stored_total   BIGINT NOT NULL,  -- payloads ever stored here (highest rid)
    forwarded      BIGINT NOT NULL,  -- items delivered to peers since the previous sample
    outbox_pending BIGINT NOT NULL,
    outbox_dead    BIGINT NOT NULL
);

-- PROTOCOL.md 8.1: several processes, one node. On SQLite a node is one
-- process (a second one refuses to start), so only `instances` is written
-- here; the lease and nonce tables keep both schemas alike.

CREATE TABLE instances (
    instance      TEXT PRIMARY KEY NOT NULL,
    started_at    INTEGER NOT NULL,  -- Unix seconds
    last_seen     INTEGER NOT NULL,  -- Unix seconds
    connections   INTEGER NOT NULL DEFAULT 0,
    subscriptions INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE delivery_leases (
    peer       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL  -- Unix ms
);

CREATE TABLE request_nonces (
    nonce      TEXT PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL  -- Unix seconds
);
CREATE INDEX request_nonces_by_expiry ON request_nonces (expires_at);

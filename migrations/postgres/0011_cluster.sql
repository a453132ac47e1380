-- PROTOCOL.md 8.1: several processes, one node.

-- Each process's heartbeat, for the admin API and the dashboard.
CREATE TABLE instances (
    instance      TEXT COLLATE "C" PRIMARY KEY,
    started_at    BIGINT NOT NULL,  -- Unix seconds
    last_seen     BIGINT NOT NULL,  -- Unix seconds
    connections   BIGINT NOT NULL DEFAULT 0,
    subscriptions BIGINT NOT NULL DEFAULT 0
);

-- One process delivers to a peer at a time: the holder renews its lease
-- while its delivery loop runs; another takes it over once it has expired.
CREATE TABLE delivery_leases (
    peer       TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL  -- Unix ms
);

-- Nonces of signed requests accepted by any process (a replay at one is a
-- replay at all). Unlogged: after a crash the table starts empty, and a
-- restart takes longer than a signature stays valid.
CREATE UNLOGGED TABLE request_nonces (
    nonce      TEXT COLLATE "C" PRIMARY KEY,
    expires_at BIGINT NOT NULL  -- Unix seconds
);
CREATE INDEX request_nonces_by_expiry ON request_nonces (expires_at);

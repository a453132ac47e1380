-- Peers (PROTOCOL.md 5.2, 5.3) and the durable outbox (5.4).
CREATE TABLE peers (
    node              TEXT PRIMARY KEY NOT NULL, -- the key pinned on first contact
    url               TEXT NOT NULL UNIQUE,
    status            TEXT NOT NULL,             -- pending | active | blocked | unreachable | key_changed
    subscribe         TEXT,                      -- last known preference, JSON
    inbox             TEXT,
    added_at          INTEGER NOT NULL,
    last_poll         INTEGER,                   -- Unix seconds of the last poll attempt
    last_poll_ok      INTEGER,
    poll_failures     INTEGER NOT NULL DEFAULT 0,
    delivery_failures INTEGER NOT NULL DEFAULT 0,
    last_delivery     INTEGER
);

-- One row per (peer, payload) still to deliver, or given up on (dead).
CREATE TABLE outbox (
    item_id      INTEGER PRIMARY KEY,
    peer         TEXT    NOT NULL,
    payload_id   TEXT    NOT NULL,
    hops         INTEGER NOT NULL,
    enqueued_at  INTEGER NOT NULL,  -- Unix milliseconds
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,  -- Unix milliseconds
    last_error   TEXT,
    state        TEXT    NOT NULL DEFAULT 'pending'  -- pending | dead
);
CREATE UNIQUE INDEX outbox_peer_payload ON outbox (peer, payload_id);
CREATE INDEX outbox_due ON outbox (peer, state, next_attempt, item_id);

-- Peers (PROTOCOL.md 5.2, 5.3) and the durable outbox (5.4).
CREATE TABLE peers (
    node              TEXT COLLATE "C" PRIMARY KEY NOT NULL, -- the key pinned on first contact
    url               TEXT NOT NULL UNIQUE,
    status            TEXT NOT NULL,             -- pending | active | blocked | unreachable | key_changed
    subscribe         TEXT,                      -- last known preference, JSON
    inbox             TEXT,
    added_at          BIGINT  NOT NULL,
    last_poll         BIGINT,                   -- Unix seconds of the last poll attempt
    last_poll_ok      BIGINT,
    poll_failures     BIGINT  NOT NULL DEFAULT 0,
    delivery_failures BIGINT  NOT NULL DEFAULT 0,
    last_delivery     BIGINT
);

-- One row per (peer, payload) still to deliver, or given up on (dead).
CREATE TABLE outbox (
    item_id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    peer         TEXT    COLLATE "C" NOT NULL,
    payload_id   TEXT    COLLATE "C" NOT NULL,
    hops         BIGINT  NOT NULL,
    enqueued_at  BIGINT  NOT NULL,  -- Unix milliseconds
    attempts     BIGINT  NOT NULL DEFAULT 0,
    next_attempt BIGINT  NOT NULL,  -- Unix milliseconds
    last_error   TEXT,
    state        TEXT    NOT NULL DEFAULT 'pending'  -- pending | dead
);
CREATE UNIQUE INDEX outbox_peer_payload ON outbox (peer, payload_id);
CREATE INDEX outbox_due ON outbox (peer, state, next_attempt, item_id);

-- Peer and outbox states are a closed set (store/src/states.rs): the database
-- refuses any other spelling. SQLite cannot add a CHECK to a table, so both
-- tables are rebuilt with their rows and indexes.
CREATE TABLE peers_checked (
    node              TEXT PRIMARY KEY NOT NULL,
    url               TEXT NOT NULL UNIQUE,
    status            TEXT NOT NULL
                      CHECK (status IN ('pending', 'active', 'unreachable', 'blocked', 'key_changed')),
    subscribe         TEXT,
    inbox             TEXT,
    added_at          INTEGER NOT NULL,  -- Unix seconds
    last_poll         INTEGER,           -- Unix seconds of the last poll attempt
    last_poll_ok      INTEGER,
    poll_failures     INTEGER NOT NULL DEFAULT 0,
    delivery_failures INTEGER NOT NULL DEFAULT 0,
    last_delivery     INTEGER            -- Unix seconds
);
INSERT INTO peers_checked SELECT node, url, status, subscribe, inbox, added_at, last_poll,
    last_poll_ok, poll_failures, delivery_failures, last_delivery FROM peers;
DROP TABLE peers;
ALTER TABLE peers_checked RENAME TO peers;

CREATE TABLE outbox_checked (
    item_id      INTEGER PRIMARY KEY,
    peer         TEXT    NOT NULL,
    payload_id   TEXT    NOT NULL,
    hops         INTEGER NOT NULL,
    enqueued_at  INTEGER NOT NULL,  -- Unix milliseconds
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,  -- Unix milliseconds
    last_error   TEXT,
    state        TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead'))
);
INSERT INTO outbox_checked SELECT item_id, peer, payload_id, hops, enqueued_at, attempts,
    next_attempt, last_error, state FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_checked RENAME TO outbox;
CREATE UNIQUE INDEX outbox_peer_payload ON outbox (peer, payload_id);
CREATE INDEX outbox_due ON outbox (peer, state, next_attempt, item_id);

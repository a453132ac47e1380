-- Payloads, their tags, author deletes and blocked authors (PROTOCOL.md 2).
CREATE TABLE payloads (
    -- Insertion order. Tags point here, not at `id`: an index on a random
    -- hash dirties a random page per row, one on rid only its last page.
    rid         INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    author      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    json        TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    -- NULL for a local client, else the node key of the peer it came from.
    source      TEXT,
    -- Deleted by its author or removed by an operator: never shown again.
    hidden      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX payloads_by_time ON payloads (created_at DESC, id);
CREATE INDEX payloads_by_author ON payloads (author, seq, id);
CREATE INDEX payloads_by_channel ON payloads (channel, created_at);

-- One row per tag with a value; value is bytes because tag strings may hold NUL.
CREATE TABLE payload_tags (
    rid        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    value      BLOB NOT NULL
);
CREATE INDEX payload_tags_by_value ON payload_tags (name, value);
CREATE INDEX payload_tags_by_payload ON payload_tags (rid);

-- What each delete names, kept so a payload arriving after its delete is hidden too.
CREATE TABLE deletions (
    target    TEXT NOT NULL,
    author    TEXT NOT NULL,
    delete_id TEXT NOT NULL,
    PRIMARY KEY (target, author, delete_id)
);

CREATE TABLE blocked_authors (
    author     TEXT PRIMARY KEY NOT NULL,
    blocked_at INTEGER NOT NULL
);

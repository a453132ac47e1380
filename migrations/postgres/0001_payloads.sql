-- Payloads, their tags, author deletes and blocked authors (PROTOCOL.md 2).
-- Text columns use the "C" collation so channel prefix ranges compare bytes.
CREATE TABLE payloads (
    -- Insertion order. Tags point here, not at `id`: an index on a random
    -- hash dirties a random page per row, one on rid only its last page.
    rid         BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT    COLLATE "C" NOT NULL UNIQUE,
    author      TEXT    COLLATE "C" NOT NULL,
    seq         BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL,
    kind        TEXT    COLLATE "C" NOT NULL,
    channel     TEXT    COLLATE "C" NOT NULL,
    json        TEXT    NOT NULL,
    received_at BIGINT  NOT NULL,
    -- NULL for a local client, else the node key of the peer it came from.
    source      TEXT    COLLATE "C",
    -- Deleted by its author or removed by an operator: never shown again.
    hidden      BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX payloads_by_time ON payloads (created_at DESC, id);
CREATE INDEX payloads_by_author ON payloads (author, seq, id);
CREATE INDEX payloads_by_channel ON payloads (channel, created_at);

-- One row per tag with a value; value is bytes because tag strings may hold NUL.
CREATE TABLE payload_tags (
    rid        BIGINT NOT NULL,
    name       TEXT  COLLATE "C" NOT NULL,
    value      BYTEA NOT NULL
);
CREATE INDEX payload_tags_by_value ON payload_tags (name, value);
CREATE INDEX payload_tags_by_payload ON payload_tags (rid);

-- What each delete names, kept so a payload arriving after its delete is hidden too.
CREATE TABLE deletions (
    target    TEXT COLLATE "C" NOT NULL,
    author    TEXT COLLATE "C" NOT NULL,
    delete_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (target, author, delete_id)
);

CREATE TABLE blocked_authors (
    author     TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    blocked_at BIGINT NOT NULL
);

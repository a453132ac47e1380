-- PROTOCOL.md 2.3: the id of every hidden payload a node purges is kept, and
-- a payload with that id is refused as a duplicate while it is.
CREATE TABLE tombstones (
    id        TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    purged_at BIGINT NOT NULL  -- Unix seconds
);
CREATE INDEX tombstones_by_age ON tombstones (purged_at);

-- Sync sets hold visible payloads only: this index covers their scan
-- (time, id, and the author a block is checked against) without the table.
CREATE INDEX payloads_visible_by_time ON payloads (created_at, id, author) WHERE NOT hidden;

-- PROTOCOL.md 4.3: the blobs this node holds, and those an operator removed.
-- A blob's references are not kept here: they are the visible payloads whose
-- tags name it (`payload_tags` has an index on (name, value)), counted when
-- asked, so they cannot drift from what is shown.
CREATE TABLE blobs (
    sha256     TEXT PRIMARY KEY NOT NULL,
    size       INTEGER NOT NULL,
    type       TEXT NOT NULL,
    -- The client key that uploaded it; NULL for a blob mirrored from a peer
    -- (it counts toward no uploader's quota).
    uploader   TEXT,
    created_at INTEGER NOT NULL,  -- Unix seconds
    -- Set when an operator removed it: the bytes are gone, re-uploads and
    -- mirroring are refused.
    removed_at INTEGER
);
CREATE INDEX blobs_by_uploader ON blobs (uploader, sha256) WHERE removed_at IS NULL;
CREATE INDEX blobs_by_age ON blobs (created_at) WHERE removed_at IS NULL;

-- Blobs to fetch from the peer a payload naming them came from, retried with
-- backoff; queued in the writer's transaction with the payload.
CREATE TABLE blob_fetches (
    sha256     TEXT NOT NULL,
    peer       TEXT NOT NULL,     -- node key
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,  -- Unix ms
    created_at INTEGER NOT NULL,  -- Unix ms
    last_error TEXT,
    PRIMARY KEY (sha256, peer)
);
CREATE INDEX blob_fetches_due ON blob_fetches (next_at);

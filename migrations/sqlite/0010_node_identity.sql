-- PROTOCOL.md 8.1: the node key the database belongs to, recorded by the
-- first process that started on it; a process with another key refuses to start.
CREATE TABLE node_identity (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    node_key    TEXT NOT NULL,
    recorded_at INTEGER NOT NULL  -- Unix seconds
);

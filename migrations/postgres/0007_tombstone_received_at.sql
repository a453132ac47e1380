-- PROTOCOL.md 4.4: a duplicate's receipt carries the time this node first
-- stored the payload, also when only its tombstone is left. Tombstones made
-- before this column existed have no time (NULL): their duplicates get no receipt.
ALTER TABLE tombstones ADD COLUMN received_at BIGINT;

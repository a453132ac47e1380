-- PROTOCOL.md 9: the community a payload's channel belongs to (its root
-- g/<owner>/<name>; NULL outside g/), and whether the community's governance
-- holds it back (9.4). Unlike `hidden`, `held_back` is reversible: a later
-- recompute shows the payload again, and it is neither purged nor tombstoned.
-- Payloads stored before this migration have no community: they stay ungoverned.
ALTER TABLE payloads ADD COLUMN community TEXT COLLATE "C";
ALTER TABLE payloads ADD COLUMN held_back BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX payloads_by_community ON payloads (community, kind) WHERE community IS NOT NULL;

-- Sync sets hold shown payloads only.
DROP INDEX payloads_visible_by_time;
CREATE INDEX payloads_visible_by_time ON payloads (created_at, id, author) WHERE NOT hidden AND NOT held_back;

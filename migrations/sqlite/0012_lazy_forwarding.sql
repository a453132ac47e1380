-- PROTOCOL.md 5.6, the sending side of lazy forwarding: how this node
-- forwards to each peer (the whole payload, or an offer of its id), and
-- whether the peer's /v1/info says it answers offers at all.

ALTER TABLE peers ADD COLUMN forwarding TEXT NOT NULL DEFAULT 'eager'
    CHECK (forwarding IN ('eager', 'lazy'));
ALTER TABLE peers ADD COLUMN answers_offers INTEGER NOT NULL DEFAULT 0
    CHECK (answers_offers IN (0, 1));

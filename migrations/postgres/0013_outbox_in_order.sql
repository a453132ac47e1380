-- A peer's due items are read oldest first (queue order, which keeps a
-- community's authority ahead of the posts it authorizes): this index gives
-- that order for (peer, state) and holds next_attempt, so a batch reads only
-- its own rows. outbox_due (peer, state, next_attempt, item_id) stays for
-- "when is the next item due" and for making a peer's items due.
CREATE INDEX outbox_pending_in_order ON outbox (peer, state, item_id, next_attempt);

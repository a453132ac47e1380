-- Peer and outbox states are a closed set (store/src/states.rs): the database
-- refuses any other spelling.
ALTER TABLE peers ADD CONSTRAINT peers_status_check
    CHECK (status IN ('pending', 'active', 'unreachable', 'blocked', 'key_changed'));
ALTER TABLE outbox ADD CONSTRAINT outbox_state_check CHECK (state IN ('pending', 'dead'));

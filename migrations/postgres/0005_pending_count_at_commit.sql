-- The per-agent pending counter moves to commit time.
--
-- An AFTER ROW trigger updates `agent_pending` at the moment a request's status
-- changes, so a decision held its agent's counter row locked for the rest of its
-- transaction (audit entry, outbox row, notification). Every decision of one agent,
-- on every replica, then waited for the one before it to commit: one busy agent's
-- decisions ran one at a time, and the waiting transactions held pool connections.
-- A deferred constraint trigger runs the same function when the transaction commits,
-- so the row is locked only for the commit itself. The count stays exact: the
-- update is still in the same transaction. A submission still locks the row first
-- (`lock_pending`, to check the cap), which the change does not affect: its own +1
-- is applied at its commit, before the lock is released.
DROP TRIGGER agent_pending_count ON approvals;

CREATE CONSTRAINT TRIGGER agent_pending_count
    AFTER INSERT OR UPDATE OF status OR DELETE ON approvals
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION greenlight_agent_pending();

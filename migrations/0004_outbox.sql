-- The store drives the background work (no task per request):
-- * the deadline worker asks for the earliest pending `expires_at`: one index probe;
-- * Slack messages to post or rewrite are rows of an outbox, delivered per channel in
--   `seq` order and resumed after a crash. It replaces `message_stale`: a decided
--   request whose message still shows it pending simply has an 'update' row.

CREATE INDEX approvals_pending_expiry ON approvals (expires_at) WHERE status = 'pending';

CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- delivery order within a channel
    approval_id  TEXT NOT NULL,
    channel      TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('post', 'update', 'fyi')),
    attempts     INTEGER NOT NULL DEFAULT 0,         -- raised before each try
    not_before   TEXT,                               -- RFC 3339; a retry's earliest time
    created_at   TEXT NOT NULL
);

CREATE INDEX outbox_channel ON outbox (channel, seq);
CREATE INDEX outbox_approval ON outbox (approval_id, kind);

-- The last failure posting to each channel, so an unposted request's expiry names it.
CREATE TABLE channel_trouble (
    channel  TEXT PRIMARY KEY,
    code     TEXT NOT NULL,
    text     TEXT NOT NULL,
    at       TEXT NOT NULL
);

-- Work the previous design kept in memory or in `message_stale`, carried over.
INSERT INTO outbox (approval_id, channel, kind, created_at)
    SELECT id, channel, 'post', created_at FROM approvals
    WHERE status = 'pending' AND message_ts IS NULL ORDER BY created_at;
INSERT INTO outbox (approval_id, channel, kind, created_at)
    SELECT id, channel, 'update', COALESCE(decided_at, created_at) FROM approvals
    WHERE message_stale = 1 AND message_ts IS NOT NULL ORDER BY decided_at;

DROP INDEX approvals_message_stale;
ALTER TABLE approvals DROP COLUMN message_stale;

-- Pending requests per agent, kept by triggers in the same transaction as every
-- insert and decision: the per-agent cap is checked inside the insert's own
-- transaction in O(1), with no lock held across agents' submissions.
CREATE TABLE agent_pending (
    agent    TEXT PRIMARY KEY,
    pending  INTEGER NOT NULL
);
INSERT INTO agent_pending (agent, pending)
    SELECT agent, COUNT(*) FROM approvals WHERE status = 'pending' GROUP BY agent;

CREATE TRIGGER agent_pending_insert AFTER INSERT ON approvals WHEN NEW.status = 'pending'
BEGIN
    INSERT INTO agent_pending (agent, pending) VALUES (NEW.agent, 1)
        ON CONFLICT (agent) DO UPDATE SET pending = pending + 1;
END;

CREATE TRIGGER agent_pending_decided AFTER UPDATE OF status ON approvals
    WHEN OLD.status = 'pending' AND NEW.status != 'pending'
BEGIN
    UPDATE agent_pending SET pending = pending - 1 WHERE agent = NEW.agent;
END;

CREATE TRIGGER agent_pending_pruned AFTER DELETE ON approvals WHEN OLD.status = 'pending'
BEGIN
    UPDATE agent_pending SET pending = pending - 1 WHERE agent = OLD.agent;
END;

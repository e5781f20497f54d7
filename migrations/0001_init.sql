-- Approval requests: one row each, final once status leaves 'pending'.
CREATE TABLE approvals (
    id                  TEXT PRIMARY KEY,
    agent               TEXT NOT NULL,
    idempotency_key     TEXT,
    request_hash        TEXT NOT NULL,
    title               TEXT,
    language            TEXT,
    code                TEXT NOT NULL,
    context             TEXT,           -- JSON, as the agent sent it
    requester_slack_id  TEXT,
    required_approvals  INTEGER NOT NULL DEFAULT 1,
    channel             TEXT NOT NULL,
    message_ts          TEXT,           -- set once the Slack message exists
    status              TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
    reason              TEXT NOT NULL DEFAULT '',
    decided_by          TEXT,
    decided_at          TEXT,
    created_at          TEXT NOT NULL,  -- RFC 3339, UTC, milliseconds: sorts as text
    expires_at          TEXT NOT NULL,
    -- An Idempotency-Key is scoped to the agent that sent it. NULL keys never collide.
    UNIQUE (agent, idempotency_key)
);

CREATE INDEX approvals_status_created ON approvals (status, created_at);

-- Append-only audit trail. `seq` gives a total order for export.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    approval_id  TEXT NOT NULL,
    at           TEXT NOT NULL,
    kind         TEXT NOT NULL,
    actor        TEXT,
    detail       TEXT NOT NULL DEFAULT '{}'   -- JSON object
);

CREATE INDEX events_approval ON events (approval_id, seq);
CREATE INDEX events_at ON events (at);

-- The audit trail is append-only: the database itself refuses edits.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

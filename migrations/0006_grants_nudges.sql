-- Standing grants, reminders and escalation (issue 15).

-- A standing grant: "approve the same action from the same agent under the same rule
-- until `expires_at`". Checked at submit inside the insert's own transaction, so a
-- revocation (a write through the same writer) is seen by every request committed
-- after it.
CREATE TABLE grants (
    id                TEXT PRIMARY KEY,
    agent             TEXT NOT NULL,
    rule              TEXT NOT NULL,
    -- Hash of what the rule matched on when the grant was made (policy::grants): a
    -- policy change to the rule's conditions voids the grant.
    rule_fingerprint  TEXT NOT NULL,
    match_kind        TEXT NOT NULL CHECK (match_kind IN ('exact', 'command_prefix')),
    language          TEXT,           -- the request's language; NULL matches NULL only
    action_key        TEXT NOT NULL,  -- normalised code, or the command prefix
    granted_by        TEXT NOT NULL,  -- the reviewer id whose click made it
    approval_id       TEXT NOT NULL,  -- the request whose approval made it
    created_at        TEXT NOT NULL,  -- RFC 3339, UTC, milliseconds
    expires_at        TEXT NOT NULL,
    revoked_at        TEXT,
    revoked_by        TEXT
);

CREATE INDEX grants_lookup ON grants (agent, rule, action_key) WHERE revoked_at IS NULL;
CREATE INDEX grants_expiry ON grants (expires_at);

-- Which grant approved which request: the FYI's Revoke button finds its grant here.
CREATE TABLE grant_uses (
    approval_id  TEXT PRIMARY KEY,
    grant_id     TEXT NOT NULL
);

-- Reminders and escalation, driven by the store like deadlines: the nudge worker asks
-- for the earliest `next_nudge_at` of a pending request (one index probe) and sleeps
-- until then. Each nudge is a conditional update of these columns, so it fires once.
ALTER TABLE approvals ADD COLUMN next_nudge_at TEXT;
ALTER TABLE approvals ADD COLUMN reminders INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN escalated_at TEXT;
ALTER TABLE approvals ADD COLUMN escalation_channel TEXT;
ALTER TABLE approvals ADD COLUMN escalation_ts TEXT;

CREATE INDEX approvals_pending_nudge ON approvals (next_nudge_at)
    WHERE status = 'pending' AND next_nudge_at IS NOT NULL;

-- New outbox kinds: a reminder in the message's thread, the escalation post, and the
-- rewrite of the escalation message. SQLite cannot alter a CHECK constraint, so the
-- table is rebuilt with its rows (and their `seq`, which orders delivery).
CREATE TABLE outbox_new (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    approval_id  TEXT NOT NULL,
    channel      TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('post', 'update', 'fyi', 'remind', 'escalate', 'escalation_update')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    not_before   TEXT,
    created_at   TEXT NOT NULL
);
INSERT INTO outbox_new (seq, approval_id, channel, kind, attempts, not_before, created_at)
    SELECT seq, approval_id, channel, kind, attempts, not_before, created_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_channel ON outbox (channel, seq);
CREATE INDEX outbox_approval ON outbox (approval_id, kind);

-- Decision callbacks and batches (SQLite 0005), standing grants, reminders and
-- escalation (SQLite 0006), in one step. Types as in 0001: timestamps are RFC 3339
-- text in the "C" collation, JSON is text kept as written.

-- A request's callback_url, when it gave one (a batch item's goes to its batch).
CREATE TABLE callback_targets (
    approval_id  TEXT COLLATE "C" PRIMARY KEY,
    url          TEXT NOT NULL
);

-- Callbacks to deliver: written in the same transaction as the decision that causes
-- them, removed once delivered or given up on. The body is fixed at that moment, so
-- every retry sends the same bytes under the same `event_id` (webhook-id). A claim
-- moves `not_before` a lease ahead, so a replica that dies mid-send leaves the row due
-- again when the lease runs out, and no other replica sends it meanwhile.
CREATE TABLE callbacks (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    agent        TEXT NOT NULL,
    url          TEXT NOT NULL,
    body         TEXT NOT NULL,
    audit_id     TEXT COLLATE "C" NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    not_before   TEXT COLLATE "C" NOT NULL,
    created_at   TEXT COLLATE "C" NOT NULL
);

CREATE INDEX callbacks_due ON callbacks (not_before);

-- A batch: its items are ordinary requests, linked by batch_items.
CREATE TABLE batches (
    id               TEXT COLLATE "C" PRIMARY KEY,
    agent            TEXT NOT NULL,
    title            TEXT,
    callback_url     TEXT,
    idempotency_key  TEXT,
    request_hash     TEXT NOT NULL,
    created_at       TEXT COLLATE "C" NOT NULL,
    UNIQUE (agent, idempotency_key)
);

CREATE TABLE batch_items (
    approval_id  TEXT COLLATE "C" PRIMARY KEY,
    batch_id     TEXT COLLATE "C" NOT NULL,
    position     BIGINT NOT NULL
);

CREATE INDEX batch_items_batch ON batch_items (batch_id, position);

-- A standing grant (see SQLite 0006). Looked up inside the insert's transaction, which
-- locks the grant it uses (FOR SHARE); a revoke updates the row, so the two are ordered.
CREATE TABLE grants (
    id                TEXT COLLATE "C" PRIMARY KEY,
    agent             TEXT NOT NULL,
    rule              TEXT NOT NULL,
    rule_fingerprint  TEXT NOT NULL,
    match_kind        TEXT NOT NULL CHECK (match_kind IN ('exact', 'command_prefix')),
    language          TEXT,
    action_key        TEXT NOT NULL,
    granted_by        TEXT NOT NULL,
    approval_id       TEXT COLLATE "C" NOT NULL,
    created_at        TEXT COLLATE "C" NOT NULL,
    expires_at        TEXT COLLATE "C" NOT NULL,
    revoked_at        TEXT COLLATE "C",
    revoked_by        TEXT
);

CREATE INDEX grants_lookup ON grants (agent, rule, action_key) WHERE revoked_at IS NULL;
CREATE INDEX grants_expiry ON grants (expires_at);

-- Which grant approved which request: the FYI's Revoke button finds its grant here.
CREATE TABLE grant_uses (
    approval_id  TEXT COLLATE "C" PRIMARY KEY,
    grant_id     TEXT COLLATE "C" NOT NULL
);

CREATE INDEX grant_uses_grant ON grant_uses (grant_id);

-- Reminders and escalation: each nudge is a conditional update of these columns (it
-- takes the row lock), so it fires once across replicas.
ALTER TABLE approvals ADD COLUMN next_nudge_at TEXT COLLATE "C";
ALTER TABLE approvals ADD COLUMN reminders BIGINT NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN escalated_at TEXT COLLATE "C";
ALTER TABLE approvals ADD COLUMN escalation_channel TEXT;
ALTER TABLE approvals ADD COLUMN escalation_ts TEXT;

CREATE INDEX approvals_pending_nudge ON approvals (next_nudge_at)
    WHERE status = 'pending' AND next_nudge_at IS NOT NULL;

-- New outbox kinds: a reminder in the message's thread, the escalation post, and the
-- rewrite of the escalation message.
ALTER TABLE outbox DROP CONSTRAINT outbox_kind_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_kind_check
    CHECK (kind IN ('post', 'update', 'fyi', 'remind', 'escalate', 'escalation_update'));

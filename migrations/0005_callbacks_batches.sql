-- Decision callbacks (signed webhooks to the agent's application) and batches (several
-- actions submitted together, shown on one Slack card, answered together).

-- A request's callback_url, when it gave one (a batch item's goes to its batch).
CREATE TABLE callback_targets (
    approval_id  TEXT PRIMARY KEY,
    url          TEXT NOT NULL
);

-- Callbacks to deliver: written in the same transaction as the decision that causes
-- them, removed once delivered or given up on. The body is fixed at that moment, so
-- every retry sends the same bytes under the same `event_id` (webhook-id).
CREATE TABLE callbacks (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    agent        TEXT NOT NULL,                      -- whose secret signs it
    url          TEXT NOT NULL,
    body         TEXT NOT NULL,                      -- JSON, sent as is
    audit_id     TEXT NOT NULL,                      -- the request whose trail records attempts
    attempts     INTEGER NOT NULL DEFAULT 0,         -- raised before each try
    not_before   TEXT NOT NULL,                      -- RFC 3339; when it may be tried
    created_at   TEXT NOT NULL
);

CREATE INDEX callbacks_due ON callbacks (not_before);

-- A batch: its items are ordinary requests, linked by batch_items.
CREATE TABLE batches (
    id               TEXT PRIMARY KEY,
    agent            TEXT NOT NULL,
    title            TEXT,
    callback_url     TEXT,
    idempotency_key  TEXT,
    request_hash     TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    UNIQUE (agent, idempotency_key)
);

CREATE TABLE batch_items (
    approval_id  TEXT PRIMARY KEY,
    batch_id     TEXT NOT NULL,
    position     INTEGER NOT NULL
);

CREATE INDEX batch_items_batch ON batch_items (batch_id, position);

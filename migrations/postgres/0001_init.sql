-- greenlight on PostgreSQL: the schema SQLite reaches after migrations 0001-0004, in
-- one step. Timestamps are RFC 3339 text (UTC, milliseconds, `Z`), as on SQLite, in
-- the "C" collation: fixed-width text in byte order sorts exactly as the instants do,
-- and the API returns the stored text byte for byte on both backends. JSON (context,
-- event detail) is text too, kept as the service wrote it (jsonb would reorder keys).

CREATE TABLE approvals (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    agent               TEXT NOT NULL,
    idempotency_key     TEXT,
    request_hash        TEXT NOT NULL,
    title               TEXT,
    language            TEXT,
    code                TEXT NOT NULL,
    context             TEXT,
    requester_slack_id  TEXT,
    required_approvals  BIGINT NOT NULL DEFAULT 1,
    channel             TEXT NOT NULL,
    message_ts          TEXT,
    status              TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
    reason              TEXT NOT NULL DEFAULT '',
    decided_by          TEXT,
    decided_at          TEXT COLLATE "C",
    created_at          TEXT COLLATE "C" NOT NULL,
    expires_at          TEXT COLLATE "C" NOT NULL,
    UNIQUE (agent, idempotency_key)
);

CREATE INDEX approvals_status_created ON approvals (status, created_at);
CREATE INDEX approvals_pending_expiry ON approvals (expires_at) WHERE status = 'pending';

CREATE TABLE events (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    approval_id  TEXT COLLATE "C" NOT NULL,
    at           TEXT COLLATE "C" NOT NULL,
    kind         TEXT NOT NULL,
    actor        TEXT,
    detail       TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX events_approval ON events (approval_id, seq);
CREATE INDEX events_at ON events (at);

CREATE FUNCTION greenlight_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% are append-only', TG_ARGV[0];
END;
$$;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION greenlight_append_only('audit events');

CREATE TABLE votes (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    approval_id  TEXT COLLATE "C" NOT NULL REFERENCES approvals (id),
    user_id      TEXT NOT NULL,
    at           TEXT COLLATE "C" NOT NULL,
    UNIQUE (approval_id, user_id)
);

CREATE TRIGGER votes_no_update BEFORE UPDATE ON votes
    FOR EACH ROW EXECUTE FUNCTION greenlight_append_only('votes');

-- Slack messages to post or rewrite, delivered per channel in `seq` order.
CREATE TABLE outbox (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    approval_id  TEXT COLLATE "C" NOT NULL,
    channel      TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('post', 'update', 'fyi')),
    attempts     BIGINT NOT NULL DEFAULT 0,
    not_before   TEXT COLLATE "C",
    created_at   TEXT COLLATE "C" NOT NULL
);

CREATE INDEX outbox_channel ON outbox (channel, seq);
CREATE INDEX outbox_approval ON outbox (approval_id, kind);

-- Which replica delivers a channel's outbox rows, until when: one at a time, so a
-- channel's messages keep their order and none is sent twice. A replica that dies
-- holding a lease only delays the channel until `claimed_until`.
CREATE TABLE outbox_lanes (
    channel        TEXT PRIMARY KEY,
    owner          TEXT NOT NULL,
    claimed_until  TIMESTAMPTZ NOT NULL
);

CREATE TABLE channel_trouble (
    channel  TEXT PRIMARY KEY,
    code     TEXT NOT NULL,
    text     TEXT NOT NULL,
    at       TEXT COLLATE "C" NOT NULL
);

-- Pending requests per agent, kept by triggers in the transaction of every insert,
-- decision and prune; the insert locks the agent's row to check its cap.
CREATE TABLE agent_pending (
    agent    TEXT PRIMARY KEY,
    pending  BIGINT NOT NULL
);

CREATE FUNCTION greenlight_agent_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.status = 'pending' THEN
        INSERT INTO agent_pending (agent, pending) VALUES (NEW.agent, 1)
            ON CONFLICT (agent) DO UPDATE SET pending = agent_pending.pending + 1;
    ELSIF TG_OP = 'UPDATE' AND OLD.status = 'pending' AND NEW.status <> 'pending' THEN
        UPDATE agent_pending SET pending = pending - 1 WHERE agent = NEW.agent;
    ELSIF TG_OP = 'DELETE' AND OLD.status = 'pending' THEN
        UPDATE agent_pending SET pending = pending - 1 WHERE agent = OLD.agent;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER agent_pending_count AFTER INSERT OR UPDATE OF status OR DELETE ON approvals
    FOR EACH ROW EXECUTE FUNCTION greenlight_agent_pending();

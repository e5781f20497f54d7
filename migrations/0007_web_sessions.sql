-- Review-page sessions and one-time sign-in links (src/store/web_sessions.rs), in the
-- database so that every replica, and the next start, knows them.
--
-- Tokens are 256 random bits; only their SHA-256 (64 hex characters) is stored, so a
-- copy of the database cannot be replayed as a cookie or a link. The reviewer is held
-- by name and identity (`web:<name>` or their Slack user id) as configured when the
-- row was made: a replica whose configuration no longer has that reviewer, or has
-- them under another identity, treats the row as no session (fail closed).

CREATE TABLE web_sessions (
    token_hash   TEXT PRIMARY KEY,
    reviewer     TEXT NOT NULL,   -- the configured name
    reviewer_id  TEXT NOT NULL,   -- web:<name> or the Slack user id
    -- SHA-256 over the cookie and the reviewer's secret at sign-in: changing the secret
    -- ends the reviewer's sessions. Empty for the local reviewer (no configured secret).
    binding      TEXT NOT NULL,
    created_at   TEXT NOT NULL,   -- RFC 3339, UTC, milliseconds
    expires_at   TEXT NOT NULL
);

CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

-- A link is deleted when it is used: the DELETE that finds it is what makes it work
-- exactly once.
CREATE TABLE web_links (
    token_hash   TEXT PRIMARY KEY,
    reviewer     TEXT NOT NULL,
    reviewer_id  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);

CREATE INDEX web_links_expiry ON web_links (expires_at);

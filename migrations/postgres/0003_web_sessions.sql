-- Review-page sessions and one-time sign-in links (SQLite 0007; see there for the
-- columns). Shared by every replica: a reviewer signed in on one is signed in on all,
-- and a link printed by one works on any, once: the DELETE … RETURNING that uses it
-- takes the row lock, so of two replicas racing on one link exactly one finds it.

CREATE TABLE web_sessions (
    token_hash   TEXT COLLATE "C" PRIMARY KEY,
    reviewer     TEXT NOT NULL,
    reviewer_id  TEXT NOT NULL,
    binding      TEXT NOT NULL,
    created_at   TEXT COLLATE "C" NOT NULL,
    expires_at   TEXT COLLATE "C" NOT NULL
);

CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

CREATE TABLE web_links (
    token_hash   TEXT COLLATE "C" PRIMARY KEY,
    reviewer     TEXT NOT NULL,
    reviewer_id  TEXT NOT NULL,
    created_at   TEXT COLLATE "C" NOT NULL,
    expires_at   TEXT COLLATE "C" NOT NULL
);

CREATE INDEX web_links_expiry ON web_links (expires_at);

-- 1 while a final request's Slack message may still show the old (pending) state:
-- set by the deciding write, cleared once chat.update has shown the outcome (or the
-- message is gone for good). Start-up and a periodic sweep retry the stale ones, so a
-- crash between a decision and its message update never leaves live buttons behind.
ALTER TABLE approvals ADD COLUMN message_stale INTEGER NOT NULL DEFAULT 0;

CREATE INDEX approvals_message_stale ON approvals (message_stale) WHERE message_stale = 1;

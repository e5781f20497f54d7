-- Approval votes for the two-person rule: one row per distinct approver of a request.
-- A request is approved in the same transaction that inserts its N-th distinct vote
-- (N = approvals.required_approvals), so the count and the decision never disagree.
CREATE TABLE votes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- order of arrival
    approval_id  TEXT NOT NULL REFERENCES approvals (id),
    user_id      TEXT NOT NULL,
    at           TEXT NOT NULL,
    -- A second click by the same person is not a second approval.
    UNIQUE (approval_id, user_id)
);

-- Votes are evidence: like the audit trail, they are never edited.
CREATE TRIGGER votes_no_update BEFORE UPDATE ON votes
BEGIN
    SELECT RAISE(ABORT, 'votes are append-only');
END;

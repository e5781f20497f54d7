-- Per-agent token buckets (GREENLIGHT_RATE_LIMIT_PER_MINUTE), shared by every replica
-- on this database, so N replicas admit an agent's limit once, not N times. A take
-- or refund is one statement that refills the row from the database's clock
-- (`now()`), so the replicas' own clocks do not matter. A missing row is a full
-- bucket. (SQLite, one process, keeps its buckets in memory: no SQLite twin.)
CREATE TABLE rate_buckets (
    agent       TEXT PRIMARY KEY,
    tokens      DOUBLE PRECISION NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

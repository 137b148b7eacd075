-- Dashboard figures without scanning executions: finished runs counted per user and hour of
-- creation. Triggers on executions keep the table (migrations-sqlite/, migrations-postgres/:
-- trigger syntax is not portable), so every write that finishes a run, or un-finishes one,
-- updates it in the same statement.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

CREATE TABLE execution_hours (
    user_id      TEXT NOT NULL,
    hour         TEXT NOT NULL,
    success      BIGINT NOT NULL,
    failed       BIGINT NOT NULL,
    duration_sum DOUBLE PRECISION NOT NULL,
    duration_n   BIGINT NOT NULL,
    PRIMARY KEY (user_id, hour)
);

INSERT INTO execution_hours (user_id, hour, success, failed, duration_sum, duration_n)
SELECT user_id, substr(created_at, 1, 13),
       SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),
       COALESCE(SUM(duration_ms), 0),
       COUNT(duration_ms)
FROM executions WHERE status IN ('success', 'failed')
GROUP BY user_id, substr(created_at, 1, 13);

-- The list's trigger filter had no index (a filter matching nothing scanned every row of the
-- user); executions_status is covered by the queue and lease indexes, which start with status.
DROP INDEX executions_status;
CREATE INDEX executions_user_trigger ON executions(user_id, trigger, id);

-- Every index an insert touches is one more page in the commit (a WAL frame). The queue,
-- lease and unique-key indexes serve only the rows that are pending, running or carry a key,
-- so they hold only those: a synchronous run, stored once and finished, touches none of them.
-- (Both databases use a partial index when the query's WHERE implies its predicate;
-- `x = $1` implies `x IS NOT NULL`, and ON CONFLICT DO NOTHING covers partial unique indexes.)
DROP INDEX executions_queue;
CREATE INDEX executions_queue ON executions(id) WHERE status = 'pending';
DROP INDEX executions_lease;
CREATE INDEX executions_lease ON executions(lease_expires) WHERE status = 'running';
DROP INDEX executions_schedule_tick;
CREATE UNIQUE INDEX executions_schedule_tick ON executions(function_id, schedule_tick) WHERE schedule_tick IS NOT NULL;
DROP INDEX executions_idempotency;
CREATE UNIQUE INDEX executions_idempotency ON executions(function_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

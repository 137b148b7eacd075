-- Scale-out: leases on claimed runs, retry backoff, cron schedules and idempotency keys.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

ALTER TABLE functions ADD COLUMN schedule TEXT;
ALTER TABLE functions ADD COLUMN max_retries BIGINT NOT NULL DEFAULT 2;

ALTER TABLE executions ADD COLUMN max_attempts BIGINT NOT NULL DEFAULT 1;
ALTER TABLE executions ADD COLUMN lease_owner TEXT;
ALTER TABLE executions ADD COLUMN lease_expires TEXT;
ALTER TABLE executions ADD COLUMN not_before TEXT;
ALTER TABLE executions ADD COLUMN schedule_tick TEXT;
ALTER TABLE executions ADD COLUMN idempotency_key TEXT;

-- One execution per schedule tick and per idempotency key (NULLs never collide).
CREATE UNIQUE INDEX executions_schedule_tick ON executions(function_id, schedule_tick);
CREATE UNIQUE INDEX executions_idempotency ON executions(function_id, idempotency_key);
-- The queue: pending runs in order, and running runs by lease.
CREATE INDEX executions_queue ON executions(status, not_before, id);
CREATE INDEX executions_lease ON executions(status, lease_expires);
CREATE INDEX functions_scheduled ON functions(schedule);

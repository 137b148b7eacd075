-- The dispatcher's claim passes over the queued runs of functions at their concurrency limit
-- and of users at their share of the slots (issue 12, item 10). Those runs can lie at the head
-- of the queue, so the claim may step over many of them: the queue index now carries the
-- columns the claim tests (user, function, due time), and stepping over a run reads only the
-- index, never the row. Still one index over the pending rows only, as before.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

DROP INDEX executions_queue;
CREATE INDEX executions_queue ON executions(id, user_id, function_id, not_before) WHERE status = 'pending';

-- Keeps execution_hours (migrations/0003) in step with executions: a run counts once it is
-- success or failed, by the hour it was created in; an update moving a run into, out of or
-- between finished states adds the new figures and takes the old ones back.
-- Version 1003: the SQLite-only migrations share sqlx's table with the portable ones.

CREATE TRIGGER execution_hours_on_insert AFTER INSERT ON executions
WHEN NEW.status IN ('success', 'failed')
BEGIN
    INSERT INTO execution_hours (user_id, hour, success, failed, duration_sum, duration_n)
    VALUES (NEW.user_id, substr(NEW.created_at, 1, 13), NEW.status = 'success', NEW.status = 'failed',
            COALESCE(NEW.duration_ms, 0), NEW.duration_ms IS NOT NULL)
    ON CONFLICT (user_id, hour) DO UPDATE SET
        success = execution_hours.success + excluded.success,
        failed = execution_hours.failed + excluded.failed,
        duration_sum = execution_hours.duration_sum + excluded.duration_sum,
        duration_n = execution_hours.duration_n + excluded.duration_n;
END;

CREATE TRIGGER execution_hours_on_update AFTER UPDATE OF status, duration_ms ON executions
WHEN OLD.status IN ('success', 'failed') OR NEW.status IN ('success', 'failed')
BEGIN
    INSERT INTO execution_hours (user_id, hour, success, failed, duration_sum, duration_n)
    VALUES (NEW.user_id, substr(NEW.created_at, 1, 13),
            (NEW.status = 'success') - (OLD.status = 'success'),
            (NEW.status = 'failed') - (OLD.status = 'failed'),
            (CASE WHEN NEW.status IN ('success', 'failed') THEN COALESCE(NEW.duration_ms, 0) ELSE 0 END)
              - (CASE WHEN OLD.status IN ('success', 'failed') THEN COALESCE(OLD.duration_ms, 0) ELSE 0 END),
            (NEW.status IN ('success', 'failed') AND NEW.duration_ms IS NOT NULL)
              - (OLD.status IN ('success', 'failed') AND OLD.duration_ms IS NOT NULL))
    ON CONFLICT (user_id, hour) DO UPDATE SET
        success = execution_hours.success + excluded.success,
        failed = execution_hours.failed + excluded.failed,
        duration_sum = execution_hours.duration_sum + excluded.duration_sum,
        duration_n = execution_hours.duration_n + excluded.duration_n;
END;

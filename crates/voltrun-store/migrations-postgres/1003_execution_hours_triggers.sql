-- Keeps execution_hours (migrations/0003) in step with executions: a run counts once it is
-- success or failed, by the hour it was created in; an update moving a run into, out of or
-- between finished states adds the new figures and takes the old ones back.
-- Version 1003: the PostgreSQL-only migrations share sqlx's table with the portable ones.

CREATE FUNCTION execution_hours_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ok BIGINT := 0;
    bad BIGINT := 0;
    dsum DOUBLE PRECISION := 0;
    dn BIGINT := 0;
BEGIN
    IF NEW.status IN ('success', 'failed') THEN
        ok := ok + (NEW.status = 'success')::int;
        bad := bad + (NEW.status = 'failed')::int;
        IF NEW.duration_ms IS NOT NULL THEN
            dsum := dsum + NEW.duration_ms;
            dn := dn + 1;
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.status IN ('success', 'failed') THEN
        ok := ok - (OLD.status = 'success')::int;
        bad := bad - (OLD.status = 'failed')::int;
        IF OLD.duration_ms IS NOT NULL THEN
            dsum := dsum - OLD.duration_ms;
            dn := dn - 1;
        END IF;
    END IF;
    IF ok <> 0 OR bad <> 0 OR dn <> 0 OR dsum <> 0 THEN
        INSERT INTO execution_hours (user_id, hour, success, failed, duration_sum, duration_n)
        VALUES (NEW.user_id, substr(NEW.created_at, 1, 13), ok, bad, dsum, dn)
        ON CONFLICT (user_id, hour) DO UPDATE SET
            success = execution_hours.success + excluded.success,
            failed = execution_hours.failed + excluded.failed,
            duration_sum = execution_hours.duration_sum + excluded.duration_sum,
            duration_n = execution_hours.duration_n + excluded.duration_n;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER execution_hours_on_write AFTER INSERT OR UPDATE OF status, duration_ms ON executions
FOR EACH ROW EXECUTE FUNCTION execution_hours_apply();

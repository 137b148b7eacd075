//! Functions: the records, their lists (never with code), the scheduler's view, and the
//! per-user quotas on how many a user has and how much code they hold.

use voltrun_core::{Function, FunctionSummary, PackageInfo, Quotas, Runtime};

use crate::{conflict_or, get_i64, get_opt_str, get_str, Dialect, Result, Store, StoreError};

const FIELDS: &[&str] = &["route", "name"];
/// Cached lookups at most (then the cache starts over).
const FUNCTION_CACHE_MAX: usize = 10_000;

pub(crate) fn function_from(row: &sqlx::any::AnyRow) -> Result<Function> {
    let runtime = get_str(row, "runtime")?;
    let env = get_str(row, "env")?;
    Ok(Function {
        id: get_str(row, "id")?,
        user_id: get_str(row, "user_id")?,
        name: get_str(row, "name")?,
        description: get_str(row, "description")?,
        runtime: Runtime::parse(&runtime).ok_or_else(|| StoreError::Corrupt(format!("runtime {runtime}")))?,
        code: get_str(row, "code")?,
        handler: get_str(row, "handler")?,
        memory: get_i64(row, "memory")? as u32,
        timeout: get_i64(row, "timeout")? as u32,
        env: serde_json::from_str(&env).map_err(|e| StoreError::Corrupt(format!("env: {e}")))?,
        route: get_opt_str(row, "route")?,
        public: get_i64(row, "public")? != 0,
        schedule: get_opt_str(row, "schedule")?,
        schedule_qualifier: get_opt_str(row, "schedule_qualifier")?,
        max_retries: get_i64(row, "max_retries")? as u32,
        egress: egress_from(row)?,
        package: package_from(row)?,
        package_zip: None,
        package_root: None,
        layers: layers_from(row)?,
        secrets: secrets_from(row)?,
        version: get_i64(row, "version")?,
        created_at: get_str(row, "created_at")?,
        updated_at: get_str(row, "updated_at")?,
        states: crate::builds::states_from(row)?,
    })
}

/// The `package` column: [`PackageInfo`] as JSON, NULL for code functions (migrations/0008).
fn package_from(row: &sqlx::any::AnyRow) -> Result<Option<PackageInfo>> {
    get_opt_str(row, "package")?.map(|p| serde_json::from_str(&p).map_err(|e| StoreError::Corrupt(format!("package: {e}")))).transpose()
}

fn package_json(f: &Function) -> Option<String> {
    f.package.as_ref().map(|p| serde_json::to_string(p).expect("package info serialises"))
}

/// Every column of a function but its code: what lists read.
const SUMMARY_COLUMNS: &str =
    "id, user_id, name, description, runtime, code_bytes, handler, memory, timeout, env, route, public, schedule, schedule_qualifier, max_retries, egress, package, layers, secrets, version, created_at, updated_at, state, state_reason, last_update_status, last_update_status_reason";

fn summary_from(row: &sqlx::any::AnyRow) -> Result<FunctionSummary> {
    let runtime = get_str(row, "runtime")?;
    let env = get_str(row, "env")?;
    Ok(FunctionSummary {
        id: get_str(row, "id")?,
        user_id: get_str(row, "user_id")?,
        name: get_str(row, "name")?,
        description: get_str(row, "description")?,
        runtime: Runtime::parse(&runtime).ok_or_else(|| StoreError::Corrupt(format!("runtime {runtime}")))?,
        code_bytes: get_i64(row, "code_bytes")?.max(0) as u64,
        handler: get_str(row, "handler")?,
        memory: get_i64(row, "memory")? as u32,
        timeout: get_i64(row, "timeout")? as u32,
        env: serde_json::from_str(&env).map_err(|e| StoreError::Corrupt(format!("env: {e}")))?,
        route: get_opt_str(row, "route")?,
        public: get_i64(row, "public")? != 0,
        schedule: get_opt_str(row, "schedule")?,
        schedule_qualifier: get_opt_str(row, "schedule_qualifier")?,
        max_retries: get_i64(row, "max_retries")? as u32,
        egress: egress_from(row)?,
        package: package_from(row)?,
        layers: layers_from(row)?,
        secrets: secrets_from(row)?,
        version: get_i64(row, "version")?,
        created_at: get_str(row, "created_at")?,
        updated_at: get_str(row, "updated_at")?,
        states: crate::builds::states_from(row)?,
    })
}

/// The scheduler's list, and the fingerprint it checks before reading the list again: both
/// answered from the `functions_scheduled` index (migrations/0005).
/// Only active functions fire (a function whose first build is pending or failed has nothing
/// to run; migrations/0010).
pub(crate) const SCHEDULED: &str =
    "SELECT id, user_id, name, version, schedule, schedule_qualifier, max_retries, updated_at FROM functions WHERE schedule IS NOT NULL AND state = 'active'";
pub(crate) const SCHEDULES_FINGERPRINT: &str =
    "SELECT COUNT(*) AS n, MAX(updated_at) AS latest, CAST(COALESCE(SUM(version), 0) AS BIGINT) AS versions FROM functions WHERE schedule IS NOT NULL AND state = 'active'";

/// What the scheduler needs of a scheduled function (no code, no environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledFunction {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub version: i64,
    /// The cron expression.
    pub schedule: String,
    /// What it runs: an alias or a version; None: the latest (SPEC §13).
    pub schedule_qualifier: Option<String>,
    pub max_retries: u32,
    pub updated_at: String,
}

/// Changes whenever a scheduled function is added, changed or removed (the scheduler reloads
/// its list only then): how many there are, the latest change, and the sum of their
/// versions (every update adds one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulesFingerprint(i64, Option<String>, i64);

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn env_json(f: &Function) -> String {
    serde_json::to_string(&f.env).expect("a string map serialises")
}

/// The `egress` column: a JSON list of canonical entries (migrations/0007).
fn egress_json(f: &Function) -> String {
    serde_json::to_string(&f.egress).expect("a string list serialises")
}

/// The `layers` column: a JSON list of `name:version` (migrations/0011).
fn layers_json(f: &Function) -> String {
    serde_json::to_string(&f.layers).expect("a string list serialises")
}

fn layers_from(row: &sqlx::any::AnyRow) -> Result<Vec<String>> {
    let layers = get_str(row, "layers")?;
    serde_json::from_str(&layers).map_err(|e| StoreError::Corrupt(format!("layers: {e}")))
}

/// The `secrets` column: a JSON list of secret names (migrations/0012).
fn secrets_json(f: &Function) -> String {
    serde_json::to_string(&f.secrets).expect("a string list serialises")
}

fn secrets_from(row: &sqlx::any::AnyRow) -> Result<Vec<String>> {
    let names = get_str(row, "secrets")?;
    serde_json::from_str(&names).map_err(|e| StoreError::Corrupt(format!("secrets: {e}")))
}

fn egress_from(row: &sqlx::any::AnyRow) -> Result<Vec<String>> {
    let egress = get_str(row, "egress")?;
    serde_json::from_str(&egress).map_err(|e| StoreError::Corrupt(format!("egress: {e}")))
}

/// Binds $1–$14 of both function writes: id, user_id, the fields, version, updated_at.
fn bind_fields<'q>(q: AnyQuery<'q>, f: &'q Function, env: &'q str) -> AnyQuery<'q> {
    q.bind(&f.id)
        .bind(&f.user_id)
        .bind(&f.name)
        .bind(&f.description)
        .bind(f.runtime.id())
        .bind(&f.code)
        .bind(&f.handler)
        .bind(f.memory as i64)
        .bind(f.timeout as i64)
        .bind(env)
        .bind(&f.route)
        .bind(f.public as i64)
        .bind(f.version)
        .bind(&f.updated_at)
}

/// SQL that is true when another user (placeholder `user`) holds a route strictly above or
/// below `route` (route squatting: Bob's `shop/webhooks/stripe` under Alice's `shop/webhooks`
/// would take her requests). The same route exactly is the UNIQUE constraint's, and one user
/// may nest their own routes. `substr`/`length` rather than LIKE: `_` is a route character
/// and a LIKE wildcard.
fn route_overlap(user: &str, route: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM functions o WHERE o.user_id <> {user} AND o.route IS NOT NULL AND {route} IS NOT NULL
         AND (substr({route}, 1, length(o.route) + 1) = o.route || '/' OR substr(o.route, 1, length({route}) + 1) = {route} || '/'))
         OR EXISTS (SELECT 1 FROM aliases o WHERE o.user_id <> {user} AND o.route IS NOT NULL AND {route} IS NOT NULL
         AND (substr({route}, 1, length(o.route) + 1) = o.route || '/' OR substr(o.route, 1, length({route}) + 1) = {route} || '/'))"
    )
}

/// The bytes of the user `$2`'s (or `$1`'s) layers, which count against the code quota with
/// their functions' code (migrations/0011).
pub(crate) const LAYER_BYTES_OF_2: &str = "(SELECT COALESCE(SUM(size), 0) FROM layers WHERE user_id = $2)";
pub(crate) const LAYER_BYTES_OF_1: &str = "(SELECT COALESCE(SUM(size), 0) FROM layers WHERE user_id = $1)";

/// The bytes of the user `$2`'s (or `$1`'s) kept versions that are not their function's
/// latest, each content once (many versions of unchanged code count one copy, and content
/// the latest version also has counts nothing): old versions count against the code quota
/// until deleted or pruned, as Lambda's code storage counts every version.
macro_rules! kept_bytes_of {
    ($p:literal) => {
        concat!(
            "(SELECT COALESCE(SUM(b), 0) FROM (SELECT DISTINCT v.function_id, v.code_sha256, v.package_sha256, v.code_bytes AS b
              FROM function_versions v JOIN functions f ON f.id = v.function_id
              WHERE v.user_id = ",
            $p,
            " AND v.version <> f.version
              AND NOT EXISTS (SELECT 1 FROM function_versions l WHERE l.function_id = v.function_id AND l.version = f.version
                AND l.code_sha256 = v.code_sha256 AND COALESCE(l.package_sha256, '') = COALESCE(v.package_sha256, ''))) kept)"
        )
    };
}
pub(crate) const KEPT_BYTES_OF_2: &str = kept_bytes_of!("$2");
pub(crate) const KEPT_BYTES_OF_1: &str = kept_bytes_of!("$1");

/// The key of the PostgreSQL advisory lock that serialises route writes across nodes.
pub(crate) const ROUTE_LOCK: i64 = 0x766f_6c74_7275_6e01;

impl Store {
    /// Adds a function within the user's quotas: `Conflict("name")` or `Conflict("route")`
    /// when taken, `RouteOverlap` when its route lies under or over another user's,
    /// [`StoreError::Quota`] when the user has `quotas.functions` functions already or the code
    /// would take them past `quotas.code_bytes`. The checks and the insert are one statement,
    /// under a lock on the user's row (and, with a route, the route lock) on PostgreSQL
    /// (SQLite has one writer), so concurrent creates cannot pass a check together.
    pub async fn insert_function(&self, f: &Function, quotas: &Quotas) -> Result<()> {
        let mut tx = self.user_write(&f.user_id).await?;
        self.insert_function_in(&mut tx, f, quotas).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Store::insert_function`] inside the caller's transaction (from [`Store::user_write`]),
    /// which the caller commits; builds.rs adds the function's first build to it.
    pub(crate) async fn insert_function_in(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, f: &Function, quotas: &Quotas) -> Result<()> {
        let sql = format!(
            "INSERT INTO functions (id, user_id, name, description, runtime, code, handler, memory, timeout, env, route, public, version,
             updated_at, created_at, schedule, max_retries, code_bytes, egress, package_sha256, package, layers, secrets, schedule_qualifier)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $21, $22, $23, $24, $25, $26
             WHERE (SELECT COUNT(*) FROM functions WHERE user_id = $2) < $19
             AND (SELECT COALESCE(SUM(code_bytes), 0) FROM functions WHERE user_id = $2) + {LAYER_BYTES_OF_2} + {KEPT_BYTES_OF_2} + $18 <= $20
             AND NOT ({})
             AND NOT EXISTS (SELECT 1 FROM aliases WHERE route = $11)",
            route_overlap("$2", "$11")
        );
        let env = env_json(f);
        let egress = egress_json(f);
        let package = package_json(f);
        let layers = layers_json(f);
        self.lock_routes(tx, f).await?;
        self.put_package_in(tx, f).await?;
        let r = bind_fields(sqlx::query(&sql), f, &env)
            .bind(&f.created_at)
            .bind(&f.schedule)
            .bind(f.max_retries as i64)
            .bind(f.code_bytes() as i64)
            .bind(Quotas::bound(quotas.functions))
            .bind(Quotas::bound(quotas.code_bytes))
            .bind(&egress)
            .bind(f.package.as_ref().map(|p| p.sha256.as_str()))
            .bind(&package)
            .bind(&layers)
            .bind(secrets_json(f))
            .bind(&f.schedule_qualifier)
            .execute(&mut **tx)
            .await
            .map_err(|e| conflict_or(e, FIELDS))?;
        if r.rows_affected() == 0 {
            if let Some(route) = &f.route {
                if self.route_overlaps_in(tx, &f.user_id, route).await? {
                    return Err(StoreError::RouteOverlap);
                }
                // A route is unique across functions and aliases (SPEC §13).
                if sqlx::query("SELECT 1 FROM aliases WHERE route = $1").bind(route).fetch_optional(&mut **tx).await?.is_some() {
                    return Err(StoreError::Conflict("route"));
                }
            }
            let (n, bytes) = self.function_usage(tx, &f.user_id).await?;
            if quotas.functions > 0 && n >= quotas.functions as i64 {
                return Err(StoreError::Quota(format!("this account has {n} functions, the most its quota allows ({}); delete one to create another", quotas.functions)));
            }
            return Err(code_quota(bytes, f.code_bytes(), quotas.code_bytes));
        }
        if f.states != voltrun_core::FunctionStates::default() {
            crate::builds::write_states_in(tx, &f.id, &f.states).await?;
        }
        self.snapshot_in(tx, f).await?;
        self.forget_functions();
        Ok(())
    }

    /// On PostgreSQL, a write that sets a route takes a transaction-scoped advisory lock
    /// first, so two nodes' writes cannot both pass the overlap check under READ COMMITTED.
    /// On SQLite one statement is atomic (it holds the write lock from its start).
    pub(crate) async fn lock_routes(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, f: &Function) -> Result<()> {
        if self.dialect == Dialect::Postgres && f.route.is_some() {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(ROUTE_LOCK).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Replaces a function's fields if its stored version is still `expected_version`
    /// (optimistic concurrency); false when another update won the race, `RouteOverlap` when
    /// the new route lies under or over another user's, [`StoreError::Quota`] when new code
    /// would take the user past `quotas.code_bytes`, counting their kept old versions but not
    /// the version this update replaces (it counts from the next update on, until deleted), so
    /// an account at its quota can still shrink a function. An update that leaves the code and
    /// package as they are (configuration only) is never refused.
    pub async fn update_function(&self, f: &Function, expected_version: i64, quotas: &Quotas) -> Result<bool> {
        let mut tx = self.user_write(&f.user_id).await?;
        if !self.update_function_in(&mut tx, f, expected_version, quotas).await? {
            return Ok(false);
        }
        tx.commit().await?;
        self.forget_functions();
        Ok(true)
    }

    /// [`Store::update_function`] inside the caller's transaction, which the caller commits
    /// (and then calls `forget_functions`). Writes the definition, never the states.
    pub(crate) async fn update_function_in(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, f: &Function, expected_version: i64, quotas: &Quotas) -> Result<bool> {
        let sql = format!(
            "UPDATE functions SET name = $3, description = $4, runtime = $5, code = $6, handler = $7, memory = $8, timeout = $9,
             env = $10, route = $11, public = $12, version = $13, updated_at = $14, schedule = $16, max_retries = $17, code_bytes = $18,
             egress = $20, package_sha256 = $21, package = $22, layers = $23, secrets = $24, schedule_qualifier = $25
             WHERE id = $1 AND user_id = $2 AND version = $15
             AND ((code = $6 AND COALESCE(package_sha256, '') = COALESCE($21, ''))
                  OR (SELECT COALESCE(SUM(code_bytes), 0) FROM functions WHERE user_id = $2 AND id <> $1) + {LAYER_BYTES_OF_2} + {KEPT_BYTES_OF_2} + $18 <= $19)
             AND NOT ({})
             AND NOT EXISTS (SELECT 1 FROM aliases WHERE route = $11)",
            route_overlap("$2", "$11")
        );
        let env = env_json(f);
        let egress = egress_json(f);
        let package = package_json(f);
        let layers = layers_json(f);
        self.lock_routes(tx, f).await?;
        self.put_package_in(tx, f).await?;
        let before = sqlx::query("SELECT package_sha256 FROM functions WHERE id = $1 AND user_id = $2").bind(&f.id).bind(&f.user_id).fetch_optional(&mut **tx).await?;
        let old_package = before.map(|r| get_opt_str(&r, "package_sha256")).transpose()?.flatten();
        let r = bind_fields(sqlx::query(&sql), f, &env)
            .bind(expected_version)
            .bind(&f.schedule)
            .bind(f.max_retries as i64)
            .bind(f.code_bytes() as i64)
            .bind(Quotas::bound(quotas.code_bytes))
            .bind(&egress)
            .bind(f.package.as_ref().map(|p| p.sha256.as_str()))
            .bind(&package)
            .bind(&layers)
            .bind(secrets_json(f))
            .bind(&f.schedule_qualifier)
            .execute(&mut **tx)
            .await
            .map_err(|e| conflict_or(e, FIELDS))?;
        if r.rows_affected() == 0 {
            if let Some(route) = &f.route {
                if self.route_overlaps_in(tx, &f.user_id, route).await? {
                    return Err(StoreError::RouteOverlap);
                }
                // A route is unique across functions and aliases (SPEC §13).
                if sqlx::query("SELECT 1 FROM aliases WHERE route = $1").bind(route).fetch_optional(&mut **tx).await?.is_some() {
                    return Err(StoreError::Conflict("route"));
                }
            }
            let row = sqlx::query("SELECT version, code_bytes FROM functions WHERE id = $1 AND user_id = $2").bind(&f.id).bind(&f.user_id).fetch_optional(&mut **tx).await?;
            let still = row.map(|r| Ok::<_, StoreError>((get_i64(&r, "version")?, get_i64(&r, "code_bytes")?))).transpose()?;
            if let Some((_, old_bytes)) = still.filter(|(v, _)| *v == expected_version) {
                let (_, bytes) = self.function_usage(tx, &f.user_id).await?;
                return Err(code_quota(bytes - old_bytes, f.code_bytes(), quotas.code_bytes));
            }
            return Ok(false);
        }
        // The package it replaced, when nothing else refers to it any more.
        if let Some(old) = old_package.filter(|o| Some(o.as_str()) != f.package.as_ref().map(|p| p.sha256.as_str())) {
            self.free_blob_in(tx, &old).await?;
        }
        self.snapshot_in(tx, f).await?;
        Ok(true)
    }

    /// True when another user's route lies strictly under or over `route`.
    pub(crate) async fn route_overlaps_in(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, user_id: &str, route: &str) -> Result<bool> {
        let sql = format!("SELECT COUNT(*) AS n FROM users WHERE id = $1 AND ({})", route_overlap("$1", "$2"));
        let row = sqlx::query(&sql).bind(user_id).bind(route).fetch_one(&mut **tx).await?;
        Ok(get_i64(&row, "n")? > 0)
    }

    /// A transaction for a write checked against the user's quotas. On PostgreSQL it holds
    /// the user's row locked, so two such writes of one user run one after the other and the
    /// second counts what the first added; SQLite runs one write at a time anyway.
    pub(crate) async fn user_write(&self, user_id: &str) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        let mut tx = self.write_tx().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE").bind(user_id).fetch_optional(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// (functions, bytes of code) the user has.
    async fn function_usage(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, user_id: &str) -> Result<(i64, i64)> {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(code_bytes), 0) + {LAYER_BYTES_OF_1} + {KEPT_BYTES_OF_1} AS BIGINT) AS bytes FROM functions WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_one(&mut **tx)
        .await?;
        Ok((get_i64(&row, "n")?, get_i64(&row, "bytes")?))
    }

    /// One of the user's functions, by id or, failing that, by name.
    pub async fn get_function(&self, user_id: &str, id_or_name: &str) -> Result<Option<Function>> {
        let key = (user_id.to_string(), id_or_name.to_string());
        if let Some(cache) = &self.function_cache {
            if let Some(f) = cache.lock().expect("function cache lock").get(&key) {
                return Ok(Some(f.clone()));
            }
        }
        let found = self.get_function_uncached(user_id, id_or_name).await?;
        if let (Some(cache), Some(f)) = (&self.function_cache, &found) {
            let mut c = cache.lock().expect("function cache lock");
            if c.len() >= FUNCTION_CACHE_MAX {
                c.clear();
            }
            c.insert(key, f.clone());
        }
        Ok(found)
    }

    /// Forgets every cached function (after any function write).
    pub(crate) fn forget_functions(&self) {
        if let Some(cache) = &self.function_cache {
            cache.lock().expect("function cache lock").clear();
        }
    }

    async fn get_function_uncached(&self, user_id: &str, id_or_name: &str) -> Result<Option<Function>> {
        let row = sqlx::query("SELECT * FROM functions WHERE user_id = $1 AND (id = $2 OR name = $2) ORDER BY (id = $2) DESC LIMIT 1")
            .bind(user_id)
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(function_from).transpose()
    }

    /// A function by id alone (the engine's view, already authorised).
    pub async fn function_by_id(&self, id: &str) -> Result<Option<Function>> {
        let row = sqlx::query("SELECT * FROM functions WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(function_from).transpose()
    }

    /// The function whose route is exactly `route`.
    pub async fn function_by_route(&self, route: &str) -> Result<Option<Function>> {
        let row = sqlx::query("SELECT * FROM functions WHERE route = $1").bind(route).fetch_optional(&self.pool).await?;
        row.as_ref().map(function_from).transpose()
    }

    /// Deletes one of the user's functions (its builds go with it) and, in the same
    /// transaction, the package blobs nothing refers to any more (its own, and its queued
    /// update's) and the dependency trees its builds packed that no other live version runs
    /// with; false when there is none.
    pub async fn delete_function(&self, user_id: &str, id: &str) -> Result<bool> {
        let mut tx = self.user_write(user_id).await?;
        let rows = sqlx::query(
            "SELECT package_sha256 AS sha FROM functions WHERE id = $1 AND user_id = $2 AND package_sha256 IS NOT NULL
             UNION SELECT package_sha256 AS sha FROM builds WHERE function_id = $1 AND user_id = $2 AND package_sha256 IS NOT NULL
             UNION SELECT package_sha256 AS sha FROM function_versions WHERE function_id = $1 AND user_id = $2 AND package_sha256 IS NOT NULL",
        )
        .bind(id)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        let shas = rows.iter().map(|r| get_str(r, "sha")).collect::<Result<Vec<_>>>()?;
        let codes = sqlx::query("SELECT DISTINCT code_sha256 FROM function_versions WHERE function_id = $1 AND user_id = $2").bind(id).bind(user_id).fetch_all(&mut *tx).await?;
        let codes = codes.iter().map(|r| get_str(r, "code_sha256")).collect::<Result<Vec<_>>>()?;
        let trees = sqlx::query("SELECT DISTINCT tree_blob, tree_key FROM builds WHERE function_id = $1 AND user_id = $2 AND tree_blob IS NOT NULL AND tree_key IS NOT NULL")
            .bind(id)
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
        let trees = trees.iter().map(|r| Ok((get_str(r, "tree_blob")?, get_str(r, "tree_key")?))).collect::<Result<Vec<_>>>()?;
        let r = sqlx::query("DELETE FROM functions WHERE id = $1 AND user_id = $2").bind(id).bind(user_id).execute(&mut *tx).await?;
        // Its versions and aliases went with it (ON DELETE CASCADE); SQLite's cascade needs
        // foreign_keys=ON, which every connection sets, but say it outright anyway.
        sqlx::query("DELETE FROM function_versions WHERE function_id = $1 AND user_id = $2").bind(id).bind(user_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM aliases WHERE function_id = $1 AND user_id = $2").bind(id).bind(user_id).execute(&mut *tx).await?;
        for sha in &shas {
            self.free_blob_in(&mut tx, sha).await?;
        }
        for sha in &codes {
            self.free_code_in(&mut tx, sha).await?;
        }
        // The trees its builds packed for other nodes (PostgreSQL): freed, or named by a live
        // build of another function that runs with the same tree.
        for (sha, key) in &trees {
            self.free_tree_blob_in(&mut tx, sha, key).await?;
        }
        tx.commit().await?;
        self.forget_functions();
        Ok(r.rows_affected() > 0)
    }

    /// A page of the user's functions, newest first, ids below `before`: without their code
    /// (which is not even read).
    pub async fn list_functions(&self, user_id: &str, before: Option<&str>, limit: i64) -> Result<Vec<FunctionSummary>> {
        let rows = match before {
            Some(c) => {
                sqlx::query(&format!("SELECT {SUMMARY_COLUMNS} FROM functions WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"))
                    .bind(user_id)
                    .bind(c)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(&format!("SELECT {SUMMARY_COLUMNS} FROM functions WHERE user_id = $1 ORDER BY id DESC LIMIT $2"))
                    .bind(user_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(summary_from).collect()
    }

    /// Every function with a schedule, as the scheduler needs it (read from the
    /// `functions_scheduled` index alone: migrations/0005).
    pub async fn scheduled_functions(&self) -> Result<Vec<ScheduledFunction>> {
        let rows = sqlx::query(SCHEDULED).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(ScheduledFunction {
                    id: get_str(r, "id")?,
                    user_id: get_str(r, "user_id")?,
                    name: get_str(r, "name")?,
                    version: get_i64(r, "version")?,
                    schedule: get_str(r, "schedule")?,
                    schedule_qualifier: get_opt_str(r, "schedule_qualifier")?,
                    max_retries: get_i64(r, "max_retries")? as u32,
                    updated_at: get_str(r, "updated_at")?,
                })
            })
            .collect()
    }

    /// A value that changes whenever [`Store::scheduled_functions`] would return something
    /// else; one small indexed read.
    pub async fn schedules_fingerprint(&self) -> Result<SchedulesFingerprint> {
        let row = sqlx::query(SCHEDULES_FINGERPRINT).fetch_one(&self.pool).await?;
        Ok(SchedulesFingerprint(get_i64(&row, "n")?, get_opt_str(&row, "latest")?, get_i64(&row, "versions")?))
    }

    /// Number of the user's functions.
    pub async fn count_functions(&self, user_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM functions WHERE user_id = $1").bind(user_id).fetch_one(&self.pool).await?;
        get_i64(&row, "n")
    }
}

/// The refusal of code that would take a user holding `others` bytes (in their other
/// functions) past `limit`.
fn code_quota(others: i64, new: u64, limit: u64) -> StoreError {
    StoreError::Quota(format!(
        "this code ({new} bytes) would take the account's code to {} bytes, over its quota of {limit} bytes; delete old versions (GET /api/functions/{{id}}/versions), or delete or shrink other functions, first",
        others.max(0) as u64 + new
    ))
}

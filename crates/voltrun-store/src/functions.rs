//! Functions.

use voltrun_core::{Function, Runtime};

use crate::{conflict_or, get_i64, get_opt_str, get_str, Result, Store, StoreError};

const FIELDS: &[&str] = &["route", "name"];
/// Cached lookups at most (then the cache starts over).
const FUNCTION_CACHE_MAX: usize = 10_000;

fn function_from(row: &sqlx::any::AnyRow) -> Result<Function> {
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
        max_retries: get_i64(row, "max_retries")? as u32,
        version: get_i64(row, "version")?,
        created_at: get_str(row, "created_at")?,
        updated_at: get_str(row, "updated_at")?,
    })
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn env_json(f: &Function) -> String {
    serde_json::to_string(&f.env).expect("a string map serialises")
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
         AND (substr({route}, 1, length(o.route) + 1) = o.route || '/' OR substr(o.route, 1, length({route}) + 1) = {route} || '/'))"
    )
}

/// The key of the PostgreSQL advisory lock that serialises route writes across nodes.
const ROUTE_LOCK: i64 = 0x766f_6c74_7275_6e01;

impl Store {
    /// Adds a function; `Conflict("name")` or `Conflict("route")` when taken, `RouteOverlap`
    /// when its route lies under or over another user's.
    pub async fn insert_function(&self, f: &Function) -> Result<()> {
        let sql = format!(
            "INSERT INTO functions (id, user_id, name, description, runtime, code, handler, memory, timeout, env, route, public, version,
             updated_at, created_at, schedule, max_retries)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17 WHERE NOT {}",
            route_overlap("$2", "$11")
        );
        let env = env_json(f);
        let q = bind_fields(sqlx::query(&sql), f, &env).bind(&f.created_at).bind(&f.schedule).bind(f.max_retries as i64);
        let r = self.route_write(f, q).await?;
        if r == 0 {
            return Err(StoreError::RouteOverlap);
        }
        Ok(())
    }

    /// Runs a function write. On SQLite one statement is atomic (it holds the write lock from
    /// its start, so the overlap check and the write see the same rows). On PostgreSQL a write
    /// that sets a route takes a transaction-scoped advisory lock first, so two nodes' creates
    /// cannot both pass the check under READ COMMITTED.
    async fn route_write<'q>(&self, f: &Function, q: AnyQuery<'q>) -> Result<u64> {
        if self.dialect == crate::Dialect::Postgres && f.route.is_some() {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(ROUTE_LOCK).execute(&mut *tx).await?;
            let r = q.execute(&mut *tx).await.map_err(|e| conflict_or(e, FIELDS))?;
            tx.commit().await?;
            return Ok(r.rows_affected());
        }
        Ok(q.execute(&self.pool).await.map_err(|e| conflict_or(e, FIELDS))?.rows_affected())
    }

    /// Replaces a function's fields if its stored version is still `expected_version`
    /// (optimistic concurrency); false when another update won the race, `RouteOverlap` when
    /// the new route lies under or over another user's.
    pub async fn update_function(&self, f: &Function, expected_version: i64) -> Result<bool> {
        let sql = format!(
            "UPDATE functions SET name = $3, description = $4, runtime = $5, code = $6, handler = $7, memory = $8, timeout = $9,
             env = $10, route = $11, public = $12, version = $13, updated_at = $14, schedule = $16, max_retries = $17
             WHERE id = $1 AND user_id = $2 AND version = $15 AND NOT {}",
            route_overlap("$2", "$11")
        );
        let env = env_json(f);
        let q = bind_fields(sqlx::query(&sql), f, &env).bind(expected_version).bind(&f.schedule).bind(f.max_retries as i64);
        let r = self.route_write(f, q).await;
        self.forget_functions();
        if r? > 0 {
            return Ok(true);
        }
        match &f.route {
            Some(route) if self.route_overlaps(&f.user_id, route).await? => Err(StoreError::RouteOverlap),
            _ => Ok(false),
        }
    }

    /// True when another user's route lies strictly under or over `route`.
    pub async fn route_overlaps(&self, user_id: &str, route: &str) -> Result<bool> {
        let sql = format!("SELECT COUNT(*) AS n FROM users WHERE id = $1 AND {}", route_overlap("$1", "$2"));
        let row = sqlx::query(&sql).bind(user_id).bind(route).fetch_one(&self.pool).await?;
        Ok(get_i64(&row, "n")? > 0)
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
    fn forget_functions(&self) {
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

    /// Deletes one of the user's functions; false when there is none.
    pub async fn delete_function(&self, user_id: &str, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM functions WHERE id = $1 AND user_id = $2").bind(id).bind(user_id).execute(&self.pool).await?;
        self.forget_functions();
        Ok(r.rows_affected() > 0)
    }

    /// A page of the user's functions, newest first, ids below `before`.
    pub async fn list_functions(&self, user_id: &str, before: Option<&str>, limit: i64) -> Result<Vec<Function>> {
        let rows = match before {
            Some(c) => sqlx::query("SELECT * FROM functions WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3")
                .bind(user_id)
                .bind(c)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
            None => sqlx::query("SELECT * FROM functions WHERE user_id = $1 ORDER BY id DESC LIMIT $2")
                .bind(user_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        };
        rows.iter().map(function_from).collect()
    }

    /// Every function with a schedule (for the scheduler).
    pub async fn scheduled_functions(&self) -> Result<Vec<Function>> {
        let rows = sqlx::query("SELECT * FROM functions WHERE schedule IS NOT NULL").fetch_all(&self.pool).await?;
        rows.iter().map(function_from).collect()
    }

    /// Number of the user's functions.
    pub async fn count_functions(&self, user_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM functions WHERE user_id = $1").bind(user_id).fetch_one(&self.pool).await?;
        get_i64(&row, "n")
    }
}

//! Versions and aliases (SPEC §13, migrations/0013): the immutable snapshot of every version
//! of a function, written in the transaction that gives the function that version; the code
//! they hold, content-addressed; aliases (with one weighted extra version); resolving a
//! qualifier to the function as that version defines it; and the retention of old versions.
//!
//! What a version freezes: runtime, handler, code or package, memory, timeout, env, egress,
//! secret names, layers, description, max_retries, and (through its successful build row)
//! its dependency tree. What it does not: name, route, public, schedule, aliases, and the
//! secrets' values (read at each run).

use std::collections::BTreeMap;

use voltrun_core::version::{pick_version, Weight};
use voltrun_core::{Alias, Function, FunctionState, FunctionStates, Qualifier, Version};

use crate::{get_i64, get_opt_str, get_str, Dialect, Result, Store, StoreError};

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Versions kept by default beyond those an alias points to (`--version-retention`).
pub const DEFAULT_VERSION_RETENTION: i64 = 100;
/// Aliases one function may have.
pub const MAX_ALIASES_PER_FUNCTION: i64 = 100;

/// What a version delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteVersion {
    Deleted,
    /// No such version (404 `version_not_found`).
    NotFound,
    /// It is the function's latest (409 `version_is_latest`).
    Latest,
    /// An alias or the schedule points to it (409 `version_in_use`).
    InUse,
}

/// Why an alias write was refused (the API's 400/409).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasRefused {
    /// `version` names no version of the function (400 naming `version`).
    NoVersion,
    /// The weighted version names no version of the function (400 naming `weights`).
    NoWeightVersion,
    /// The function has an alias of that name (409 `alias_exists`).
    Exists,
    /// The route is a function's or another alias's (409 `route_taken`).
    RouteTaken,
    /// The route lies under or over another account's route.
    RouteOverlap,
    /// The function has [`MAX_ALIASES_PER_FUNCTION`] aliases.
    TooMany,
}

/// What an alias delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteAlias {
    Deleted,
    NotFound,
    /// The function's schedule runs it (409 `alias_in_use`).
    InUse,
}

/// Why a qualifier did not resolve (the API's 404s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// 404 `version_not_found`.
    Version,
    /// 404 `alias_not_found`.
    Alias,
}

/// SHA-256 (hex) of a function's single-file code.
pub fn code_sha256(code: &str) -> String {
    voltrun_package::sha256_hex(code.as_bytes())
}

fn alias_from(row: &sqlx::any::AnyRow) -> Result<Alias> {
    let extra = row.try_get_opt_i64("extra_version")?;
    let weight = sqlx::Row::try_get::<Option<f64>, _>(row, "extra_weight")?;
    let w: Option<Weight> = extra.zip(weight);
    Ok(Alias {
        name: get_str(row, "name")?,
        function_id: get_str(row, "function_id")?,
        version: get_i64(row, "version")?,
        weights: voltrun_core::version::weights_map(w),
        description: get_str(row, "description")?,
        route: get_opt_str(row, "route")?,
        created_at: get_str(row, "created_at")?,
        updated_at: get_str(row, "updated_at")?,
    })
}

trait OptI64 {
    fn try_get_opt_i64(&self, col: &str) -> Result<Option<i64>>;
}

impl OptI64 for sqlx::any::AnyRow {
    fn try_get_opt_i64(&self, col: &str) -> Result<Option<i64>> {
        Ok(sqlx::Row::try_get::<Option<i64>, _>(self, col)?)
    }
}

/// A stored snapshot row, decoded.
struct Snapshot {
    definition: Function,
    version: i64,
    code_sha256: String,
    package_sha256: Option<String>,
    state: FunctionState,
    created_at: String,
}

fn snapshot_from(row: &sqlx::any::AnyRow) -> Result<Snapshot> {
    let definition: Function = serde_json::from_str(&get_str(row, "definition")?).map_err(|e| StoreError::Corrupt(format!("version definition: {e}")))?;
    let state = get_str(row, "state")?;
    Ok(Snapshot {
        definition,
        version: get_i64(row, "version")?,
        code_sha256: get_str(row, "code_sha256")?,
        package_sha256: get_opt_str(row, "package_sha256")?,
        state: FunctionState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("version state {state}")))?,
        created_at: get_str(row, "created_at")?,
    })
}

impl Snapshot {
    fn to_api(&self, function_id: &str, aliases: Vec<String>, code: Option<String>) -> Version {
        let d = &self.definition;
        Version {
            function_id: function_id.to_string(),
            version: self.version,
            runtime: d.runtime,
            handler: d.handler.clone(),
            memory: d.memory,
            timeout: d.timeout,
            env: d.env.clone(),
            egress: d.egress.clone(),
            secrets: d.secrets.clone(),
            layers: d.layers.clone(),
            description: d.description.clone(),
            code_sha256: self.code_sha256.clone(),
            package_sha256: self.package_sha256.clone(),
            state: self.state,
            created_at: self.created_at.clone(),
            aliases,
            code,
        }
    }

    /// The function as this version runs it: the frozen fields from the snapshot, the
    /// function-level ones (name, route, public, schedule) from `current`.
    fn into_function(self, current: &Function, code: String) -> Function {
        let d = self.definition;
        Function {
            id: current.id.clone(),
            user_id: current.user_id.clone(),
            name: current.name.clone(),
            description: d.description,
            runtime: d.runtime,
            code,
            handler: d.handler,
            memory: d.memory,
            timeout: d.timeout,
            env: d.env,
            route: current.route.clone(),
            public: current.public,
            schedule: current.schedule.clone(),
            schedule_qualifier: current.schedule_qualifier.clone(),
            max_retries: d.max_retries,
            egress: d.egress,
            layers: d.layers,
            package: d.package,
            package_zip: None,
            package_root: None,
            secrets: d.secrets,
            version: self.version,
            created_at: current.created_at.clone(),
            updated_at: self.created_at,
            states: FunctionStates { state: self.state, ..FunctionStates::default() },
        }
    }
}

impl Store {
    /// Frees code rows no version names (PostgreSQL: a free skipped because a save held the
    /// code's lock, and that save rolled back; or two frees of the same code at once, each
    /// seeing the other's version still there). At most `limit` a call; how many were freed.
    pub async fn free_unused_code(&self, limit: i64) -> Result<u64> {
        let rows =
            sqlx::query("SELECT c.sha256 FROM version_code c WHERE c.sha256 <> $2 AND NOT EXISTS (SELECT 1 FROM function_versions v WHERE v.code_sha256 = c.sha256) LIMIT $1")
                .bind(limit)
                .bind(code_sha256(""))
                .fetch_all(&self.pool)
                .await?;
        let mut freed = 0;
        for r in &rows {
            let sha = get_str(r, "sha256")?;
            let mut tx = self.write_tx().await?;
            let gone = self.free_code_in(&mut tx, &sha).await?;
            tx.commit().await?;
            freed += gone as u64;
        }
        Ok(freed)
    }

    /// Frees a code row nothing refers to any more. On PostgreSQL only under the code's
    /// advisory lock, which [`Store::snapshot_in`] holds while it saves a version naming the
    /// code: without it, a save by another user of the same code text (whose version row is
    /// not committed yet, so this DELETE cannot see it) lost the code it had just named. The
    /// lock is only tried: when a save holds it, that save names the code, so it stays; and a
    /// free never waits on a lock, so frees in any order cannot deadlock.
    ///
    /// The empty code (every package function's `code`) is never freed, so saving it takes
    /// no lock: one lock shared by every package function of every user serialised their
    /// saves and could deadlock against their blob locks. True when the row was removed.
    pub(crate) async fn free_code_in(&self, tx: &mut Tx, sha: &str) -> Result<bool> {
        if sha == code_sha256("") {
            return Ok(false);
        }
        if self.dialect == crate::Dialect::Postgres {
            let row = sqlx::query("SELECT pg_try_advisory_xact_lock(hashtext($1)) AS locked").bind(format!("code:{sha}")).fetch_one(&mut **tx).await?;
            if !sqlx::Row::try_get::<bool, _>(&row, "locked")? {
                return Ok(false);
            }
        }
        let r =
            sqlx::query("DELETE FROM version_code WHERE sha256 = $1 AND NOT EXISTS (SELECT 1 FROM function_versions WHERE code_sha256 = $1)").bind(sha).execute(&mut **tx).await?;
        Ok(r.rows_affected() > 0)
    }

    /// Keeps at most `n` versions of a function beyond those an alias or its schedule points
    /// to (the latest always stays); 0 keeps every version.
    pub fn with_version_retention(mut self, n: i64) -> Store {
        self.version_retention = n.max(0);
        self
    }

    /// Writes the snapshot of `f` as its version `f.version` (in the transaction that gives
    /// the function that version), then prunes versions past the retention.
    pub(crate) async fn snapshot_in(&self, tx: &mut Tx, f: &Function) -> Result<()> {
        let sha = code_sha256(&f.code);
        if self.dialect == crate::Dialect::Postgres && !f.code.is_empty() {
            // Held until the version row naming the code commits (see `free_code_in`).
            sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS l").bind(format!("code:{sha}")).fetch_one(&mut **tx).await?;
        }
        sqlx::query("INSERT INTO version_code (sha256, code) VALUES ($1, $2) ON CONFLICT DO NOTHING").bind(&sha).bind(&f.code).execute(&mut **tx).await?;
        let mut def = f.clone();
        def.code = String::new();
        def.package_zip = None;
        def.package_root = None;
        let definition = serde_json::to_string(&def).expect("a function serialises");
        let state = f.states.state.as_str();
        // A version number is given once (the update bumps it under optimistic
        // concurrency); a replay of the same number (the start-up backfill on two nodes at
        // once) replaces its snapshot rather than failing.
        sqlx::query(
            "INSERT INTO function_versions (function_id, version, user_id, definition, code_sha256, package_sha256, state, created_at, secrets, code_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (function_id, version) DO UPDATE SET definition = excluded.definition, code_sha256 = excluded.code_sha256,
             package_sha256 = excluded.package_sha256, state = excluded.state, secrets = excluded.secrets, code_bytes = excluded.code_bytes",
        )
        .bind(&f.id)
        .bind(f.version)
        .bind(&f.user_id)
        .bind(definition)
        .bind(&sha)
        .bind(f.package.as_ref().map(|p| p.sha256.as_str()))
        .bind(state)
        .bind(&f.updated_at)
        .bind(serde_json::to_string(&f.secrets).expect("names serialise"))
        .bind(f.code_bytes() as i64)
        .execute(&mut **tx)
        .await?;
        self.prune_versions_in(tx, &f.id, f.version).await
    }

    /// Deletes the versions of a function older than its newest `version_retention` that no
    /// alias (as main or weighted version) nor its schedule points to; frees their code and
    /// package blobs when nothing else holds them.
    async fn prune_versions_in(&self, tx: &mut Tx, function_id: &str, latest: i64) -> Result<()> {
        if self.version_retention == 0 {
            return Ok(());
        }
        let below = latest - self.version_retention;
        if below < 1 {
            return Ok(());
        }
        let rows = sqlx::query(&format!("DELETE FROM function_versions WHERE function_id = $1 AND version <= $2 AND {} RETURNING code_sha256, package_sha256", UNPINNED))
            .bind(function_id)
            .bind(below)
            .fetch_all(&mut **tx)
            .await?;
        self.free_version_rows_in(tx, &rows).await
    }

    async fn free_version_rows_in(&self, tx: &mut Tx, rows: &[sqlx::any::AnyRow]) -> Result<()> {
        let mut codes = std::collections::BTreeSet::new();
        let mut packages = std::collections::BTreeSet::new();
        for r in rows {
            codes.insert(get_str(r, "code_sha256")?);
            if let Some(p) = get_opt_str(r, "package_sha256")? {
                packages.insert(p);
            }
        }
        for c in &codes {
            self.free_code_in(tx, c).await?;
        }
        for p in &packages {
            self.free_blob_in(tx, p).await?;
        }
        Ok(())
    }

    /// Gives every function without a snapshot of its current version one (functions made
    /// before migrations/0013). Run at start; cheap when there is nothing to do.
    pub async fn backfill_versions(&self) -> Result<u64> {
        let mut n = 0;
        loop {
            let done = self.backfill_some().await?;
            n += done;
            if done < 1000 {
                return Ok(n);
            }
        }
    }

    async fn backfill_some(&self) -> Result<u64> {
        let rows = sqlx::query("SELECT f.* FROM functions f WHERE NOT EXISTS (SELECT 1 FROM function_versions v WHERE v.function_id = f.id AND v.version = f.version) LIMIT 1000")
            .fetch_all(&self.pool)
            .await?;
        let mut n = 0;
        for r in &rows {
            let f = crate::functions::function_from(r)?;
            let mut tx = self.write_tx().await?;
            self.snapshot_in(&mut tx, &f).await?;
            tx.commit().await?;
            n += 1;
        }
        Ok(n)
    }

    /// Moves the state of a version whose build ended (builds.rs).
    pub(crate) async fn set_version_state_in(&self, tx: &mut Tx, function_id: &str, version: i64, state: FunctionState) -> Result<()> {
        sqlx::query("UPDATE function_versions SET state = $3 WHERE function_id = $1 AND version = $2")
            .bind(function_id)
            .bind(version)
            .bind(state.as_str())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The versions of a function (the caller checked it is the user's), newest first,
    /// numbers below `before`, at most `limit`; each with the aliases pointing at it.
    pub async fn list_versions(&self, function_id: &str, before: Option<i64>, limit: i64) -> Result<Vec<Version>> {
        let rows = sqlx::query("SELECT * FROM function_versions WHERE function_id = $1 AND version < $2 ORDER BY version DESC LIMIT $3")
            .bind(function_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let aliases = self.list_aliases(function_id).await?;
        rows.iter()
            .map(|r| {
                let s = snapshot_from(r)?;
                let names = aliases.iter().filter(|a| a.versions().contains(&s.version)).map(|a| a.name.clone()).collect();
                Ok(s.to_api(function_id, names, None))
            })
            .collect()
    }

    /// One version of a function, with its single-file code.
    pub async fn get_version(&self, function_id: &str, version: i64) -> Result<Option<Version>> {
        let Some((s, code)) = self.snapshot(function_id, version).await? else { return Ok(None) };
        let aliases = self.list_aliases(function_id).await?;
        let names = aliases.iter().filter(|a| a.versions().contains(&version)).map(|a| a.name.clone()).collect();
        let code = (s.definition.package.is_none()).then_some(code);
        Ok(Some(s.to_api(function_id, names, code)))
    }

    async fn snapshot(&self, function_id: &str, version: i64) -> Result<Option<(Snapshot, String)>> {
        let row = sqlx::query("SELECT v.*, c.code FROM function_versions v LEFT JOIN version_code c ON c.sha256 = v.code_sha256 WHERE v.function_id = $1 AND v.version = $2")
            .bind(function_id)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let code = get_opt_str(&row, "code")?.ok_or_else(|| StoreError::Corrupt(format!("the code of version {version} of {function_id} is missing")))?;
        Ok(Some((snapshot_from(&row)?, code)))
    }

    /// The function `current` as its version `version` defines it, ready to run (frozen
    /// fields from the snapshot, name/route/public/schedule from `current`); None when there
    /// is no such version. `current` itself when it is that version.
    pub async fn version_function(&self, current: &Function, version: i64) -> Result<Option<Function>> {
        if version == current.version {
            return Ok(Some(current.clone()));
        }
        Ok(self.snapshot(&current.id, version).await?.map(|(s, code)| s.into_function(current, code)))
    }

    /// The number of the newest stored version of a function (its `version` once every
    /// change is applied); None when it has none.
    pub async fn latest_version(&self, function_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MAX(version) AS v FROM function_versions WHERE function_id = $1").bind(function_id).fetch_one(&self.pool).await?;
        row.try_get_opt_i64("v")
    }

    /// Resolves a qualifier of `f` (the user's function, as stored now) for the invocation
    /// `execution_id`: a version number → that version; `latest` → `f`; an alias → its
    /// version, or its weighted extra version when the invocation's draw falls under the
    /// share ([`voltrun_core::version::pick_version`]). Returns the function as that version
    /// runs it.
    pub async fn resolve_qualifier(&self, f: &Function, q: &Qualifier, execution_id: &str) -> Result<std::result::Result<Function, Unresolved>> {
        let version = match q {
            Qualifier::Latest => return Ok(Ok(f.clone())),
            Qualifier::Version(n) => *n,
            Qualifier::Alias(name) => match self.get_alias(&f.id, name).await? {
                Some(a) => pick_version(a.version, a.weight(), execution_id),
                None => return Ok(Err(Unresolved::Alias)),
            },
        };
        Ok(self.version_function(f, version).await?.ok_or(Unresolved::Version))
    }

    /// Deletes a version of `f` unless it is the latest, or an alias or the schedule points
    /// to it; frees its code and package when nothing else holds them.
    pub async fn delete_version(&self, f: &Function, version: i64) -> Result<DeleteVersion> {
        if version == f.version {
            return Ok(DeleteVersion::Latest);
        }
        let mut tx = self.user_write(&f.user_id).await?;
        let latest = sqlx::query("SELECT version FROM functions WHERE id = $1").bind(&f.id).fetch_optional(&mut *tx).await?;
        if latest.map(|r| get_i64(&r, "version")).transpose()? == Some(version) {
            return Ok(DeleteVersion::Latest);
        }
        let rows = sqlx::query(&format!("DELETE FROM function_versions WHERE function_id = $1 AND version = $2 AND {UNPINNED} RETURNING code_sha256, package_sha256"))
            .bind(&f.id)
            .bind(version)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            let exists = sqlx::query("SELECT 1 FROM function_versions WHERE function_id = $1 AND version = $2").bind(&f.id).bind(version).fetch_optional(&mut *tx).await?;
            return Ok(if exists.is_some() { DeleteVersion::InUse } else { DeleteVersion::NotFound });
        }
        self.free_version_rows_in(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(DeleteVersion::Deleted)
    }

    /// Whether a function has the version.
    async fn has_version_in(&self, tx: &mut Tx, function_id: &str, version: i64) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM function_versions WHERE function_id = $1 AND version = $2").bind(function_id).bind(version).fetch_optional(&mut **tx).await?.is_some())
    }

    /// Checks an alias's versions and route inside the write's transaction.
    async fn check_alias_in(&self, tx: &mut Tx, user_id: &str, a: &Alias) -> Result<std::result::Result<(), AliasRefused>> {
        if !self.has_version_in(tx, &a.function_id, a.version).await? {
            return Ok(Err(AliasRefused::NoVersion));
        }
        if let Some((extra, _)) = a.weight() {
            if !self.has_version_in(tx, &a.function_id, extra).await? {
                return Ok(Err(AliasRefused::NoWeightVersion));
            }
        }
        if let Some(route) = &a.route {
            if self.dialect == Dialect::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(crate::functions::ROUTE_LOCK).execute(&mut **tx).await?;
            }
            let taken = sqlx::query("SELECT 1 FROM functions WHERE route = $1 UNION ALL SELECT 1 FROM aliases WHERE route = $1 AND NOT (function_id = $2 AND name = $3)")
                .bind(route)
                .bind(&a.function_id)
                .bind(&a.name)
                .fetch_optional(&mut **tx)
                .await?;
            if taken.is_some() {
                return Ok(Err(AliasRefused::RouteTaken));
            }
            if self.route_overlaps_in(tx, user_id, route).await? {
                return Ok(Err(AliasRefused::RouteOverlap));
            }
        }
        Ok(Ok(()))
    }

    /// Adds an alias of one of `user_id`'s functions (the caller checked the function is
    /// theirs and the fields are valid).
    pub async fn insert_alias(&self, user_id: &str, a: &Alias) -> Result<std::result::Result<(), AliasRefused>> {
        let mut tx = self.user_write(user_id).await?;
        if let Err(r) = self.check_alias_in(&mut tx, user_id, a).await? {
            return Ok(Err(r));
        }
        let n = sqlx::query("SELECT COUNT(*) AS n FROM aliases WHERE function_id = $1").bind(&a.function_id).fetch_one(&mut *tx).await?;
        if get_i64(&n, "n")? >= MAX_ALIASES_PER_FUNCTION {
            return Ok(Err(AliasRefused::TooMany));
        }
        let (extra, weight) = a.weight().unzip();
        let q = sqlx::query(
            "INSERT INTO aliases (function_id, user_id, name, version, extra_version, extra_weight, description, route, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(&a.function_id)
        .bind(user_id)
        .bind(&a.name)
        .bind(a.version)
        .bind(extra);
        let r = crate::bind_opt_f64(q, weight).bind(&a.description).bind(&a.route).bind(&a.created_at).bind(&a.updated_at).execute(&mut *tx).await?;
        if r.rows_affected() == 0 {
            // The name (primary key) or the route (unique) was taken meanwhile.
            let same = sqlx::query("SELECT 1 FROM aliases WHERE function_id = $1 AND name = $2").bind(&a.function_id).bind(&a.name).fetch_optional(&mut *tx).await?;
            return Ok(Err(if same.is_some() { AliasRefused::Exists } else { AliasRefused::RouteTaken }));
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Replaces an alias's version, weights, description and route; Ok(false) when there
    /// is no such alias.
    pub async fn update_alias(&self, user_id: &str, a: &Alias) -> Result<std::result::Result<bool, AliasRefused>> {
        let mut tx = self.user_write(user_id).await?;
        if let Err(r) = self.check_alias_in(&mut tx, user_id, a).await? {
            return Ok(Err(r));
        }
        let (extra, weight) = a.weight().unzip();
        let q = sqlx::query(
            "UPDATE aliases SET version = $3, extra_version = $4, extra_weight = $5, description = $6, route = $7, updated_at = $8
             WHERE function_id = $1 AND name = $2",
        )
        .bind(&a.function_id)
        .bind(&a.name)
        .bind(a.version)
        .bind(extra);
        let r = crate::bind_opt_f64(q, weight).bind(&a.description).bind(&a.route).bind(&a.updated_at).execute(&mut *tx).await.map_err(|e| crate::conflict_or(e, &["route"]))?;
        tx.commit().await?;
        Ok(Ok(r.rows_affected() > 0))
    }

    /// One alias of a function.
    pub async fn get_alias(&self, function_id: &str, name: &str) -> Result<Option<Alias>> {
        let row = sqlx::query("SELECT * FROM aliases WHERE function_id = $1 AND name = $2").bind(function_id).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(alias_from).transpose()
    }

    /// Every alias of a function (at most [`MAX_ALIASES_PER_FUNCTION`]), by name.
    pub async fn list_aliases(&self, function_id: &str) -> Result<Vec<Alias>> {
        let rows = sqlx::query("SELECT * FROM aliases WHERE function_id = $1 ORDER BY name").bind(function_id).fetch_all(&self.pool).await?;
        rows.iter().map(alias_from).collect()
    }

    /// Deletes an alias unless the function's schedule runs it.
    pub async fn delete_alias(&self, user_id: &str, function_id: &str, name: &str) -> Result<DeleteAlias> {
        let mut tx = self.user_write(user_id).await?;
        let r = sqlx::query("DELETE FROM aliases WHERE function_id = $1 AND name = $2 AND NOT EXISTS (SELECT 1 FROM functions WHERE id = $1 AND schedule_qualifier = $2)")
            .bind(function_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            let exists = sqlx::query("SELECT 1 FROM aliases WHERE function_id = $1 AND name = $2").bind(function_id).bind(name).fetch_optional(&mut *tx).await?;
            return Ok(if exists.is_some() { DeleteAlias::InUse } else { DeleteAlias::NotFound });
        }
        tx.commit().await?;
        Ok(DeleteAlias::Deleted)
    }

    /// The function and alias whose route is exactly `route` (the HTTP trigger).
    pub async fn alias_by_route(&self, route: &str) -> Result<Option<(Function, Alias)>> {
        let row = sqlx::query("SELECT * FROM aliases WHERE route = $1").bind(route).fetch_optional(&self.pool).await?;
        let Some(a) = row.as_ref().map(alias_from).transpose()? else { return Ok(None) };
        Ok(self.function_by_id(&a.function_id).await?.map(|f| (f, a)))
    }

    /// The dependency trees live versions run with: the trees of the successful builds of
    /// the packages live versions hold (a version that changed no dependency file, e.g. only
    /// its memory, has no build of its own but the same tree key, derived from the package's
    /// dependency files). Pinned against eviction from a node's build cache, so a version's
    /// built dependencies stay frozen.
    pub async fn live_tree_keys(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(&format!("SELECT DISTINCT l.tree_key FROM builds l WHERE {}", crate::builds::LIVE_BUILD)).fetch_all(&self.pool).await?;
        rows.iter().map(|r| get_str(r, "tree_key")).collect()
    }

    /// Checks that a schedule qualifier names something the function has (an alias, or a
    /// version other than one about to be created); `latest` and None always do.
    pub async fn check_schedule_qualifier(&self, f: &Function) -> Result<std::result::Result<(), Unresolved>> {
        let Some(q) = &f.schedule_qualifier else { return Ok(Ok(())) };
        match Qualifier::parse(q, "schedule_qualifier") {
            Ok(Qualifier::Latest) | Err(_) => Ok(Ok(())),
            Ok(Qualifier::Version(n)) => {
                let ok = n == f.version || self.snapshot(&f.id, n).await?.is_some();
                Ok(if ok { Ok(()) } else { Err(Unresolved::Version) })
            }
            Ok(Qualifier::Alias(name)) => Ok(if self.get_alias(&f.id, &name).await?.is_some() { Ok(()) } else { Err(Unresolved::Alias) }),
        }
    }
}

/// SQL true for a `function_versions` row (of `$1`) that no alias nor schedule points to,
/// and that no queued or running execution (an async run waiting, or between retries) will
/// run: deleting or pruning it would fail those runs.
const UNPINNED: &str = "NOT EXISTS (SELECT 1 FROM aliases a WHERE a.function_id = $1 AND (a.version = function_versions.version OR a.extra_version = function_versions.version))
     AND NOT EXISTS (SELECT 1 FROM functions f WHERE f.id = $1 AND (f.version = function_versions.version OR f.schedule_qualifier = CAST(function_versions.version AS TEXT)))
     AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.status IN ('pending', 'running') AND e.function_id = $1 AND e.function_version = function_versions.version)";

/// Weights of an alias as the API gives them, for [`Alias::weights`].
pub fn weights_of(w: Option<Weight>) -> Option<BTreeMap<String, f64>> {
    voltrun_core::version::weights_map(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use voltrun_core::Quotas;

    async fn temp_store(tag: &str) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("voltrun-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.join("t.db").display())).await.unwrap();
        sqlx::query("INSERT INTO users (id, email, name, password_hash, created_at) VALUES ('u1', 'u1@example.com', 'n', 'h', 't')").execute(&store.pool).await.unwrap();
        (store, dir)
    }

    fn function(code: &str) -> Function {
        let n: voltrun_core::NewFunction = serde_json::from_value(serde_json::json!({"name": "f", "runtime": "python", "code": code})).unwrap();
        n.into_function(voltrun_core::id::new_id("fn_"), "u1".into(), voltrun_core::time::now()).unwrap()
    }

    fn alias(f: &Function, name: &str, version: i64, weight: Option<Weight>) -> Alias {
        let now = voltrun_core::time::now();
        Alias {
            name: name.into(),
            function_id: f.id.clone(),
            version,
            weights: weights_of(weight),
            description: String::new(),
            route: None,
            created_at: now.clone(),
            updated_at: now,
        }
    }

    /// Snapshots share unchanged code, resolve by number, latest and alias (the split by the
    /// hash formula), refuse deleting the latest or a version an alias holds, and retention
    /// prunes the oldest unheld ones and their code.
    #[tokio::test]
    async fn snapshots_resolve_share_code_and_are_pruned_past_the_retention() {
        let (store, dir) = temp_store("versions").await;
        let store = store.with_version_retention(2);
        let mut f = function("def handler(e, c):\n    return 1");
        store.insert_function(&f, &Quotas::default()).await.unwrap();
        assert_eq!(store.insert_alias("u1", &alias(&f, "pin", 1, None)).await.unwrap(), Ok(()));
        assert_eq!(store.insert_alias("u1", &alias(&f, "pin", 1, None)).await.unwrap(), Err(AliasRefused::Exists));
        assert_eq!(store.insert_alias("u1", &alias(&f, "x", 9, None)).await.unwrap(), Err(AliasRefused::NoVersion));
        for v in 2..=5 {
            let mut next = f.clone();
            next.version = v;
            if v == 2 {
                next.code = "def handler(e, c):\n    return 2".into();
            } else {
                next.memory += 64;
            }
            assert!(store.update_function(&next, f.version, &Quotas::default()).await.unwrap());
            f = next;
        }
        let versions: Vec<i64> = store.list_versions(&f.id, None, 50).await.unwrap().iter().map(|v| v.version).collect();
        assert_eq!(versions, vec![5, 4, 1], "the newest 2 and the one an alias holds");
        let codes: i64 = get_i64(&sqlx::query("SELECT COUNT(*) AS n FROM version_code").fetch_one(&store.pool).await.unwrap(), "n").unwrap();
        assert_eq!(codes, 2, "versions 4 and 5 share one code row; version 1 has its own");
        // Resolving.
        let one = store.resolve_qualifier(&f, &Qualifier::Version(1), "ex_a").await.unwrap().unwrap();
        assert_eq!((one.version, one.code.as_str(), one.memory), (1, "def handler(e, c):\n    return 1", f.memory - 3 * 64));
        assert_eq!(store.resolve_qualifier(&f, &Qualifier::Version(2), "ex_a").await.unwrap().unwrap_err(), Unresolved::Version);
        assert_eq!(store.resolve_qualifier(&f, &Qualifier::Alias("nope".into()), "ex_a").await.unwrap().unwrap_err(), Unresolved::Alias);
        assert_eq!(store.resolve_qualifier(&f, &Qualifier::Latest, "ex_a").await.unwrap().unwrap().version, 5);
        let mut a = alias(&f, "pin", 1, Some((4, 0.5)));
        assert_eq!(store.update_alias("u1", &a).await.unwrap(), Ok(true));
        for i in 0..40 {
            let id = format!("ex_{i}");
            let got = store.resolve_qualifier(&f, &Qualifier::Alias("pin".into()), &id).await.unwrap().unwrap().version;
            assert_eq!(got, pick_version(1, Some((4, 0.5)), &id));
        }
        // Deleting.
        assert_eq!(store.delete_version(&f, 5).await.unwrap(), DeleteVersion::Latest);
        assert_eq!(store.delete_version(&f, 4).await.unwrap(), DeleteVersion::InUse);
        assert_eq!(store.delete_version(&f, 1).await.unwrap(), DeleteVersion::InUse);
        assert_eq!(store.delete_version(&f, 2).await.unwrap(), DeleteVersion::NotFound);
        a.weights = None;
        a.version = 5;
        assert_eq!(store.update_alias("u1", &a).await.unwrap(), Ok(true));
        assert_eq!(store.delete_version(&f, 1).await.unwrap(), DeleteVersion::Deleted);
        let codes: i64 = get_i64(&sqlx::query("SELECT COUNT(*) AS n FROM version_code").fetch_one(&store.pool).await.unwrap(), "n").unwrap();
        assert_eq!(codes, 1, "version 1's code went with it");
        assert!(store.delete_function("u1", &f.id).await.unwrap());
        let left: i64 = get_i64(
            &sqlx::query("SELECT (SELECT COUNT(*) FROM function_versions) + (SELECT COUNT(*) FROM aliases) + (SELECT COUNT(*) FROM version_code) AS n")
                .fetch_one(&store.pool)
                .await
                .unwrap(),
            "n",
        )
        .unwrap();
        assert_eq!(left, 0, "a deleted function leaves no version, alias or code behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

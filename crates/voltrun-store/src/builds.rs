//! Dependency builds as durable work (migrations/0010), and the function states they move.
//!
//! A build is a row: `queued` until a node claims it (`building`, under that node's lease,
//! renewed by its heartbeat), then `success` or `failed`. What a build changes is written in
//! the same transaction as its end: the function's `state` (a first build) or its definition,
//! version and `last_update_status` (an update). A build whose node died goes back to the
//! queue, and fails with a reason after [`voltrun_core::build::BUILD_MAX_ATTEMPTS`] claims, so
//! no build and no function stays `building`/`pending` for ever. Deleting a function deletes
//! its builds (`ON DELETE CASCADE`); a node building one notices at its next heartbeat.

use voltrun_core::{Build, BuildStatus, Function, FunctionState, FunctionStates, Quotas, UpdateStatus, MAX_LOG_BYTES};

use crate::{get_i64, get_opt_str, get_str, Dialect, Result, Store, StoreError};

/// SQL true for a build row `l` whose tree a live version runs with: a successful build of a
/// package a kept version holds (a version that changed no dependency file has no build of its
/// own, but its package's dependency files give the same tree key). The one definition of a
/// live tree: [`Store::live_tree_keys`] pins these in each node's cache, and
/// [`Store::free_unused_tree_blobs`] keeps their packs.
pub(crate) const LIVE_BUILD: &str = "l.status = 'success' AND l.tree_key IS NOT NULL AND l.package_sha256 IS NOT NULL
     AND EXISTS (SELECT 1 FROM function_versions v WHERE v.package_sha256 = l.package_sha256)";

/// Commits one free of the sweep ([`Store::sweep_tx`]) and says whether it freed; a free that
/// failed (a lock it gave way on) is rolled back and tried again at the next sweep.
async fn end_sweep_tx(tx: Tx, gone: Result<bool>) -> Result<bool> {
    match gone {
        Ok(gone) => {
            tx.commit().await?;
            Ok(gone)
        }
        Err(err) => {
            tracing::debug!(%err, "a packed tree was not freed this time");
            Ok(false)
        }
    }
}

/// Where a stored build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildPhase {
    /// Waiting for a node.
    Queued,
    /// Claimed by `lease_owner`.
    Building,
    Success,
    Failed,
}

impl BuildPhase {
    fn as_str(self) -> &'static str {
        match self {
            BuildPhase::Queued => "queued",
            BuildPhase::Building => "building",
            BuildPhase::Success => "success",
            BuildPhase::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => BuildPhase::Queued,
            "building" => BuildPhase::Building,
            "success" => BuildPhase::Success,
            "failed" => BuildPhase::Failed,
            _ => return None,
        })
    }
}

/// A stored build: the served [`Build`] and what running and applying it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRecord {
    pub id: String,
    pub function_id: String,
    pub user_id: String,
    /// The version the function has once this build is applied.
    pub function_version: i64,
    /// The version an update replaces (the build applies `definition` only over it); 0 when
    /// the definition is already stored (a first build: success only makes it `active`).
    pub base_version: i64,
    pub phase: BuildPhase,
    pub reason: Option<String>,
    pub logs: String,
    pub logs_truncated: bool,
    pub cached: bool,
    /// The function as it will be once built.
    pub definition: Function,
    /// The built tree's cache key, once built.
    pub tree_key: Option<String>,
    /// The blob the tree was packed into for other nodes, if it was.
    pub tree_blob: Option<String>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub lease_owner: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl BuildRecord {
    /// A queued build of `definition` (over `base_version`; 0: already stored).
    pub fn queued(definition: &Function, base_version: i64, now: &str) -> BuildRecord {
        BuildRecord {
            id: voltrun_core::id::new_id("bd_"),
            function_id: definition.id.clone(),
            user_id: definition.user_id.clone(),
            function_version: definition.version,
            base_version,
            phase: BuildPhase::Queued,
            reason: None,
            logs: String::new(),
            logs_truncated: false,
            cached: false,
            definition: definition.clone(),
            tree_key: None,
            tree_blob: None,
            attempts: 0,
            max_attempts: voltrun_core::build::BUILD_MAX_ATTEMPTS,
            lease_owner: None,
            created_at: now.to_string(),
            started_at: None,
            finished_at: None,
        }
    }

    /// The build as `GET /api/functions/{id}/build` serves it.
    pub fn to_api(&self) -> Build {
        let status = match self.phase {
            BuildPhase::Queued | BuildPhase::Building => BuildStatus::Building,
            BuildPhase::Success => BuildStatus::Success,
            BuildPhase::Failed => BuildStatus::Failed,
        };
        let started_at = self.started_at.clone().unwrap_or_else(|| self.created_at.clone());
        let duration_ms = self.finished_at.as_deref().and_then(|end| Some((voltrun_core::time::parse_ms(end)? - voltrun_core::time::parse_ms(&started_at)?).max(0) as f64));
        Build {
            id: self.id.clone(),
            function_id: self.function_id.clone(),
            user_id: self.user_id.clone(),
            function_version: self.function_version,
            status,
            reason: self.reason.clone(),
            logs: self.logs.clone(),
            logs_truncated: self.logs_truncated,
            cached: self.cached,
            started_at,
            finished_at: self.finished_at.clone(),
            duration_ms,
        }
    }

    /// Ends the build: success with the tree's key, or failure with a reason.
    pub fn finish(&mut self, result: std::result::Result<String, String>, logs: String, logs_truncated: bool, cached: bool) {
        let (logs, cut) = cap_logs(without_nul(logs));
        let result = result.map_err(without_nul);
        self.logs = logs;
        self.logs_truncated = logs_truncated || cut;
        self.cached = cached;
        self.finished_at = Some(voltrun_core::time::now());
        match result {
            Ok(key) => {
                self.phase = BuildPhase::Success;
                self.tree_key = Some(key);
                self.reason = None;
            }
            Err(reason) => {
                self.phase = BuildPhase::Failed;
                self.reason = Some(reason);
            }
        }
    }
}

/// `text` with every NUL character replaced by U+FFFD: PostgreSQL's text refuses NUL, and a
/// build's output (a tool printing a NUL) must not make its end unstorable.
pub fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    }
}

/// Cuts a build log at [`MAX_LOG_BYTES`] (on a character boundary); true when it was cut.
pub fn cap_logs(mut logs: String) -> (String, bool) {
    if logs.len() <= MAX_LOG_BYTES {
        return (logs, false);
    }
    let mut end = MAX_LOG_BYTES;
    while !logs.is_char_boundary(end) {
        end -= 1;
    }
    logs.truncate(end);
    (logs, true)
}

/// The four state columns of a function row.
pub(crate) fn states_from(row: &sqlx::any::AnyRow) -> Result<FunctionStates> {
    let state = get_str(row, "state")?;
    let update = get_str(row, "last_update_status")?;
    Ok(FunctionStates {
        state: FunctionState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?,
        state_reason: get_opt_str(row, "state_reason")?,
        last_update_status: UpdateStatus::parse(&update).ok_or_else(|| StoreError::Corrupt(format!("last_update_status {update}")))?,
        last_update_status_reason: get_opt_str(row, "last_update_status_reason")?,
    })
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Writes a function's four state columns.
pub(crate) async fn write_states_in(tx: &mut Tx, function_id: &str, s: &FunctionStates) -> Result<()> {
    sqlx::query("UPDATE functions SET state = $2, state_reason = $3, last_update_status = $4, last_update_status_reason = $5 WHERE id = $1")
        .bind(function_id)
        .bind(s.state.as_str())
        .bind(&s.state_reason)
        .bind(s.last_update_status.as_str())
        .bind(&s.last_update_status_reason)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn build_from(row: &sqlx::any::AnyRow) -> Result<BuildRecord> {
    let phase = get_str(row, "status")?;
    let user_id = get_str(row, "user_id")?;
    let mut definition: Function = serde_json::from_str(&get_str(row, "definition")?).map_err(|e| StoreError::Corrupt(format!("build definition: {e}")))?;
    definition.user_id = user_id.clone();
    Ok(BuildRecord {
        id: get_str(row, "id")?,
        function_id: get_str(row, "function_id")?,
        user_id,
        function_version: get_i64(row, "function_version")?,
        base_version: get_i64(row, "base_version")?,
        phase: BuildPhase::parse(&phase).ok_or_else(|| StoreError::Corrupt(format!("build status {phase}")))?,
        reason: get_opt_str(row, "reason")?,
        logs: get_str(row, "logs")?,
        logs_truncated: get_i64(row, "logs_truncated")? != 0,
        cached: get_i64(row, "cached")? != 0,
        definition,
        tree_key: get_opt_str(row, "tree_key")?,
        tree_blob: get_opt_str(row, "tree_blob")?,
        attempts: get_i64(row, "attempts")?,
        max_attempts: get_i64(row, "max_attempts")?,
        lease_owner: get_opt_str(row, "lease_owner")?,
        created_at: get_str(row, "created_at")?,
        started_at: get_opt_str(row, "started_at")?,
        finished_at: get_opt_str(row, "finished_at")?,
    })
}

async fn insert_build_in(tx: &mut Tx, b: &BuildRecord) -> Result<()> {
    let definition = serde_json::to_string(&b.definition).expect("a function serialises");
    sqlx::query(
        "INSERT INTO builds (id, function_id, user_id, function_version, base_version, status, reason, logs, logs_truncated, cached, definition,
         tree_key, attempts, max_attempts, lease_owner, lease_expires, created_at, started_at, finished_at, package_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL, NULL, $15, $16, $17, $18)",
    )
    .bind(&b.id)
    .bind(&b.function_id)
    .bind(&b.user_id)
    .bind(b.function_version)
    .bind(b.base_version)
    .bind(b.phase.as_str())
    .bind(&b.reason)
    .bind(&b.logs)
    .bind(b.logs_truncated as i64)
    .bind(b.cached as i64)
    .bind(definition)
    .bind(&b.tree_key)
    .bind(b.attempts)
    .bind(b.max_attempts)
    .bind(&b.created_at)
    .bind(&b.started_at)
    .bind(&b.finished_at)
    .bind(b.definition.package.as_ref().map(|p| p.sha256.as_str()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The failure reason of a build whose nodes kept dying.
fn gave_up_reason(attempts: i64) -> String {
    format!("the build was interrupted {attempts} times (the node running it stopped); deploy again to retry")
}

impl Store {
    /// Creates a function together with its build: a queued first build (the function
    /// `pending`), or a finished one (a cache hit: the function `active` at once). One
    /// transaction, so there is never a pending function without a build.
    pub async fn insert_function_with_build(&self, f: &Function, quotas: &Quotas, b: &BuildRecord) -> Result<()> {
        let mut tx = self.user_write(&f.user_id).await?;
        self.insert_function_in(&mut tx, f, quotas).await?;
        write_states_in(&mut tx, &f.id, &f.states).await?;
        insert_build_in(&mut tx, b).await?;
        tx.commit().await?;
        self.forget_functions();
        self.notify_builds().await
    }

    /// Replaces a function's definition and states together with a build (an update of a
    /// function that is not active, or an update whose build was a cache hit). False when
    /// the stored version is no longer `expected_version`.
    pub async fn update_function_with_build(&self, f: &Function, expected_version: i64, quotas: &Quotas, b: &BuildRecord) -> Result<bool> {
        let mut tx = self.user_write(&f.user_id).await?;
        if !self.update_function_in(&mut tx, f, expected_version, quotas).await? {
            return Ok(false);
        }
        write_states_in(&mut tx, &f.id, &f.states).await?;
        self.supersede_in(&mut tx, &f.id).await?;
        insert_build_in(&mut tx, b).await?;
        tx.commit().await?;
        self.forget_functions();
        self.notify_builds().await?;
        Ok(true)
    }

    /// Queues the build of an update of an active function: the stored definition keeps
    /// serving, `last_update_status` becomes `in_progress`. False when the function is no
    /// longer at `expected_version`, not active, or already has a build in progress.
    pub async fn queue_update_build(&self, b: &BuildRecord) -> Result<bool> {
        let mut tx = self.user_write(&b.user_id).await?;
        // The new package is stored now (its build and, later, the function read it).
        self.put_package_in(&mut tx, &b.definition).await?;
        let r = sqlx::query(
            "UPDATE functions SET last_update_status = 'in_progress', last_update_status_reason = NULL
             WHERE id = $1 AND user_id = $2 AND version = $3 AND state = 'active' AND last_update_status <> 'in_progress'",
        )
        .bind(&b.function_id)
        .bind(&b.user_id)
        .bind(b.base_version)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        insert_build_in(&mut tx, b).await?;
        tx.commit().await?;
        self.forget_functions();
        self.notify_builds().await?;
        Ok(true)
    }

    /// Fails the function's queued and running builds (a newer definition replaces theirs).
    async fn supersede_in(&self, tx: &mut Tx, function_id: &str) -> Result<()> {
        let rows = sqlx::query("SELECT DISTINCT package_sha256 FROM builds WHERE function_id = $1 AND status IN ('queued', 'building') AND package_sha256 IS NOT NULL")
            .bind(function_id)
            .fetch_all(&mut **tx)
            .await?;
        let shas = rows.iter().map(|r| get_str(r, "package_sha256")).collect::<Result<Vec<_>>>()?;
        sqlx::query(
            "UPDATE builds SET status = 'failed', reason = 'superseded by a later update', finished_at = $2, lease_owner = NULL, lease_expires = NULL
             WHERE function_id = $1 AND status IN ('queued', 'building')",
        )
        .bind(function_id)
        .bind(voltrun_core::time::now())
        .execute(&mut **tx)
        .await?;
        // Their packages, unless the function (or another build) still has them.
        for sha in &shas {
            self.free_blob_in(tx, sha).await?;
        }
        Ok(())
    }

    /// The latest build of one of the user's functions.
    pub async fn latest_build(&self, user_id: &str, function_id: &str) -> Result<Option<BuildRecord>> {
        let row =
            sqlx::query("SELECT * FROM builds WHERE function_id = $1 AND user_id = $2 ORDER BY id DESC LIMIT 1").bind(function_id).bind(user_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(build_from).transpose()
    }

    /// A build by id (the engine's view).
    pub async fn build_by_id(&self, id: &str) -> Result<Option<BuildRecord>> {
        let row = sqlx::query("SELECT * FROM builds WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(build_from).transpose()
    }

    /// The latest successful build of a function version: the tree it runs with.
    pub async fn built_tree(&self, function_id: &str, version: i64) -> Result<Option<String>> {
        let row = sqlx::query("SELECT tree_key FROM builds WHERE function_id = $1 AND function_version = $2 AND status = 'success' ORDER BY id DESC LIMIT 1")
            .bind(function_id)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| get_opt_str(&r, "tree_key")).transpose()?.flatten())
    }

    /// Claims a queued build of a user with fewer than `per_user` builds running (on every
    /// node): of the users with the fewest running, the oldest (so one user's backlog cannot
    /// hold every slot while another's build waits): `building` under this node's lease, the
    /// attempt counted, its earlier attempt's logs cleared. `FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL, as the run queue's claim.
    pub async fn claim_build(&self, node: &str, now: &str, lease_until: &str, per_user: usize) -> Result<Option<BuildRecord>> {
        let lock = if self.dialect == Dialect::Postgres { "FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE builds SET status = 'building', attempts = attempts + 1, started_at = $1, lease_owner = $2, lease_expires = $3, logs = '', logs_truncated = 0
             WHERE id = (SELECT q.id FROM builds q WHERE q.status = 'queued'
               AND q.user_id NOT IN (SELECT user_id FROM builds WHERE status = 'building' GROUP BY user_id HAVING COUNT(*) >= $4)
               ORDER BY (SELECT COUNT(*) FROM builds r WHERE r.status = 'building' AND r.user_id = q.user_id), q.id LIMIT 1 {lock})
             AND status = 'queued' RETURNING *"
        );
        let row = sqlx::query(&sql).bind(now).bind(node).bind(lease_until).bind(per_user as i64).fetch_optional(&self.pool).await?;
        row.as_ref().map(build_from).transpose()
    }

    /// Extends the leases of the builds `running` (those this node's tasks still run, never
    /// every row it owns: a build whose task ended without storing its end must expire and be
    /// settled by the reaper); returns the ids of them it still holds (a build missing from
    /// them was deleted with its function, or superseded: its task should stop).
    pub async fn heartbeat_builds(&self, node: &str, lease_until: &str, running: &[String]) -> Result<Vec<String>> {
        let mut held = Vec::new();
        for ids in running.chunks(100) {
            let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!("UPDATE builds SET lease_expires = $2 WHERE lease_owner = $1 AND status = 'building' AND id IN ({}) RETURNING id", marks.join(", "));
            let mut q = sqlx::query(&sql).bind(node).bind(lease_until);
            for id in ids {
                q = q.bind(id);
            }
            for r in q.fetch_all(&self.pool).await? {
                held.push(get_str(&r, "id")?);
            }
        }
        Ok(held)
    }

    /// Stores a running build's log so far (followers on other nodes read it).
    pub async fn save_build_progress(&self, id: &str, node: &str, logs: &str, truncated: bool) -> Result<()> {
        sqlx::query("UPDATE builds SET logs = $3, logs_truncated = $4 WHERE id = $1 AND lease_owner = $2 AND status = 'building'")
            .bind(id)
            .bind(node)
            .bind(without_nul(logs.to_string()))
            .bind(truncated as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores the end of a build this node holds and applies it: on success the function
    /// becomes `active` (a first build) or takes the new definition and version (an update,
    /// applied only over `base_version`); on failure the function becomes `failed` (a first
    /// build) or keeps its definition with `last_update_status: failed`. Returns the record
    /// as stored (an update that can no longer be applied is stored failed, with the reason),
    /// or None when the build is no longer this node's (deleted, superseded, or settled by a
    /// reaper after this node lost its lease): then nothing is written.
    pub async fn finish_build(&self, b: &BuildRecord, node: &str, quotas: &Quotas) -> Result<Option<BuildRecord>> {
        let mut b = b.clone();
        if b.phase == BuildPhase::Success && b.base_version > 0 {
            let mut applied = b.definition.clone();
            applied.states = FunctionStates::default();
            let mut tx = self.user_write(&b.user_id).await?;
            if !self.still_building(&mut tx, &b, node).await? {
                return Ok(None);
            }
            match self.update_function_in(&mut tx, &applied, b.base_version, quotas).await {
                Ok(true) => {
                    write_states_in(&mut tx, &b.function_id, &FunctionStates::default()).await?;
                    self.end_build_in(&mut tx, &b).await?;
                    tx.commit().await?;
                    self.forget_functions();
                    return Ok(Some(b));
                }
                Ok(false) => b.phase = BuildPhase::Failed,
                Err(e @ (StoreError::Quota(_) | StoreError::RouteOverlap | StoreError::Conflict(_))) => {
                    b.phase = BuildPhase::Failed;
                    b.reason = Some(format!("built, but the update could not be applied: {e}"));
                }
                Err(e) => return Err(e),
            }
            drop(tx);
            if b.reason.is_none() {
                b.reason = Some("built, but the function was changed meanwhile; deploy again".into());
            }
        }
        let mut tx = self.write_tx().await?;
        if !self.still_building(&mut tx, &b, node).await? {
            return Ok(None);
        }
        let states = self.states_in(&mut tx, &b.function_id).await?;
        if let Some(mut s) = states {
            let reason = b.reason.clone();
            match (b.phase == BuildPhase::Success, b.base_version == 0) {
                (true, _) => s = FunctionStates::default(),
                (false, true) => {
                    s.state = FunctionState::Failed;
                    s.state_reason = reason.clone();
                    s.last_update_status = UpdateStatus::Failed;
                    s.last_update_status_reason = reason;
                }
                (false, false) => {
                    s.last_update_status = UpdateStatus::Failed;
                    s.last_update_status_reason = reason;
                }
            }
            // A first build moves the state of the version it built only; an update's only
            // while the function still has the version it was queued over.
            let version = if b.base_version == 0 { b.function_version } else { b.base_version };
            sqlx::query("UPDATE functions SET state = $2, state_reason = $3, last_update_status = $4, last_update_status_reason = $5 WHERE id = $1 AND version = $6")
                .bind(&b.function_id)
                .bind(s.state.as_str())
                .bind(&s.state_reason)
                .bind(s.last_update_status.as_str())
                .bind(&s.last_update_status_reason)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            // The version the build built is invokable now, or failed (SPEC §13); an update
            // that failed never became a version.
            if b.base_version == 0 {
                let state = if b.phase == BuildPhase::Success { FunctionState::Active } else { FunctionState::Failed };
                self.set_version_state_in(&mut tx, &b.function_id, b.function_version, state).await?;
            }
        }
        self.end_build_in(&mut tx, &b).await?;
        // A failed update's package is no one's now (unless the function has the same bytes).
        if let Some(p) = b.definition.package.as_ref().filter(|_| b.phase == BuildPhase::Failed) {
            self.free_blob_in(&mut tx, &p.sha256).await?;
        }
        tx.commit().await?;
        self.forget_functions();
        Ok(Some(b))
    }

    /// True when the build is still `building` under this node's lease; locks the row on
    /// PostgreSQL so a reaper cannot settle it while its end is written.
    async fn still_building(&self, tx: &mut Tx, b: &BuildRecord, node: &str) -> Result<bool> {
        let lock = if self.dialect == Dialect::Postgres { " FOR UPDATE" } else { "" };
        let row = sqlx::query(&format!("SELECT id FROM builds WHERE id = $1 AND status = 'building' AND lease_owner = $2{lock}"))
            .bind(&b.id)
            .bind(node)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(row.is_some())
    }

    async fn states_in(&self, tx: &mut Tx, function_id: &str) -> Result<Option<FunctionStates>> {
        let row = sqlx::query("SELECT state, state_reason, last_update_status, last_update_status_reason FROM functions WHERE id = $1")
            .bind(function_id)
            .fetch_optional(&mut **tx)
            .await?;
        row.as_ref().map(states_from).transpose()
    }

    async fn end_build_in(&self, tx: &mut Tx, b: &BuildRecord) -> Result<()> {
        // The packed tree this build names may have been freed since it was stored or found
        // (`free_unused_tree_blobs`, under the same blob lock): then none is named, and nodes
        // without the tree build it themselves.
        let mut tree_blob = b.tree_blob.clone();
        if let Some(sha) = &b.tree_blob {
            self.lock_blob_in(tx, sha).await?;
            if !self.blob_present_in(tx, sha).await? {
                tree_blob = None;
            }
        }
        sqlx::query(
            "UPDATE builds SET status = $2, reason = $3, logs = $4, logs_truncated = $5, cached = $6, tree_key = $7, finished_at = $8,
             tree_blob = $9, lease_owner = NULL, lease_expires = NULL WHERE id = $1",
        )
        .bind(&b.id)
        .bind(b.phase.as_str())
        .bind(b.reason.clone().map(without_nul))
        .bind(without_nul(b.logs.clone()))
        .bind(b.logs_truncated as i64)
        .bind(b.cached as i64)
        .bind(&b.tree_key)
        .bind(&b.finished_at)
        .bind(&tree_blob)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Frees the packed trees (PostgreSQL's `builds.tree_blob`, ARCHITECTURE.md "Builds")
    /// that no live version runs with: the trees of versions retention removed, and packs no
    /// build row names (a node that died between storing a pack and ending its build: no node
    /// can find those) once they are older than `orphan_before`. At most `limit` a call;
    /// returns how many were freed. Each is freed in its own transaction under the blob's
    /// lock, so a build ending meanwhile either makes the tree live first (and it stays) or
    /// finds it gone (and names none).
    pub async fn free_unused_tree_blobs(&self, orphan_before: &str, limit: i64) -> Result<u64> {
        let unused = sqlx::query(&format!(
            "SELECT DISTINCT t.tree_blob AS sha, t.tree_key AS tree_key FROM builds t WHERE t.tree_blob IS NOT NULL AND t.tree_key IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM builds l WHERE l.tree_key = t.tree_key AND {LIVE_BUILD}) LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let orphans = sqlx::query(&format!(
            "SELECT b.sha256 AS sha FROM blobs b WHERE b.created_at < $1 AND NOT EXISTS (SELECT 1 FROM builds t WHERE t.tree_blob = b.sha256) AND {} LIMIT $2",
            crate::blobs::unreferenced("b.sha256")
        ))
        .bind(orphan_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut freed = 0;
        for r in &unused {
            let (sha, key) = (get_str(r, "sha")?, get_str(r, "tree_key")?);
            let mut tx = self.sweep_tx().await?;
            let gone = self.free_tree_blob_in(&mut tx, &sha, &key).await;
            freed += end_sweep_tx(tx, gone).await? as u64;
        }
        for r in &orphans {
            let sha = get_str(r, "sha")?;
            let mut tx = self.sweep_tx().await?;
            let gone = self.free_blob_where_in(&mut tx, &sha, "NOT EXISTS (SELECT 1 FROM builds t WHERE t.tree_blob = $1)").await;
            freed += end_sweep_tx(tx, gone).await? as u64;
        }
        Ok(freed)
    }

    /// The transaction of one free of the sweep, which gives way: a user's delete of a
    /// function whose build names the pack holds those rows and waits on the blob lock the
    /// free holds. Waiting at most 200 ms for a lock, under PostgreSQL's deadlock check (1 s),
    /// lets the free fail, not the delete ([`end_sweep_tx`]).
    async fn sweep_tx(&self) -> Result<Tx> {
        let mut tx = self.write_tx().await?;
        sqlx::query("SET LOCAL lock_timeout = '200ms'").execute(&mut *tx).await?;
        Ok(tx)
    }

    /// Within `tx`, for the pack `sha` of the tree `tree_key` whose naming build row may be
    /// gone (its function deleted) or no longer live: while a live version still runs with
    /// the tree, a live build of it names the pack (so other nodes still find it); otherwise
    /// the pack is removed, unless something else holds the blob (a package, a layer, a build
    /// still to run, or a live tree of another key with the same bytes), and no build row names
    /// it any more. True when it was removed.
    pub(crate) async fn free_tree_blob_in(&self, tx: &mut Tx, sha: &str, tree_key: &str) -> Result<bool> {
        self.lock_blob_in(tx, sha).await?;
        if self.tree_live_in(tx, tree_key).await? {
            self.name_pack_in(tx, sha, tree_key).await?;
            return Ok(false);
        }
        let unheld = format!("NOT EXISTS (SELECT 1 FROM builds t JOIN builds l ON l.tree_key = t.tree_key WHERE t.tree_blob = $1 AND {LIVE_BUILD})");
        if !self.free_blob_where_in(tx, sha, &unheld).await? {
            return Ok(false);
        }
        sqlx::query("UPDATE builds SET tree_blob = NULL WHERE tree_blob = $1").bind(sha).execute(&mut **tx).await?;
        Ok(true)
    }

    /// Whether a live version runs with the tree `tree_key` ([`LIVE_BUILD`]), as `tx` sees it.
    async fn tree_live_in(&self, tx: &mut Tx, tree_key: &str) -> Result<bool> {
        let row = sqlx::query(&format!("SELECT 1 AS live FROM builds l WHERE l.tree_key = $1 AND {LIVE_BUILD} LIMIT 1")).bind(tree_key).fetch_optional(&mut **tx).await?;
        Ok(row.is_some())
    }

    /// Within `tx`, holding the blob lock of `sha`: makes a live build of `tree_key` name the
    /// pack `sha` unless a build of that tree names it already. The newest live build is
    /// chosen; one deleted meanwhile (another user's delete, not committed when chosen) is
    /// skipped by the UPDATE, so the choice is made again (a few times at most).
    async fn name_pack_in(&self, tx: &mut Tx, sha: &str, tree_key: &str) -> Result<()> {
        for _ in 0..3 {
            sqlx::query(&format!(
                "UPDATE builds SET tree_blob = $1 WHERE id IN (SELECT l.id FROM builds l WHERE l.tree_key = $2 AND {LIVE_BUILD} ORDER BY l.id DESC LIMIT 1)
                   AND NOT EXISTS (SELECT 1 FROM builds n WHERE n.tree_key = $2 AND n.tree_blob = $1)"
            ))
            .bind(sha)
            .bind(tree_key)
            .execute(&mut **tx)
            .await?;
            let named = sqlx::query("SELECT 1 AS named FROM builds WHERE tree_key = $1 AND tree_blob = $2 LIMIT 1").bind(tree_key).bind(sha).fetch_optional(&mut **tx).await?;
            if named.is_some() || !self.tree_live_in(tx, tree_key).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Names the pack `sha` of the tree `tree_key` (stored by [`Store::put_blob`]) on a live
    /// build of that tree when none names one: a build that was a cache hit inside the
    /// request packed nothing, and a tree whose pack was freed with the versions that ran
    /// with it is packed again by the node that has it (`Engine::share_cached_tree`). Nothing
    /// is named when the pack was freed meanwhile.
    pub async fn name_tree_pack(&self, tree_key: &str, sha: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        self.lock_blob_in(&mut tx, sha).await?;
        if self.blob_present_in(&mut tx, sha).await? {
            self.name_pack_in(&mut tx, sha, tree_key).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The blob a dependency tree was packed into (by the node that built it), if any.
    pub async fn tree_blob(&self, tree_key: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT tree_blob FROM builds WHERE tree_key = $1 AND tree_blob IS NOT NULL ORDER BY id DESC LIMIT 1").bind(tree_key).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| get_opt_str(&r, "tree_blob")).transpose()?.flatten())
    }

    /// Settles builds whose node stopped renewing its lease: back to the queue while they
    /// have attempts left, else failed with a reason (and the function's state with it).
    /// Returns (requeued, failed).
    pub async fn expire_build_leases(&self, now: &str) -> Result<(u64, u64)> {
        self.settle_builds("lease_expires < $1", now).await
    }

    /// At start on SQLite (one node): every build left `building` was this process's.
    pub async fn recover_builds(&self, now: &str) -> Result<(u64, u64)> {
        self.settle_builds("$1 = $1", now).await
    }

    async fn settle_builds(&self, cond: &str, now: &str) -> Result<(u64, u64)> {
        let requeued =
            sqlx::query(&format!("UPDATE builds SET status = 'queued', lease_owner = NULL, lease_expires = NULL WHERE status = 'building' AND {cond} AND attempts < max_attempts"))
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected();
        let rows = sqlx::query(&format!("SELECT * FROM builds WHERE status = 'building' AND {cond}")).bind(now).fetch_all(&self.pool).await?;
        let mut failed = 0;
        for row in &rows {
            let mut b = build_from(row)?;
            let owner = b.lease_owner.clone().unwrap_or_default();
            let logs = std::mem::take(&mut b.logs);
            b.finish(Err(gave_up_reason(b.attempts)), logs, b.logs_truncated, false);
            if self.finish_build(&b, &owner, &Quotas::default()).await?.is_some() {
                failed += 1;
            }
        }
        if requeued > 0 {
            self.notify_builds().await?;
        }
        Ok((requeued, failed))
    }

    /// Wakes build dispatchers on other nodes (the queue channel's NOTIFY, PostgreSQL).
    async fn notify_builds(&self) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_notify('voltrun_queue', 'build')").execute(&self.pool).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_store(tag: &str) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("voltrun-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.join("t.db").display())).await.unwrap();
        (store, dir)
    }

    async fn user(store: &Store, id: &str) {
        sqlx::query("INSERT INTO users (id, email, name, password_hash, created_at) VALUES ($1, $2, 'n', 'h', 't')")
            .bind(id)
            .bind(format!("{id}@example.com"))
            .execute(&store.pool)
            .await
            .unwrap();
    }

    fn function(user: &str, name: &str) -> Function {
        let n: voltrun_core::NewFunction = serde_json::from_value(serde_json::json!({"name": name, "runtime": "python", "code": "def handler(e, c):\n    return 1"})).unwrap();
        n.into_function(voltrun_core::id::new_id("fn_"), user.into(), voltrun_core::time::now()).unwrap()
    }

    /// A first build: the function is pending with its build queued in one write, the claim
    /// holds it under the node's lease, and its end makes the function active (or failed,
    /// with the reason in both state fields).
    #[tokio::test]
    async fn a_first_build_moves_the_function_from_pending() {
        let (store, dir) = temp_store("builds-first").await;
        user(&store, "u1").await;
        for ok in [true, false] {
            let mut f = function("u1", if ok { "good" } else { "bad" });
            f.states = FunctionStates::first_build();
            let b = BuildRecord::queued(&f, 0, &voltrun_core::time::now());
            store.insert_function_with_build(&f, &Quotas::default(), &b).await.unwrap();
            let got = store.get_function("u1", &f.id).await.unwrap().unwrap();
            assert_eq!((got.states.state, got.states.last_update_status), (FunctionState::Pending, UpdateStatus::InProgress));
            let mut claimed = store.claim_build("node_a", &voltrun_core::time::now(), &voltrun_core::time::in_seconds(30), 2).await.unwrap().expect("queued");
            assert_eq!((claimed.id.clone(), claimed.phase, claimed.attempts), (b.id.clone(), BuildPhase::Building, 1));
            assert_eq!(claimed.to_api().status, BuildStatus::Building);
            assert!(store.finish_build(&claimed, "node_b", &Quotas::default()).await.unwrap().is_none(), "another node's build is not ours to end");
            let result = if ok { Ok("tree1".to_string()) } else { Err("No matching distribution found for nopkg".to_string()) };
            claimed.finish(result, "pip says".into(), false, false);
            store.finish_build(&claimed, "node_a", &Quotas::default()).await.unwrap().expect("ours");
            let got = store.get_function("u1", &f.id).await.unwrap().unwrap();
            let latest = store.latest_build("u1", &f.id).await.unwrap().unwrap().to_api();
            if ok {
                assert_eq!(got.states, FunctionStates::default());
                assert_eq!((latest.status, latest.logs.as_str()), (BuildStatus::Success, "pip says"));
                assert_eq!(store.built_tree(&f.id, 1).await.unwrap().as_deref(), Some("tree1"));
            } else {
                assert_eq!((got.states.state, got.states.last_update_status), (FunctionState::Failed, UpdateStatus::Failed));
                assert!(got.states.state_reason.as_deref().unwrap().contains("nopkg"));
                assert_eq!(latest.status, BuildStatus::Failed);
            }
            assert!(latest.finished_at.is_some() && latest.duration_ms.is_some());
            assert!(store.latest_build("u2", &f.id).await.unwrap().is_none(), "another user's build is not found");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An update's build: the stored definition keeps serving while it runs; success applies
    /// the new definition and version, failure applies nothing and says why.
    #[tokio::test]
    async fn an_update_applies_only_when_its_build_succeeds() {
        let (store, dir) = temp_store("builds-update").await;
        user(&store, "u1").await;
        let f = function("u1", "upd");
        store.insert_function(&f, &Quotas::default()).await.unwrap();
        for ok in [false, true] {
            let current = store.get_function("u1", &f.id).await.unwrap().unwrap();
            let mut next = current.clone();
            next.code = format!("def handler(e, c):\n    return {}", if ok { 2 } else { 3 });
            next.version += 1;
            let b = BuildRecord::queued(&next, current.version, &voltrun_core::time::now());
            assert!(store.queue_update_build(&b).await.unwrap());
            assert!(!store.queue_update_build(&BuildRecord::queued(&next, current.version, "t")).await.unwrap(), "one update build at a time");
            let serving = store.get_function("u1", &f.id).await.unwrap().unwrap();
            assert_eq!((serving.version, serving.code.clone(), serving.states.last_update_status), (current.version, current.code.clone(), UpdateStatus::InProgress));
            let mut claimed = store.claim_build("node_a", &voltrun_core::time::now(), &voltrun_core::time::in_seconds(30), 2).await.unwrap().unwrap();
            claimed.finish(if ok { Ok("t".into()) } else { Err("broken requirement".into()) }, String::new(), false, false);
            store.finish_build(&claimed, "node_a", &Quotas::default()).await.unwrap().unwrap();
            let after = store.get_function("u1", &f.id).await.unwrap().unwrap();
            assert_eq!(after.states.state, FunctionState::Active);
            if ok {
                assert_eq!((after.version, after.code.as_str(), after.states.last_update_status), (current.version + 1, next.code.as_str(), UpdateStatus::Successful));
            } else {
                assert_eq!((after.version, after.code.as_str(), after.states.last_update_status), (current.version, current.code.as_str(), UpdateStatus::Failed));
                assert_eq!(after.states.last_update_status_reason.as_deref(), Some("broken requirement"));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A build whose node died goes back to the queue, and after its last attempt fails with
    /// a reason (and the function with it): never stuck `building`. A user's running builds
    /// hold back their next ones; a deleted function takes its builds with it.
    #[tokio::test]
    async fn interrupted_builds_are_requeued_then_failed_and_users_are_bounded() {
        let (store, dir) = temp_store("builds-settle").await;
        user(&store, "u1").await;
        let mut ids = Vec::new();
        for name in ["s1", "s2", "s3"] {
            let mut f = function("u1", name);
            f.states = FunctionStates::first_build();
            let b = BuildRecord::queued(&f, 0, &voltrun_core::time::now());
            store.insert_function_with_build(&f, &Quotas::default(), &b).await.unwrap();
            ids.push((f.id.clone(), b.id.clone()));
        }
        let claim = || async { store.claim_build("node_a", &voltrun_core::time::now(), &voltrun_core::time::in_seconds(30), 2).await };
        let running = [claim().await.unwrap().unwrap().id, claim().await.unwrap().unwrap().id];
        assert!(claim().await.unwrap().is_none(), "the user's third build waits for one of the two");
        assert_eq!(store.heartbeat_builds("node_a", &voltrun_core::time::in_seconds(30), &running).await.unwrap().len(), 2);
        // The process died: at start every building row is settled.
        assert_eq!(store.recover_builds(&voltrun_core::time::now()).await.unwrap(), (2, 0));
        let first = &ids[0];
        for attempt in 2..=voltrun_core::build::BUILD_MAX_ATTEMPTS {
            // Claims go oldest first: the first build comes back each time.
            let b = claim().await.unwrap().unwrap();
            assert_eq!((b.id.as_str(), b.attempts), (first.1.as_str(), attempt));
            let (requeued, failed) = store.recover_builds(&voltrun_core::time::now()).await.unwrap();
            if attempt < voltrun_core::build::BUILD_MAX_ATTEMPTS {
                assert_eq!((requeued, failed), (1, 0));
            } else {
                assert_eq!((requeued, failed), (0, 1));
            }
        }
        let f = store.get_function("u1", &first.0).await.unwrap().unwrap();
        assert_eq!(f.states.state, FunctionState::Failed);
        assert!(f.states.state_reason.unwrap().contains("interrupted 3 times"));
        // Deleting a function deletes its builds.
        assert!(store.delete_function("u1", &ids[1].0).await.unwrap());
        assert!(store.build_by_id(&ids[1].1).await.unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn logs_are_capped_on_a_character_boundary() {
        let (short, cut) = cap_logs("abc".into());
        assert_eq!((short.as_str(), cut), ("abc", false));
        let long = "é".repeat(MAX_LOG_BYTES);
        let (capped, cut) = cap_logs(long);
        assert!(cut && capped.len() <= MAX_LOG_BYTES && capped.len() >= MAX_LOG_BYTES - 1);
    }
}

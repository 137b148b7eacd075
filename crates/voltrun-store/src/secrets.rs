//! Server-wide secrets shared by every node on one database (the `server_secrets` table), the
//! master key's check value kept there, and users' secrets (the `secrets` table, SPEC §12),
//! sealed and opened through the master key ([`crate::vault`]) and nothing else.

use zeroize::Zeroizing;

use crate::vault::{key_id_of, Context, Keyring, MasterKey, SealError};
use crate::{conflict_or, get_str, Result, Store, StoreError};

/// The `server_secrets` row holding the key check value.
const KEY_CHECK: &str = "master_key_check";
/// During a rotation: the check value of the new key, stored by the first node that starts
/// with a previous key, so that every later node must hold that same new key.
const KEY_CHECK_NEXT: &str = "master_key_check.next";
/// The ids of master keys rotated away from, comma-separated: never accepted again as the
/// current key (a node started with the keys swapped would seal under the retired one).
const RETIRED_KEYS: &str = "master_key_retired";

/// A secret as the API shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
}

/// What deleting a secret did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretDelete {
    Deleted,
    /// The user has no secret of that name.
    NotFound,
    /// These functions of the user (names) still name it: nothing was deleted.
    InUse(Vec<String>),
}

/// The opened secrets of one run: variable names and values, wiped when dropped, and the
/// revision they were read at. `Debug` shows names only.
pub struct SecretEnv {
    /// (name, value), by name.
    pub vars: Vec<(String, Zeroizing<String>)>,
    /// Changes whenever any of these secrets is written (compare with
    /// [`Store::secrets_revision`]).
    pub revision: String,
}

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.vars.iter().map(|(k, _)| k.as_str()).collect();
        write!(f, "SecretEnv {{ names: {names:?}, values: <redacted>, revision: {:?} }}", self.revision)
    }
}

/// `$first, $first+1, …` for `n` bound values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The LIKE pattern matching a JSON list (functions.secrets) that holds `name`: `_` is a LIKE
/// wildcard and a name character, so it is escaped (names hold nothing else LIKE reads).
fn listed(name: &str) -> String {
    format!("%\"{}\"%", name.replace('_', "\\_"))
}

impl Store {
    /// The secret called `name`: `candidate` if none was stored yet, else the stored one.
    /// Concurrent first starts agree: the insert does nothing when another node won, and
    /// every node reads back the winner.
    pub async fn shared_secret(&self, name: &str, candidate: &str, now: &str) -> Result<String> {
        sqlx::query("INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(candidate)
            .bind(now)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1").bind(name).fetch_one(&self.pool).await?;
        get_str(&row, "value")
    }

    /// Gives the store its master key (and, during a rotation, the previous one), after
    /// checking it is the database's: the first node (of an empty database) stores the key
    /// check value, every later start opens it. A check value sealed under `previous` is
    /// accepted too (a rotation has not finished). [`StoreError::WrongMasterKey`] when it was
    /// sealed under neither.
    pub async fn unlock(mut self, key: MasterKey, previous: Option<MasterKey>) -> Result<Store> {
        let stored = self.shared_secret(KEY_CHECK, &key.key_check(), &voltrun_core::time::now()).await?;
        match key.verify_check(&stored) {
            Ok(()) => {}
            Err(SealError::WrongKey { .. }) if previous.as_ref().is_some_and(|p| p.verify_check(&stored).is_ok()) => {
                if self.retired_key_ids().await?.iter().any(|id| id == key.id()) {
                    return Err(StoreError::RetiredMasterKey { ours: key.id().to_string() });
                }
                // Every node of one rotation must hold the same new key: the first stores its
                // check value, the others must open it.
                let next = self.shared_secret(KEY_CHECK_NEXT, &key.key_check(), &voltrun_core::time::now()).await?;
                match key.verify_check(&next) {
                    Ok(()) => {}
                    Err(SealError::WrongKey { sealed_with, ours }) => return Err(StoreError::WrongMasterKey { ours, sealed_with }),
                    Err(source) => return Err(StoreError::Unsealable { what: "next master key check value".into(), source }),
                }
                tracing::info!(current = key.id(), previous = ?previous.as_ref().map(MasterKey::id), "the database's values are still sealed under the previous master key (a rotation has not finished)");
            }
            Err(SealError::WrongKey { sealed_with, ours }) => return Err(StoreError::WrongMasterKey { ours, sealed_with }),
            Err(source) => return Err(StoreError::Unsealable { what: "master key check value".into(), source }),
        }
        self.vault = Some(std::sync::Arc::new(Keyring::new(key, previous)));
        Ok(self)
    }

    /// The id (not the key) of the master key, once unlocked.
    pub fn master_key_id(&self) -> Option<&str> {
        self.vault.as_deref().map(|k| k.current().id())
    }

    pub(crate) fn vault(&self) -> Result<&Keyring> {
        self.vault.as_deref().ok_or(StoreError::NoMasterKey)
    }

    /// A server-wide secret kept sealed in `server_secrets` under `<name>.sealed`: the stored
    /// one, or `candidate()` stored when there is none yet (concurrent first starts agree, as
    /// in [`Store::shared_secret`]). A value an older version kept in plain text under `name`
    /// is adopted (sealed, then the plain row deleted), so nothing that depends on it changes.
    pub async fn shared_sealed_secret(&self, name: &str, candidate: impl FnOnce() -> Zeroizing<String>) -> Result<Zeroizing<String>> {
        let key = self.vault()?;
        let sealed_name = format!("{name}.sealed");
        let ctx = Context::Server { name };
        let legacy = sqlx::query("SELECT value FROM server_secrets WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        let value = match &legacy {
            Some(row) => Zeroizing::new(get_str(row, "value")?),
            None => candidate(),
        };
        let stored = self.shared_secret(&sealed_name, &key.seal(ctx, value.as_bytes()), &voltrun_core::time::now()).await?;
        if legacy.is_some() {
            sqlx::query("DELETE FROM server_secrets WHERE name = $1").bind(name).execute(&self.pool).await?;
        }
        let opened = key.open(ctx, &stored).map_err(|source| StoreError::Unsealable { what: format!("server secret {name}"), source })?;
        let text = String::from_utf8(opened.to_vec()).map_err(|_| StoreError::Corrupt(format!("server secret {name} is not UTF-8")))?;
        Ok(Zeroizing::new(text))
    }

    /// Adds a user's secret, sealed, unless they hold `limit` already (0: no limit):
    /// `Conflict("name")` when the name is taken, [`StoreError::Quota`] past the limit.
    pub async fn insert_secret(&self, user_id: &str, name: &str, value: &str, now: &str, limit: u64) -> Result<SecretMeta> {
        let sealed = self.vault()?.seal(Context::Secret { user_id, name }, value.as_bytes());
        let mut tx = self.user_write(user_id).await?;
        let r = sqlx::query(
            "INSERT INTO secrets (user_id, name, value, revision, created_at, updated_at)
             SELECT $1, $2, $3, $4, $5, $5 WHERE (SELECT COUNT(*) FROM secrets WHERE user_id = $1) < $6",
        )
        .bind(user_id)
        .bind(name)
        .bind(&sealed)
        .bind(voltrun_core::id::new_id("rev_"))
        .bind(now)
        .bind(voltrun_core::Quotas::bound(limit))
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_or(e, &["name"]))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Quota(format!("this account has {limit} secrets, the most its quota allows; delete one to create another")));
        }
        tx.commit().await?;
        Ok(SecretMeta { name: name.into(), created_at: now.into(), updated_at: now.into() })
    }

    /// Replaces a user's secret's value (sealed afresh, a new revision); None when they have
    /// no secret of that name.
    pub async fn update_secret(&self, user_id: &str, name: &str, value: &str, now: &str) -> Result<Option<SecretMeta>> {
        let sealed = self.vault()?.seal(Context::Secret { user_id, name }, value.as_bytes());
        let r = sqlx::query("UPDATE secrets SET value = $3, revision = $4, updated_at = $5 WHERE user_id = $1 AND name = $2")
            .bind(user_id)
            .bind(name)
            .bind(&sealed)
            .bind(voltrun_core::id::new_id("rev_"))
            .bind(now)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        self.get_secret(user_id, name).await
    }

    /// One of the user's secrets (never its value).
    pub async fn get_secret(&self, user_id: &str, name: &str) -> Result<Option<SecretMeta>> {
        let row = sqlx::query("SELECT name, created_at, updated_at FROM secrets WHERE user_id = $1 AND name = $2").bind(user_id).bind(name).fetch_optional(&self.pool).await?;
        row.map(|r| Ok(SecretMeta { name: get_str(&r, "name")?, created_at: get_str(&r, "created_at")?, updated_at: get_str(&r, "updated_at")? })).transpose()
    }

    /// Every secret of the user, by name (never their values).
    pub async fn list_secrets(&self, user_id: &str) -> Result<Vec<SecretMeta>> {
        let rows = sqlx::query("SELECT name, created_at, updated_at FROM secrets WHERE user_id = $1 ORDER BY name").bind(user_id).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(SecretMeta { name: get_str(r, "name")?, created_at: get_str(r, "created_at")?, updated_at: get_str(r, "updated_at")? })).collect()
    }

    /// Deletes a user's secret unless one of their functions names it, in its current
    /// definition or in a version still kept (`name:3` runs with it). The check and the
    /// delete share a transaction holding the user's row (PostgreSQL; SQLite has one writer).
    pub async fn delete_secret(&self, user_id: &str, name: &str) -> Result<SecretDelete> {
        let mut tx = self.user_write(user_id).await?;
        let users = sqlx::query(
            "SELECT name FROM functions f WHERE user_id = $1 AND (secrets LIKE $2 ESCAPE '\\'
               OR EXISTS (SELECT 1 FROM function_versions v WHERE v.function_id = f.id AND v.secrets LIKE $2 ESCAPE '\\'))
             ORDER BY name",
        )
        .bind(user_id)
        .bind(listed(name))
        .fetch_all(&mut *tx)
        .await?;
        let using: Vec<String> = users.iter().map(|r| get_str(r, "name")).collect::<Result<_>>()?;
        if !using.is_empty() {
            return Ok(SecretDelete::InUse(using));
        }
        let r = sqlx::query("DELETE FROM secrets WHERE user_id = $1 AND name = $2").bind(user_id).bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(if r.rows_affected() == 0 { SecretDelete::NotFound } else { SecretDelete::Deleted })
    }

    /// Ids of the user's functions that name the secret (their warm instances are retired
    /// when its value changes).
    pub async fn functions_using_secret(&self, user_id: &str, name: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM functions f WHERE user_id = $1 AND (secrets LIKE $2 ESCAPE '\\'
               OR EXISTS (SELECT 1 FROM function_versions v WHERE v.function_id = f.id AND v.secrets LIKE $2 ESCAPE '\\'))",
        )
        .bind(user_id)
        .bind(listed(name))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| get_str(r, "id")).collect()
    }

    /// Which of `names` the user has no secret of (a function naming one is refused).
    pub async fn missing_secrets(&self, user_id: &str, names: &[String]) -> Result<Vec<String>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT name FROM secrets WHERE user_id = $1 AND name IN ({})", placeholders(2, names.len()));
        let mut q = sqlx::query(&sql).bind(user_id);
        for n in names {
            q = q.bind(n);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let have: Vec<String> = rows.iter().map(|r| get_str(r, "name")).collect::<Result<_>>()?;
        Ok(names.iter().filter(|n| !have.contains(n)).cloned().collect())
    }

    /// The current revision of the user's secrets `names` (as in [`SecretEnv::revision`]).
    pub async fn secrets_revision(&self, user_id: &str, names: &[String]) -> Result<String> {
        let rows = self.secret_rows(user_id, names, false).await?;
        Ok(revision_of(&rows))
    }

    /// Opens the user's secrets `names` for a run. A name the user no longer has (deleted
    /// between a function's save and its run: a narrow race) is left out with a warning.
    pub async fn open_secrets(&self, user_id: &str, names: &[String]) -> Result<SecretEnv> {
        let key = self.vault()?;
        let rows = self.secret_rows(user_id, names, true).await?;
        let mut vars = Vec::with_capacity(rows.len());
        for (name, _, sealed) in &rows {
            let opened = key.open(Context::Secret { user_id, name }, sealed).map_err(|source| StoreError::Unsealable { what: format!("secret {name}"), source })?;
            let text = String::from_utf8(opened.to_vec()).map_err(|_| StoreError::Corrupt(format!("secret {name} is not UTF-8")))?;
            vars.push((name.clone(), Zeroizing::new(text)));
        }
        if vars.len() < names.len() {
            tracing::warn!(user_id, wanted = names.len(), found = vars.len(), "a function names a secret that no longer exists");
        }
        Ok(SecretEnv { revision: revision_of(&rows), vars })
    }

    /// (name, revision, sealed value or "") of the user's secrets among `names`, by name.
    async fn secret_rows(&self, user_id: &str, names: &[String], with_values: bool) -> Result<Vec<(String, String, String)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let cols = if with_values { "name, revision, value" } else { "name, revision, CAST('' AS TEXT) AS value" };
        let sql = format!("SELECT {cols} FROM secrets WHERE user_id = $1 AND name IN ({}) ORDER BY name", placeholders(2, names.len()));
        let mut q = sqlx::query(&sql).bind(user_id);
        for n in names {
            q = q.bind(n);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((get_str(r, "name")?, get_str(r, "revision")?, get_str(r, "value")?))).collect()
    }
}

/// What [`Store::rotate_master_key`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Users' secrets re-sealed under the new key.
    pub secrets: u64,
    /// Sealed `server_secrets` rows (the JWT key) re-sealed.
    pub server_values: u64,
    /// AWS access keys' secrets (issue 17) re-sealed.
    pub aws_keys: u64,
    /// Rows already under the new key (sealed since by a node that has it), left as they were.
    pub already_new: u64,
}

impl Store {
    /// Re-seals every value sealed under the previous key with the current one, online: a
    /// batch of `batch` rows at a time (keyset order), each row in a statement of its own that
    /// only replaces the envelope it read, so a concurrent `PUT` wins and nothing is lost. The
    /// key check value is replaced last, and only when no value is left under the old key.
    pub async fn rotate_master_key(&self, batch: i64) -> Result<Rotation> {
        let keys = self.vault()?;
        if keys.previous().is_none() {
            return Err(StoreError::Rotation("a rotation needs the previous master key as well as the new one".into()));
        }
        let new_id = keys.current().id().to_string();
        let mut done = Rotation::default();
        let (mut user, mut name) = (String::new(), String::new());
        loop {
            let rows = sqlx::query("SELECT user_id, name, value FROM secrets WHERE user_id > $1 OR (user_id = $1 AND name > $2) ORDER BY user_id, name LIMIT $3")
                .bind(&user)
                .bind(&name)
                .bind(batch.max(1))
                .fetch_all(&self.pool)
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                (user, name) = (get_str(row, "user_id")?, get_str(row, "name")?);
                let sealed = get_str(row, "value")?;
                if key_id_of(&sealed) == Some(new_id.as_str()) {
                    done.already_new += 1;
                    continue;
                }
                let ctx = Context::Secret { user_id: &user, name: &name };
                let opened = keys.open(ctx, &sealed).map_err(|source| StoreError::Unsealable { what: format!("secret {name}"), source })?;
                let r = sqlx::query("UPDATE secrets SET value = $3 WHERE user_id = $1 AND name = $2 AND value = $4")
                    .bind(&user)
                    .bind(&name)
                    .bind(keys.seal(ctx, &opened))
                    .bind(&sealed)
                    .execute(&self.pool)
                    .await?;
                if r.rows_affected() == 1 {
                    done.secrets += 1;
                } else {
                    // Written meanwhile (sealed afresh) or deleted: the recount below tells.
                    done.already_new += 1;
                }
            }
        }
        let rows = sqlx::query("SELECT name, value FROM server_secrets WHERE name LIKE '%.sealed'").fetch_all(&self.pool).await?;
        for row in &rows {
            let (row_name, sealed) = (get_str(row, "name")?, get_str(row, "value")?);
            if key_id_of(&sealed) == Some(new_id.as_str()) {
                continue;
            }
            let ctx = Context::Server { name: row_name.trim_end_matches(".sealed") };
            let opened = keys.open(ctx, &sealed).map_err(|source| StoreError::Unsealable { what: format!("server secret {row_name}"), source })?;
            let r = sqlx::query("UPDATE server_secrets SET value = $2 WHERE name = $1 AND value = $3")
                .bind(&row_name)
                .bind(keys.seal(ctx, &opened))
                .bind(&sealed)
                .execute(&self.pool)
                .await?;
            done.server_values += r.rows_affected();
        }
        done.aws_keys = self.rotate_aws_keys().await?;
        let prefix = format!("v1.{new_id}.%");
        let left = sqlx::query("SELECT COUNT(*) AS n FROM secrets WHERE value NOT LIKE $1").bind(&prefix).fetch_one(&self.pool).await?;
        let left = crate::get_i64(&left, "n")?;
        if left > 0 {
            return Err(StoreError::Rotation(format!(
                "{left} secrets are still sealed under the previous key (written meanwhile by a node that does not have the new key?): give every node the new key, then run the rotation again; the key check value was not changed"
            )));
        }
        // The last step, only if no value was sealed under the old key since the recount (a
        // node without the new key still writing): one statement, so nothing slips between.
        let r = sqlx::query("UPDATE server_secrets SET value = $2 WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM secrets WHERE value NOT LIKE $3)")
            .bind(KEY_CHECK)
            .bind(keys.current().key_check())
            .bind(&prefix)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Rotation(
                "a secret was written under the previous key while the rotation ran (a node without the new key?): give every node the new key, then run the rotation again; the key check value was not changed".into(),
            ));
        }
        let previous_id = keys.previous().map(|p| p.id().to_string()).unwrap_or_default();
        let mut retired = self.retired_key_ids().await?;
        if !retired.contains(&previous_id) {
            retired.push(previous_id);
        }
        let now = voltrun_core::time::now();
        sqlx::query("INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
            .bind(RETIRED_KEYS)
            .bind(retired.join(","))
            .bind(&now)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM server_secrets WHERE name = $1").bind(KEY_CHECK_NEXT).execute(&self.pool).await?;
        Ok(done)
    }

    /// The ids of the master keys earlier rotations retired.
    async fn retired_key_ids(&self) -> Result<Vec<String>> {
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1").bind(RETIRED_KEYS).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => get_str(&r, "value")?.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
            None => Vec::new(),
        })
    }
}

/// One string that changes when any row's revision does (or a row appears or goes).
fn revision_of(rows: &[(String, String, String)]) -> String {
    rows.iter().map(|(n, r, _)| format!("{n}={r}")).collect::<Vec<_>>().join(",")
}

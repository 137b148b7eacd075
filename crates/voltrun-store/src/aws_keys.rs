//! AWS-style access keys (issue 17): an access key id in the clear (unique) and the secret
//! access key sealed under the master key, because SigV4 verification recomputes the
//! signature with the secret itself. Rows live in `api_keys` beside the bearer keys (type
//! `aws`), so listing, quotas and revocation are the same for both kinds.

use zeroize::Zeroizing;

use crate::vault::{key_id_of, Context};
use crate::{get_opt_str, get_str, ApiKey, Result, Store, StoreError};

/// Opened AWS keys by access key id (SQLite only, see `Store::aws_key_cache`); entries are
/// removed when their key is revoked, and `last_used_at` follows the touches.
pub(crate) type AwsKeyCache = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, AwsKeyOwner>>>;

/// The owner of an AWS access key and its opened secret, for one signature check.
#[derive(Clone)]
pub struct AwsKeyOwner {
    /// The `api_keys` row's id (`key_…`).
    pub key_id: String,
    pub user_id: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    /// The secret access key, opened; wiped when dropped.
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for AwsKeyOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AwsKeyOwner(key {}, user {}, secret redacted)", self.key_id, self.user_id)
    }
}

impl Store {
    /// Stores a new AWS access key (the secret sealed under the master key, bound to the user
    /// and the access key id) unless the user has `limit` keys of any kind already (0:
    /// unlimited), then [`StoreError::Quota`]; `Conflict` if the access key id exists.
    pub async fn insert_aws_key(&self, user_id: &str, key: &ApiKey, access_key_id: &str, secret: &str, limit: u64) -> Result<()> {
        let sealed = self.vault()?.seal(Context::AwsKey { user_id, access_key_id }, secret.as_bytes());
        let mut tx = self.user_write(user_id).await?;
        let r = sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at, expires_at, key_type, access_key_id, secret_sealed)
             SELECT $1, $2, $3, $4, $5, $6, $7, 'aws', $9, $10
             WHERE (SELECT COUNT(*) FROM api_keys WHERE user_id = $2) < $8",
        )
        .bind(&key.id)
        .bind(user_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(format!("aws:{access_key_id}"))
        .bind(&key.created_at)
        .bind(&key.expires_at)
        .bind(voltrun_core::Quotas::bound(limit))
        .bind(access_key_id)
        .bind(&sealed)
        .execute(&mut *tx)
        .await
        .map_err(|e| crate::conflict_or(e, &["access_key_id", "key_hash"]))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Quota(format!("this account has {limit} API keys, the most its quota allows; revoke one to create another")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// The owner and opened secret of the AWS access key `access_key_id`; `None` when there
    /// is no such key (never created, or revoked). A row that does not open (moved, altered,
    /// or sealed under a key this node lacks) is an error, not a missing key.
    pub async fn aws_key_owner(&self, access_key_id: &str) -> Result<Option<AwsKeyOwner>> {
        if let Some(cache) = &self.aws_key_cache {
            if let Some(hit) = cache.lock().expect("aws key cache lock").get(access_key_id) {
                return Ok(Some(hit.clone()));
            }
        }
        let owner = self.read_aws_key_owner(access_key_id).await?;
        if let (Some(cache), Some(o)) = (&self.aws_key_cache, &owner) {
            cache.lock().expect("aws key cache lock").insert(access_key_id.to_string(), o.clone());
        }
        Ok(owner)
    }

    /// Forgets cached AWS keys: all of them, or those of the `api_keys` row `key_id` (a
    /// revocation: the key must stop at once).
    pub(crate) fn forget_aws_keys(&self, key_id: Option<&str>) {
        if let Some(cache) = &self.aws_key_cache {
            cache.lock().expect("aws key cache lock").retain(|_, o| key_id.is_some_and(|k| o.key_id != k));
        }
    }

    /// Keeps a cached key's `last_used_at` in step with the row (else every use would touch).
    pub(crate) fn note_aws_key_touch(&self, key_id: &str, now: &str) {
        if let Some(cache) = &self.aws_key_cache {
            for o in cache.lock().expect("aws key cache lock").values_mut().filter(|o| o.key_id == key_id) {
                o.last_used_at = Some(now.to_string());
            }
        }
    }

    async fn read_aws_key_owner(&self, access_key_id: &str) -> Result<Option<AwsKeyOwner>> {
        let row = sqlx::query("SELECT id, user_id, expires_at, last_used_at, secret_sealed FROM api_keys WHERE access_key_id = $1 AND key_type = 'aws'")
            .bind(access_key_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id = get_str(&row, "user_id")?;
        let sealed = get_opt_str(&row, "secret_sealed")?.ok_or_else(|| StoreError::Invariant(format!("AWS key {access_key_id} has no sealed secret")))?;
        let opened = self
            .vault()?
            .open(Context::AwsKey { user_id: &user_id, access_key_id }, &sealed)
            .map_err(|source| StoreError::Unsealable { what: format!("AWS key {access_key_id}"), source })?;
        let secret = Zeroizing::new(String::from_utf8(opened.to_vec()).map_err(|_| StoreError::Invariant(format!("AWS key {access_key_id}: the secret is not UTF-8")))?);
        Ok(Some(AwsKeyOwner { key_id: get_str(&row, "id")?, user_id, expires_at: get_opt_str(&row, "expires_at")?, last_used_at: get_opt_str(&row, "last_used_at")?, secret }))
    }

    /// Re-seals under the current key every AWS key secret sealed under the previous one (part
    /// of [`Store::rotate_master_key`]); returns how many rows were re-sealed. Each row's
    /// update only replaces the envelope it read.
    pub(crate) async fn rotate_aws_keys(&self) -> Result<u64> {
        let keys = self.vault()?;
        let new_id = keys.current().id().to_string();
        let rows = sqlx::query("SELECT user_id, access_key_id, secret_sealed FROM api_keys WHERE key_type = 'aws'").fetch_all(&self.pool).await?;
        let mut done = 0;
        for row in &rows {
            let (user_id, akid) = (get_str(row, "user_id")?, get_str(row, "access_key_id")?);
            let Some(sealed) = get_opt_str(row, "secret_sealed")? else { continue };
            if key_id_of(&sealed) == Some(new_id.as_str()) {
                continue;
            }
            let ctx = Context::AwsKey { user_id: &user_id, access_key_id: &akid };
            let opened = keys.open(ctx, &sealed).map_err(|source| StoreError::Unsealable { what: format!("AWS key {akid}"), source })?;
            let r = sqlx::query("UPDATE api_keys SET secret_sealed = $2 WHERE access_key_id = $1 AND secret_sealed = $3")
                .bind(&akid)
                .bind(keys.seal(ctx, &opened))
                .bind(&sealed)
                .execute(&self.pool)
                .await?;
            done += r.rows_affected();
        }
        Ok(done)
    }
}

impl Store {
    /// Bytes of code a user's functions hold (the code quota's measure, less layers): the
    /// Lambda API's `AccountUsage.TotalCodeSize`.
    pub async fn function_code_bytes(&self, user_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT CAST(COALESCE(SUM(code_bytes), 0) AS BIGINT) AS n FROM functions WHERE user_id = $1").bind(user_id).fetch_one(&self.pool).await?;
        crate::get_i64(&row, "n")
    }
}

#[cfg(test)]
mod tests {
    use crate::vault::MasterKey;
    use crate::{ApiKey, Store};

    fn key(id: &str) -> ApiKey {
        ApiKey { id: id.into(), name: "k".into(), prefix: "AKIA".into(), created_at: "t".into(), expires_at: None, last_used_at: None, key_type: "aws".into(), access_key_id: None }
    }

    /// The secret comes back only through the vault, is not in the row in the clear, a
    /// rotation re-seals it, and a revoked (deleted) key is gone at once.
    #[tokio::test]
    async fn an_aws_secret_is_sealed_rotates_and_goes_with_its_key() {
        let dir = std::env::temp_dir().join(format!("vr-awskeys-{}-{:x}", std::process::id(), rand_n()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let old = MasterKey::parse(&"11".repeat(32)).unwrap();
        let store = Store::open(&url).await.unwrap().unlock(old, None).await.unwrap();
        sqlx::query("INSERT INTO users (id, email, name, password_hash, created_at) VALUES ('u1', 'u1@e.com', 'n', 'h', 't')").execute(&store.pool).await.unwrap();
        let secret = "abcdefghijklmnopqrstuvwxyz0123456789ABCD";
        store.insert_aws_key("u1", &key("key_1"), "AKIATESTTESTTESTTEST", secret, 0).await.unwrap();
        let owner = store.aws_key_owner("AKIATESTTESTTESTTEST").await.unwrap().unwrap();
        assert_eq!((owner.user_id.as_str(), owner.secret.as_str()), ("u1", secret));
        let row: String = sqlx::query_scalar("SELECT secret_sealed FROM api_keys WHERE id = 'key_1'").fetch_one(&store.pool).await.unwrap();
        assert!(row.starts_with("v1.") && !row.contains(secret), "{row}");
        // An aws key is never a bearer key, whatever hash is presented.
        let hash: String = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE id = 'key_1'").fetch_one(&store.pool).await.unwrap();
        assert!(store.api_key_owner(&hash).await.unwrap().is_none());
        // Rotate to a new key; the node with only the new key opens it.
        drop(store);
        let new = MasterKey::parse(&"22".repeat(32)).unwrap();
        let both = Store::open(&url).await.unwrap().unlock(new, Some(MasterKey::parse(&"11".repeat(32)).unwrap())).await.unwrap();
        let done = both.rotate_master_key(10).await.unwrap();
        assert_eq!(done.aws_keys, 1);
        drop(both);
        let fresh = Store::open(&url).await.unwrap().unlock(MasterKey::parse(&"22".repeat(32)).unwrap(), None).await.unwrap();
        assert_eq!(fresh.aws_key_owner("AKIATESTTESTTESTTEST").await.unwrap().unwrap().secret.as_str(), secret);
        assert!(fresh.delete_api_key("u1", "key_1").await.unwrap());
        assert!(fresh.aws_key_owner("AKIATESTTESTTESTTEST").await.unwrap().is_none());
        drop(fresh);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn rand_n() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    }
}

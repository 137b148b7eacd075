//! Users, refresh tokens and API keys.

use crate::{conflict_or, get_opt_str, get_str, Result, Store};

/// A registered user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub created_at: String,
}

/// An API key as listed (never the key itself).
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    /// `voltrun` (a bearer key) or `aws` (an access key id and a sealed secret, issue 17).
    pub key_type: String,
    /// The access key id of an `aws` key.
    pub access_key_id: Option<String>,
}

/// Who an API key belongs to, found by its hash.
#[derive(Debug, Clone)]
pub struct KeyOwner {
    pub key_id: String,
    pub user_id: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
}

fn user_from(row: &sqlx::any::AnyRow) -> Result<User> {
    Ok(User {
        id: get_str(row, "id")?,
        email: get_str(row, "email")?,
        name: get_str(row, "name")?,
        password_hash: get_str(row, "password_hash")?,
        created_at: get_str(row, "created_at")?,
    })
}

impl Store {
    /// Adds a user; `Conflict("email")` when the email is taken.
    pub async fn insert_user(&self, u: &User) -> Result<()> {
        sqlx::query("INSERT INTO users (id, email, name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&u.id)
            .bind(&u.email)
            .bind(&u.name)
            .bind(&u.password_hash)
            .bind(&u.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| conflict_or(e, &["email"]))?;
        Ok(())
    }

    /// The user with this (normalised) email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE email = $1").bind(email).fetch_optional(&self.pool).await?;
        row.as_ref().map(user_from).transpose()
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(user_from).transpose()
    }

    /// Stores a refresh token's hash in a rotation family.
    pub async fn insert_refresh_token(&self, hash: &str, user_id: &str, family: &str, expires_at: &str, now: &str) -> Result<()> {
        sqlx::query("INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(hash)
            .bind(user_id)
            .bind(family)
            .bind(expires_at)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Spends a refresh token: returns `(user_id, family)` if it was unused and unexpired.
    /// A token presented a second time revokes its whole family (it was stolen or replayed).
    pub async fn use_refresh_token(&self, hash: &str, now: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id, family")
            .bind(hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = row {
            return Ok(Some((get_str(&row, "user_id")?, get_str(&row, "family")?)));
        }
        self.revoke_refresh_family(hash, now).await?;
        Ok(None)
    }

    /// Revokes the rotation family of a refresh token (logout, or a token presented twice):
    /// every unused token in it is spent.
    pub async fn revoke_refresh_family(&self, hash: &str, now: &str) -> Result<()> {
        sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE family IN (SELECT family FROM refresh_tokens WHERE token_hash = $1) AND used_at IS NULL")
            .bind(hash)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a new API key (its hash only) unless the user has `limit` keys already (0:
    /// unlimited), then [`crate::StoreError::Quota`]. Checked in the insert's statement, under
    /// the user's lock on PostgreSQL (functions.rs, `user_write`).
    pub async fn insert_api_key(&self, user_id: &str, key: &ApiKey, hash: &str, limit: u64) -> Result<()> {
        let mut tx = self.user_write(user_id).await?;
        let r = sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at, expires_at) SELECT $1, $2, $3, $4, $5, $6, $7
             WHERE (SELECT COUNT(*) FROM api_keys WHERE user_id = $2) < $8",
        )
        .bind(&key.id)
        .bind(user_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(hash)
        .bind(&key.created_at)
        .bind(&key.expires_at)
        .bind(voltrun_core::Quotas::bound(limit))
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(crate::StoreError::Quota(format!("this account has {limit} API keys, the most its quota allows; revoke one to create another")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// A user's keys, newest first.
    pub async fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT * FROM api_keys WHERE user_id = $1 ORDER BY id DESC").bind(user_id).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(ApiKey {
                    id: get_str(r, "id")?,
                    name: get_str(r, "name")?,
                    prefix: get_str(r, "prefix")?,
                    created_at: get_str(r, "created_at")?,
                    expires_at: get_opt_str(r, "expires_at")?,
                    last_used_at: get_opt_str(r, "last_used_at")?,
                    key_type: get_str(r, "key_type")?,
                    access_key_id: get_opt_str(r, "access_key_id")?,
                })
            })
            .collect()
    }

    /// Deletes one of the user's keys; false when there is no such key of theirs.
    pub async fn delete_api_key(&self, user_id: &str, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM api_keys WHERE id = $1 AND user_id = $2").bind(id).bind(user_id).execute(&self.pool).await?;
        if r.rows_affected() > 0 {
            self.forget_aws_keys(Some(id));
        }
        Ok(r.rows_affected() > 0)
    }

    /// The owner of the key with this hash.
    pub async fn api_key_owner(&self, hash: &str) -> Result<Option<KeyOwner>> {
        let row =
            sqlx::query("SELECT id, user_id, expires_at, last_used_at FROM api_keys WHERE key_hash = $1 AND key_type = 'voltrun'").bind(hash).fetch_optional(&self.pool).await?;
        row.map(|r| {
            Ok(KeyOwner {
                key_id: get_str(&r, "id")?,
                user_id: get_str(&r, "user_id")?,
                expires_at: get_opt_str(&r, "expires_at")?,
                last_used_at: get_opt_str(&r, "last_used_at")?,
            })
        })
        .transpose()
    }

    /// Records that a key was used.
    pub async fn touch_api_key(&self, id: &str, now: &str) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1").bind(id).bind(now).execute(&self.pool).await?;
        self.note_aws_key_touch(id, now);
        Ok(())
    }
}

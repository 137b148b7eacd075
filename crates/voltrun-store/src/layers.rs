//! Layers (migrations/0011): numbered, immutable versions per (user, name), the version
//! counter that never gives a deleted number again, the code quota they count against, and
//! the refusal to delete a version a function still mounts.
//!
//! The zip's bytes are a blob (blobs.rs, by SHA-256): one copy however many versions or users
//! upload the same bytes, removed with the last version (or function package) holding it.

use voltrun_core::{Layer, LayerRef, Quotas};

use crate::functions::{KEPT_BYTES_OF_1, LAYER_BYTES_OF_1};
use crate::{get_i64, get_str, Result, Store, StoreError};

/// Every column of a layer row.
const COLUMNS: &str = "user_id, name, version, description, size, unpacked_size, file_count, sha256, created_at";

fn layer_from(row: &sqlx::any::AnyRow) -> Result<Layer> {
    Ok(Layer {
        user_id: get_str(row, "user_id")?,
        name: get_str(row, "name")?,
        version: get_i64(row, "version")?,
        description: get_str(row, "description")?,
        size: get_i64(row, "size")?.max(0) as u64,
        unpacked_size: get_i64(row, "unpacked_size")?.max(0) as u64,
        file_count: get_i64(row, "file_count")?.max(0) as u64,
        sha256: get_str(row, "sha256")?,
        created_at: get_str(row, "created_at")?,
    })
}

/// What a new layer version is: everything but the version number, which the store gives.
#[derive(Debug, Clone)]
pub struct NewLayer {
    pub user_id: String,
    pub name: String,
    pub description: String,
    pub size: u64,
    pub unpacked_size: u64,
    pub file_count: u64,
    pub sha256: String,
    pub created_at: String,
}

/// Why a layer version could not be deleted.
#[derive(Debug)]
pub enum DeleteLayer {
    /// Deleted.
    Deleted,
    /// No such version of the caller's.
    NotFound,
    /// Functions (by name, at most a few) still mount it.
    InUse(Vec<String>),
}

/// The LIKE pattern that finds `"name:version"` in a function's `layers` JSON list, with
/// LIKE's wildcards escaped (`_` is a name character).
fn in_use_pattern(r: &LayerRef) -> String {
    let quoted = format!("\"{r}\"");
    let mut p = String::from("%");
    for c in quoted.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl Store {
    /// Adds the next version of the user's layer `name` within their code quota (the zip's
    /// bytes count, with their functions' code and other layers): the new version, or
    /// [`StoreError::Quota`]. The counter and the row are one transaction, under the user's
    /// row lock on PostgreSQL, so concurrent uploads of one name get distinct numbers.
    pub async fn insert_layer(&self, l: &NewLayer, zip: &[u8], quotas: &Quotas) -> Result<Layer> {
        let mut tx = self.user_write(&l.user_id).await?;
        let row = sqlx::query(
            "INSERT INTO layer_names (user_id, name, last_version) VALUES ($1, $2, 1)
             ON CONFLICT (user_id, name) DO UPDATE SET last_version = layer_names.last_version + 1 RETURNING last_version",
        )
        .bind(&l.user_id)
        .bind(&l.name)
        .fetch_one(&mut *tx)
        .await?;
        let version = get_i64(&row, "last_version")?;
        let sql = format!(
            "INSERT INTO layers ({COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
             WHERE (SELECT COALESCE(SUM(code_bytes), 0) FROM functions WHERE user_id = $1) + {LAYER_BYTES_OF_1} + {KEPT_BYTES_OF_1} + $5 <= $10"
        );
        let r = sqlx::query(&sql)
            .bind(&l.user_id)
            .bind(&l.name)
            .bind(version)
            .bind(&l.description)
            .bind(l.size as i64)
            .bind(l.unpacked_size as i64)
            .bind(l.file_count as i64)
            .bind(&l.sha256)
            .bind(&l.created_at)
            .bind(Quotas::bound(quotas.code_bytes))
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            let sql = format!("SELECT CAST(COALESCE(SUM(code_bytes), 0) + {LAYER_BYTES_OF_1} + {KEPT_BYTES_OF_1} AS BIGINT) AS bytes FROM functions WHERE user_id = $1");
            let used = get_i64(&sqlx::query(&sql).bind(&l.user_id).fetch_one(&mut *tx).await?, "bytes")?;
            drop(tx);
            return Err(StoreError::Quota(format!(
                "this layer ({} bytes) would take the account's code and layers to {} bytes, over its quota of {} bytes; delete functions or layer versions first",
                l.size,
                used.max(0) as u64 + l.size,
                quotas.code_bytes
            )));
        }
        self.put_blob_in(&mut tx, &l.sha256, zip).await?;
        tx.commit().await?;
        Ok(Layer {
            user_id: l.user_id.clone(),
            name: l.name.clone(),
            version,
            description: l.description.clone(),
            size: l.size,
            unpacked_size: l.unpacked_size,
            file_count: l.file_count,
            sha256: l.sha256.clone(),
            created_at: l.created_at.clone(),
        })
    }

    /// One version of the user's layer.
    pub async fn get_layer(&self, user_id: &str, name: &str, version: i64) -> Result<Option<Layer>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM layers WHERE user_id = $1 AND name = $2 AND version = $3"))
            .bind(user_id)
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(layer_from).transpose()
    }

    /// The user's layer versions `refs`, in their order; the first one that does not exist
    /// (or is another user's) is the error's `Err(reference)`.
    pub async fn resolve_layers(&self, user_id: &str, refs: &[LayerRef]) -> Result<std::result::Result<Vec<Layer>, LayerRef>> {
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            match self.get_layer(user_id, &r.name, r.version).await? {
                Some(l) => out.push(l),
                None => return Ok(Err(r.clone())),
            }
        }
        Ok(Ok(out))
    }

    /// Every version of the user's layer `name`, newest first (empty when there is none).
    pub async fn layer_versions(&self, user_id: &str, name: &str) -> Result<Vec<Layer>> {
        let rows =
            sqlx::query(&format!("SELECT {COLUMNS} FROM layers WHERE user_id = $1 AND name = $2 ORDER BY version DESC")).bind(user_id).bind(name).fetch_all(&self.pool).await?;
        rows.iter().map(layer_from).collect()
    }

    /// A page of the user's layers, the latest version of each, by name, names after
    /// `after`.
    pub async fn list_layers(&self, user_id: &str, after: Option<&str>, limit: i64) -> Result<Vec<Layer>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM layers l WHERE user_id = $1 AND name > $2
             AND version = (SELECT MAX(version) FROM layers m WHERE m.user_id = l.user_id AND m.name = l.name)
             ORDER BY name LIMIT $3"
        );
        let rows = sqlx::query(&sql).bind(user_id).bind(after.unwrap_or("")).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(layer_from).collect()
    }

    /// Deletes a version of the user's layer unless a function of theirs mounts it (or will:
    /// the definition of a build still to run); the
    /// check and the delete are one statement, under the user's row lock on PostgreSQL (which
    /// function writes take too), so a function cannot start mounting it in between.
    pub async fn delete_layer(&self, user_id: &str, name: &str, version: i64) -> Result<DeleteLayer> {
        let r = LayerRef { name: name.to_string(), version };
        let pattern = in_use_pattern(&r);
        let mut tx = self.user_write(user_id).await?;
        let sha =
            sqlx::query("SELECT sha256 FROM layers WHERE user_id = $1 AND name = $2 AND version = $3").bind(user_id).bind(name).bind(version).fetch_optional(&mut *tx).await?;
        let Some(sha) = sha.map(|r| get_str(&r, "sha256")).transpose()? else { return Ok(DeleteLayer::NotFound) };
        let done = sqlx::query(
            "DELETE FROM layers WHERE user_id = $1 AND name = $2 AND version = $3
             AND NOT EXISTS (SELECT 1 FROM functions WHERE user_id = $1 AND layers LIKE $4 ESCAPE '\\')
             AND NOT EXISTS (SELECT 1 FROM builds WHERE user_id = $1 AND status IN ('queued', 'building') AND definition LIKE $4 ESCAPE '\\')",
        )
        .bind(user_id)
        .bind(name)
        .bind(version)
        .bind(&pattern)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            self.free_blob_in(&mut tx, &sha).await?;
            tx.commit().await?;
            return Ok(DeleteLayer::Deleted);
        }
        // A queued update that mounts it uses it too (its build and, later, the function).
        let users = sqlx::query(
            "SELECT name FROM functions WHERE user_id = $1 AND (layers LIKE $2 ESCAPE '\\'
             OR id IN (SELECT function_id FROM builds WHERE user_id = $1 AND status IN ('queued', 'building') AND definition LIKE $2 ESCAPE '\\'))
             ORDER BY name LIMIT 5",
        )
        .bind(user_id)
        .bind(&pattern)
        .fetch_all(&mut *tx)
        .await?;
        if users.is_empty() {
            return Ok(DeleteLayer::NotFound);
        }
        let exists =
            sqlx::query("SELECT 1 AS one FROM layers WHERE user_id = $1 AND name = $2 AND version = $3").bind(user_id).bind(name).bind(version).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Ok(DeleteLayer::NotFound);
        }
        Ok(DeleteLayer::InUse(users.iter().map(|r| get_str(r, "name")).collect::<Result<_>>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_use_pattern_escapes_like_wildcards() {
        let r = LayerRef { name: "my_deps".into(), version: 2 };
        assert_eq!(in_use_pattern(&r), "%\"my\\_deps:2\"%");
    }
}

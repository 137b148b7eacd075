//! Content-addressed blobs (migrations/0008): a function's package zip, and the dependency
//! trees and layers of issue 15, by the SHA-256 of their bytes. A blob is written once (a
//! second put of the same bytes is a no-op, also between nodes: the `blobs` row is the
//! claim) in chunks of [`BLOB_CHUNK_BYTES`], and read back a chunk per query, so no single
//! value or query result holds more than a chunk.

use std::io::Write;

use crate::{get_i64, Result, Store, StoreError};

/// The largest chunk of a blob stored in one row.
pub const BLOB_CHUNK_BYTES: usize = 4 << 20;

/// SQL true when no function package (migrations/0008), no layer version (0011) and no build
/// still to run (0010: a queued update's package is referenced only by its build row) holds
/// the blob `$1`: a user may upload the same zip as a package and as a layer.
pub(crate) const UNREFERENCED: &str = "NOT EXISTS (SELECT 1 FROM functions WHERE package_sha256 = $1) AND NOT EXISTS (SELECT 1 FROM layers WHERE sha256 = $1)
     AND NOT EXISTS (SELECT 1 FROM builds WHERE package_sha256 = $1 AND status IN ('queued', 'building'))
     AND NOT EXISTS (SELECT 1 FROM function_versions WHERE package_sha256 = $1)";

/// [`UNREFERENCED`] for the blob whose SHA-256 is the SQL expression `sha` (a column).
pub(crate) fn unreferenced(sha: &str) -> String {
    UNREFERENCED.replace("$1", sha)
}

impl Store {
    /// Stores `bytes` (once) and returns their SHA-256 (lowercase hex).
    pub async fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let sha = voltrun_package::sha256_hex(bytes);
        let mut tx = self.write_tx().await?;
        self.put_blob_in(&mut tx, &sha, bytes).await?;
        tx.commit().await?;
        Ok(sha)
    }

    /// Stores `bytes` as the blob `sha` within `tx` unless it is there already (the insert of
    /// the `blobs` row waits for a concurrent writer of the same blob, then does nothing).
    pub(crate) async fn put_blob_in(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, sha: &str, bytes: &[u8]) -> Result<()> {
        if voltrun_package::sha256_hex(bytes) != sha {
            return Err(StoreError::Corrupt(format!("blob {sha}: the bytes have another SHA-256")));
        }
        self.lock_blob_in(tx, sha).await?;
        let r = sqlx::query("INSERT INTO blobs (sha256, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING")
            .bind(sha)
            .bind(bytes.len() as i64)
            .bind(voltrun_core::time::now())
            .execute(&mut **tx)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(());
        }
        for (seq, chunk) in bytes.chunks(BLOB_CHUNK_BYTES).enumerate() {
            sqlx::query("INSERT INTO blob_chunks (sha256, seq, data) VALUES ($1, $2, $3)").bind(sha).bind(seq as i64).bind(chunk.to_vec()).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// On PostgreSQL, holds the blob `sha` against a concurrent write or free of the same blob
    /// until `tx` ends: a free then sees the reference a write committed (each statement of a
    /// READ COMMITTED transaction reads what committed before it), and a write after a free
    /// stores the bytes again. SQLite runs one write transaction at a time anyway.
    pub(crate) async fn lock_blob_in(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, sha: &str) -> Result<()> {
        if self.dialect == crate::Dialect::Postgres {
            sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS l").bind(format!("blob:{sha}")).fetch_one(&mut **tx).await?;
        }
        Ok(())
    }

    /// Removes the blob `sha` within `tx` when nothing refers to it any more (no function,
    /// layer or build still to run); true when it was removed.
    pub(crate) async fn free_blob_in(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, sha: &str) -> Result<bool> {
        self.free_blob_where_in(tx, sha, "TRUE").await
    }

    /// Removes the blob `sha` (row and chunks) within `tx`, under its lock, when nothing
    /// refers to it ([`UNREFERENCED`]) and the SQL condition `also` (on `$1`, the blob) holds;
    /// true when it was removed. The one place a blob is deleted.
    pub(crate) async fn free_blob_where_in(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, sha: &str, also: &str) -> Result<bool> {
        self.lock_blob_in(tx, sha).await?;
        let r = sqlx::query(&format!("DELETE FROM blobs WHERE sha256 = $1 AND {UNREFERENCED} AND {also}")).bind(sha).execute(&mut **tx).await?;
        if r.rows_affected() > 0 {
            sqlx::query("DELETE FROM blob_chunks WHERE sha256 = $1").bind(sha).execute(&mut **tx).await?;
        }
        Ok(r.rows_affected() > 0)
    }

    /// Whether the blob `sha` is stored, as `tx` sees it (under its lock, a free or a write
    /// of it by another transaction has ended).
    pub(crate) async fn blob_present_in(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, sha: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 AS present FROM blobs WHERE sha256 = $1").bind(sha).fetch_optional(&mut **tx).await?.is_some())
    }

    /// Whether the blob `sha` is stored.
    pub async fn has_blob(&self, sha: &str) -> Result<bool> {
        Ok(self.blob_size(sha).await?.is_some())
    }

    /// Chunk `seq` (from 0) of the blob `sha`, `None` past its end or when there is no such
    /// blob: for streaming a blob out without holding it whole.
    pub async fn blob_chunk(&self, sha: &str, seq: u64) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT data FROM blob_chunks WHERE sha256 = $1 AND seq = $2").bind(sha).bind(seq as i64).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| sqlx::Row::try_get(&r, "data")).transpose()?)
    }

    /// Stores a function's new package (its `package_zip`), when it has one.
    pub(crate) async fn put_package_in(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, f: &voltrun_core::Function) -> Result<()> {
        if let (Some(p), Some(zip)) = (&f.package, &f.package_zip) {
            self.put_blob_in(tx, &p.sha256, zip).await?;
        }
        Ok(())
    }

    /// The size of the blob `sha`, when it is stored.
    pub async fn blob_size(&self, sha: &str) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT size FROM blobs WHERE sha256 = $1").bind(sha).fetch_optional(&self.pool).await?;
        row.map(|r| get_i64(&r, "size").map(|n| n.max(0) as u64)).transpose()
    }

    /// Writes the blob `sha` to `out`, a chunk at a time; `None` when there is no such blob.
    /// The bytes are checked against the SHA-256 before this returns `Ok`.
    pub async fn copy_blob_to(&self, sha: &str, out: &mut (impl Write + Send)) -> Result<Option<u64>> {
        use sha2::Digest;
        let Some(size) = self.blob_size(sha).await? else { return Ok(None) };
        let mut hasher = sha2::Sha256::new();
        let mut n = 0u64;
        let mut seq = 0i64;
        while n < size {
            let row = sqlx::query("SELECT data FROM blob_chunks WHERE sha256 = $1 AND seq = $2").bind(sha).bind(seq).fetch_optional(&self.pool).await?;
            let data: Vec<u8> = match row {
                Some(r) => sqlx::Row::try_get(&r, "data")?,
                None => return Err(StoreError::Corrupt(format!("blob {sha}: chunk {seq} is missing"))),
            };
            if data.is_empty() {
                return Err(StoreError::Corrupt(format!("blob {sha}: chunk {seq} is empty")));
            }
            hasher.update(&data);
            out.write_all(&data).map_err(|e| StoreError::Corrupt(format!("blob {sha}: writing it out: {e}")))?;
            n += data.len() as u64;
            seq += 1;
        }
        let got: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if n != size || got != sha {
            return Err(StoreError::Corrupt(format!("blob {sha}: the stored bytes do not match it")));
        }
        Ok(Some(n))
    }

    /// The blob `sha`, whole; `None` when there is no such blob.
    pub async fn get_blob(&self, sha: &str) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        Ok(self.copy_blob_to(sha, &mut out).await?.map(|_| out))
    }

    /// Removes the blob `sha` unless a function's package or a layer version still refers to
    /// it; true when it was removed. (Other kinds of reference, dependency trees, must check
    /// their own before calling this.)
    pub async fn delete_blob_if_unused(&self, sha: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let gone = self.free_blob_in(&mut tx, sha).await?;
        tx.commit().await?;
        Ok(gone)
    }

    /// The package blobs something still refers to (a function, one of its versions, or a
    /// build still to run):
    /// the unpacked `trees/<sha>` this node may keep.
    pub async fn referenced_packages(&self) -> Result<std::collections::HashSet<String>> {
        let rows = sqlx::query(
            "SELECT package_sha256 AS sha FROM functions WHERE package_sha256 IS NOT NULL
             UNION SELECT package_sha256 AS sha FROM builds WHERE package_sha256 IS NOT NULL AND status IN ('queued', 'building')
             UNION SELECT package_sha256 AS sha FROM function_versions WHERE package_sha256 IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| crate::get_str(r, "sha")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_round_trips_in_chunks_once() {
        let dir = std::env::temp_dir().join(format!("voltrun-store-blobs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.join("t.db").display())).await.unwrap();
        let bytes: Vec<u8> = (0..(BLOB_CHUNK_BYTES * 2 + 123)).map(|i| (i * 7 % 251) as u8).collect();
        let sha = store.put_blob(&bytes).await.unwrap();
        assert_eq!(store.put_blob(&bytes).await.unwrap(), sha);
        let row = sqlx::query("SELECT COUNT(*) AS n FROM blob_chunks WHERE sha256 = $1").bind(&sha).fetch_one(&store.pool).await.unwrap();
        assert_eq!(get_i64(&row, "n").unwrap(), 3);
        assert_eq!(store.get_blob(&sha).await.unwrap().unwrap(), bytes);
        assert_eq!(store.blob_size(&sha).await.unwrap(), Some(bytes.len() as u64));
        assert!(store.get_blob(&"0".repeat(64)).await.unwrap().is_none());
        assert!(store.delete_blob_if_unused(&sha).await.unwrap());
        assert!(store.get_blob(&sha).await.unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

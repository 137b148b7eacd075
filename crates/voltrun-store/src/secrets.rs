//! Server-wide secrets shared by every node on one database (the `server_secrets` table).

use crate::{get_str, Result, Store};

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
}

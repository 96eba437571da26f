//! [`DoNotCallList`] for both stores: the `do_not_call` table (keyed hashes only).

use async_trait::async_trait;
use bonde_pressure_core::do_not_call::{DoNotCallHash, DoNotCallList, DoNotCallSource};
use bonde_pressure_core::ports::StoreError;
use chrono::{DateTime, Utc};

use crate::codec::{db, ts_text};
use crate::{PgCallStore, SqliteCallStore};

#[async_trait]
impl DoNotCallList for SqliteCallStore {
    async fn contains(&self, hash: &DoNotCallHash) -> Result<bool, StoreError> {
        let found: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM do_not_call WHERE hash = ?1")
            .bind(hash.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(db)?;
        Ok(found.is_some())
    }

    async fn add(
        &self,
        hash: &DoNotCallHash,
        source: DoNotCallSource,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _writer = self.write_lock().await;
        let done = sqlx::query(
            "INSERT INTO do_not_call (hash, source, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash.as_str())
        .bind(source.as_str())
        .bind(ts_text(at))
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl DoNotCallList for PgCallStore {
    async fn contains(&self, hash: &DoNotCallHash) -> Result<bool, StoreError> {
        let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM do_not_call WHERE hash = $1")
            .bind(hash.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(db)?;
        Ok(found.is_some())
    }

    async fn add(
        &self,
        hash: &DoNotCallHash,
        source: DoNotCallSource,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO do_not_call (hash, source, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash.as_str())
        .bind(source.as_str())
        .bind(at)
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}

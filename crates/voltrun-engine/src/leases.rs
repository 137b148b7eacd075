//! Leases: every run this node holds `running` carries a lease (this node's id and an expiry);
//! a heartbeat renews them, and a reaper settles the runs of nodes that stopped renewing
//! theirs (async runs go back to the queue, sync ones end `Interrupted`). On SQLite (one
//! node) the runs a crash left `running` are settled at start instead.

use std::sync::atomic::Ordering::Relaxed;

use voltrun_core::time;
use voltrun_store::Dialect;

use crate::{Engine, EngineError};

impl Engine {
    /// The expiry of a lease taken or renewed now.
    pub(crate) fn lease_until(&self) -> String {
        time::format(chrono::Utc::now() + self.inner.cfg.lease)
    }

    /// At start on SQLite, settles the runs the previous process left in flight.
    pub(crate) async fn recover_interrupted(&self) -> Result<(), EngineError> {
        let s = &self.inner.store;
        if s.dialect() == Dialect::Sqlite {
            let (requeued, interrupted) = s.recover_interrupted(&time::now()).await?;
            if requeued + interrupted > 0 {
                tracing::warn!(requeued, interrupted, "settled runs left in flight by the previous process");
            }
            let (requeued, failed) = s.recover_builds(&time::now()).await?;
            if requeued + failed > 0 {
                tracing::warn!(requeued, failed, "settled builds left in flight by the previous process");
            }
        }
        Ok(())
    }

    /// Renews this node's leases and settles runs of nodes that stopped renewing theirs; also
    /// refreshes the gauge of queued runs.
    pub(crate) async fn leases(self) {
        let period = self.inner.cfg.lease / 3;
        loop {
            tokio::time::sleep(period).await;
            let s = &self.inner.store;
            if let Err(err) = s.heartbeat(&self.inner.cfg.node_id, &self.lease_until()).await {
                tracing::warn!(%err, "lease heartbeat failed");
            }
            if let Ok(n) = s.count_pending().await {
                self.inner.metrics.queue_depth.store(n, Relaxed);
            }
            match s.expire_leases(&time::now()).await {
                Ok((0, 0)) => {}
                Ok((requeued, interrupted)) => {
                    tracing::warn!(requeued, interrupted, "settled runs of a node that stopped");
                    self.wake_dispatcher();
                }
                Err(err) => tracing::warn!(%err, "lease reaper failed"),
            }
            // Builds: the same heartbeat and reaper over the builds table.
            match s.heartbeat_builds(&self.inner.cfg.node_id, &self.lease_until()).await {
                Ok(held) => self.drop_lost_builds(&held),
                Err(err) => tracing::warn!(%err, "build lease heartbeat failed"),
            }
            match s.expire_build_leases(&time::now()).await {
                Ok((0, 0)) => {}
                Ok((requeued, failed)) => {
                    tracing::warn!(requeued, failed, "settled builds of a node that stopped");
                    self.wake_builds();
                }
                Err(err) => tracing::warn!(%err, "build lease reaper failed"),
            }
        }
    }
}

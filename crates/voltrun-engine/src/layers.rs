//! A function's layers on disk: the unpacked, content-addressed tree of each layer version it
//! mounts (`<data_dir>/trees/<sha256 of the zip>`, [`voltrun_package::Trees`]), made from the
//! stored zip the first time any instance on this node needs it and shared by every instance
//! after (hard links). The launch links them into the instance's `opt/` in the function's
//! order, later layers over earlier ones ([`voltrun_package::InstanceFiles::opt`]).

use std::path::PathBuf;

use voltrun_core::{ErrorKind, ExecError, Function, LayerRef};
use voltrun_package::{Limits, Trees};

use crate::Engine;

impl Engine {
    /// The trees of `f`'s layers, in its order. A layer version gone from the store (deleted
    /// in a race with the function's update) or a zip that no longer unpacks is the run's
    /// error, named.
    pub async fn layer_trees(&self, f: &Function) -> Result<Vec<PathBuf>, ExecError> {
        let trees = Trees::new(&self.inner.cfg.data_dir);
        let mut out = Vec::with_capacity(f.layers.len());
        for s in &f.layers {
            let Some(r) = LayerRef::parse(s) else {
                return Err(ExecError::new(ErrorKind::Internal, format!("the function lists layer {s:?}, which is not name:version")));
            };
            let gone = || ExecError::new(ErrorKind::RuntimeError, format!("layer {r} no longer exists: update the function's layers"));
            let layer = self.inner.store.get_layer(&f.user_id, &r.name, r.version).await.map_err(store_error)?.ok_or_else(gone)?;
            if trees.has(&layer.sha256) {
                out.push(trees.path(&layer.sha256));
                continue;
            }
            let zip = self.inner.store.get_blob(&layer.sha256).await.map_err(store_error)?.ok_or_else(gone)?;
            let (trees, sha) = (trees.clone(), layer.sha256.clone());
            let made = tokio::task::spawn_blocking(move || trees.ensure(&sha, |dest| voltrun_package::unpack_zip(&zip, dest, &Limits::zip()).map(|_| ())))
                .await
                .map_err(|e| ExecError::new(ErrorKind::Internal, format!("unpacking layer {r}: {e}")))?;
            match made {
                Ok(p) => out.push(p),
                Err(e) => {
                    tracing::error!(err = %e, layer = %r, "could not unpack a layer");
                    return Err(ExecError::new(ErrorKind::Internal, format!("unpacking layer {r} failed")));
                }
            }
        }
        Ok(out)
    }
}

fn store_error(e: voltrun_store::StoreError) -> ExecError {
    tracing::warn!(err = %e, "reading a layer");
    ExecError::new(ErrorKind::Internal, "the layers could not be read from the database".to_string())
}

//! The control protocol's frames (docs/RUNTIME_PROTOCOL.md): 4-byte big-endian length, then
//! JSON, both ways over the instance's fds 3/4; the per-run log markers; and the errors a bad
//! frame becomes.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use voltrun_core::{ErrorKind, ExecError, MAX_PAYLOAD_BYTES};

/// Largest control frame accepted from an instance: the payload cap plus JSON envelope.
const MAX_FRAME: usize = MAX_PAYLOAD_BYTES + 64 * 1024;
/// What every marker starts with; any occurrence in the log stream is taken for a marker.
pub(super) const MARKER_PREFIX: &[u8] = b"\x1evoltrun:";
/// A marker: the prefix, 32 hex digits, and a closing `\x1e`.
pub(super) const MARKER_LEN: usize = MARKER_PREFIX.len() + 32 + 1;

/// A fresh random marker (128 bits), for one run or one init.
pub(super) fn new_marker() -> String {
    format!("\x1evoltrun:{:032x}\x1e", rand::random::<u128>())
}

pub(super) fn internal(e: std::io::Error) -> ExecError {
    ExecError::new(ErrorKind::Internal, format!("instance pipe: {e}"))
}

pub(super) fn protocol_error(msg: &Value) -> ExecError {
    let kind = msg["type"].as_str().unwrap_or("?");
    ExecError::new(ErrorKind::RuntimeError, format!("the runtime sent an unexpected {kind:?} message"))
}

pub(super) fn timeout_error_for(timeout: Duration) -> ExecError {
    ExecError::new(ErrorKind::Timeout, format!("Task timed out after {:.2} seconds", timeout.as_secs_f64()))
}

pub(super) fn timeout_error() -> ExecError {
    ExecError::new(ErrorKind::Timeout, "Task timed out while the function was loading")
}

pub(super) async fn write_frame(tx: &mut pipe::Sender, v: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    tx.write_all(&buf).await
}

/// [`write_frame`] for a frame holding secrets: serialised once into a buffer of the exact
/// size (measured first, so no reallocation leaves a partial copy behind), wiped after.
pub(super) async fn write_frame_wiped(tx: &mut pipe::Sender, v: &Value) -> std::io::Result<()> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut len = Count(0);
    serde_json::to_writer(&mut len, v).map_err(std::io::Error::other)?;
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(len.0 + 4));
    buf.extend_from_slice(&(len.0 as u32).to_be_bytes());
    serde_json::to_writer(&mut *buf, v).map_err(std::io::Error::other)?;
    debug_assert_eq!(buf.len(), len.0 + 4);
    tx.write_all(&buf).await
}

/// Wipes the values of an init frame's `env` (the function's variables and secrets).
pub(super) fn wipe_env(frame: &mut Value) {
    use zeroize::Zeroize;
    if let Some(env) = frame.get_mut("env").and_then(Value::as_object_mut) {
        for v in env.values_mut() {
            if let Value::String(s) = v {
                s.zeroize();
            }
        }
    }
}

pub(super) async fn read_frame(rx: &mut pipe::Receiver) -> std::io::Result<Value> {
    let mut len = [0u8; 4];
    rx.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "it is larger than 6 MiB"));
    }
    let mut body = vec![0u8; len];
    rx.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("it is not JSON we can read ({e})")))
}

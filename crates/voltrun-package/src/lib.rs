//! Function packages (SPEC §10): everything about a package's files that is not the database
//! or the API. The crate owns
//! - [`archive`]: unpacking an untrusted zip safely (no escapes, links, devices, duplicates or
//!   bombs; limits counted on the decompressed stream, never taken from headers);
//! - [`files`]: a `files` map (`{"path": "text"}`) made into the canonical zip, with the same
//!   checks;
//! - [`handler`]: Lambda's `module.function` handler names;
//! - [`dependencies`]: whether a package declares dependencies to build;
//! - [`tree`]: content-addressed unpacked trees under `<data_dir>/trees/<sha256>`, and the
//!   hard-link farm that puts one into an instance;
//! - [`layout`]: an instance's directory (`task/`, `deps/`, `opt/`) and where each appears
//!   inside the sandbox.
//!
//! It depends on none of VoltRun's crates, so core (validation), the API, the engine, the
//! sandbox and the dependency builder all share one definition of what a package is.

pub mod archive;
pub mod dependencies;
pub mod files;
pub mod handler;
pub mod layout;
pub mod tree;

pub use archive::{inspect_zip, unpack_zip, Limits, Manifest, PackageError};
pub use dependencies::dependencies_file;
pub use files::zip_from_files;
pub use handler::Language;
pub use layout::{InstanceDir, InstanceFiles};
pub use tree::Trees;

/// The lowercase hex SHA-256 of `bytes` (how packages and trees are named).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

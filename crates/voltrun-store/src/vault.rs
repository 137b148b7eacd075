//! The master key and the AEAD envelope (issue 16): the one place that sees key bytes.
//!
//! Everything sealed at rest (users' secrets, the key check value, the shared JWT signing
//! key) goes through [`MasterKey::seal`] and [`MasterKey::open`]: XChaCha20-Poly1305 with a
//! fresh random 192-bit nonce per write (random nonces of that size never collide in
//! practice), and associated data that names what the plaintext is ([`Context`]), so a
//! ciphertext moved to another row (another user's secret, another name) fails to open.
//!
//! An envelope is text, so it fits the store's portable TEXT columns:
//! `v1.<key id: 16 hex>.<base64 of nonce (24 bytes) || ciphertext || tag (16 bytes)>`.
//! The key id (an HMAC of a fixed label under the key) says which key sealed it, so a wrong
//! key is told apart from a tampered row, and a later rotation can tell old rows from new.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use zeroize::Zeroizing;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const VERSION: &str = "v1";

/// The 256-bit key everything at rest is sealed under. Its bytes never leave this module:
/// not through `Debug` (which shows the key id only), not through an error.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id {}, bytes redacted)", self.id)
    }
}

/// Why a master key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is neither 64 hex digits nor the base64 of 32 bytes.
    #[error("a master key is 32 bytes written as 64 hex digits or as base64 (44 characters, e.g. `openssl rand -base64 32`)")]
    Format,
    /// The key file could not be read or created.
    #[error("{what} {path}: {source}")]
    File {
        /// Reading or creating.
        what: &'static str,
        /// The file.
        path: String,
        /// The OS's error.
        #[source]
        source: std::io::Error,
    },
}

/// Why an envelope did not open. No variant carries any plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not an envelope of a version this build reads.
    #[error("not a sealed value")]
    Malformed,
    /// Sealed under another key (`sealed_with` is that key's id).
    #[error("sealed under master key {sealed_with}, not this node's key {ours}")]
    WrongKey {
        /// The id in the envelope.
        sealed_with: String,
        /// This node's key id.
        ours: String,
    },
    /// The right key, but the ciphertext, tag or associated data does not match: the row was
    /// altered or moved.
    #[error("the sealed value does not authenticate (altered, or moved to another row)")]
    Tampered,
}

/// What a sealed value is: bound into the ciphertext as associated data.
#[derive(Debug, Clone, Copy)]
pub enum Context<'a> {
    /// A user's secret called `name`.
    Secret {
        /// Its owner.
        user_id: &'a str,
        /// Its name.
        name: &'a str,
    },
    /// The key check value (a known plaintext, to tell a wrong key at start).
    KeyCheck,
    /// The secret access key of the AWS-style API key `access_key_id` of `user_id` (issue 17).
    AwsKey {
        /// Its owner.
        user_id: &'a str,
        /// The key's access key id.
        access_key_id: &'a str,
    },
    /// A server-wide secret in `server_secrets` (such as the JWT signing key).
    Server {
        /// Its row's name.
        name: &'a str,
    },
}

impl Context<'_> {
    /// The associated data: a label and the parts, NUL-separated (no part holds a NUL:
    /// ids, secret names and row names are ASCII identifiers).
    fn aad(&self) -> Vec<u8> {
        match self {
            Context::Secret { user_id, name } => format!("voltrun/v1/secret\0{user_id}\0{name}").into_bytes(),
            Context::KeyCheck => b"voltrun/v1/key-check".to_vec(),
            Context::AwsKey { user_id, access_key_id } => format!("voltrun/v1/aws-key\0{user_id}\0{access_key_id}").into_bytes(),
            Context::Server { name } => format!("voltrun/v1/server\0{name}").into_bytes(),
        }
    }
}

/// The plaintext of the key check value.
pub(crate) const KEY_CHECK_PLAINTEXT: &[u8] = b"voltrun master key check v1";

impl MasterKey {
    /// Reads a key given as 64 hex digits or as base64 (standard alphabet, padded or not) of
    /// exactly 32 bytes; surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<MasterKey, KeyError> {
        let t = text.trim();
        let mut key = Zeroizing::new([0u8; 32]);
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            for (i, pair) in t.as_bytes().chunks(2).enumerate() {
                let hex = std::str::from_utf8(pair).map_err(|_| KeyError::Format)?;
                key[i] = u8::from_str_radix(hex, 16).map_err(|_| KeyError::Format)?;
            }
            return Ok(Self::from_bytes(key));
        }
        let decoded = Zeroizing::new(B64.decode(t).or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t)).map_err(|_| KeyError::Format)?);
        if decoded.len() != 32 {
            return Err(KeyError::Format);
        }
        key.copy_from_slice(&decoded);
        Ok(Self::from_bytes(key))
    }

    /// A fresh random key (from the OS's generator).
    pub fn generate() -> MasterKey {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&XChaCha20Poly1305::generate_key(&mut OsRng));
        Self::from_bytes(key)
    }

    fn from_bytes(key: Zeroizing<[u8; 32]>) -> MasterKey {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key[..]).expect("HMAC takes any key length");
        mac.update(b"voltrun master key id v1");
        let id = mac.finalize().into_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect();
        MasterKey { key, id }
    }

    /// The key read from `path`, or, when the file does not exist, a new key written there
    /// (mode 0600, created exclusively). True when it was created.
    pub fn load_or_create(path: &Path) -> Result<(MasterKey, bool), KeyError> {
        let file_err = |what, source| KeyError::File { what, path: path.display().to_string(), source };
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        // Not through a symlink (planted in the data dir), and not a file others can read (a
        // backup restored 0644): refused with the fix, never used silently.
        match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path) {
            Ok(mut f) => {
                let mode = f.metadata().map_err(|e| file_err("reading", e))?.mode();
                if mode & 0o077 != 0 {
                    let e = std::io::Error::new(std::io::ErrorKind::PermissionDenied, format!("it is readable by others (mode {:o}); `chmod 600` it", mode & 0o777));
                    return Err(file_err("refusing", e));
                }
                let mut text = Zeroizing::new(String::new());
                f.read_to_string(&mut text).map_err(|e| file_err("reading", e))?;
                return Ok((Self::parse(&text)?, false));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err("reading", e)),
        }
        let key = Self::generate();
        let text = Zeroizing::new(format!("{}\n", B64.encode(&key.key[..])));
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| file_err("creating", e))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| file_err("writing", e))?;
        // The new name durable too: a power loss must not keep the database's check value
        // and lose the key.
        if let Some(dir) = path.parent() {
            std::fs::File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }).and_then(|d| d.sync_all()).map_err(|e| file_err("syncing the directory of", e))?;
        }
        Ok((key, true))
    }

    /// A short public name of the key (an HMAC of a fixed label under it): safe to log and
    /// to compare, says nothing of the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` as `context` with a fresh nonce.
    pub fn seal(&self, context: Context<'_>, plaintext: &[u8]) -> String {
        let cipher = XChaCha20Poly1305::new((&*self.key).into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = context.aad();
        let ct = cipher.encrypt(&nonce, Payload { msg: plaintext, aad: &aad }).expect("XChaCha20-Poly1305 seals any length we store");
        let mut body = Vec::with_capacity(NONCE_LEN + ct.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ct);
        format!("{VERSION}.{}.{}", self.id, B64.encode(body))
    }

    /// Opens an envelope sealed as `context`; the plaintext is wiped when dropped.
    pub fn open(&self, context: Context<'_>, envelope: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let mut parts = envelope.splitn(3, '.');
        let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else { return Err(SealError::Malformed) };
        if id != self.id {
            return Err(SealError::WrongKey { sealed_with: id.to_string(), ours: self.id.clone() });
        }
        let body = B64.decode(body).map_err(|_| SealError::Malformed)?;
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = body.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new((&*self.key).into());
        let aad = context.aad();
        cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad }).map(Zeroizing::new).map_err(|_| SealError::Tampered)
    }

    /// The key check value to store: the known plaintext sealed under this key.
    pub(crate) fn key_check(&self) -> String {
        self.seal(Context::KeyCheck, KEY_CHECK_PLAINTEXT)
    }

    /// Whether a stored key check value was sealed by this key.
    pub(crate) fn verify_check(&self, stored: &str) -> Result<(), SealError> {
        let pt = self.open(Context::KeyCheck, stored)?;
        if pt.as_slice() == KEY_CHECK_PLAINTEXT {
            Ok(())
        } else {
            Err(SealError::Tampered)
        }
    }
}

/// The keys a node holds: the current one, which seals everything, and during a rotation
/// the previous one, which only opens what it sealed (docs/SECURITY.md, "Rotating the master
/// key").
#[derive(Debug)]
pub struct Keyring {
    current: MasterKey,
    previous: Option<MasterKey>,
}

impl Keyring {
    /// A keyring of `current` and, while rotating, `previous` (the same key twice is one).
    pub fn new(current: MasterKey, previous: Option<MasterKey>) -> Keyring {
        let previous = previous.filter(|p| p.id != current.id);
        Keyring { current, previous }
    }

    /// The key that seals.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The key being rotated away from, if any.
    pub fn previous(&self) -> Option<&MasterKey> {
        self.previous.as_ref()
    }

    /// Seals under the current key.
    pub fn seal(&self, context: Context<'_>, plaintext: &[u8]) -> String {
        self.current.seal(context, plaintext)
    }

    /// Opens an envelope sealed under either key (the envelope's key id says which).
    pub fn open(&self, context: Context<'_>, envelope: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        match (self.current.open(context, envelope), &self.previous) {
            (Err(SealError::WrongKey { .. }), Some(p)) if key_id_of(envelope) == Some(p.id()) => p.open(context, envelope),
            (r, _) => r,
        }
    }
}

/// The key id an envelope names (None when it is not one).
pub fn key_id_of(envelope: &str) -> Option<&str> {
    let mut parts = envelope.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(VERSION), Some(id), Some(_)) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret<'a>(user_id: &'a str, name: &'a str) -> Context<'a> {
        Context::Secret { user_id, name }
    }

    #[test]
    fn seal_then_open_gives_the_plaintext_and_fresh_nonces_differ() {
        let k = MasterKey::generate();
        let a = k.seal(secret("usr_1", "DB_PASSWORD"), b"hunter2");
        let b = k.seal(secret("usr_1", "DB_PASSWORD"), b"hunter2");
        assert_ne!(a, b, "a fresh nonce per write");
        assert!(!a.contains("hunter2"));
        assert_eq!(k.open(secret("usr_1", "DB_PASSWORD"), &a).unwrap().as_slice(), b"hunter2");
        assert_eq!(k.open(secret("usr_1", "DB_PASSWORD"), &k.seal(secret("usr_1", "DB_PASSWORD"), b"")).unwrap().as_slice(), b"");
    }

    #[test]
    fn a_tampered_envelope_does_not_open() {
        let k = MasterKey::generate();
        let env = k.seal(secret("usr_1", "A"), b"value value value");
        let (head, body) = env.rsplit_once('.').unwrap();
        let mut bytes = B64.decode(body).unwrap();
        for i in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[i] ^= 1;
            let altered = format!("{head}.{}", B64.encode(&bytes));
            assert_eq!(k.open(secret("usr_1", "A"), &altered), Err(SealError::Tampered), "byte {i}");
            bytes[i] ^= 1;
        }
        let truncated = format!("{head}.{}", B64.encode(&bytes[..NONCE_LEN + TAG_LEN - 1]));
        assert_eq!(k.open(secret("usr_1", "A"), &truncated), Err(SealError::Malformed));
        assert_eq!(k.open(secret("usr_1", "A"), "plain text"), Err(SealError::Malformed));
        assert_eq!(k.open(secret("usr_1", "A"), &env.replacen("v1.", "v9.", 1)), Err(SealError::Malformed));
    }

    #[test]
    fn an_envelope_moved_to_another_user_or_name_does_not_open() {
        let k = MasterKey::generate();
        let env = k.seal(secret("usr_1", "TOKEN"), b"s3cr3t");
        assert_eq!(k.open(secret("usr_2", "TOKEN"), &env), Err(SealError::Tampered));
        assert_eq!(k.open(secret("usr_1", "OTHER"), &env), Err(SealError::Tampered));
        // The separator keeps ("usr_1", "AB") and ("usr_1A", "B") apart.
        let env = k.seal(secret("usr_1", "AB"), b"x");
        assert_eq!(k.open(secret("usr_1A", "B"), &env), Err(SealError::Tampered));
        assert_eq!(k.open(Context::KeyCheck, &env), Err(SealError::Tampered));
        assert_eq!(k.open(Context::Server { name: "jwt_signing_key" }, &env), Err(SealError::Tampered));
    }

    #[test]
    fn another_key_is_told_apart_from_tampering() {
        let (k1, k2) = (MasterKey::generate(), MasterKey::generate());
        assert_ne!(k1.id(), k2.id());
        let env = k1.seal(secret("usr_1", "A"), b"v");
        assert_eq!(k2.open(secret("usr_1", "A"), &env), Err(SealError::WrongKey { sealed_with: k1.id().into(), ours: k2.id().into() }));
        // Even with the id forged to match, the wrong key does not authenticate.
        let forged = env.replacen(k1.id(), k2.id(), 1);
        assert_eq!(k2.open(secret("usr_1", "A"), &forged), Err(SealError::Tampered));
        assert!(k1.verify_check(&k1.key_check()).is_ok());
        assert!(matches!(k2.verify_check(&k1.key_check()), Err(SealError::WrongKey { .. })));
    }

    #[test]
    fn a_rotating_keyring_opens_under_either_key_and_seals_under_the_new_one() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let sealed_old = old.seal(secret("usr_1", "A"), b"v");
        let (old_id, new_id) = (old.id().to_string(), new.id().to_string());
        let ring = Keyring::new(new, Some(old));
        assert_eq!(ring.open(secret("usr_1", "A"), &sealed_old).unwrap().as_slice(), b"v");
        let sealed_new = ring.seal(secret("usr_1", "A"), b"v");
        assert_eq!(key_id_of(&sealed_new), Some(new_id.as_str()));
        assert_eq!(key_id_of(&sealed_old), Some(old_id.as_str()));
        // The previous key's envelope still binds its row.
        assert_eq!(ring.open(secret("usr_2", "A"), &sealed_old), Err(SealError::Tampered));
        let third = MasterKey::generate();
        let alone = Keyring::new(MasterKey::parse(&B64.encode([9u8; 32])).unwrap(), None);
        assert!(matches!(alone.open(secret("usr_1", "A"), &third.seal(secret("usr_1", "A"), b"v")), Err(SealError::WrongKey { .. })));
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_nothing_else() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let a = MasterKey::parse(hex).unwrap();
        let b64 = B64.encode((0..32).map(|i| [0x00u8, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff][i % 16]).collect::<Vec<u8>>());
        let b = MasterKey::parse(&format!("  {b64}\n")).unwrap();
        assert_eq!(a.id(), b.id(), "the same 32 bytes either way");
        assert_eq!(MasterKey::parse(b64.trim_end_matches('=')).unwrap().id(), a.id());
        for bad in ["", "short", &hex[..62], &B64.encode([7u8; 31]), &B64.encode([7u8; 33]), &format!("{}zz", &hex[..62])] {
            assert!(matches!(MasterKey::parse(bad), Err(KeyError::Format)), "{bad:?}");
        }
        let dbg = format!("{a:?}");
        assert!(dbg.contains(a.id()) && !dbg.to_lowercase().contains("00112233"), "{dbg}");
    }

    #[test]
    fn a_generated_key_file_is_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("voltrun-vault-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        let (k, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k.id(), again.id());
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(MasterKey::load_or_create(&path), Err(KeyError::Format)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

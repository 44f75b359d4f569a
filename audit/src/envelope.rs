//! Encryption at rest for the one sensitive part of a record: the unmasked policy input.
//!
//! The trail keeps a *masked* input (account numbers cut to their last four characters,
//! remittance text redacted) in `audit_records`; that is what is hashed, queried and exported.
//! The full input a policy saw is kept only encrypted, in `audit_inputs` ([`crate::inputs`]),
//! so a database dump, a backup or a DBA reads nothing sensitive; a holder of the `revealer`
//! role can have one record decrypted through the gateway, which audits every attempt.
//!
//! Envelope encryption, AES-256-GCM at both layers:
//! - per record a fresh random 256-bit data key (DEK) encrypts the canonical JSON of the
//!   input with a random 96-bit nonce; the associated data is the record id (its 16 bytes),
//!   so a ciphertext moved to another record's row no longer opens;
//! - the DEK is wrapped with the keyring's active key-encryption key (KEK), again
//!   AES-256-GCM with its own random nonce and the KEK id as associated data. The stored
//!   `wrapped_dek` is `wrap nonce (12 bytes) || AES-GCM(DEK) || tag (16 bytes)` (60 bytes).
//!
//! The KEK id is stored with every record. Rotation adds a new KEK and makes it active; old
//! records are never re-written and open as long as their KEK stays in the keyring. A record
//! whose KEK was removed is refused with [`EnvelopeError::UnknownKey`], naming the key.
//!
//! Account tokens (blind index): `hex(HMAC-SHA256(index_key, account_id))[..32]`, where
//! `index_key = HMAC-SHA256(index_secret, "countersign-account-token/v1")`. They let the query
//! API find every record about an account without storing the number; they depend only on
//! the index secret, so they stay the same across KEK rotations.
//!
//! # Key file
//!
//! Either one JSON file (mode 0600, owned by the gateway's user):
//!
//! ```json
//! {
//!   "active": "kek-2026-11",
//!   "keys": {
//!     "kek-2026-11": "<base64 of 32 random bytes>",
//!     "kek-2026-05": "<base64 of 32 random bytes>"
//!   },
//!   "index_secret": "<base64 of 32 random bytes>"
//! }
//! ```
//!
//! or a directory laid out as a Vault Agent template or a Kubernetes secret volume renders
//! one file per entry: `active` (the active KEK id), `index_secret` (base64) and
//! `<kek id>.key` (base64) per KEK; names starting with `.` (a secret volume's `..data`
//! links) and other files are ignored. Whitespace around every value is ignored. Base64 is
//! the standard alphabet with padding. KEK ids are 1 to 64 of `A-Z a-z 0-9 . _ -`.
//!
//! Nothing here ever prints key material: [`Keyring`] and [`KeyFile`] have redacting `Debug`
//! implementations, and load errors name the file, the field and what is wrong with it, never
//! its value.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use aes_gcm::{
    Aes256Gcm, Key, KeyInit,
    aead::{Aead, Generate, Payload},
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

/// Bytes of a KEK, a DEK and the index secret (AES-256, HMAC-SHA256).
pub const KEY_BYTES: usize = 32;
/// Bytes of an AES-GCM nonce (96 bits, the size GCM is defined for).
pub const NONCE_BYTES: usize = 12;
/// Bytes of an AES-GCM tag.
pub const TAG_BYTES: usize = 16;
/// Bytes of a stored wrapped DEK: wrap nonce, encrypted DEK, tag.
pub const WRAPPED_DEK_BYTES: usize = NONCE_BYTES + KEY_BYTES + TAG_BYTES;
/// Largest input (canonical JSON) sealed or opened: the same bound as any stored record
/// field, so an input that fits a record fits its sealed copy, and reading a row never
/// allocates more than that.
pub const PLAINTEXT_BYTES_MAX: usize = crate::encoding::FIELD_BYTES_MAX;
/// Most KEKs one keyring holds. Rotating twice a year for decades stays far below it.
pub const KEYS_MAX: usize = 256;
/// Longest KEK id.
pub const KEY_ID_BYTES_MAX: usize = 64;
/// Largest key file (or file of a key directory) read: a keyring of [`KEYS_MAX`] keys is
/// about 20 KiB.
pub const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Most entries of a key directory looked at.
const KEY_DIRECTORY_ENTRIES_MAX: usize = 1024;
/// Most account tokens one sealed input carries (a transfer has two).
pub const ACCOUNT_TOKENS_MAX: usize = 16;
/// Hex characters of an account token (128 bits of the HMAC).
pub const ACCOUNT_TOKEN_HEX_CHARS: usize = 32;
/// Domain separation of the index key, so the index secret is never used directly.
const INDEX_KEY_LABEL: &[u8] = b"countersign-account-token/v1";

/// A sealed (encrypted) policy input as stored in `audit_inputs`. Nothing in it is secret
/// without the keyring; the account tokens are one-way.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedInput {
    /// Which KEK wrapped the data key.
    pub kek_id: String,
    /// Wrap nonce || encrypted data key || tag ([`WRAPPED_DEK_BYTES`] bytes).
    pub wrapped_dek: Vec<u8>,
    /// Nonce of the input encryption ([`NONCE_BYTES`] bytes).
    pub nonce: Vec<u8>,
    /// AES-256-GCM of the input's canonical JSON under the data key, tag appended.
    pub ciphertext: Vec<u8>,
    /// [`Keyring::account_token`] of each account the input is about, for the query index.
    pub account_tokens: Vec<String>,
}

impl fmt::Debug for SealedInput {
    /// Lengths only: the bytes are not secret, but they are noise in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedInput")
            .field("kek_id", &self.kek_id)
            .field("wrapped_dek_bytes", &self.wrapped_dek.len())
            .field("nonce_bytes", &self.nonce.len())
            .field("ciphertext_bytes", &self.ciphertext.len())
            .field("account_tokens", &self.account_tokens)
            .finish()
    }
}

/// Why a key file or key directory could not be loaded. Messages name the path and the
/// field, never a value read from the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is larger than {bytes_max} bytes; is it the right file?")]
    TooLarge { path: PathBuf, bytes_max: u64 },
    #[error("key file {path} is not valid JSON (line {line}, column {column})")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("key file {path}: `{field}` {problem}")]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error("the system random number generator failed")]
    Random,
}

/// Why an input could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The input is larger than [`PLAINTEXT_BYTES_MAX`]; the record would be refused anyway.
    #[error("the input is {bytes} bytes, more than the {bytes_max} bytes that are sealed")]
    PlaintextTooLarge { bytes: usize, bytes_max: usize },
    /// More accounts than [`ACCOUNT_TOKENS_MAX`]: a caller bug.
    #[error("{accounts} account tokens for one input, more than {accounts_max}")]
    TooManyAccounts {
        accounts: usize,
        accounts_max: usize,
    },
    /// The record was sealed with a KEK that is not in this keyring (rotated out, or the
    /// wrong key file). Put the key back into the keyring to open it.
    #[error(
        "the input was sealed with key `{kek_id}`, which is not in the keyring; add that key to the key file to open it"
    )]
    UnknownKey { kek_id: String },
    /// A stored field has the wrong length: the row was damaged or written by something else.
    #[error("the sealed input is malformed: {reason}")]
    Malformed { reason: String },
    /// Authentication failed: the data key does not unwrap under its KEK (wrong key
    /// material under that id, or a tampered `wrapped_dek`), or the ciphertext does not open
    /// for this record (tampered, or moved from another record).
    #[error(
        "the sealed input does not authenticate ({layer}): tampered, moved from another record, or a different key under the same id"
    )]
    Unauthentic { layer: &'static str },
    /// The decrypted input is not JSON: impossible unless the key material was reused.
    #[error("the decrypted input is not valid JSON")]
    NotJson,
    #[error("the system random number generator failed")]
    Random,
}

/// One 256-bit secret, wiped from memory when dropped.
#[derive(Clone)]
struct Secret(Zeroizing<[u8; KEY_BYTES]>);

impl Secret {
    /// `None` only if the operating system cannot give us randomness.
    fn random() -> Option<Secret> {
        let bytes = <[u8; KEY_BYTES]>::try_generate().ok()?;
        Some(Secret(Zeroizing::new(bytes)))
    }

    fn to_base64(&self) -> String {
        BASE64.encode(self.0.as_slice())
    }
}

/// The KEKs and the index key, loaded once at start.
pub struct Keyring {
    active: String,
    keys: BTreeMap<String, Aes256Gcm>,
    /// `HMAC-SHA256(index_secret, INDEX_KEY_LABEL)`.
    index_key: Secret,
}

impl fmt::Debug for Keyring {
    /// Key ids only; the key material never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("index_key", &"[redacted]")
            .finish()
    }
}

impl Keyring {
    /// Loads a key file (JSON) or a key directory (see the module docs).
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        Keyring::from_key_file(KeyFile::load(path)?, path)
    }

    /// Builds the keyring of an already parsed key file; `origin` names it in errors.
    pub fn from_key_file(file: KeyFile, origin: &Path) -> Result<Keyring, KeyringError> {
        let invalid = |field: &str, problem: &str| KeyringError::Invalid {
            path: origin.to_owned(),
            field: field.to_owned(),
            problem: problem.to_owned(),
        };
        if !file.keys.contains_key(&file.active) {
            return Err(invalid(
                "active",
                &format!("names key `{}`, which is not among the keys", file.active),
            ));
        }
        let keys = file
            .keys
            .iter()
            .map(|(id, secret)| {
                let key = Key::<Aes256Gcm>::from(*secret.0);
                (id.clone(), Aes256Gcm::new(&key))
            })
            .collect();
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(file.index_secret.0.as_slice())
            .expect("HMAC takes keys of any length");
        mac.update(INDEX_KEY_LABEL);
        let mut index_key = [0u8; KEY_BYTES];
        index_key.copy_from_slice(&mac.finalize().into_bytes());
        let index_key = Secret(Zeroizing::new(index_key));
        Ok(Keyring {
            active: file.active,
            keys,
            index_key,
        })
    }

    /// The id of the KEK new records are sealed with.
    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Every KEK id this keyring can open, sorted.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The blind-index token of an account id: the same for the same id under every KEK of
    /// the same index secret. Lowercase hex, [`ACCOUNT_TOKEN_HEX_CHARS`] characters.
    pub fn account_token(&self, account_id: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.index_key.0.as_slice())
            .expect("HMAC takes keys of any length");
        mac.update(account_id.as_bytes());
        let mut token = hex::encode(mac.finalize().into_bytes());
        token.truncate(ACCOUNT_TOKEN_HEX_CHARS);
        token
    }

    /// Encrypts `input` (as canonical JSON) for the record `record_id` under a fresh data
    /// key wrapped with the active KEK, with the tokens of `account_ids` for the index.
    pub fn seal(
        &self,
        record_id: Uuid,
        input: &Value,
        account_ids: &[&str],
    ) -> Result<SealedInput, EnvelopeError> {
        if account_ids.len() > ACCOUNT_TOKENS_MAX {
            return Err(EnvelopeError::TooManyAccounts {
                accounts: account_ids.len(),
                accounts_max: ACCOUNT_TOKENS_MAX,
            });
        }
        let plaintext = Zeroizing::new(crate::canonical_json(input).into_bytes());
        if plaintext.len() > PLAINTEXT_BYTES_MAX {
            return Err(EnvelopeError::PlaintextTooLarge {
                bytes: plaintext.len(),
                bytes_max: PLAINTEXT_BYTES_MAX,
            });
        }
        let kek = self
            .keys
            .get(&self.active)
            .expect("the active key is in the keyring (checked at load)");
        let data_key = Secret::random().ok_or(EnvelopeError::Random)?;
        let data_nonce = random_nonce()?;
        let ciphertext = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*data_key.0))
            .encrypt(
                &data_nonce.into(),
                Payload {
                    msg: &plaintext,
                    aad: record_id.as_bytes(),
                },
            )
            .map_err(|_| EnvelopeError::PlaintextTooLarge {
                bytes: plaintext.len(),
                bytes_max: PLAINTEXT_BYTES_MAX,
            })?;
        let wrap_nonce = random_nonce()?;
        let encrypted_key = kek
            .encrypt(
                &wrap_nonce.into(),
                Payload {
                    msg: data_key.0.as_slice(),
                    aad: self.active.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts 32 bytes with a short AAD");
        let mut wrapped_dek = Vec::with_capacity(WRAPPED_DEK_BYTES);
        wrapped_dek.extend_from_slice(&wrap_nonce);
        wrapped_dek.extend_from_slice(&encrypted_key);
        assert_eq!(wrapped_dek.len(), WRAPPED_DEK_BYTES);
        Ok(SealedInput {
            kek_id: self.active.clone(),
            wrapped_dek,
            nonce: data_nonce.to_vec(),
            ciphertext,
            account_tokens: account_ids
                .iter()
                .map(|id| self.account_token(id))
                .collect(),
        })
    }

    /// Decrypts the input sealed for `record_id`. Fails if its KEK is not in the keyring, if
    /// anything was changed, or if the row belongs to another record.
    pub fn open(&self, record_id: Uuid, sealed: &SealedInput) -> Result<Value, EnvelopeError> {
        let kek = self
            .keys
            .get(&sealed.kek_id)
            .ok_or_else(|| EnvelopeError::UnknownKey {
                kek_id: sealed.kek_id.clone(),
            })?;
        if sealed.wrapped_dek.len() != WRAPPED_DEK_BYTES {
            return Err(EnvelopeError::Malformed {
                reason: format!(
                    "wrapped_dek is {} bytes, expected {WRAPPED_DEK_BYTES}",
                    sealed.wrapped_dek.len()
                ),
            });
        }
        let data_nonce: [u8; NONCE_BYTES] =
            sealed
                .nonce
                .as_slice()
                .try_into()
                .map_err(|_| EnvelopeError::Malformed {
                    reason: format!(
                        "nonce is {} bytes, expected {NONCE_BYTES}",
                        sealed.nonce.len()
                    ),
                })?;
        if sealed.ciphertext.len() < TAG_BYTES
            || sealed.ciphertext.len() > PLAINTEXT_BYTES_MAX + TAG_BYTES
        {
            return Err(EnvelopeError::Malformed {
                reason: format!(
                    "ciphertext is {} bytes, outside {TAG_BYTES}..={}",
                    sealed.ciphertext.len(),
                    PLAINTEXT_BYTES_MAX + TAG_BYTES
                ),
            });
        }
        let (wrap_nonce, encrypted_key) = sealed.wrapped_dek.split_at(NONCE_BYTES);
        let wrap_nonce: [u8; NONCE_BYTES] = wrap_nonce.try_into().expect("split at NONCE_BYTES");
        let data_key = Zeroizing::new(
            kek.decrypt(
                &wrap_nonce.into(),
                Payload {
                    msg: encrypted_key,
                    aad: sealed.kek_id.as_bytes(),
                },
            )
            .map_err(|_| EnvelopeError::Unauthentic { layer: "data key" })?,
        );
        let data_key: [u8; KEY_BYTES] = data_key
            .as_slice()
            .try_into()
            .expect("an authenticated wrapped key is 32 bytes");
        let data_key = Zeroizing::new(data_key);
        let plaintext = Zeroizing::new(
            Aes256Gcm::new(&Key::<Aes256Gcm>::from(*data_key))
                .decrypt(
                    &data_nonce.into(),
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: record_id.as_bytes(),
                    },
                )
                .map_err(|_| EnvelopeError::Unauthentic { layer: "input" })?,
        );
        serde_json::from_slice(&plaintext).map_err(|_| EnvelopeError::NotJson)
    }
}

fn random_nonce() -> Result<[u8; NONCE_BYTES], EnvelopeError> {
    <[u8; NONCE_BYTES]>::try_generate().map_err(|_| EnvelopeError::Random)
}

/// The contents of a key file, for loading, generating (`serve --dev`, tests) and rotating.
/// Its `Debug` shows key ids only.
#[derive(Clone)]
pub struct KeyFile {
    active: String,
    keys: BTreeMap<String, Secret>,
    index_secret: Secret,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("index_secret", &"[redacted]")
            .finish()
    }
}

impl KeyFile {
    /// A new key file with one random KEK `kek_id` (active) and a random index secret.
    pub fn generate(kek_id: &str) -> Result<KeyFile, KeyringError> {
        check_key_id(kek_id).map_err(|problem| KeyringError::Invalid {
            path: PathBuf::from("(generated)"),
            field: "active".into(),
            problem,
        })?;
        let kek = Secret::random().ok_or(KeyringError::Random)?;
        let index_secret = Secret::random().ok_or(KeyringError::Random)?;
        Ok(KeyFile {
            active: kek_id.to_owned(),
            keys: BTreeMap::from([(kek_id.to_owned(), kek)]),
            index_secret,
        })
    }

    /// Rotation: adds a random KEK `kek_id` and makes it active. The old keys stay, so
    /// records sealed with them still open; the index secret stays, so tokens do not change.
    pub fn rotate(&mut self, kek_id: &str) -> Result<(), KeyringError> {
        let invalid = |problem: String| KeyringError::Invalid {
            path: PathBuf::from("(rotation)"),
            field: format!("keys.{kek_id}"),
            problem,
        };
        check_key_id(kek_id).map_err(invalid)?;
        if self.keys.contains_key(kek_id) {
            return Err(invalid("already exists; a KEK id is never reused".into()));
        }
        if self.keys.len() >= KEYS_MAX {
            return Err(invalid(format!("would be key number {}", KEYS_MAX + 1)));
        }
        self.keys.insert(
            kek_id.to_owned(),
            Secret::random().ok_or(KeyringError::Random)?,
        );
        self.active = kek_id.to_owned();
        Ok(())
    }

    /// Drops a KEK that is not the active one (records sealed with it no longer open).
    /// Returns whether it was there.
    pub fn remove(&mut self, kek_id: &str) -> bool {
        assert_ne!(kek_id, self.active, "the active key cannot be removed");
        self.keys.remove(kek_id).is_some()
    }

    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// The JSON key-file text (secrets included: write it with mode 0600).
    pub fn to_json(&self) -> String {
        let keys: serde_json::Map<String, Value> = self
            .keys
            .iter()
            .map(|(id, secret)| (id.clone(), Value::String(secret.to_base64())))
            .collect();
        let document = serde_json::json!({
            "active": self.active,
            "keys": keys,
            "index_secret": self.index_secret.to_base64(),
        });
        let mut text = serde_json::to_string_pretty(&document).expect("JSON values serialize");
        text.push('\n');
        text
    }

    /// Parses a key file's JSON text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &Path) -> Result<KeyFile, KeyringError> {
        let invalid = |field: &str, problem: String| KeyringError::Invalid {
            path: origin.to_owned(),
            field: field.to_owned(),
            problem,
        };
        // Parsed as a plain value first: serde's typed errors quote the offending value,
        // which here would be key material.
        let document: Value = serde_json::from_str(text).map_err(|error| KeyringError::Syntax {
            path: origin.to_owned(),
            line: error.line(),
            column: error.column(),
        })?;
        let Value::Object(mut fields) = document else {
            return Err(invalid(
                "(root)",
                "must be an object with active, keys and index_secret".into(),
            ));
        };
        let active = match fields.remove("active") {
            Some(Value::String(active)) => active,
            Some(_) => return Err(invalid("active", "must be a string (a key id)".into())),
            None => return Err(invalid("active", "is missing".into())),
        };
        check_key_id(&active).map_err(|problem| invalid("active", problem))?;
        let index_secret = match fields.remove("index_secret") {
            Some(Value::String(mut encoded)) => {
                let secret = decode_secret(&encoded);
                encoded.zeroize();
                secret.map_err(|problem| invalid("index_secret", problem))?
            }
            Some(_) => return Err(invalid("index_secret", "must be a base64 string".into())),
            None => return Err(invalid("index_secret", "is missing".into())),
        };
        let entries = match fields.remove("keys") {
            Some(Value::Object(entries)) => entries,
            Some(_) => {
                return Err(invalid(
                    "keys",
                    "must be an object of key id to base64 key".into(),
                ));
            }
            None => return Err(invalid("keys", "is missing".into())),
        };
        if let Some(unknown) = fields.keys().next() {
            return Err(invalid(
                unknown,
                "is not a key-file field (expected active, keys, index_secret)".into(),
            ));
        }
        let mut keys = BTreeMap::new();
        let mut pairs = Vec::with_capacity(entries.len());
        for (id, value) in entries {
            let field = format!("keys.{id}");
            check_key_id(&id).map_err(|problem| invalid("keys", problem))?;
            let Value::String(mut encoded) = value else {
                return Err(invalid(&field, "must be a base64 string".into()));
            };
            let secret = decode_secret(&encoded);
            encoded.zeroize();
            pairs.push((id, secret.map_err(|problem| invalid(&field, problem))?));
        }
        check_key_count(pairs.len()).map_err(|problem| invalid("keys", problem))?;
        keys.extend(pairs);
        Ok(KeyFile {
            active,
            keys,
            index_secret,
        })
    }

    /// Reads a key file, or a key directory when `path` is a directory.
    pub fn load(path: &Path) -> Result<KeyFile, KeyringError> {
        let metadata = std::fs::metadata(path).map_err(|source| KeyringError::Read {
            path: path.to_owned(),
            source,
        })?;
        if metadata.is_dir() {
            return KeyFile::load_directory(path);
        }
        let text = read_bounded(path)?;
        KeyFile::from_json(&text, path)
    }

    /// `active`, `index_secret` and one `<kek id>.key` per KEK (see the module docs).
    fn load_directory(directory: &Path) -> Result<KeyFile, KeyringError> {
        let invalid = |field: &str, problem: String| KeyringError::Invalid {
            path: directory.to_owned(),
            field: field.to_owned(),
            problem,
        };
        let read_error = |source| KeyringError::Read {
            path: directory.to_owned(),
            source,
        };
        let mut active = None;
        let mut index_secret = None;
        let mut keys = BTreeMap::new();
        for (seen, entry) in std::fs::read_dir(directory)
            .map_err(read_error)?
            .enumerate()
        {
            if seen >= KEY_DIRECTORY_ENTRIES_MAX {
                return Err(invalid(
                    "(directory)",
                    format!("has more than {KEY_DIRECTORY_ENTRIES_MAX} entries"),
                ));
            }
            let entry = entry.map_err(read_error)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // `..data`, `..2026_11_26...`: the atomic-update links of a secret volume.
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            // Follows symlinks, as secret volumes are made of them.
            if !std::fs::metadata(&path).map_err(read_error)?.is_file() {
                continue;
            }
            if name == "active" {
                active = Some(read_bounded(&path)?.trim().to_owned());
            } else if name == "index_secret" {
                let mut encoded = read_bounded(&path)?;
                let secret = decode_secret(encoded.trim());
                encoded.zeroize();
                index_secret = Some(secret.map_err(|problem| invalid(&name, problem))?);
            } else if let Some(id) = name.strip_suffix(".key") {
                check_key_id(id).map_err(|problem| invalid(&name, problem))?;
                let mut encoded = read_bounded(&path)?;
                let secret = decode_secret(encoded.trim());
                encoded.zeroize();
                keys.insert(
                    id.to_owned(),
                    secret.map_err(|problem| invalid(&name, problem))?,
                );
                check_key_count(keys.len()).map_err(|problem| invalid("(directory)", problem))?;
            }
        }
        let active = active.ok_or_else(|| invalid("active", "file is missing".into()))?;
        check_key_id(&active).map_err(|problem| invalid("active", problem))?;
        let index_secret =
            index_secret.ok_or_else(|| invalid("index_secret", "file is missing".into()))?;
        Ok(KeyFile {
            active,
            keys,
            index_secret,
        })
    }
}

fn read_bounded(path: &Path) -> Result<String, KeyringError> {
    use std::io::Read;
    let read_error = |source| KeyringError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(KEY_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > KEY_FILE_BYTES_MAX {
        text.zeroize();
        return Err(KeyringError::TooLarge {
            path: path.to_owned(),
            bytes_max: KEY_FILE_BYTES_MAX,
        });
    }
    Ok(text)
}

/// A 32-byte secret from standard base64. The error says what is wrong, never the value.
fn decode_secret(encoded: &str) -> Result<Secret, String> {
    let mut bytes = Zeroizing::new(
        BASE64
            .decode(encoded.trim())
            .map_err(|_| "is not valid base64 (standard alphabet, with padding)".to_owned())?,
    );
    if bytes.len() != KEY_BYTES {
        return Err(format!(
            "decodes to {} bytes; it must be {KEY_BYTES} random bytes",
            bytes.len()
        ));
    }
    let mut secret = [0u8; KEY_BYTES];
    secret.copy_from_slice(&bytes);
    bytes.zeroize();
    Ok(Secret(Zeroizing::new(secret)))
}

fn check_key_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= KEY_ID_BYTES_MAX
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key ids must be 1 to {KEY_ID_BYTES_MAX} of A-Z, a-z, 0-9, '.', '_', '-' (got {} bytes)",
            id.len()
        ))
    }
}

fn check_key_count(count: usize) -> Result<(), String> {
    if count > KEYS_MAX {
        Err(format!("holds more than {KEYS_MAX} keys"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keyring(file: &KeyFile) -> Keyring {
        Keyring::from_key_file(file.clone(), Path::new("test")).unwrap()
    }

    fn input() -> Value {
        json!({
            "transfer": {
                "debit_account": "DE89370400440532013000",
                "credit_account": "GB29NWBK60161331926819",
                "amount": "12.50",
                "amount_minor": 1250,
                "remittance_info": "Invoice 4711 rent for flat 3",
            }
        })
    }

    fn check_invalid(text: &str, expected_field: &str) {
        match KeyFile::from_json(text, Path::new("keys.json")) {
            Err(KeyringError::Invalid { field, .. }) => {
                assert_eq!(field, expected_field, "{text}")
            }
            Err(other) => panic!("{text}: expected an Invalid error, got {other}"),
            Ok(_) => panic!("{text}: should be refused"),
        }
    }

    #[test]
    fn seal_then_open_round_trips() {
        let ring = keyring(&KeyFile::generate("kek-a").unwrap());
        let record_id = Uuid::now_v7();
        let sealed = ring
            .seal(
                record_id,
                &input(),
                &["DE89370400440532013000", "GB29NWBK60161331926819"],
            )
            .unwrap();
        assert_eq!(sealed.kek_id, "kek-a");
        assert_eq!(sealed.wrapped_dek.len(), WRAPPED_DEK_BYTES);
        assert_eq!(sealed.nonce.len(), NONCE_BYTES);
        assert_eq!(
            sealed.account_tokens,
            vec![
                ring.account_token("DE89370400440532013000"),
                ring.account_token("GB29NWBK60161331926819")
            ]
        );
        let text = String::from_utf8_lossy(&sealed.ciphertext);
        assert!(!text.contains("DE89370400440532013000"));
        assert!(!text.contains("Invoice"));
        assert_eq!(ring.open(record_id, &sealed).unwrap(), input());

        // Two seals of the same input differ (fresh data key and nonces).
        let again = ring.seal(record_id, &input(), &[]).unwrap();
        assert_ne!(again.ciphertext, sealed.ciphertext);
        assert_ne!(again.wrapped_dek, sealed.wrapped_dek);
        assert!(again.account_tokens.is_empty());
    }

    #[test]
    fn a_sealed_input_opens_only_for_its_own_record() {
        let ring = keyring(&KeyFile::generate("kek-a").unwrap());
        let sealed = ring.seal(Uuid::now_v7(), &input(), &[]).unwrap();
        assert!(matches!(
            ring.open(Uuid::now_v7(), &sealed),
            Err(EnvelopeError::Unauthentic { layer: "input" })
        ));
    }

    #[test]
    fn tampering_is_detected() {
        let ring = keyring(&KeyFile::generate("kek-a").unwrap());
        let record_id = Uuid::now_v7();
        let sealed = ring.seal(record_id, &input(), &[]).unwrap();
        let flip = |bytes: &mut Vec<u8>, index: usize| bytes[index] ^= 0x01;

        let mut tampered = sealed.clone();
        flip(&mut tampered.ciphertext, 3);
        assert!(matches!(
            ring.open(record_id, &tampered),
            Err(EnvelopeError::Unauthentic { layer: "input" })
        ));
        let mut tampered = sealed.clone();
        let last = tampered.ciphertext.len() - 1;
        flip(&mut tampered.ciphertext, last);
        assert!(ring.open(record_id, &tampered).is_err());
        let mut tampered = sealed.clone();
        flip(&mut tampered.nonce, 0);
        assert!(ring.open(record_id, &tampered).is_err());
        let mut tampered = sealed.clone();
        flip(&mut tampered.wrapped_dek, 20);
        assert!(matches!(
            ring.open(record_id, &tampered),
            Err(EnvelopeError::Unauthentic { layer: "data key" })
        ));
        let mut tampered = sealed.clone();
        tampered.wrapped_dek.pop();
        assert!(matches!(
            ring.open(record_id, &tampered),
            Err(EnvelopeError::Malformed { .. })
        ));
        let mut tampered = sealed.clone();
        tampered.ciphertext.truncate(4);
        assert!(matches!(
            ring.open(record_id, &tampered),
            Err(EnvelopeError::Malformed { .. })
        ));
    }

    #[test]
    fn a_relabelled_kek_id_does_not_open() {
        // The wrap is bound to its KEK id: relabelling a row to another key fails even if
        // both ids held the same material.
        let mut file = KeyFile::generate("kek-a").unwrap();
        let same = file.keys["kek-a"].clone();
        file.keys.insert("kek-b".into(), same);
        let ring = keyring(&file);
        let record_id = Uuid::now_v7();
        let mut sealed = ring.seal(record_id, &input(), &[]).unwrap();
        sealed.kek_id = "kek-b".into();
        assert!(matches!(
            ring.open(record_id, &sealed),
            Err(EnvelopeError::Unauthentic { layer: "data key" })
        ));
    }

    #[test]
    fn rotation_keeps_old_records_readable() {
        let mut file = KeyFile::generate("kek-2026-05").unwrap();
        let before = keyring(&file);
        let old_record = Uuid::now_v7();
        let old = before.seal(old_record, &input(), &["DE89"]).unwrap();

        file.rotate("kek-2026-11").unwrap();
        let after = keyring(&file);
        assert_eq!(after.active_key_id(), "kek-2026-11");
        assert_eq!(after.open(old_record, &old).unwrap(), input());
        let new_record = Uuid::now_v7();
        let new = after.seal(new_record, &input(), &["DE89"]).unwrap();
        assert_eq!(new.kek_id, "kek-2026-11");
        assert_eq!(after.open(new_record, &new).unwrap(), input());
        // The old keyring cannot open what the new key sealed.
        assert!(matches!(
            before.open(new_record, &new),
            Err(EnvelopeError::UnknownKey { kek_id }) if kek_id == "kek-2026-11"
        ));
        // Tokens depend only on the index secret.
        assert_eq!(new.account_tokens, old.account_tokens);
        assert_eq!(before.account_token("DE89"), after.account_token("DE89"));

        // Round trip through the file text.
        let reread = KeyFile::from_json(&file.to_json(), Path::new("keys.json")).unwrap();
        assert_eq!(keyring(&reread).open(old_record, &old).unwrap(), input());
        assert_eq!(
            keyring(&reread).key_ids().collect::<Vec<_>>(),
            vec!["kek-2026-05", "kek-2026-11"]
        );

        assert!(file.remove("kek-2026-05"));
        let error = keyring(&file).open(old_record, &old).unwrap_err();
        assert!(matches!(&error, EnvelopeError::UnknownKey { kek_id } if kek_id == "kek-2026-05"));
        assert!(error.to_string().contains("kek-2026-05"), "{error}");
    }

    #[test]
    fn tokens_are_stable_distinct_and_hex() {
        let file = KeyFile::generate("kek-a").unwrap();
        let ring = keyring(&file);
        let token = ring.account_token("DE89370400440532013000");
        assert_eq!(token.len(), ACCOUNT_TOKEN_HEX_CHARS);
        assert!(
            token
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        );
        assert_eq!(token, ring.account_token("DE89370400440532013000"));
        assert_ne!(token, ring.account_token("DE89370400440532013001"));
        // Another index secret gives other tokens.
        let other = keyring(&KeyFile::generate("kek-a").unwrap());
        assert_ne!(token, other.account_token("DE89370400440532013000"));
    }

    #[test]
    fn a_known_key_file_gives_known_tokens() {
        // Pins the token derivation (the index is persisted; a change would orphan it).
        let text = format!(
            r#"{{"active": "k1", "keys": {{"k1": "{zero}"}}, "index_secret": "{zero}"}}"#,
            zero = BASE64.encode([0u8; 32])
        );
        let ring = keyring(&KeyFile::from_json(&text, Path::new("t")).unwrap());
        let mut index_key = <Hmac<Sha256> as KeyInit>::new_from_slice(&[0u8; 32]).unwrap();
        index_key.update(INDEX_KEY_LABEL);
        let index_key = index_key.finalize().into_bytes();
        let mut token = <Hmac<Sha256> as KeyInit>::new_from_slice(&index_key).unwrap();
        token.update(b"DE89370400440532013000");
        let expected = &hex::encode(token.finalize().into_bytes())[..32];
        assert_eq!(ring.account_token("DE89370400440532013000"), expected);
    }

    #[test]
    fn oversized_inputs_are_refused() {
        let ring = keyring(&KeyFile::generate("kek-a").unwrap());
        let big = Value::String("x".repeat(PLAINTEXT_BYTES_MAX));
        assert!(matches!(
            ring.seal(Uuid::now_v7(), &big, &[]),
            Err(EnvelopeError::PlaintextTooLarge { .. })
        ));
        let accounts = vec!["a"; ACCOUNT_TOKENS_MAX + 1];
        assert!(matches!(
            ring.seal(Uuid::now_v7(), &input(), &accounts),
            Err(EnvelopeError::TooManyAccounts { .. })
        ));
    }

    #[test]
    fn key_file_errors_are_clear_and_never_show_key_material() {
        let secret = BASE64.encode([7u8; 32]);
        let short = BASE64.encode([7u8; 16]);
        let cases = [
            (
                format!(r#"{{"keys": {{"a": "{secret}"}}, "index_secret": "{secret}"}}"#),
                "active",
            ),
            (
                format!(r#"{{"active": "{secret}", "keys": {{}}, "index_secret": "{secret}"}}"#),
                "active",
            ),
            (
                format!(
                    r#"{{"active": "a", "keys": {{"a": "{short}"}}, "index_secret": "{secret}"}}"#
                ),
                "keys.a",
            ),
            (
                format!(
                    r#"{{"active": "a", "keys": {{"a": "not base64!{secret}"}}, "index_secret": "{secret}"}}"#
                ),
                "keys.a",
            ),
            (
                format!(
                    r#"{{"active": "a", "keys": {{"a": "{secret}"}}, "index_secret": "{short}"}}"#
                ),
                "index_secret",
            ),
            (
                format!(r#"{{"active": "a", "keys": {{"a": "{secret}"}}}}"#),
                "index_secret",
            ),
            (
                format!(r#"{{"active": "a", "keys": "{secret}", "index_secret": "{secret}"}}"#),
                "keys",
            ),
            (
                format!(
                    r#"{{"active": "a", "keys": {{"a": ["{secret}"]}}, "index_secret": "{secret}"}}"#
                ),
                "keys.a",
            ),
            (
                format!(
                    r#"{{"active": "a", "keys": {{"a": "{secret}"}}, "index_secret": "{secret}", "extra": "{secret}"}}"#
                ),
                "extra",
            ),
            (
                format!(
                    r#"{{"active": "a", "keys": {{"bad id": "{secret}"}}, "index_secret": "{secret}"}}"#
                ),
                "keys",
            ),
            (format!(r#"["{secret}"]"#), "(root)"),
        ];
        for (text, field) in &cases {
            check_invalid(text, field);
            let message = KeyFile::from_json(text, Path::new("keys.json"))
                .unwrap_err()
                .to_string();
            assert!(message.contains("keys.json"), "{message}");
            assert!(!message.contains(&secret), "{message}");
            assert!(!message.contains(&short), "{message}");
            assert!(
                !message.contains("AAAA") && !message.contains("Bwc"),
                "{message}"
            );
        }
        // An active key that is not among the keys.
        let text = format!(
            r#"{{"active": "b", "keys": {{"a": "{secret}"}}, "index_secret": "{secret}"}}"#
        );
        let file = KeyFile::from_json(&text, Path::new("keys.json")).unwrap();
        let error = Keyring::from_key_file(file, Path::new("keys.json")).unwrap_err();
        assert!(error.to_string().contains("`b`"), "{error}");

        // Broken JSON: position only, never the text around it.
        let error = KeyFile::from_json(
            &format!(r#"{{"active": "a", "keys": {secret}"#),
            Path::new("k"),
        )
        .unwrap_err();
        assert!(
            matches!(error, KeyringError::Syntax { line: 1, .. }),
            "{error}"
        );
        assert!(!error.to_string().contains(&secret[..8]), "{error}");

        // Debug of a keyring and of a key file shows ids, never keys.
        let text = format!(
            r#"{{"active": "a", "keys": {{"a": "{secret}"}}, "index_secret": "{secret}"}}"#
        );
        let file = KeyFile::from_json(&text, Path::new("k")).unwrap();
        let debug = format!("{file:?} {:?}", keyring(&file));
        assert!(debug.contains("\"a\""), "{debug}");
        assert!(
            !debug.contains(&secret) && !debug.contains("7, 7"),
            "{debug}"
        );
    }

    #[test]
    fn key_files_and_directories_load() {
        let directory = tempfile::tempdir().unwrap();
        let mut file = KeyFile::generate("kek-1").unwrap();
        file.rotate("kek-2").unwrap();
        let path = directory.path().join("keyring.json");
        std::fs::write(&path, file.to_json()).unwrap();
        let from_file = Keyring::load(&path).unwrap();
        let record_id = Uuid::now_v7();
        let sealed = from_file.seal(record_id, &input(), &["x"]).unwrap();

        // The same keyring as a mounted secret directory.
        let mounted = directory.path().join("mounted");
        std::fs::create_dir(&mounted).unwrap();
        let document: Value = serde_json::from_str(&file.to_json()).unwrap();
        std::fs::write(mounted.join("active"), "kek-2\n").unwrap();
        std::fs::write(
            mounted.join("index_secret"),
            format!("{}\n", document["index_secret"].as_str().unwrap()),
        )
        .unwrap();
        for id in ["kek-1", "kek-2"] {
            std::fs::write(
                mounted.join(format!("{id}.key")),
                document["keys"][id].as_str().unwrap(),
            )
            .unwrap();
        }
        std::fs::create_dir(mounted.join("..data")).unwrap();
        std::fs::write(mounted.join("README"), "ignored").unwrap();
        let from_directory = Keyring::load(&mounted).unwrap();
        assert_eq!(from_directory.active_key_id(), "kek-2");
        assert_eq!(from_directory.open(record_id, &sealed).unwrap(), input());
        assert_eq!(
            from_directory.account_token("x"),
            from_file.account_token("x")
        );

        std::fs::remove_file(mounted.join("active")).unwrap();
        let error = Keyring::load(&mounted).unwrap_err();
        assert!(
            matches!(&error, KeyringError::Invalid { field, .. } if field == "active"),
            "{error}"
        );

        let error = Keyring::load(&directory.path().join("absent.json")).unwrap_err();
        assert!(matches!(error, KeyringError::Read { .. }), "{error}");

        let huge = directory.path().join("huge.json");
        std::fs::write(&huge, " ".repeat(KEY_FILE_BYTES_MAX as usize + 1)).unwrap();
        assert!(matches!(
            Keyring::load(&huge),
            Err(KeyringError::TooLarge { .. })
        ));
    }
}

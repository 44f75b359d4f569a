//! Signed checkpoints: "at `timestamp` the log held `tree_size` records whose Merkle root is
//! `root_hash`", signed with an Ed25519 key the gateway reads from a file. With only the
//! public key an auditor can check a checkpoint, every record's inclusion under it, and that a
//! later checkpoint extends it (append-only), without trusting whoever runs the database.
//!
//! The signed bytes are a small text ([`Checkpoint::signed_message`]), in the spirit of the
//! signed tree heads of Certificate Transparency and the C2SP "signed note" checkpoints:
//!
//! ```text
//! countersign-checkpoint/v1
//! <key id>
//! <tree size>
//! <root hash, lowercase hex>
//! <timestamp, RFC 3339 UTC with 9 fraction digits>
//! ```
//!
//! Keys: the private key is a PKCS#8 PEM file (`openssl genpkey -algorithm ed25519`), the
//! public key an SPKI PEM (`openssl pkey -pubout`). The key id is the first 16 hex characters
//! of SHA-256 over the raw 32-byte public key, so an export names the key it needs.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::encoding::{format_timestamp, parse_timestamp};
use crate::merkle::Hash;

/// First line of every signed checkpoint message; changing it invalidates every signature.
pub const CHECKPOINT_FORMAT: &str = "countersign-checkpoint/v1";
/// Longest key file accepted (a PEM key is a few hundred bytes).
const KEY_FILE_BYTES_MAX: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read key file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is larger than {KEY_FILE_BYTES_MAX} bytes")]
    KeyFileTooLarge { path: String },
    #[error("not an Ed25519 {what} in PEM form: {detail}")]
    BadKey { what: &'static str, detail: String },
    #[error("checkpoint is signed by key {found}, expected key {expected}")]
    WrongKey { expected: String, found: String },
    #[error("checkpoint signature does not verify")]
    BadSignature,
    #[error("cannot generate a key: {0}")]
    Random(String),
}

/// A signed statement of the log's size and Merkle root.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub tree_size: u64,
    pub root_hash: Hash,
    pub timestamp: OffsetDateTime,
    pub key_id: String,
    pub signature: [u8; 64],
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Checkpoint")
            .field("tree_size", &self.tree_size)
            .field("root_hash", &hex::encode(self.root_hash))
            .field("timestamp", &format_timestamp(self.timestamp))
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn message(key_id: &str, tree_size: u64, root_hash: &Hash, timestamp: OffsetDateTime) -> String {
    format!(
        "{CHECKPOINT_FORMAT}\n{key_id}\n{tree_size}\n{}\n{}\n",
        hex::encode(root_hash),
        format_timestamp(timestamp)
    )
}

impl Checkpoint {
    /// The exact text that is signed.
    pub fn signed_message(&self) -> String {
        message(
            &self.key_id,
            self.tree_size,
            &self.root_hash,
            self.timestamp,
        )
    }

    /// Checks the key id and the signature. Says nothing about whether the root matches any
    /// records: callers recompute it.
    pub fn verify(&self, key: &CheckpointVerifier) -> Result<(), CheckpointError> {
        if self.key_id != key.key_id {
            return Err(CheckpointError::WrongKey {
                expected: key.key_id.clone(),
                found: self.key_id.clone(),
            });
        }
        key.key
            .verify(
                self.signed_message().as_bytes(),
                &Signature::from_bytes(&self.signature),
            )
            .map_err(|_| CheckpointError::BadSignature)
    }
}

/// JSON form: `{"tree_size", "root_hash" (hex), "timestamp" (RFC 3339), "key_id",
/// "signature" (standard base64)}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointJson {
    tree_size: u64,
    root_hash: String,
    timestamp: String,
    key_id: String,
    signature: String,
}

impl Serialize for Checkpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        CheckpointJson {
            tree_size: self.tree_size,
            root_hash: hex::encode(self.root_hash),
            timestamp: format_timestamp(self.timestamp),
            key_id: self.key_id.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(self.signature),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Checkpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let json = CheckpointJson::deserialize(deserializer)?;
        let root_hash = hex::decode(&json.root_hash)
            .ok()
            .and_then(|bytes| Hash::try_from(bytes).ok())
            .ok_or_else(|| D::Error::custom("root_hash must be 64 hex characters"))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&json.signature)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .ok_or_else(|| D::Error::custom("signature must be 64 bytes in base64"))?;
        let timestamp = parse_timestamp(&json.timestamp)
            .map_err(|error| D::Error::custom(format!("timestamp: {error}")))?;
        Ok(Checkpoint {
            tree_size: json.tree_size,
            root_hash,
            timestamp,
            key_id: json.key_id,
            signature,
        })
    }
}

fn key_id_of(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

fn read_key_file(path: &Path) -> Result<String, CheckpointError> {
    let display = path.display().to_string();
    let metadata = std::fs::metadata(path).map_err(|source| CheckpointError::KeyFile {
        path: display.clone(),
        source,
    })?;
    if metadata.len() > KEY_FILE_BYTES_MAX {
        return Err(CheckpointError::KeyFileTooLarge { path: display });
    }
    std::fs::read_to_string(path).map_err(|source| CheckpointError::KeyFile {
        path: display,
        source,
    })
}

/// Signs checkpoints. Debug never prints the key.
pub struct CheckpointSigner {
    key: SigningKey,
    key_id: String,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    fn from_key(key: SigningKey) -> CheckpointSigner {
        let key_id = key_id_of(&key.verifying_key());
        CheckpointSigner { key, key_id }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<CheckpointSigner, CheckpointError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|error| CheckpointError::Random(error.to_string()))?;
        Ok(CheckpointSigner::from_key(SigningKey::from_bytes(&seed)))
    }

    /// A PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<CheckpointSigner, CheckpointError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(CheckpointSigner::from_key)
            .map_err(|error| CheckpointError::BadKey {
                what: "private key (PKCS#8)",
                detail: error.to_string(),
            })
    }

    pub fn from_pem_file(path: &Path) -> Result<CheckpointSigner, CheckpointError> {
        CheckpointSigner::from_pem(&read_key_file(path)?)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn sign(&self, tree_size: u64, root_hash: Hash, timestamp: OffsetDateTime) -> Checkpoint {
        let timestamp = timestamp.to_offset(time::UtcOffset::UTC);
        let signature = self
            .key
            .sign(message(&self.key_id, tree_size, &root_hash, timestamp).as_bytes());
        Checkpoint {
            tree_size,
            root_hash,
            timestamp,
            key_id: self.key_id.clone(),
            signature: signature.to_bytes(),
        }
    }

    /// The private key as PKCS#8 PEM, for writing a key file (mode 0600 is the caller's job).
    pub fn private_key_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(Default::default())
            .expect("an Ed25519 key always encodes as PKCS#8")
            .to_string()
    }

    pub fn verifier(&self) -> CheckpointVerifier {
        CheckpointVerifier::from_key(self.key.verifying_key())
    }
}

/// Checks checkpoints with the public key alone.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckpointVerifier {
    key: VerifyingKey,
    key_id: String,
}

impl fmt::Debug for CheckpointVerifier {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CheckpointVerifier")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl CheckpointVerifier {
    fn from_key(key: VerifyingKey) -> CheckpointVerifier {
        let key_id = key_id_of(&key);
        CheckpointVerifier { key, key_id }
    }

    /// An SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<CheckpointVerifier, CheckpointError> {
        VerifyingKey::from_public_key_pem(pem)
            .map(CheckpointVerifier::from_key)
            .map_err(|error| CheckpointError::BadKey {
                what: "public key (SPKI)",
                detail: error.to_string(),
            })
    }

    pub fn from_pem_file(path: &Path) -> Result<CheckpointVerifier, CheckpointError> {
        CheckpointVerifier::from_pem(&read_key_file(path)?)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key_pem(&self) -> String {
        self.key
            .to_public_key_pem(Default::default())
            .expect("an Ed25519 key always encodes as SPKI")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{Frontier, leaf_hash};

    #[test]
    fn a_signed_checkpoint_verifies_with_the_public_key_alone() {
        let signer = CheckpointSigner::generate().unwrap();
        let verifier = CheckpointVerifier::from_pem(&signer.verifier().public_key_pem()).unwrap();
        assert_eq!(verifier.key_id(), signer.key_id());
        let mut frontier = Frontier::new();
        frontier.push(leaf_hash(&[7; 32]));
        let checkpoint = signer.sign(1, frontier.root(), OffsetDateTime::now_utc());
        checkpoint.verify(&verifier).unwrap();

        let json = serde_json::to_string(&checkpoint).unwrap();
        let back: Checkpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, checkpoint);
        back.verify(&verifier).unwrap();

        for tampered in [
            Checkpoint {
                tree_size: 2,
                ..checkpoint.clone()
            },
            Checkpoint {
                root_hash: [0; 32],
                ..checkpoint.clone()
            },
            Checkpoint {
                timestamp: checkpoint.timestamp + time::Duration::SECOND,
                ..checkpoint.clone()
            },
        ] {
            assert!(matches!(
                tampered.verify(&verifier),
                Err(CheckpointError::BadSignature)
            ));
        }
        let other = CheckpointSigner::generate().unwrap();
        assert!(matches!(
            other
                .sign(1, frontier.root(), checkpoint.timestamp)
                .verify(&verifier),
            Err(CheckpointError::WrongKey { .. })
        ));
    }

    #[test]
    fn keys_round_trip_through_pem_and_bad_pem_is_a_clear_error() {
        let signer = CheckpointSigner::generate().unwrap();
        let again = CheckpointSigner::from_pem(&signer.private_key_pem()).unwrap();
        assert_eq!(again.key_id(), signer.key_id());
        assert!(!format!("{signer:?}").contains("BEGIN"));
        let error = CheckpointVerifier::from_pem("not a key").unwrap_err();
        assert!(error.to_string().contains("public key"), "{error}");
        let error = CheckpointSigner::from_pem(&signer.verifier().public_key_pem()).unwrap_err();
        assert!(error.to_string().contains("private key"), "{error}");
    }

    #[test]
    fn the_signed_message_is_stable() {
        let signer = CheckpointSigner::from_pem(
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBtbyPT2L11dB9eQKwFnB4eMPapHvz0xGgZ8Zkxb7bki\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let timestamp = parse_timestamp("2026-11-26T12:00:00.000000000Z").unwrap();
        let checkpoint = signer.sign(3, [0xab; 32], timestamp);
        assert_eq!(
            checkpoint.signed_message(),
            format!(
                "countersign-checkpoint/v1\n{}\n3\n{}\n2026-11-26T12:00:00.000000000Z\n",
                signer.key_id(),
                "ab".repeat(32)
            )
        );
        // Ed25519 is deterministic: same key, same message, same signature.
        assert_eq!(
            checkpoint.signature,
            signer.sign(3, [0xab; 32], timestamp).signature
        );
    }
}

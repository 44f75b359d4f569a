//! Bundle signatures the OPA way: `.signatures.json` holds one JWT whose payload lists every
//! bundle file with its digest (`{"files": [{"name", "hash", "algorithm"}], ...}`).
//!
//! Digests follow OPA's `bundle/hash.go` so that a bundle signed by `opa build --signing-key`
//! verifies here and one signed by `countersign bundle build` verifies in OPA:
//! * plain files (`.rego`, anything unknown): the digest of the raw bytes;
//! * structured files (base name `data.json`, `data.yaml`, `.manifest`, `signatures.json`):
//!   the digest of a canonical encoding of the parsed document — objects as `{` key `:` value
//!   `,` … `}` with keys in byte order, arrays as `[` … `]`, strings escaped as Go's
//!   `encoding/json` does without HTML escaping, and numbers as the literal text of the source
//!   (OPA decodes with `UseNumber`). Whitespace and key order therefore do not matter.
//!
//! Only `jsonwebtoken` knows the JWS wire format; this module knows which claims OPA puts in it.

use std::collections::{BTreeMap, HashMap};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512, Sha512_224, Sha512_256};

/// The bundle file holding the signatures; never itself listed in a signature.
pub const SIGNATURES_FILE: &str = ".signatures.json";
/// The digest OPA writes for every file it signs.
const DEFAULT_HASH_ALGORITHM: &str = "SHA-256";
/// A JSON document nested deeper than this is refused rather than recursed into.
const JSON_DEPTH_MAX: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("bundle is not signed: {SIGNATURES_FILE} is missing but verification is configured")]
    Unsigned,
    #[error(
        "bundle is signed ({SIGNATURES_FILE}) but no verification key is configured \
         (set [policy] verification_key, or skip verification where that is allowed)"
    )]
    NoKey,
    #[error("{SIGNATURES_FILE}: {0}")]
    Malformed(String),
    #[error("bundle signature is not valid for the configured key and algorithm: {0}")]
    BadSignature(String),
    #[error("bundle signature scope mismatch: signed for {signed:?}, expected {expected:?}")]
    Scope { signed: String, expected: String },
    #[error("file {0} is not included in the bundle signature")]
    Unlisted(String),
    #[error("file(s) {0:?} are listed in the bundle signature but not found in the bundle")]
    Missing(Vec<String>),
    #[error("{name}: digest mismatch (signed {signed}, actual {actual})")]
    Digest {
        name: String,
        signed: String,
        actual: String,
    },
    #[error("{name}: unsupported hashing algorithm {algorithm:?}")]
    HashAlgorithm { name: String, algorithm: String },
    #[error("{0}: cannot parse structured file for hashing: {1}")]
    Structured(String, String),
    #[error("signing key: {0}")]
    Key(String),
}

/// The two algorithms Countersign signs and verifies with (OPA supports more; a bank's key
/// policy rarely wants HMAC or PS* for this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    Rs256,
    Es256,
}

impl SigningAlgorithm {
    pub fn parse(text: &str) -> Result<SigningAlgorithm, SignatureError> {
        match text {
            "RS256" => Ok(SigningAlgorithm::Rs256),
            "ES256" => Ok(SigningAlgorithm::Es256),
            other => Err(SignatureError::Key(format!(
                "unsupported algorithm {other:?} (RS256 or ES256)"
            ))),
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            SigningAlgorithm::Rs256 => Algorithm::RS256,
            SigningAlgorithm::Es256 => Algorithm::ES256,
        }
    }
}

/// How a bundle's signature is checked: a public key (PEM), its algorithm and, as in OPA's
/// `keys` config, an optional key id and scope.
#[derive(Clone)]
pub struct VerificationConfig {
    key: DecodingKey,
    algorithm: SigningAlgorithm,
    /// When set it takes precedence over the token's `kid`, as in OPA. With one key it is
    /// informational: the signature itself decides.
    pub key_id: Option<String>,
    /// Must equal the token's `scope` claim (both may be absent).
    pub scope: Option<String>,
}

impl std::fmt::Debug for VerificationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationConfig")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl VerificationConfig {
    /// `public_key_pem`: an SPKI `PUBLIC KEY` (RSA or EC P-256) or a PKCS#1 `RSA PUBLIC KEY`.
    pub fn new(
        public_key_pem: &[u8],
        algorithm: SigningAlgorithm,
        key_id: Option<String>,
        scope: Option<String>,
    ) -> Result<VerificationConfig, SignatureError> {
        let key = match algorithm {
            SigningAlgorithm::Rs256 => DecodingKey::from_rsa_pem(public_key_pem),
            SigningAlgorithm::Es256 => DecodingKey::from_ec_pem(public_key_pem),
        }
        .map_err(|error| {
            SignatureError::Key(format!("cannot read the {algorithm:?} public key: {error}"))
        })?;
        Ok(VerificationConfig {
            key,
            algorithm,
            key_id,
            scope,
        })
    }
}

/// How `bundle build` signs: a private key (PEM, PKCS#8 or PKCS#1/SEC1), its algorithm, an
/// optional key id (JWT header `kid` and, without claims, the deprecated `keyid` claim, as
/// OPA writes it) and optional extra claims (`--claims-file`, e.g. `scope`, `iss`).
pub struct SigningConfig {
    key: EncodingKey,
    algorithm: SigningAlgorithm,
    pub key_id: Option<String>,
    pub claims: Option<serde_json::Map<String, serde_json::Value>>,
}

impl SigningConfig {
    pub fn new(
        private_key_pem: &[u8],
        algorithm: SigningAlgorithm,
        key_id: Option<String>,
        claims: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<SigningConfig, SignatureError> {
        let key = match algorithm {
            SigningAlgorithm::Rs256 => EncodingKey::from_rsa_pem(private_key_pem),
            SigningAlgorithm::Es256 => EncodingKey::from_ec_pem(private_key_pem),
        }
        .map_err(|error| {
            SignatureError::Key(format!(
                "cannot read the {algorithm:?} private key: {error}"
            ))
        })?;
        Ok(SigningConfig {
            key,
            algorithm,
            key_id,
            claims,
        })
    }
}

/// One entry of the signed payload's `files`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileDigest {
    pub name: String,
    pub hash: String,
    pub algorithm: String,
}

#[derive(Debug, Deserialize)]
struct SignaturesDocument {
    #[serde(default)]
    signatures: Vec<String>,
    #[serde(default)]
    plugin: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SignedPayload {
    #[serde(default)]
    files: Vec<FileDigest>,
    #[serde(default)]
    scope: Option<String>,
}

/// Signs `files` (bundle-relative names without a leading `/`, with their content) and
/// returns the content of `.signatures.json`.
pub fn sign(
    files: &[(String, Vec<u8>)],
    config: &SigningConfig,
) -> Result<Vec<u8>, SignatureError> {
    let mut listed = Vec::with_capacity(files.len());
    for (name, content) in files {
        listed.push(FileDigest {
            name: name.clone(),
            hash: hash_file(name, content, DEFAULT_HASH_ALGORITHM)?,
            algorithm: DEFAULT_HASH_ALGORITHM.to_owned(),
        });
    }
    let mut payload = serde_json::Map::new();
    payload.insert(
        "files".to_owned(),
        serde_json::to_value(&listed).expect("file digests serialize"),
    );
    match (&config.claims, &config.key_id) {
        (Some(claims), _) => {
            for (key, value) in claims {
                payload.insert(key.clone(), value.clone());
            }
        }
        // The deprecated `keyid` claim, written by OPA when there are no extra claims.
        (None, Some(key_id)) => {
            payload.insert("keyid".to_owned(), key_id.clone().into());
        }
        (None, None) => {}
    }
    let mut header = Header::new(config.algorithm.jwt());
    // OPA's signer sets only `alg` (and `kid`); `typ` is not part of its format.
    header.typ = None;
    header.kid = config.key_id.clone();
    let token = jsonwebtoken::encode(&header, &payload, &config.key)
        .map_err(|error| SignatureError::Key(format!("cannot sign: {error}")))?;
    let document = serde_json::json!({ "signatures": [token] });
    Ok(serde_json::to_vec_pretty(&document).expect("signatures document serializes"))
}

/// Verifies `.signatures.json` against every other file of the bundle: exactly one JWT, valid
/// for the configured key and algorithm, the right scope, and one matching digest per file —
/// no file unlisted, no listed file missing.
pub fn verify(
    signatures_json: &[u8],
    files: &[(String, Vec<u8>)],
    config: &VerificationConfig,
) -> Result<(), SignatureError> {
    let document: SignaturesDocument = serde_json::from_slice(signatures_json)
        .map_err(|error| SignatureError::Malformed(error.to_string()))?;
    if let Some(plugin) = document.plugin.filter(|plugin| !plugin.is_empty()) {
        return Err(SignatureError::Malformed(format!(
            "signature plugin {plugin:?} is not supported"
        )));
    }
    let token = match document.signatures.as_slice() {
        [] => {
            return Err(SignatureError::Malformed(
                "missing JWT (expected exactly one)".to_owned(),
            ));
        }
        [token] => token,
        _ => {
            return Err(SignatureError::Malformed(
                "multiple JWTs not supported (expected exactly one)".to_owned(),
            ));
        }
    };
    let mut validation = Validation::new(config.algorithm.jwt());
    // OPA checks the signature only; bundle JWTs carry no expiry or audience.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let payload = jsonwebtoken::decode::<SignedPayload>(token, &config.key, &validation)
        .map_err(|error| SignatureError::BadSignature(error.to_string()))?
        .claims;
    let signed_scope = payload.scope.unwrap_or_default();
    let expected_scope = config.scope.clone().unwrap_or_default();
    if signed_scope != expected_scope {
        return Err(SignatureError::Scope {
            signed: signed_scope,
            expected: expected_scope,
        });
    }
    let mut listed: HashMap<String, FileDigest> = payload
        .files
        .into_iter()
        .map(|file| (file.name.clone(), file))
        .collect();
    for (name, content) in files {
        let entry = listed
            .remove(name)
            .ok_or_else(|| SignatureError::Unlisted(name.clone()))?;
        let actual = hash_file(name, content, &entry.algorithm)?;
        if !actual.eq_ignore_ascii_case(&entry.hash) {
            return Err(SignatureError::Digest {
                name: name.clone(),
                signed: entry.hash,
                actual,
            });
        }
    }
    if !listed.is_empty() {
        let mut missing: Vec<String> = listed.into_keys().collect();
        missing.sort();
        return Err(SignatureError::Missing(missing));
    }
    Ok(())
}

/// OPA's "structured document" rule: these files are hashed over their parsed content.
fn is_structured(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    matches!(
        base,
        "data.json" | "data.yaml" | ".manifest" | "signatures.json"
    )
}

/// The hex digest of one bundle file as OPA computes it.
pub fn hash_file(name: &str, content: &[u8], algorithm: &str) -> Result<String, SignatureError> {
    let bytes = if is_structured(name) {
        let canonical = if let Ok(text) = std::str::from_utf8(content)
            && let Ok(value) = parse_json(text)
        {
            value
        } else {
            // OPA falls back to YAML for anything that is not valid JSON.
            let yaml: serde_json::Value = serde_norway::from_slice(content)
                .map_err(|error| SignatureError::Structured(name.to_owned(), error.to_string()))?;
            Canonical::from_yaml(&yaml)
        };
        let mut out = Vec::new();
        canonical.encode(&mut out);
        out
    } else {
        content.to_vec()
    };
    let digest = match algorithm {
        "SHA-256" => Sha256::digest(&bytes).to_vec(),
        "SHA-224" => Sha224::digest(&bytes).to_vec(),
        "SHA-384" => Sha384::digest(&bytes).to_vec(),
        "SHA-512" => Sha512::digest(&bytes).to_vec(),
        "SHA-512-224" => Sha512_224::digest(&bytes).to_vec(),
        "SHA-512-256" => Sha512_256::digest(&bytes).to_vec(),
        // OPA also accepts MD5 and SHA-1; we refuse them on purpose: a collision would let a
        // tampered file pass.
        other => {
            return Err(SignatureError::HashAlgorithm {
                name: name.to_owned(),
                algorithm: other.to_owned(),
            });
        }
    };
    Ok(hex::encode(digest))
}

/// A JSON document as OPA hashes it: numbers keep their literal text, objects are sorted.
#[derive(Debug, Clone, PartialEq)]
enum Canonical {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Canonical>),
    Object(BTreeMap<String, Canonical>),
}

impl Canonical {
    fn from_yaml(value: &serde_json::Value) -> Canonical {
        match value {
            serde_json::Value::Null => Canonical::Null,
            serde_json::Value::Bool(flag) => Canonical::Bool(*flag),
            serde_json::Value::Number(number) => Canonical::Number(go_number_text(number)),
            serde_json::Value::String(text) => Canonical::String(text.clone()),
            serde_json::Value::Array(items) => {
                Canonical::Array(items.iter().map(Canonical::from_yaml).collect())
            }
            serde_json::Value::Object(map) => Canonical::Object(
                map.iter()
                    .map(|(key, value)| (key.clone(), Canonical::from_yaml(value)))
                    .collect(),
            ),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Canonical::Null => out.extend_from_slice(b"null"),
            Canonical::Bool(true) => out.extend_from_slice(b"true"),
            Canonical::Bool(false) => out.extend_from_slice(b"false"),
            Canonical::Number(text) => out.extend_from_slice(text.as_bytes()),
            Canonical::String(text) => encode_go_string(text, out),
            Canonical::Array(items) => {
                out.push(b'[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    item.encode(out);
                }
                out.push(b']');
            }
            Canonical::Object(map) => {
                out.push(b'{');
                // BTreeMap<String, _> iterates in byte order, as Go's sort.Strings.
                for (index, (key, value)) in map.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    encode_go_string(key, out);
                    out.push(b':');
                    value.encode(out);
                }
                out.push(b'}');
            }
        }
    }
}

/// How Go's `json.Marshal` prints a number that came out of YAML (OPA converts YAML to JSON
/// before hashing): integers as integers, floats in the shortest form, `e+NN` above 1e21.
fn go_number_text(number: &serde_json::Number) -> String {
    if number.is_i64() || number.is_u64() {
        return number.to_string();
    }
    let float = number.as_f64().unwrap_or(0.0);
    let magnitude = float.abs();
    if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
        let text = format!("{float:e}");
        // Rust writes `1e21`, Go `1e+21`; negative exponents agree (`1.5e-7`).
        match text.split_once('e') {
            Some((mantissa, exponent)) if !exponent.starts_with('-') => {
                format!("{mantissa}e+{exponent:0>2}")
            }
            _ => text,
        }
    } else {
        // Display never uses an exponent and drops a trailing `.0`, as Go's 'f' format.
        format!("{float}")
    }
}

/// Go's `encoding/json` string encoding with `SetEscapeHTML(false)`.
fn encode_go_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for character in text.chars() {
        match character {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            control if (control as u32) < 0x20 => {
                let byte = control as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            }
            other => {
                let mut buffer = [0_u8; 4];
                out.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// A small JSON parser that keeps number literals as written (serde_json would turn `1.50`
/// into `1.5`, and OPA hashes `1.50`). Duplicate keys: the last one wins, as in Go.
fn parse_json(text: &str) -> Result<Canonical, String> {
    let mut parser = JsonParser {
        bytes: text.as_bytes(),
        text,
        position: 0,
    };
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.position != parser.bytes.len() {
        return Err(format!("trailing characters at byte {}", parser.position));
    }
    Ok(value)
}

struct JsonParser<'a> {
    bytes: &'a [u8],
    text: &'a str,
    position: usize,
}

impl JsonParser<'_> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.position) {
            self.position += 1;
        }
    }

    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.position)
    }

    fn expect(&mut self, literal: &str) -> Result<(), String> {
        if self.bytes[self.position..].starts_with(literal.as_bytes()) {
            self.position += literal.len();
            Ok(())
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Canonical, String> {
        if depth > JSON_DEPTH_MAX {
            return Err(self.error("document nested too deeply"));
        }
        match self.bytes.get(self.position) {
            Some(b'{') => {
                self.position += 1;
                let mut map = BTreeMap::new();
                self.skip_whitespace();
                if self.bytes.get(self.position) == Some(&b'}') {
                    self.position += 1;
                    return Ok(Canonical::Object(map));
                }
                loop {
                    self.skip_whitespace();
                    let key = self.string()?;
                    self.skip_whitespace();
                    self.expect(":")?;
                    self.skip_whitespace();
                    let value = self.value(depth + 1)?;
                    map.insert(key, value);
                    self.skip_whitespace();
                    match self.bytes.get(self.position) {
                        Some(b',') => self.position += 1,
                        Some(b'}') => {
                            self.position += 1;
                            return Ok(Canonical::Object(map));
                        }
                        _ => return Err(self.error("expected , or }")),
                    }
                }
            }
            Some(b'[') => {
                self.position += 1;
                let mut items = Vec::new();
                self.skip_whitespace();
                if self.bytes.get(self.position) == Some(&b']') {
                    self.position += 1;
                    return Ok(Canonical::Array(items));
                }
                loop {
                    self.skip_whitespace();
                    items.push(self.value(depth + 1)?);
                    self.skip_whitespace();
                    match self.bytes.get(self.position) {
                        Some(b',') => self.position += 1,
                        Some(b']') => {
                            self.position += 1;
                            return Ok(Canonical::Array(items));
                        }
                        _ => return Err(self.error("expected , or ]")),
                    }
                }
            }
            Some(b'"') => Ok(Canonical::String(self.string()?)),
            Some(b't') => self.expect("true").map(|()| Canonical::Bool(true)),
            Some(b'f') => self.expect("false").map(|()| Canonical::Bool(false)),
            Some(b'n') => self.expect("null").map(|()| Canonical::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("expected a JSON value")),
        }
    }

    fn number(&mut self) -> Result<Canonical, String> {
        let start = self.position;
        let digits = |parser: &mut Self| {
            let from = parser.position;
            while let Some(b'0'..=b'9') = parser.bytes.get(parser.position) {
                parser.position += 1;
            }
            parser.position > from
        };
        if self.bytes.get(self.position) == Some(&b'-') {
            self.position += 1;
        }
        if self.bytes.get(self.position) == Some(&b'0') {
            self.position += 1;
        } else if !digits(self) {
            return Err(self.error("invalid number"));
        }
        if self.bytes.get(self.position) == Some(&b'.') {
            self.position += 1;
            if !digits(self) {
                return Err(self.error("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.position) {
            self.position += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.position) {
                self.position += 1;
            }
            if !digits(self) {
                return Err(self.error("invalid number"));
            }
        }
        Ok(Canonical::Number(
            self.text[start..self.position].to_owned(),
        ))
    }

    fn string(&mut self) -> Result<String, String> {
        if self.bytes.get(self.position) != Some(&b'"') {
            return Err(self.error("expected a string"));
        }
        self.position += 1;
        let mut out = String::new();
        loop {
            let start = self.position;
            while let Some(&byte) = self.bytes.get(self.position) {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.position += 1;
            }
            out.push_str(&self.text[start..self.position]);
            match self.bytes.get(self.position) {
                Some(b'"') => {
                    self.position += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.position += 1;
                    let escaped = *self
                        .bytes
                        .get(self.position)
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.position += 1;
                    match escaped {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let character = if (0xd800..0xdc00).contains(&first)
                                && self.bytes[self.position..].starts_with(b"\\u")
                            {
                                self.position += 2;
                                let second = self.hex4()?;
                                if (0xdc00..0xe000).contains(&second) {
                                    let combined =
                                        0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00);
                                    char::from_u32(combined).unwrap_or('\u{fffd}')
                                } else {
                                    // Go replaces an unpaired surrogate with U+FFFD.
                                    out.push('\u{fffd}');
                                    char::from_u32(second).unwrap_or('\u{fffd}')
                                }
                            } else {
                                char::from_u32(first).unwrap_or('\u{fffd}')
                            };
                            out.push(character);
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                _ => return Err(self.error("unterminated string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .text
            .get(self.position..self.position + 4)
            .ok_or_else(|| self.error("invalid \\u escape"))?;
        let value =
            u32::from_str_radix(digits, 16).map_err(|_| self.error("invalid \\u escape"))?;
        self.position += 4;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        let mut out = Vec::new();
        parse_json(text).unwrap().encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn structured_files_hash_over_sorted_compact_json_with_literal_numbers() {
        assert_eq!(
            canonical("{ \"b\": [1.50, 2e3, -0],\n \"a\": {\"y\": null, \"x\": true} }"),
            r#"{"a":{"x":true,"y":null},"b":[1.50,2e3,-0]}"#
        );
        // Go escapes: short forms, \u00XX lower-case, U+2028, no HTML escaping; `\/` unescaped.
        assert_eq!(
            canonical(r#"["<&>", "\u0001\b\f\n\t\"\\", "\/", "\u2028", "é"]"#),
            "[\"<&>\",\"\\u0001\\b\\f\\n\\t\\\"\\\\\",\"/\",\"\\u2028\",\"é\"]"
        );
        // Last duplicate key wins, as in Go's map decoding.
        assert_eq!(canonical(r#"{"a":1,"a":2}"#), r#"{"a":2}"#);
    }

    #[test]
    fn rego_files_hash_over_raw_bytes_and_data_json_over_content() {
        let raw = hash_file("x.rego", b"package x\n", "SHA-256").unwrap();
        assert_eq!(raw, hex::encode(Sha256::digest(b"package x\n")));
        let compact = hash_file("a/data.json", br#"{"k":[1,2]}"#, "SHA-256").unwrap();
        let pretty = hash_file("a/data.json", b"{\n  \"k\": [ 1, 2 ]\n}\n", "SHA-256").unwrap();
        assert_eq!(compact, pretty);
        assert_eq!(compact, hex::encode(Sha256::digest(br#"{"k":[1,2]}"#)));
        // YAML data is hashed as the JSON it converts to.
        let yaml = hash_file("data.yaml", b"k:\n  - 1\n  - 2\n", "SHA-256").unwrap();
        assert_eq!(yaml, compact);
        assert!(matches!(
            hash_file("x.rego", b"", "MD5"),
            Err(SignatureError::HashAlgorithm { .. })
        ));
    }

    #[test]
    fn yaml_floats_print_as_go_does() {
        let number = |text: &str| go_number_text(&serde_json::from_str(text).unwrap());
        assert_eq!(number("2.0"), "2");
        assert_eq!(number("1.5"), "1.5");
        assert_eq!(number("1e21"), "1e+21");
        assert_eq!(number("1.5e-7"), "1.5e-7");
        assert_eq!(number("0.000001"), "0.000001");
    }
}

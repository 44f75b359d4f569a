//! Mutual TLS: the server configuration and the caller identity read from a verified
//! client certificate. The certificate is the *only* source of identity; nothing a client
//! sends in a header is ever believed.

use std::{path::Path, sync::Arc};

use rustls::{
    RootCertStore, ServerConfig,
    server::WebPkiClientVerifier,
    version::{TLS12, TLS13},
};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::{RoleMapping, TlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.{key}: cannot read {path}: {message}")]
    Pem {
        key: &'static str,
        path: String,
        message: String,
    },
    #[error("tls.{key}: {path} holds no {what}")]
    Empty {
        key: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls.client_ca_bundle: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn pem_error(key: &'static str, path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        key,
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

fn read_certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| pem_error(key, path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(key, path, error))?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            key,
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certificates)
}

fn read_crl(path: &Path) -> Result<CertificateRevocationListDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| pem_error("crls", path, error))?;
    if bytes.starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::from_pem_slice(&bytes)
            .map_err(|error| pem_error("crls", path, error))
    } else {
        Ok(CertificateRevocationListDer::from(bytes))
    }
}

/// Builds the rustls server configuration: client certificates required and verified
/// against the CA bundle and CRLs; TLS 1.3 only unless `min_version = "1.2"`.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());

    let mut roots = RootCertStore::empty();
    for certificate in read_certificates("client_ca_bundle", &tls.client_ca_bundle)? {
        roots.add(certificate)?;
    }
    let crls = tls
        .crls
        .iter()
        .map(|path| read_crl(path))
        .collect::<Result<Vec<_>, _>>()?;
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if !crls.is_empty() {
        // Only the client's own certificate is checked: our CAs are few and offline, and an
        // intermediate without a CRL must not lock every client out.
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = verifier.build()?;

    let chain = read_certificates("server_cert", &tls.server_cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.server_key)
        .map_err(|error| pem_error("server_key", &tls.server_key, error))?;

    let versions: &[&'static rustls::SupportedProtocolVersion] = if tls.min_version == "1.2" {
        &[&TLS13, &TLS12]
    } else {
        &[&TLS13]
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Who is calling, as read from the verified client certificate.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Identity {
    pub common_name: Option<String>,
    pub organization: Vec<String>,
    pub organizational_units: Vec<String>,
    pub san_uris: Vec<String>,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// SHA-256 over the DER certificate, lowercase hex.
    pub fingerprint_sha256: String,
    pub roles: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("client certificate cannot be parsed: {0}")]
pub struct IdentityError(String);

impl Identity {
    /// Reads the identity from a certificate that rustls has already verified.
    pub fn from_verified_certificate(
        der: &[u8],
        role_mapping: &[RoleMapping],
    ) -> Result<Identity, IdentityError> {
        let (_, certificate) =
            X509Certificate::from_der(der).map_err(|error| IdentityError(error.to_string()))?;
        let subject = certificate.subject();
        let strings =
            |iter: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
                iter.filter_map(|attribute| attribute.as_str().ok().map(str::to_owned))
                    .collect::<Vec<_>>()
            };
        let common_name = strings(&mut subject.iter_common_name()).into_iter().next();
        let organization = strings(&mut subject.iter_organization());
        let organizational_units = strings(&mut subject.iter_organizational_unit());
        let san_uris = match certificate.subject_alternative_name() {
            Ok(Some(extension)) => extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some((*uri).to_owned()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(error) => return Err(IdentityError(error.to_string())),
        };
        let mut identity = Identity {
            common_name,
            organization,
            organizational_units,
            san_uris,
            serial: hex::encode(certificate.tbs_certificate.raw_serial()),
            fingerprint_sha256: hex::encode(Sha256::digest(der)),
            roles: Vec::new(),
        };
        identity.roles = roles_for(&identity, role_mapping);
        Ok(identity)
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }

    pub fn has_any_role(&self, roles: &[&str]) -> bool {
        roles.iter().any(|role| self.has_role(role))
    }
}

fn roles_for(identity: &Identity, role_mapping: &[RoleMapping]) -> Vec<String> {
    let mut roles: Vec<String> = role_mapping
        .iter()
        .filter(|mapping| {
            mapping
                .match_ou
                .as_ref()
                .is_some_and(|ou| identity.organizational_units.contains(ou))
                || mapping.match_san_uri_prefix.as_ref().is_some_and(|prefix| {
                    identity.san_uris.iter().any(|uri| uri.starts_with(prefix))
                })
                || mapping
                    .match_common_name
                    .as_ref()
                    .is_some_and(|name| identity.common_name.as_ref() == Some(name))
        })
        .flat_map(|mapping| mapping.roles.iter().cloned())
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertificateAuthority, ClientSpec};

    #[test]
    fn identity_comes_from_the_certificate() {
        let ca = CertificateAuthority::generate("Test CA").unwrap();
        let issued = ca
            .issue_client(&ClientSpec::for_role("mobile-banking", "channel"))
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap();
        let mapping = vec![
            RoleMapping {
                match_ou: Some("channel".into()),
                match_san_uri_prefix: None,
                match_common_name: None,
                roles: vec!["channel".into()],
            },
            RoleMapping {
                match_ou: None,
                match_san_uri_prefix: Some("spiffe://countersign.dev/channel/".into()),
                match_common_name: None,
                roles: vec!["spiffe-channel".into()],
            },
            RoleMapping {
                match_ou: Some("admin".into()),
                match_san_uri_prefix: None,
                match_common_name: None,
                roles: vec!["admin".into()],
            },
        ];
        let identity = Identity::from_verified_certificate(&der, &mapping).unwrap();
        assert_eq!(identity.common_name.as_deref(), Some("mobile-banking"));
        assert_eq!(identity.organizational_units, vec!["channel"]);
        assert_eq!(
            identity.san_uris,
            vec!["spiffe://countersign.dev/channel/mobile-banking"]
        );
        assert_eq!(identity.roles, vec!["channel", "spiffe-channel"]);
        assert_eq!(identity.serial, hex::encode(&issued.serial));
        assert_eq!(identity.fingerprint_sha256.len(), 64);
    }
}

//! Certificate issuing for the dev quickstart and for tests: a CA, a server certificate,
//! client certificates (one per role), and CRLs. Production PKI is the bank's; this module
//! only exists so that `serve --dev` and the tests run real mutual-TLS handshakes.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A certificate authority that can issue server and client certificates and CRLs.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
}

/// An issued certificate with its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub certificate_pem: String,
    pub private_key_pem: String,
    /// Serial number as big-endian bytes (for CRLs and for assertions).
    pub serial: Vec<u8>,
}

/// What goes into a client certificate.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub common_name: String,
    pub organization: String,
    pub organizational_unit: String,
    pub san_uris: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl ClientSpec {
    /// A client valid from an hour ago for 30 days, with OU = `role` and a SPIFFE-style URI.
    pub fn for_role(common_name: &str, role: &str) -> ClientSpec {
        let now = OffsetDateTime::now_utc();
        ClientSpec {
            common_name: common_name.to_owned(),
            organization: "Countersign Dev Bank".to_owned(),
            organizational_unit: role.to_owned(),
            san_uris: vec![format!("spiffe://countersign.dev/{role}/{common_name}")],
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(30),
        }
    }
}

fn random_serial() -> SerialNumber {
    // 16 random bytes with the top bit cleared keep the serial positive, as RFC 5280 asks.
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

impl CertificateAuthority {
    pub fn generate(common_name: &str) -> Result<CertificateAuthority, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        name.push(DnType::OrganizationName, "Countersign Dev Bank");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        params.serial_number = Some(random_serial());
        params.key_identifier_method = KeyIdMethod::Sha256;
        let certificate = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            certificate_pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// A server certificate for the given DNS names and IP addresses.
    pub fn issue_server(
        &self,
        dns_names: &[&str],
        ip_addresses: &[IpAddr],
    ) -> Result<IssuedCertificate, PkiError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            dns_names.first().copied().unwrap_or("server"),
        );
        params.distinguished_name = name;
        for dns in dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName((*dns).try_into()?));
        }
        for ip in ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(90);
        self.sign(params)
    }

    pub fn issue_client(&self, spec: &ClientSpec) -> Result<IssuedCertificate, PkiError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, spec.common_name.as_str());
        name.push(DnType::OrganizationName, spec.organization.as_str());
        name.push(
            DnType::OrganizationalUnitName,
            spec.organizational_unit.as_str(),
        );
        params.distinguished_name = name;
        for uri in &spec.san_uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<IssuedCertificate, PkiError> {
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
            serial: serial.to_bytes(),
        })
    }

    /// A CRL, valid for a day, revoking the given serial numbers.
    pub fn revocation_list(&self, revoked_serials: &[Vec<u8>]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(1),
            crl_number: random_serial(),
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// One dev client certificate: the file stem under the dev PKI directory (`<stem>.crt`,
/// `<stem>.key`), the role (the certificate's OU) and its common name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevClient {
    pub file_stem: &'static str,
    pub role: &'static str,
    pub common_name: &'static str,
}

/// The dev client certificates: one per role (file stem = role), plus a second approver so
/// that a transfer needing two approvals can be approved by two different people.
pub const DEV_CLIENTS: &[DevClient] = &[
    DevClient {
        file_stem: "channel",
        role: "channel",
        common_name: "mobile-banking",
    },
    DevClient {
        file_stem: "teller",
        role: "teller",
        common_name: "teller-0042",
    },
    DevClient {
        file_stem: "approver",
        role: "approver",
        common_name: "approver-alice",
    },
    DevClient {
        file_stem: "approver2",
        role: "approver",
        common_name: "approver-dave",
    },
    DevClient {
        file_stem: "auditor",
        role: "auditor",
        common_name: "auditor-bob",
    },
    DevClient {
        file_stem: "admin",
        role: "admin",
        common_name: "admin-carol",
    },
    DevClient {
        file_stem: "policy_client",
        role: "policy_client",
        common_name: "payments-service",
    },
    DevClient {
        file_stem: "revealer",
        role: "revealer",
        common_name: "revealer-erin",
    },
    DevClient {
        file_stem: "admission",
        role: "admission",
        common_name: "kube-apiserver",
    },
];

/// Paths of the files `serve --dev` writes.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub directory: PathBuf,
}

impl DevPki {
    pub fn ca_certificate(&self) -> PathBuf {
        self.directory.join("ca.crt")
    }
    pub fn server_certificate(&self) -> PathBuf {
        self.directory.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.directory.join("server.key")
    }
    /// `file_stem` is a [`DevClient::file_stem`] (the role name, or `approver2`).
    pub fn client_certificate(&self, file_stem: &str) -> PathBuf {
        self.directory.join(format!("{file_stem}.crt"))
    }
    pub fn client_key(&self, file_stem: &str) -> PathBuf {
        self.directory.join(format!("{file_stem}.key"))
    }

    /// Creates the dev PKI under `directory` unless a complete one is already there, so the
    /// curl commands printed on an earlier start keep working. One that lacks a certificate
    /// (e.g. `approver2`, added later) is issued afresh, CA included: the CA key is never
    /// kept on disk.
    pub fn ensure(directory: &Path) -> Result<DevPki, PkiError> {
        let pki = DevPki {
            directory: directory.to_owned(),
        };
        let complete = pki.ca_certificate().exists()
            && pki.server_key().exists()
            && DEV_CLIENTS
                .iter()
                .all(|client| pki.client_key(client.file_stem).exists());
        if complete {
            return Ok(pki);
        }
        std::fs::create_dir_all(directory).map_err(|source| PkiError::Write {
            path: directory.to_owned(),
            source,
        })?;
        let ca = CertificateAuthority::generate("Countersign Dev CA")?;
        write(&pki.ca_certificate(), ca.certificate_pem())?;
        let server = ca.issue_server(
            &["localhost"],
            &[
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                "::1".parse().expect("literal"),
            ],
        )?;
        write(&pki.server_certificate(), &server.certificate_pem)?;
        write(&pki.server_key(), &server.private_key_pem)?;
        for client in DEV_CLIENTS {
            let issued = ca.issue_client(&ClientSpec::for_role(client.common_name, client.role))?;
            write(
                &pki.client_certificate(client.file_stem),
                &issued.certificate_pem,
            )?;
            write(&pki.client_key(client.file_stem), &issued.private_key_pem)?;
        }
        Ok(pki)
    }
}

fn write(path: &Path, contents: &str) -> Result<(), PkiError> {
    std::fs::write(path, contents).map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_clients_cover_every_role_with_distinct_files_and_two_approvers() {
        for role in crate::config::KNOWN_ROLES {
            assert!(
                DEV_CLIENTS
                    .iter()
                    .any(|client| client.role == *role && client.file_stem == *role),
                "no dev certificate {role}.crt"
            );
        }
        let mut stems: Vec<_> = DEV_CLIENTS.iter().map(|client| client.file_stem).collect();
        stems.sort_unstable();
        stems.dedup();
        assert_eq!(
            stems.len(),
            DEV_CLIENTS.len(),
            "file stems must be distinct"
        );
        let approvers: Vec<_> = DEV_CLIENTS
            .iter()
            .filter(|client| client.role == "approver")
            .map(|client| client.common_name)
            .collect();
        assert_eq!(approvers, ["approver-alice", "approver-dave"]);
    }
}

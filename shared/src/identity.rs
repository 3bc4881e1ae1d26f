//! Node identity carried in certificates, and the dev CA that issues them.
//!
//! A node certificate has exactly one DNS subject-alternative name of the form
//! `node-<id>.<site>.<role>.openclaw`. A QUIC client dials a peer with that name as the
//! TLS server name (so the peer must prove it is that node of that site), and a QUIC server
//! maps the client's certificate back to a [`NodeIdentity`] and refuses any other site.
//! This module does not decide who may talk to whom; `transport` does.

use std::fmt;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::CertificateDer;

use crate::config::SiteId;

const NAME_SUFFIX: &str = ".openclaw";

/// What kind of daemon a certificate belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Edge,
    Hub,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Hub => "hub",
        }
    }
}

/// The identity a certificate proves: one node of one site (or hub cluster).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    pub role: Role,
    pub site: SiteId,
    pub node_id: u64,
}

impl NodeIdentity {
    pub fn edge(site: SiteId, node_id: u64) -> Self {
        NodeIdentity {
            role: Role::Edge,
            site,
            node_id,
        }
    }

    pub fn hub(group: SiteId, node_id: u64) -> Self {
        NodeIdentity {
            role: Role::Hub,
            site: group,
            node_id,
        }
    }

    /// Another member of this node's group.
    pub fn peer(&self, node_id: u64) -> Self {
        NodeIdentity {
            role: self.role,
            site: self.site.clone(),
            node_id,
        }
    }

    /// Whether `other` belongs to the same Raft group (same role and site or hub group).
    pub fn same_group(&self, other: &NodeIdentity) -> bool {
        self.role == other.role && self.site == other.site
    }

    /// The DNS name in the certificate, also used as the TLS server name when dialling.
    pub fn dns_name(&self) -> String {
        format!(
            "node-{}.{}.{}{}",
            self.node_id,
            self.site,
            self.role.label(),
            NAME_SUFFIX
        )
    }

    /// Inverse of [`dns_name`](Self::dns_name); `None` for any other shape.
    pub fn from_dns_name(name: &str) -> Option<Self> {
        let rest = name.strip_suffix(NAME_SUFFIX)?;
        let mut parts = rest.split('.');
        let node = parts.next()?.strip_prefix("node-")?;
        let site = parts.next()?;
        let role = match parts.next()? {
            "edge" => Role::Edge,
            "hub" => Role::Hub,
            _ => return None,
        };
        if parts.next().is_some() || node.starts_with('0') {
            return None;
        }
        Some(NodeIdentity {
            role,
            site: SiteId::parse(site).ok()?,
            node_id: node.parse().ok()?,
        })
    }

    /// Reads the identity from a peer's end-entity certificate (already chain-verified).
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let san = parsed
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?
            .ok_or(IdentityError::NoName)?;
        let mut found = None;
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                if let Some(id) = NodeIdentity::from_dns_name(dns) {
                    if found.is_some() {
                        return Err(IdentityError::Ambiguous);
                    }
                    found = Some(id);
                }
            }
        }
        found.ok_or(IdentityError::NoName)
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} node {} of {}",
            self.role.label(),
            self.node_id,
            self.site
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error(
        "certificate names no OpenClaw node (want a DNS name node-<id>.<site>.<role>.openclaw)"
    )]
    NoName,
    #[error("certificate names more than one OpenClaw node")]
    Ambiguous,
}

/// Errors of the dev certificate commands.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} exists already; refusing to overwrite it")]
    Exists { path: PathBuf },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Paths of the dev CA in a directory.
pub fn ca_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ca.pem"), dir.join("ca.key"))
}

/// Paths of a node's certificate and key in a directory.
pub fn node_paths(dir: &Path, node_id: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("node-{node_id}.pem")),
        dir.join(format!("node-{node_id}.key")),
    )
}

fn write_new(path: &Path, contents: &str) -> Result<(), CertError> {
    if path.exists() {
        return Err(CertError::Exists {
            path: path.to_owned(),
        });
    }
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Creates a dev CA (`ca.pem`, `ca.key`) in `dir`. For local tries and tests only.
pub fn create_dev_ca(dir: &Path) -> Result<(), CertError> {
    let (cert_path, key_path) = ca_paths(dir);
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "OpenClaw dev CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let issuer = rcgen::CertifiedIssuer::self_signed(params, key)?;
    write_new(&key_path, &issuer.key().serialize_pem())?;
    write_new(&cert_path, &issuer.pem())
}

/// Issues a node certificate for `identity` from the dev CA in `dir`.
pub fn create_node_cert(dir: &Path, identity: &NodeIdentity) -> Result<(), CertError> {
    let (ca_cert, ca_key) = ca_paths(dir);
    let ca_key = KeyPair::from_pem(&read(&ca_key)?)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read(&ca_cert)?, ca_key)?;
    let (cert_path, key_path) = node_paths(dir, identity.node_id);
    let mut params = CertificateParams::new(vec![identity.dns_name()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, identity.dns_name());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_new(&key_path, &key.serialize_pem())?;
    write_new(&cert_path, &cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> SiteId {
        SiteId::parse(s).expect("site")
    }

    #[test]
    fn dns_name_round_trips() {
        let id = NodeIdentity::edge(site("plant-7"), 3);
        assert_eq!(id.dns_name(), "node-3.plant-7.edge.openclaw");
        assert_eq!(NodeIdentity::from_dns_name(&id.dns_name()), Some(id));
        for bad in [
            "node-3.plant-7.edge.example",
            "node-x.plant-7.edge.openclaw",
            "node-03.plant-7.edge.openclaw",
            "node-3.Plant.edge.openclaw",
            "node-3.plant-7.cloud.openclaw",
            "node-3.a.b.edge.openclaw",
        ] {
            assert_eq!(NodeIdentity::from_dns_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn issued_certificate_carries_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        create_dev_ca(dir.path()).expect("ca");
        let id = NodeIdentity::edge(site("s1"), 2);
        create_node_cert(dir.path(), &id).expect("node");
        assert!(matches!(
            create_node_cert(dir.path(), &id),
            Err(CertError::Exists { .. })
        ));
        let pem = std::fs::read(node_paths(dir.path(), 2).0).expect("read");
        let der = crate::tls::load_certs_from_pem(&pem).expect("pem");
        assert_eq!(
            NodeIdentity::from_certificate(&der[0]).expect("identity"),
            id
        );
    }
}

//! rustls configurations for mutual TLS on every QUIC link (DESIGN.md §5).
//!
//! One crypto provider (ring) is passed explicitly everywhere, so no process-level default
//! is needed and no second provider is linked. Chain verification happens here; mapping a
//! verified certificate to a node and deciding whether that node may connect is `transport`'s.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsSection;

/// ALPN of the node-to-node protocol; the number moves with incompatible wire changes.
pub const ALPN_RAFT: &[u8] = b"openclaw-raft/1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: String, message: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(String),
}

/// The one crypto provider of the process.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in PEM".into());
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The CA, this node's chain and key, loaded once at start.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    pub roots: Arc<RootCertStore>,
    pub chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl TlsMaterial {
    pub fn load(section: &TlsSection) -> Result<Self, TlsError> {
        let pem_err = |path: &Path, message: String| TlsError::Pem {
            path: path.display().to_string(),
            message,
        };
        let ca = load_certs_from_pem(&read(&section.ca)?).map_err(|m| pem_err(&section.ca, m))?;
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots
                .add(cert)
                .map_err(|e| pem_err(&section.ca, e.to_string()))?;
        }
        let chain =
            load_certs_from_pem(&read(&section.cert)?).map_err(|m| pem_err(&section.cert, m))?;
        let key = PrivateKeyDer::from_pem_slice(&read(&section.key)?)
            .map_err(|e| pem_err(&section.key, e.to_string()))?;
        Ok(TlsMaterial {
            roots: Arc::new(roots),
            chain,
            key: Arc::new(key),
        })
    }

    /// Server side: requires a client certificate chaining to the deployment CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN_RAFT.to_vec()];
        Ok(config)
    }

    /// Client side: verifies the server against the CA and the dialled node's name.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN_RAFT.to_vec()];
        Ok(config)
    }
}

//! TLS for everything percache talks to: the upstream (awc) and Redis
//! (redis-rs), both through rustls with ring, so there is no OpenSSL build
//! dependency.
//!
//! Trust is the system's roots plus, optionally, an extra PEM bundle per peer
//! (`--upstream-ca`, `--redis-ca`): a private CA is added to the public ones,
//! not put in their place.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A CA bundle that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{path}: cannot be read: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file holds no usable certificate.
    #[error("{path}: {reason}")]
    Certificates {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Makes ring the process's rustls provider, for the libraries that build
/// their own configuration (redis-rs). Called at start-up; later calls are no-ops.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The system's trust roots, read once per process (a few hundred files).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::warn!(errors = ?found.errors, "some system CA certificates could not be read");
        }
        found.certs
    })
}

/// The certificates of a PEM bundle.
fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read {
        path: name.clone(),
        reason: e.to_string(),
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificates {
            path: name.clone(),
            reason: format!("not a PEM bundle: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificates {
            path: name,
            reason: "holds no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The system's roots plus the bundle at `extra`.
fn trusted(extra: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut certs = system_roots().to_vec();
    if let Some(path) = extra {
        certs.extend(read_bundle(path)?);
    }
    Ok(certs)
}

/// A client configuration for the upstream: HTTP/1.1 only, so calls reuse
/// pooled keep-alive connections the way they do over plain HTTP.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let certs = trusted(extra_ca)?;
    let extra_count = certs.len() - system_roots().len();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if extra_ca.is_some() && added < extra_count {
        tracing::warn!(ignored, "some CA certificates could not be used as trust anchors");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Certificates {
            path: "<rustls>".into(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // HTTP/2 where the upstream offers it: awc multiplexes its calls over
    // one connection per worker (measured: 500 concurrent cold fetches over
    // 2 connections, against 222 TLS handshakes with HTTP/1.1 alone).
    // HTTP/1.1 otherwise.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The system's roots plus `extra`, as one PEM bundle: redis-rs takes a
/// bundle that *replaces* the system's roots, so they are passed along.
pub fn pem_bundle(extra_ca: &Path) -> Result<Vec<u8>, TlsError> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for cert in trusted(Some(extra_ca))? {
        out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for chunk in engine.encode(cert.as_ref()).as_bytes().chunks(64) {
            out.extend_from_slice(chunk);
            out.push(b'\n');
        }
        out.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_bundle_is_a_clear_error() {
        let e = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/ca.pem: cannot be read"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("percache-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let e = client_config(Some(&empty)).unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_system_roots_alone_make_a_configuration() {
        install_provider();
        assert!(client_config(None).is_ok());
    }
}

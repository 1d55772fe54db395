//! TLS material from PEM files, for deckhand's own gRPC (`--tls-cert`, `--tls-key`,
//! `--tls-ca`) and for etcd (`--etcd-cert`, `--etcd-key`, `--etcd-ca`).
//!
//! The files are read and parsed once, when the command starts, so a missing or malformed
//! file is an error naming the flag and the file at once, not a failed handshake later.
//! The key is held in memory only; `Debug` shows file names, never key material.
//!
//! One set of files serves both directions: a server (agent, manager) serves TLS with the
//! certificate and key and, when a CA is given, requires client certificates signed by it;
//! a client presents the same certificate and key (when given) and verifies servers against
//! the CA, or against the system's roots when no CA is given.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// The flags a set of files comes from, for messages.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    pub cert: &'static str,
    pub key: &'static str,
    pub ca: &'static str,
}

/// deckhand's gRPC servers and clients.
pub const RPC_FLAGS: Flags = Flags {
    cert: "--tls-cert",
    key: "--tls-key",
    ca: "--tls-ca",
};

/// Connections to etcd.
pub const ETCD_FLAGS: Flags = Flags {
    cert: "--etcd-cert",
    key: "--etcd-key",
    ca: "--etcd-ca",
};

/// How long a server waits for a TLS handshake to finish.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bad TLS option: the message names the flag and the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// Loaded TLS material: this process's identity (certificate chain and private key) and
/// the CA its peers must be signed by. The default, empty, means plaintext.
#[derive(Clone, Default)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    identity: Option<Identity>,
    ca_pem: Option<Certificate>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("ca", &self.ca)
            .finish()
    }
}

impl TlsFiles {
    /// Reads and checks the files. `cert` and `key` go together; `ca` alone makes a client
    /// that verifies servers but presents no certificate.
    pub fn load(
        flags: Flags,
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some(Identity::from_pem(
                read_pem(flags.cert, c, "CERTIFICATE")?,
                read_pem(flags.key, k, "PRIVATE KEY")?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err(TlsError(format!(
                    "{} needs {} as well",
                    flags.cert, flags.key
                )))
            }
            (None, Some(_)) => {
                return Err(TlsError(format!(
                    "{} needs {} as well",
                    flags.key, flags.cert
                )))
            }
        };
        let ca_pem = match ca {
            Some(p) => Some(Certificate::from_pem(read_pem(flags.ca, p, "CERTIFICATE")?)),
            None => None,
        };
        let files = Self {
            cert: cert.map(Path::to_path_buf),
            key: key.map(Path::to_path_buf),
            ca: ca.map(Path::to_path_buf),
            identity,
            ca_pem,
        };
        files.check(flags)?;
        Ok(files)
    }

    /// Whether clients use TLS (any of the files was given).
    pub fn is_enabled(&self) -> bool {
        self.identity.is_some() || self.ca_pem.is_some()
    }

    /// Whether a server serves TLS (certificate and key were given).
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// Whether a server requires client certificates (a CA was given).
    pub fn has_ca(&self) -> bool {
        self.ca_pem.is_some()
    }

    /// The client side: present the identity (if any), verify the server against the CA,
    /// or against the system's roots without one. `None` when TLS is off.
    pub fn client_config(&self) -> Option<ClientTlsConfig> {
        if !self.is_enabled() {
            return None;
        }
        let mut config = match &self.ca_pem {
            Some(ca) => ClientTlsConfig::new().ca_certificate(ca.clone()),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        Some(config.timeout(HANDSHAKE_TIMEOUT))
    }

    /// The server side: serve with the identity and, with a CA, require client
    /// certificates signed by it. `None` without an identity (plaintext).
    pub fn server_config(&self) -> Option<ServerTlsConfig> {
        let identity = self.identity.clone()?;
        let mut config = ServerTlsConfig::new()
            .identity(identity)
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.ca_pem {
            config = config.client_ca_root(ca.clone());
        }
        Some(config)
    }

    /// Lets rustls parse everything now (certificates, key, CA), so a bad file fails the
    /// start, not each connection.
    fn check(&self, flags: Flags) -> Result<(), TlsError> {
        if let Some(config) = self.client_config() {
            Endpoint::from_static("https://localhost")
                .tls_config(config)
                .map_err(|e| {
                    let what = if self.ca_pem.is_some() {
                        format!("{} / {}", flags.ca, flags.cert)
                    } else {
                        format!("{} (no {}: the system's CA roots)", flags.cert, flags.ca)
                    };
                    TlsError(format!("{what}: {}", error_chain(&e)))
                })?;
        }
        if let Some(config) = self.server_config() {
            Server::builder().tls_config(config).map_err(|e| {
                TlsError(format!(
                    "{} / {}: {}",
                    flags.cert,
                    flags.key,
                    error_chain(&e)
                ))
            })?;
        }
        Ok(())
    }
}

/// Reads a PEM file that must hold at least one `-----BEGIN …{label}-----` block.
fn read_pem(flag: &str, path: &Path, label: &str) -> Result<Vec<u8>, TlsError> {
    let bytes =
        std::fs::read(path).map_err(|e| TlsError(format!("{flag} {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")));
    if !has_block {
        return Err(TlsError(format!(
            "{flag} {}: no PEM `{label}` block in the file",
            path.display()
        )));
    }
    Ok(bytes)
}

/// An error with its sources, `outer: inner: …`, each part once (tonic's transport errors
/// say little at the top level and repeat their cause further down).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    append_sources(&mut out, e.source());
    out
}

/// Appends `: cause` for each error in the chain from `source` whose text `out` does not
/// hold yet.
pub fn append_sources(out: &mut String, mut source: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(s) = source {
        let text = s.to_string();
        // tonic wraps causes in a bare "transport error" that adds nothing below a message.
        let noise = text.is_empty() || (text == "transport error" && !out.is_empty());
        if !noise && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        source = s.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_given_is_plaintext() {
        let t = TlsFiles::load(RPC_FLAGS, None, None, None).unwrap();
        assert!(!t.is_enabled());
        assert!(t.client_config().is_none());
        assert!(t.server_config().is_none());
    }

    #[test]
    fn a_cert_without_its_key_is_refused_naming_both_flags() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "x").unwrap();
        let e = TlsFiles::load(RPC_FLAGS, Some(&cert), None, None).unwrap_err();
        assert_eq!(e.to_string(), "--tls-cert needs --tls-key as well");
    }

    #[test]
    fn a_missing_or_non_pem_file_names_the_flag_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = TlsFiles::load(ETCD_FLAGS, None, None, Some(&missing)).unwrap_err();
        assert!(e.to_string().starts_with("--etcd-ca "), "{e}");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = TlsFiles::load(RPC_FLAGS, None, None, Some(&junk)).unwrap_err();
        assert!(e.to_string().contains("no PEM `CERTIFICATE` block"), "{e}");
    }

    #[test]
    fn debug_output_shows_file_names_only() {
        let t = TlsFiles {
            key: Some("/etc/deckhand/node.key".into()),
            identity: Some(Identity::from_pem("CERT", "SECRET-KEY-BYTES")),
            ..Default::default()
        };
        let s = format!("{t:?}");
        assert!(s.contains("node.key"), "{s}");
        assert!(!s.contains("SECRET"), "{s}");
    }
}

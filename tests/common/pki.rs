//! Test certificates made with rcgen and written as PEM files: a CA, and certificates it
//! signs for nodes (servers on 127.0.0.1/localhost that also dial as clients) and for
//! plain clients.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, as files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Leaf {
    /// `--tls-cert FILE --tls-key FILE`.
    pub fn tls_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            path(&self.cert),
            "--tls-key".into(),
            path(&self.key),
        ]
    }
}

/// A certificate authority; its certificate is the file `cert`.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
    pub cert: PathBuf,
}

impl Ca {
    /// A new self-signed CA, written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("deckhand test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let cert = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert, issuer.pem()).expect("write CA");
        Self {
            issuer,
            dir: dir.to_path_buf(),
            name: name.to_string(),
            cert,
        }
    }

    /// A certificate for servers on 127.0.0.1 and localhost that also dial as clients
    /// (agent, manager, etcd).
    pub fn node(&self, name: &str) -> Leaf {
        self.leaf(
            name,
            vec!["127.0.0.1".into(), "localhost".into()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client-only certificate (an operator's CLI).
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(
            name,
            vec![name.to_string()],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )
    }

    fn leaf(&self, name: &str, sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>) -> Leaf {
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &*self.issuer).expect("leaf cert");
        let stem = self.dir.join(format!("{}-{name}", self.name));
        let leaf = Leaf {
            cert: stem.with_extension("pem"),
            key: stem.with_extension("key"),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }

    /// `--tls-ca FILE`.
    pub fn tls_flags(&self) -> Vec<String> {
        vec!["--tls-ca".into(), path(&self.cert)]
    }
}

/// A path as a flag value.
pub fn path(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

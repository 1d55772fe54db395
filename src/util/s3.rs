//! One S3 connection type for every store deckhand talks to (`storage/s3` for profile
//! resources and results, `vast_api/logs` for shipped instance logs): the settings, one
//! `object_store` client built from them (SigV4 with ring, plain HTTP only for an
//! `http://` endpoint), and the scrubbing of the secret out of every message.

use object_store::aws::{AmazonS3, AmazonS3Builder};

use super::secret::Secret;

/// How to reach an S3-compatible store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `None`: AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key: String,
    pub secret_key: Secret,
}

impl S3Settings {
    /// A client of `bucket`; a failure reads with the secret taken out.
    pub fn store(&self, bucket: &str) -> Result<AmazonS3, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(self.secret_key.expose());
        if let Some(endpoint) = &self.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        b.build().map_err(|e| self.scrub(&e.to_string()))
    }

    /// A message with the secret key taken out, should a store ever echo it.
    pub fn scrub(&self, text: &str) -> String {
        self.secret_key.scrub(text)
    }
}

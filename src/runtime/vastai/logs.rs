//! Shipping a Vast.ai instance's output to S3 (`vast_api/logs/*`): every `log_interval` while
//! it runs and once, complete, when it ends, at `<prefix>/<namespace>/<kernel id>.log`, so
//! `deckhand logs` still has it after the instance is destroyed. Through `object_store`
//! (SigV4 with ring); the secret key is never shown.

use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

use crate::config::vast::LogShipping;

/// Where one kernel's log goes.
pub fn key(logs: &LogShipping, namespace: &str, kernel_id: &str) -> String {
    let prefix = logs.prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{namespace}/{kernel_id}.log")
    } else {
        format!("{prefix}/{namespace}/{kernel_id}.log")
    }
}

fn store(logs: &LogShipping) -> Result<AmazonS3, String> {
    logs.s3.store(&logs.bucket)
}

/// Writes (replaces) the kernel's shipped log.
pub async fn ship(
    logs: &LogShipping,
    namespace: &str,
    kernel_id: &str,
    text: &str,
) -> Result<(), String> {
    let key = key(logs, namespace, kernel_id);
    store(logs)?
        .put(
            &ObjectPath::from(key.as_str()),
            PutPayload::from(text.as_bytes().to_vec()),
        )
        .await
        .map(|_| ())
        .map_err(|e| logs.s3.scrub(&format!("s3://{}/{key}: {e}", logs.bucket)))
}

/// The shipped log of a kernel, `None` when there is none.
pub async fn read(
    logs: &LogShipping,
    namespace: &str,
    kernel_id: &str,
) -> Result<Option<String>, String> {
    let key = key(logs, namespace, kernel_id);
    match store(logs)?.get(&ObjectPath::from(key.as_str())).await {
        Ok(r) => r
            .bytes()
            .await
            .map(|b| Some(String::from_utf8_lossy(&b).into_owned()))
            .map_err(|e| logs.s3.scrub(&e.to_string())),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(logs.s3.scrub(&format!("s3://{}/{key}: {e}", logs.bucket))),
    }
}

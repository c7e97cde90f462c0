//! Where attachment bytes live: a directory under the data dir (the
//! default; uploads and downloads go through the REST facade with signed,
//! expiring URLs) or any S3-compatible store (uploads go straight to it
//! with presigned URLs; path-style addressing, SigV4 by `rusty-s3`).
//!
//! Either way a client gets a URL that is valid for minutes, for one key,
//! and — for uploads — for one declared size and content type.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, Mac};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How long the URL of a request the server makes itself is valid.
const OWN_REQUEST_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Local,
    S3,
}

/// Section `[attachments.s3]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// `https://s3.ap-southeast-1.amazonaws.com`, `http://minio:9000`…
    pub endpoint: String,
    /// The endpoint as clients reach it, when it differs from the one this
    /// server uses (`https://s3.chat.example.vn` in front of
    /// `http://minio:9000`): presigned URLs are signed for its host, so
    /// the proxy must pass the `Host` header through unchanged.
    pub public_endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: "http://127.0.0.1:9000".into(),
            public_endpoint: None,
            bucket: "chat-attachments".into(),
            region: "us-east-1".into(),
            access_key: String::new(),
            secret_key: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("object storage: {0}")]
    Backend(String),
    #[error("object larger than {0} bytes")]
    TooLarge(u64),
}

/// Keys are ours (`uploads/<id>`, `images/<thread>/<id>.jpg`), but checked
/// anyway: no way out of the directory or the bucket.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 300
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
}

/// Where and how a client uploads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTarget {
    pub method: &'static str,
    pub url: String,
    /// Headers the upload must carry exactly (they are signed).
    pub headers: Vec<(String, String)>,
    /// Unix seconds after which the URL is refused.
    pub expires_at: i64,
}

pub enum Storage {
    Local(LocalStore),
    S3(Box<S3Store>),
}

/// Files under a directory; URLs point at the REST facade and carry an
/// HMAC of what they allow.
pub struct LocalStore {
    dir: PathBuf,
    secret: Vec<u8>,
    /// Where clients reach the REST facade: `https://chat.example.vn`.
    public_base_url: String,
}

pub struct S3Store {
    /// The bucket at the endpoint this server uses.
    bucket: Bucket,
    /// The same bucket at the endpoint clients use, for presigned URLs.
    public_bucket: Bucket,
    credentials: Credentials,
    http: reqwest::Client,
}

/// `name` at `endpoint`, path-style (`{endpoint}/{bucket}/{key}`), which
/// every S3-compatible server accepts.
fn bucket_at(endpoint: &str, config: &S3Config) -> Result<Bucket, StorageError> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| StorageError::Backend(format!("endpoint {endpoint}: {e}")))?;
    if url.host_str().is_none() {
        return Err(StorageError::Backend(format!(
            "endpoint {endpoint} has no host"
        )));
    }
    Bucket::new(
        url,
        UrlStyle::Path,
        config.bucket.clone(),
        config.region.clone(),
    )
    .map_err(|e| StorageError::Backend(format!("bucket {}: {e}", config.bucket)))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Storage {
    pub fn local(dir: &Path, secret: &[u8], public_base_url: &str) -> Storage {
        Storage::Local(LocalStore {
            dir: dir.to_owned(),
            secret: secret.to_vec(),
            public_base_url: public_base_url.trim_end_matches('/').to_owned(),
        })
    }

    pub fn s3(config: &S3Config) -> Result<Storage, StorageError> {
        let public_endpoint = config
            .public_endpoint
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| config.endpoint.clone());
        Ok(Storage::S3(Box::new(S3Store {
            bucket: bucket_at(&config.endpoint, config)?,
            public_bucket: bucket_at(&public_endpoint, config)?,
            credentials: Credentials::new(config.access_key.clone(), config.secret_key.clone()),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| StorageError::Backend(e.to_string()))?,
        })))
    }

    pub async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StorageError> {
        check(key)?;
        match self {
            Storage::Local(local) => local.put(key, &bytes).await,
            Storage::S3(s3) => s3.put(key, bytes, content_type).await,
        }
    }

    /// The object, if it exists; refused past `max_bytes`.
    pub async fn get(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, StorageError> {
        check(key)?;
        match self {
            Storage::Local(local) => local.get(key, max_bytes).await,
            Storage::S3(s3) => s3.get(key, max_bytes).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check(key)?;
        match self {
            Storage::Local(local) => local.delete(key).await,
            Storage::S3(s3) => s3.delete(key).await,
        }
    }

    /// A URL to upload exactly `size` bytes of `content_type` to `key`.
    pub fn upload_target(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        ttl_secs: u64,
    ) -> Result<UploadTarget, StorageError> {
        check(key)?;
        let now = now_secs();
        let expires_at = now + ttl_secs as i64;
        let headers = vec![
            ("content-length".to_owned(), size.to_string()),
            ("content-type".to_owned(), content_type.to_owned()),
        ];
        let url = match self {
            Storage::Local(local) => {
                let sig = local.sign(&[
                    "PUT",
                    key,
                    &expires_at.to_string(),
                    content_type,
                    &size.to_string(),
                ]);
                format!(
                    "{}/files/{key}?exp={expires_at}&sig={sig}",
                    local.public_base_url
                )
            }
            Storage::S3(s3) => s3.presign("PUT", key, now, ttl_secs, &headers),
        };
        Ok(UploadTarget {
            method: "PUT",
            url,
            headers,
            expires_at,
        })
    }

    /// A URL to read `key`, valid `ttl_secs`.
    pub fn download_url(&self, key: &str, ttl_secs: u64) -> Result<String, StorageError> {
        check(key)?;
        let now = now_secs();
        let expires_at = now + ttl_secs as i64;
        Ok(match self {
            Storage::Local(local) => {
                let sig = local.sign(&["GET", key, &expires_at.to_string()]);
                format!(
                    "{}/files/{key}?exp={expires_at}&sig={sig}",
                    local.public_base_url
                )
            }
            Storage::S3(s3) => s3.presign("GET", key, now, ttl_secs, &[]),
        })
    }

    /// The local store, for the REST facade that serves its URLs.
    pub fn as_local(&self) -> Option<&LocalStore> {
        match self {
            Storage::Local(local) => Some(local),
            Storage::S3(_) => None,
        }
    }
}

fn check(key: &str) -> Result<(), StorageError> {
    if valid_key(key) {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_owned()))
    }
}

fn io(e: std::io::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl LocalStore {
    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    fn sign(&self, parts: &[&str]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(parts.join("\n").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether a facade URL's signature allows this request now.
    pub fn verify(&self, parts: &[&str], expires_at: i64, sig: &str) -> bool {
        if now_secs() > expires_at {
            return false;
        }
        let Ok(given) = hex::decode(sig) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(parts.join("\n").as_bytes());
        mac.verify_slice(&given).is_ok()
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let path = self.path(key);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        // Written aside, then renamed: readers never see half a file.
        let tmp = path.with_extension(format!("part-{}", std::process::id()));
        tokio::fs::write(&tmp, bytes).await.map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.path(key);
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.len() > max_bytes => Err(StorageError::TooLarge(max_bytes)),
            Ok(_) => Ok(Some(tokio::fs::read(&path).await.map_err(io)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }
}

impl S3Store {
    /// A presigned URL for clients: `method` on `key` at the public
    /// endpoint, valid `ttl_secs` from `now`; `headers` are signed, so the
    /// client must send them exactly so.
    fn presign(
        &self,
        method: &str,
        key: &str,
        now: i64,
        ttl_secs: u64,
        headers: &[(String, String)],
    ) -> String {
        let at = jiff::Timestamp::from_second(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        self.signed(
            &self.public_bucket,
            method,
            key,
            headers,
            Duration::from_secs(ttl_secs),
            &at,
        )
    }

    fn signed(
        &self,
        bucket: &Bucket,
        method: &str,
        key: &str,
        headers: &[(String, String)],
        ttl: Duration,
        at: &jiff::Timestamp,
    ) -> String {
        let credentials = Some(&self.credentials);
        let url = match method {
            "PUT" => {
                let mut action = bucket.put_object(credentials, key);
                for (name, value) in headers {
                    action.headers_mut().insert(name.as_str(), value.as_str());
                }
                action.sign_with_time(ttl, at)
            }
            "DELETE" => bucket
                .delete_object(credentials, key)
                .sign_with_time(ttl, at),
            _ => bucket.get_object(credentials, key).sign_with_time(ttl, at),
        };
        url.to_string()
    }

    async fn request(
        &self,
        method: reqwest::Method,
        key: &str,
        body: Vec<u8>,
        content_type: Option<&str>,
    ) -> Result<reqwest::Response, StorageError> {
        let url = self.signed(
            &self.bucket,
            method.as_str(),
            key,
            &[],
            OWN_REQUEST_TTL,
            &jiff::Timestamp::now(),
        );
        let mut request = self.http.request(method, url).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request
            .send()
            .await
            .map_err(|e| StorageError::Backend(e.to_string()))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<(), StorageError> {
        let response = self
            .request(reqwest::Method::PUT, key, bytes, Some(content_type))
            .await?;
        ok_or_error(response).await.map(|_| ())
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let response = self
            .request(reqwest::Method::GET, key, Vec::new(), None)
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = ok_or_error(response).await?;
        if response.content_length().is_some_and(|n| n > max_bytes) {
            return Err(StorageError::TooLarge(max_bytes));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| StorageError::Backend(e.to_string()))?;
        if bytes.len() as u64 > max_bytes {
            return Err(StorageError::TooLarge(max_bytes));
        }
        Ok(Some(bytes.to_vec()))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let response = self
            .request(reqwest::Method::DELETE, key, Vec::new(), None)
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        ok_or_error(response).await.map(|_| ())
    }
}

async fn ok_or_error(response: reqwest::Response) -> Result<reqwest::Response, StorageError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Err(StorageError::Backend(format!(
        "{status}: {}",
        body.chars().take(300).collect::<String>()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        assert!(valid_key("uploads/01a2-b3"));
        assert!(valid_key("images/t1/m1.jpg"));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a b",
            "a?b",
            "ả",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    /// AWS's documented example: "GET Object" with a presigned URL (S3
    /// docs, "Authenticating Requests: Using Query Parameters"), through
    /// the same call our presigned URLs take.
    #[test]
    fn presigning_matches_the_aws_documentation_example() {
        let config = S3Config {
            endpoint: "https://s3.amazonaws.com".into(),
            bucket: "examplebucket".into(),
            region: "us-east-1".into(),
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            public_endpoint: None,
        };
        let Storage::S3(s3) = Storage::s3(&config).unwrap() else {
            unreachable!()
        };
        let virtual_host = Bucket::new(
            "https://s3.amazonaws.com".parse().unwrap(),
            UrlStyle::VirtualHost,
            "examplebucket",
            "us-east-1",
        )
        .unwrap();
        let at: jiff::Timestamp = "2013-05-24T00:00:00Z".parse().unwrap();
        let url = s3.signed(
            &virtual_host,
            "GET",
            "test.txt",
            &[],
            Duration::from_secs(86400),
            &at,
        );
        assert!(
            url.starts_with("https://examplebucket.s3.amazonaws.com/test.txt?")
                && url.contains(
                    "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
                ),
            "{url}"
        );
    }

    #[test]
    fn presigned_uploads_sign_their_size_and_type() {
        let storage = Storage::s3(&S3Config {
            access_key: "a".into(),
            secret_key: "s".into(),
            ..S3Config::default()
        })
        .unwrap();
        let target = storage
            .upload_target("uploads/u1", "image/png", 1234, 60)
            .unwrap();
        assert!(
            target
                .url
                .contains("X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost"),
            "{}",
            target.url
        );
    }

    #[test]
    fn presigned_urls_use_the_public_endpoint() {
        let storage = Storage::s3(&S3Config {
            endpoint: "http://minio:9000".into(),
            public_endpoint: Some("https://s3.chat.example.vn".into()),
            access_key: "a".into(),
            secret_key: "s".into(),
            ..S3Config::default()
        })
        .unwrap();
        let url = storage.download_url("images/t/m.jpg", 60).unwrap();
        assert!(
            url.starts_with("https://s3.chat.example.vn/chat-attachments/images/t/m.jpg?X-Amz-"),
            "{url}"
        );
    }

    #[tokio::test]
    async fn local_urls_are_signed_for_one_key_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path(), b"secret", "http://chat.test/");
        let target = storage
            .upload_target("uploads/u1", "image/png", 1234, 60)
            .unwrap();
        assert!(
            target
                .url
                .starts_with("http://chat.test/files/uploads/u1?exp=")
        );
        let local = storage.as_local().unwrap();
        let query: std::collections::HashMap<&str, &str> = target
            .url
            .split_once('?')
            .unwrap()
            .1
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let exp: i64 = query["exp"].parse().unwrap();
        let sig = query["sig"];
        assert!(local.verify(
            &["PUT", "uploads/u1", query["exp"], "image/png", "1234"],
            exp,
            sig
        ));
        assert!(!local.verify(
            &["PUT", "uploads/u2", query["exp"], "image/png", "1234"],
            exp,
            sig
        ));
        assert!(!local.verify(
            &["PUT", "uploads/u1", query["exp"], "image/png", "99999"],
            exp,
            sig
        ));
        assert!(
            !local.verify(&["PUT", "uploads/u1", "1", "image/png", "1234"], 1, sig),
            "expired"
        );
        storage
            .put("uploads/u1", b"abc".to_vec(), "image/png")
            .await
            .unwrap();
        assert_eq!(
            storage.get("uploads/u1", 10).await.unwrap().unwrap(),
            b"abc"
        );
        assert!(matches!(
            storage.get("uploads/u1", 2).await,
            Err(StorageError::TooLarge(2))
        ));
        storage.delete("uploads/u1").await.unwrap();
        assert_eq!(storage.get("uploads/u1", 10).await.unwrap(), None);
    }
}

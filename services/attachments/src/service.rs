//! The `Attachments` of the domain, on a `Storage`: upload URLs, the check
//! and clean-up of an upload into its final image and thumbnail, signed
//! download URLs.

use async_trait::async_trait;
use chat_core::attachments::{AttachmentError, Attachments, StoredImage, Upload, UploadTarget};
use serde::{Deserialize, Serialize};

use crate::image_check::{self, ImageLimits};
use crate::storage::{Backend, S3Config, Storage, StorageError};

/// Section `[attachments]` of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttachmentsConfig {
    /// `local` (a directory under the data dir) or `s3`.
    pub backend: Backend,
    /// For `local`: the directory (default `<data_dir>/attachments`).
    pub local_dir: Option<std::path::PathBuf>,
    /// For `local`: where clients reach this server's REST facade, which
    /// serves the signed upload and download URLs. Unset: `http_addr`'s port
    /// on `localhost` (or its address when it names one).
    pub public_base_url: Option<String>,
    pub s3: S3Config,
    /// How long an upload URL is valid.
    pub upload_ttl_secs: u64,
    /// How long a download URL handed to a client is valid.
    pub download_ttl_secs: u64,
    /// Uploads never used by a message are deleted after this…
    pub unused_upload_ttl_secs: u64,
    /// …by a sweep that runs this often.
    pub sweep_interval_secs: u64,
    pub max_bytes: u64,
    pub max_side: u32,
    pub max_pixels: u64,
    pub thumb_side: u32,
    /// Memory the image decoder may use at once, in MiB, across concurrent
    /// image messages: each waits for its share (pixels × 8 bytes) before
    /// decoding. At least one largest image always fits.
    pub decode_memory_mib: u64,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        let limits = ImageLimits::default();
        AttachmentsConfig {
            backend: Backend::Local,
            local_dir: None,
            public_base_url: None,
            s3: S3Config::default(),
            upload_ttl_secs: 600,
            download_ttl_secs: 3600,
            unused_upload_ttl_secs: 3600,
            sweep_interval_secs: 600,
            max_bytes: limits.max_bytes,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
            thumb_side: limits.thumb_side,
            decode_memory_mib: 512,
        }
    }
}

/// The decoder's budget in MiB: as configured, but never less than one
/// largest allowed image.
fn decode_budget_mib(config: &AttachmentsConfig) -> u32 {
    let largest = image_check::decode_cost(config.max_side, config.max_side)
        .min(image_check::decode_cost(1, 1) + config.max_pixels * 8)
        .div_ceil(1024 * 1024);
    config
        .decode_memory_mib
        .max(1)
        .min(u64::from(u32::MAX))
        .max(largest.min(u64::from(u32::MAX))) as u32
}

/// Where clients reach a REST facade listening on `http_addr`, when no
/// `public_base_url` is configured.
pub fn default_base_url(http_addr: std::net::SocketAddr) -> String {
    let ip = http_addr.ip();
    if ip.is_unspecified() || ip.is_loopback() {
        format!("http://localhost:{}", http_addr.port())
    } else {
        format!("http://{http_addr}")
    }
}

pub struct ImageAttachments {
    /// Shared with the REST facade, which serves the local backend's URLs.
    pub storage: std::sync::Arc<Storage>,
    limits: ImageLimits,
    upload_ttl_secs: u64,
    download_ttl_secs: u64,
    /// The decoder's memory budget, one permit a MiB.
    decode_budget: std::sync::Arc<tokio::sync::Semaphore>,
    decode_budget_mib: u32,
}

fn unavailable(e: StorageError) -> AttachmentError {
    AttachmentError::Unavailable(e.to_string())
}

impl ImageAttachments {
    /// `data_dir` and `secret` serve the local backend (its directory and
    /// the key of its signed URLs).
    pub fn from_config(
        config: &AttachmentsConfig,
        data_dir: &std::path::Path,
        secret: &[u8],
        http_addr: std::net::SocketAddr,
    ) -> Result<ImageAttachments, StorageError> {
        let storage = match config.backend {
            Backend::Local => Storage::local(
                &config
                    .local_dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("attachments")),
                secret,
                &config
                    .public_base_url
                    .clone()
                    .unwrap_or_else(|| default_base_url(http_addr)),
            ),
            Backend::S3 => Storage::s3(&config.s3)?,
        };
        Ok(ImageAttachments {
            storage: std::sync::Arc::new(storage),
            limits: ImageLimits {
                max_bytes: config.max_bytes,
                max_side: config.max_side,
                max_pixels: config.max_pixels,
                thumb_side: config.thumb_side,
            },
            upload_ttl_secs: config.upload_ttl_secs,
            download_ttl_secs: config.download_ttl_secs,
            decode_budget: std::sync::Arc::new(tokio::sync::Semaphore::new(
                decode_budget_mib(config) as usize,
            )),
            decode_budget_mib: decode_budget_mib(config),
        })
    }
}

#[async_trait]
impl Attachments for ImageAttachments {
    fn max_bytes(&self) -> u64 {
        self.limits.max_bytes
    }

    fn upload_target(&self, upload: &Upload) -> Result<UploadTarget, AttachmentError> {
        let target = self
            .storage
            .upload_target(
                &upload.key(),
                &upload.content_type,
                upload.size,
                self.upload_ttl_secs,
            )
            .map_err(unavailable)?;
        Ok(UploadTarget {
            method: target.method.to_owned(),
            url: target.url,
            headers: target.headers,
            expires_at: target.expires_at,
        })
    }

    async fn finalize(
        &self,
        upload: &Upload,
        prefix: &str,
    ) -> Result<StoredImage, AttachmentError> {
        let key = upload.key();
        let fetched = self.storage.get(&key, self.limits.max_bytes).await;
        let bytes = match fetched {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Err(AttachmentError::Rejected("nothing was uploaded".into())),
            Err(StorageError::TooLarge(max)) => {
                let _ = self.storage.delete(&key).await;
                return Err(AttachmentError::Rejected(format!(
                    "larger than {max} bytes"
                )));
            }
            Err(e) => return Err(unavailable(e)),
        };
        let limits = self.limits.clone();
        let declared = upload.content_type.clone();
        // Its share of the decoder's memory budget first (header only, no
        // pixels yet): a burst of large images waits instead of asking for
        // gigabytes at once.
        let share = match image_check::inspect(&bytes, &declared, &limits) {
            Ok((_, width, height)) => {
                let mib = image_check::decode_cost(width, height).div_ceil(1024 * 1024);
                mib.min(u64::from(self.decode_budget_mib)) as u32
            }
            Err(_) => 1,
        };
        let _permit = self
            .decode_budget
            .acquire_many(share)
            .await
            .map_err(|e| AttachmentError::Unavailable(e.to_string()))?;
        // Decoding is CPU work: off the async threads.
        let processed =
            tokio::task::spawn_blocking(move || image_check::process(&bytes, &declared, &limits))
                .await
                .map_err(|e| AttachmentError::Unavailable(e.to_string()))?;
        let processed = match processed {
            Ok(p) => p,
            Err(e) => {
                // Nothing of a refused upload stays behind.
                if let Err(delete) = self.storage.delete(&key).await {
                    tracing::warn!(key, error = %delete, "refused upload not deleted");
                }
                return Err(AttachmentError::Rejected(e.to_string()));
            }
        };
        let extension = if processed.image_mime == "image/png" {
            "png"
        } else {
            "jpg"
        };
        let image_key = format!("{prefix}.{extension}");
        let thumb_key = format!("{prefix}-thumb.jpg");
        self.storage
            .put(&image_key, processed.image, processed.image_mime)
            .await
            .map_err(unavailable)?;
        self.storage
            .put(&thumb_key, processed.thumbnail, "image/jpeg")
            .await
            .map_err(unavailable)?;
        // The original (with its metadata) is not kept.
        if let Err(e) = self.storage.delete(&key).await {
            tracing::warn!(key, error = %e, "original upload not deleted");
        }
        Ok(StoredImage {
            image_key,
            thumb_key,
            mime: processed.image_mime.to_owned(),
            width: processed.width,
            height: processed.height,
            thumb_width: processed.thumb_width,
            thumb_height: processed.thumb_height,
        })
    }

    fn download_url(&self, key: &str) -> Result<String, AttachmentError> {
        self.storage
            .download_url(key, self.download_ttl_secs)
            .map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> Result<(), AttachmentError> {
        self.storage.delete(key).await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::default_base_url;

    #[test]
    fn the_default_base_url_follows_http_addr() {
        let url = |a: &str| default_base_url(a.parse().unwrap());
        assert_eq!(url("0.0.0.0:8080"), "http://localhost:8080");
        assert_eq!(url("0.0.0.0:9000"), "http://localhost:9000");
        assert_eq!(url("127.0.0.1:18080"), "http://localhost:18080");
        assert_eq!(url("10.1.2.3:8081"), "http://10.1.2.3:8081");
        assert_eq!(url("[2001:db8::1]:8080"), "http://[2001:db8::1]:8080");
    }
}

//! Image attachments as the domain sees them: an upload slot a participant
//! asks for, and the object store behind a small trait (implemented in
//! `chat-attachments` for a local directory and for S3), so the send flow
//! stays free of I/O details.

use async_trait::async_trait;
use serde::Serialize;

/// An upload slot: one image, of a declared type and size, for one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// Time-ordered (UUIDv7).
    pub id: String,
    pub thread_id: String,
    pub user_id: String,
    pub content_type: String,
    pub size: u64,
    pub status: UploadStatus,
    /// Once used: the image card (JSON) its message carries, so that a
    /// retried send finds the processed image again.
    pub card: Option<String>,
    pub created_at: i64,
}

/// Where an upload slot is in its life. Only a `Pending` one can be used by
/// a message, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UploadStatus {
    /// Waiting for its message.
    Pending,
    /// Its message was sent; the slot holds the processed image's card.
    Used,
    /// Its bytes were not an acceptable image.
    Rejected,
    /// Never used in time; swept.
    Expired,
}

impl UploadStatus {
    /// The stores' spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadStatus::Pending => "pending",
            UploadStatus::Used => "used",
            UploadStatus::Rejected => "rejected",
            UploadStatus::Expired => "expired",
        }
    }

    /// A stored status; anything unknown reads as `Expired`, so that a
    /// slot in a state this version does not know is never used.
    pub fn from_stored(s: &str) -> UploadStatus {
        match s {
            "pending" => UploadStatus::Pending,
            "used" => UploadStatus::Used,
            "rejected" => UploadStatus::Rejected,
            _ => UploadStatus::Expired,
        }
    }
}

impl Upload {
    /// Where the client's bytes land.
    pub fn key(&self) -> String {
        format!("uploads/{}", self.id)
    }
}

/// Where and how the client uploads (a presigned S3 URL, or the facade).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTarget {
    pub method: String,
    pub url: String,
    /// Headers to send exactly so (they are signed).
    pub headers: Vec<(String, String)>,
    /// Unix seconds after which the URL is refused.
    pub expires_at: i64,
}

/// The cleaned image, stored under its final keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    pub image_key: String,
    pub thumb_key: String,
    pub mime: String,
    pub width: u32,
    pub height: u32,
    pub thumb_width: u32,
    pub thumb_height: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    /// The upload is not an image we accept; the reason is for logs.
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("object storage unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Attachments: Send + Sync + 'static {
    /// Largest upload accepted, in bytes.
    fn max_bytes(&self) -> u64;
    /// A URL for the client to upload `upload` to.
    fn upload_target(&self, upload: &Upload) -> Result<UploadTarget, AttachmentError>;
    /// Fetches the upload, checks it (real type by magic bytes, size,
    /// pixels, completeness), re-encodes it without metadata, makes a
    /// thumbnail, and stores both under keys starting with `prefix`. The
    /// original upload is deleted either way.
    async fn finalize(&self, upload: &Upload, prefix: &str)
    -> Result<StoredImage, AttachmentError>;
    /// A short-lived URL to read `key`.
    fn download_url(&self, key: &str) -> Result<String, AttachmentError>;
    /// Deletes an object (an upload never used).
    async fn delete(&self, key: &str) -> Result<(), AttachmentError>;
}

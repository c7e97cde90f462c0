//! Image upload slots, and how stored images are shown.

use super::*;

impl ChatService {
    /// An upload slot for one image in a thread the caller belongs to, and
    /// where to upload it.
    pub async fn create_upload(
        &self,
        caller: &Claims,
        thread_id: &str,
        content_type: &str,
        size: u64,
    ) -> Result<(Upload, UploadTarget), ServiceError> {
        let attachments = self.attachments.as_ref().ok_or_else(|| {
            ServiceError::invalid(ErrorCode::UnsupportedType, "attachments are off")
        })?;
        if !self.membership.is_member(thread_id, &caller.sub).await? {
            return Err(ServiceError::NotFound("thread"));
        }
        if !matches!(content_type, "image/jpeg" | "image/png" | "image/webp") {
            return Err(ServiceError::invalid(
                ErrorCode::InvalidAttachment,
                "contentType: image/jpeg, image/png or image/webp",
            ));
        }
        if size == 0 || size > attachments.max_bytes() {
            return Err(ServiceError::invalid(
                ErrorCode::InvalidAttachment,
                format!("size: 1 to {} bytes", attachments.max_bytes()),
            ));
        }
        self.limiter
            .check_upload(&caller.sub)
            .map_err(ServiceError::Limited)?;
        let upload = Upload {
            id: crate::new_id(),
            thread_id: thread_id.to_owned(),
            user_id: caller.sub.clone(),
            content_type: content_type.to_owned(),
            size,
            status: crate::attachments::UploadStatus::Pending,
            card: None,
            created_at: crate::now_millis(),
        };
        let target = attachments
            .upload_target(&upload)
            .map_err(|e| ServiceError::Unavailable {
                what: Dependency::Attachments,
                detail: e.to_string(),
            })?;
        self.store.create_upload(&upload).await?;
        Ok((upload, target))
    }

    /// Deletes uploads never used by a message within `older_than_ms`.
    pub async fn sweep_uploads(&self, older_than_ms: i64) -> Result<usize, ServiceError> {
        let Some(attachments) = &self.attachments else {
            return Ok(0);
        };
        let stale = self
            .store
            .stale_uploads(crate::now_millis() - older_than_ms, 500)
            .await?;
        let mut swept = 0;
        for upload in stale {
            if let Err(e) = attachments.delete(&upload.key()).await {
                tracing::warn!(upload = upload.id, error = %e, "unused upload not deleted");
                continue;
            }
            if self
                .store
                .finish_upload(&upload.id, crate::attachments::UploadStatus::Expired, None)
                .await?
            {
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// A message as `viewer` gets it: image cards carry signed URLs, and
    /// the idempotency key is the sender's business (it could carry text
    /// past moderation): only the sender sees it. `None`: a broadcast to
    /// the thread, which carries no key.
    pub fn present_to(&self, viewer: Option<&str>, mut message: Message) -> Message {
        if viewer != Some(message.from.as_str()) {
            message.client_msg_id = None;
        }
        self.present(message)
    }

    /// A message as a client gets it: image cards carry signed URLs.
    pub(super) fn present(&self, mut message: Message) -> Message {
        if let (
            Some(attachments),
            Some(Card::Image {
                image_key,
                thumb_key,
                url,
                thumb_url,
                ..
            }),
        ) = (&self.attachments, message.card.as_mut())
        {
            *url = attachments.download_url(image_key).ok();
            *thumb_url = attachments.download_url(thumb_key).ok();
        }
        message
    }
}

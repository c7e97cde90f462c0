//! Image uploads: a participant asks for an upload slot; with the local
//! backend this facade also takes the upload and serves the files, both
//! through signed, expiring URLs (`/files/<key>?exp=&sig=`).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_core::attachments::UploadTarget;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::{ApiJson, AppState, Caller, ForCaller};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadRequest {
    /// `image/jpeg`, `image/png` or `image/webp`.
    pub content_type: String,
    /// Exact size in bytes of the file to upload.
    pub size: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadCreated {
    /// Send it as the `content` of an `image` message once uploaded.
    pub upload_id: String,
    pub method: String,
    pub url: String,
    /// Send these headers exactly (they are part of the signature).
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    /// Unix seconds.
    pub expires_at: i64,
}

#[utoipa::path(
    post, path = "/chat/threads/{id}/uploads", params(("id" = String, Path)),
    request_body = UploadRequest,
    responses((status = 201, body = UploadCreated), (status = 400, body = crate::dto::ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn create_upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(thread_id): Path<String>,
    ApiJson(body): ApiJson<UploadRequest>,
) -> Result<(StatusCode, Json<UploadCreated>), ApiError> {
    let (upload, target): (_, UploadTarget) = state
        .service
        .create_upload(&caller.claims, &thread_id, &body.content_type, body.size)
        .await
        .for_caller(&caller)?;
    Ok((
        StatusCode::CREATED,
        Json(UploadCreated {
            upload_id: upload.id,
            method: target.method,
            url: target.url,
            headers: target.headers,
            expires_at: target.expires_at,
        }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct Signed {
    exp: i64,
    sig: String,
}

fn refused(status: StatusCode, why: &'static str) -> Response {
    (status, why).into_response()
}

/// `PUT /files/<key>`: the local backend's upload URL. The signature and
/// the declared length are checked before a byte of the body is read, so an
/// unsigned or oversized upload costs the server nothing; a signed one is
/// read up to its signed length and no further.
pub async fn upload(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(signed): Query<Signed>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(storage) = &state.local_files else {
        return refused(StatusCode::NOT_FOUND, "not found");
    };
    let Some(local) = storage.as_local() else {
        return refused(StatusCode::NOT_FOUND, "not found");
    };
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let content_type = header(header::CONTENT_TYPE);
    let declared = header(header::CONTENT_LENGTH);
    // The signature covers key, expiry, type and size: anything else —
    // another file, a late upload, a bigger body — is refused.
    let parts = [
        "PUT",
        key.as_str(),
        &signed.exp.to_string(),
        &content_type,
        &declared,
    ];
    if !local.verify(&parts, signed.exp, &signed.sig) {
        return refused(StatusCode::FORBIDDEN, "signature does not match or expired");
    }
    let Ok(length) = declared.parse::<usize>() else {
        return refused(StatusCode::LENGTH_REQUIRED, "content-length required");
    };
    let body: Bytes = match axum::body::to_bytes(body, length).await {
        Ok(bytes) if bytes.len() == length => bytes,
        _ => {
            return refused(
                StatusCode::BAD_REQUEST,
                "body size differs from content-length",
            );
        }
    };
    match storage.put(&key, body.to_vec(), &content_type).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::warn!(key, error = %e, "local upload failed");
            refused(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

/// `GET /files/<key>`: the local backend's download URL.
pub async fn download(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(signed): Query<Signed>,
) -> Response {
    let Some(storage) = &state.local_files else {
        return refused(StatusCode::NOT_FOUND, "not found");
    };
    let Some(local) = storage.as_local() else {
        return refused(StatusCode::NOT_FOUND, "not found");
    };
    if !local.verify(
        &["GET", key.as_str(), &signed.exp.to_string()],
        signed.exp,
        &signed.sig,
    ) {
        return refused(StatusCode::FORBIDDEN, "signature does not match or expired");
    }
    match storage.get(&key, 64 * 1024 * 1024).await {
        Ok(Some(bytes)) => {
            let mime = if key.ends_with(".png") {
                "image/png"
            } else {
                "image/jpeg"
            };
            (
                [
                    (header::CONTENT_TYPE, mime),
                    (header::CACHE_CONTROL, "private, max-age=3600"),
                ],
                Body::from(bytes),
            )
                .into_response()
        }
        Ok(None) => refused(StatusCode::NOT_FOUND, "not found"),
        Err(e) => {
            tracing::warn!(key, error = %e, "local download failed");
            refused(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

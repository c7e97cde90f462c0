//! Errors as JSON: `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chat_core::i18n::{Lang, error_text};
use chat_core::service::ServiceError;
use chat_protocol::ErrorCode;

use crate::dto::{ErrorBodyJson, ErrorEnvelope};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `Retry-After`, for 429.
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn unauthorized(lang: Lang, detail: String) -> Self {
        let message = match lang {
            Lang::Vi => format!("Chưa xác thực hoặc mã truy cập không hợp lệ ({detail})."),
            Lang::En => format!("Missing or invalid access token ({detail})."),
        };
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message,
            retry_after_secs: None,
        }
    }

    pub fn forbidden(lang: Lang) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: ErrorCode::Forbidden.as_str(),
            message: error_text(ErrorCode::Forbidden, lang).to_owned(),
            retry_after_secs: None,
        }
    }

    pub fn not_found(lang: Lang) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: ErrorCode::NotFound.as_str(),
            message: error_text(ErrorCode::NotFound, lang).to_owned(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(lang: Lang, detail: &str) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: ErrorCode::InvalidField.as_str(),
            message: format!("{} ({detail})", error_text(ErrorCode::InvalidField, lang)),
            retry_after_secs: None,
        }
    }

    pub fn from_service(lang: Lang, e: ServiceError) -> Self {
        let code = e.code();
        let status = match code {
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::RateLimited | ErrorCode::Muted => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        let detail = match &e {
            ServiceError::NotFound(what) => format!(" ({what})"),
            ServiceError::Invalid { detail, .. } => format!(" ({detail})"),
            _ => String::new(),
        };
        ApiError {
            status,
            code: code.as_str(),
            message: format!("{}{detail}", error_text(code, lang)),
            retry_after_secs: e.retry_after_ms().map(|ms| ms.div_ceil(1000)),
        }
    }

    /// 429 for a caller over the REST rate limit.
    pub fn rate_limited(lang: Lang, retry_after: std::time::Duration) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: ErrorCode::RateLimited.as_str(),
            message: error_text(ErrorCode::RateLimited, lang).to_owned(),
            retry_after_secs: Some(retry_after.as_millis().div_ceil(1000) as u64),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope {
            error: ErrorBodyJson {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs
            && let Ok(value) = secs.max(1).to_string().parse()
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

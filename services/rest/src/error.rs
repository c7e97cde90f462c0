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
        }
    }

    pub fn forbidden(lang: Lang) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: ErrorCode::Forbidden.as_str(),
            message: error_text(ErrorCode::Forbidden, lang).to_owned(),
        }
    }

    pub fn not_found(lang: Lang) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: ErrorCode::NotFound.as_str(),
            message: error_text(ErrorCode::NotFound, lang).to_owned(),
        }
    }

    pub fn bad_request(lang: Lang, detail: &str) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: ErrorCode::InvalidField.as_str(),
            message: format!("{} ({detail})", error_text(ErrorCode::InvalidField, lang)),
        }
    }

    pub fn from_service(lang: Lang, e: ServiceError) -> Self {
        let code = e.code();
        let status = match code {
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
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
        (self.status, Json(body)).into_response()
    }
}

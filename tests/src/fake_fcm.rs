//! A local stand-in for FCM HTTP v1: `POST /v1/projects/{project}/messages:send`
//! and Google's OAuth2 token endpoint (JWT bearer grant), checking what the
//! real ones check — the RS256 assertion signed with the service account's
//! key, its issuer, audience and scope, and the bearer access token — and
//! answering with FCM's documented errors for special device tokens:
//! `gone-*` → 404 UNREGISTERED, `bad-*` → 400 INVALID_ARGUMENT (token),
//! `payload-*` → 400 INVALID_ARGUMENT (payload), `busy-*` → 503 with
//! `Retry-After: 7` the first time. Used by chat-push's tests and by the
//! end-to-end tests (chatd points its FCM base URL here).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde_json::{Value, json};

pub const PRIVATE_KEY: &str = include_str!("../../services/core/testdata/rs256-private.pem");
const PUBLIC_KEY: &str = include_str!("../../services/core/testdata/rs256-public.pem");
pub const CLIENT_EMAIL: &str = "chat-push@shop-test.iam.gserviceaccount.com";
pub const PROJECT: &str = "shop-test";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

#[derive(Default)]
pub struct Fake {
    pub token_uri: String,
    pub issued: HashSet<String>,
    pub tokens_issued: usize,
    pub busy_seen: HashSet<String>,
    pub sent: Vec<Value>,
    /// When each accepted message arrived, and for which device token.
    pub arrivals: Vec<(std::time::Instant, String)>,
    /// `Retry-After` of the `busy-*` answer (7 s unless set).
    pub retry_after_secs: Option<u64>,
    /// An outage: every send is answered 503 while set, and its device
    /// token recorded here (not in `sent`).
    pub down: bool,
    pub refused_while_down: Vec<String>,
}

pub type Shared = Arc<Mutex<Fake>>;

async fn token(State(fake): State<Shared>, Form(form): Form<HashMap<String, String>>) -> Response {
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    let mut fake = fake.lock().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[fake.token_uri.clone()]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
    let claims = match jsonwebtoken::decode::<Value>(
        form.get("assertion").map(String::as_str).unwrap_or(""),
        &key,
        &validation,
    ) {
        Ok(data) => data.claims,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_grant", "error_description": e.to_string()})),
            )
                .into_response();
        }
    };
    if claims["scope"] != SCOPE {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_scope"})),
        )
            .into_response();
    }
    fake.tokens_issued += 1;
    let access = format!("ya29.test-{}", fake.tokens_issued);
    fake.issued.insert(access.clone());
    Json(json!({"access_token": access, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

fn fcm_error(status: StatusCode, code: &str, message: &str) -> Response {
    let canonical = match status.as_u16() {
        404 => "NOT_FOUND",
        400 => "INVALID_ARGUMENT",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    (
        status,
        Json(json!({"error": {
            "code": status.as_u16(), "message": message, "status": canonical,
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]
        }})),
    )
        .into_response()
}

async fn send(
    State(fake): State<Shared>,
    Path(project_and_verb): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let (project, verb) = project_and_verb;
    if verb != "messages:send" || project != PROJECT {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut fake = fake.lock().unwrap();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !fake.issued.contains(bearer) {
        return fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    let device = body["message"]["token"].as_str().unwrap_or("").to_owned();
    if fake.down {
        fake.refused_while_down.push(device);
        return fcm_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The service is currently unavailable.",
        );
    }
    fake.sent.push(body.clone());
    if device.starts_with("gone-") {
        return fcm_error(
            StatusCode::NOT_FOUND,
            "UNREGISTERED",
            "Requested entity was not found.",
        );
    }
    if device.starts_with("bad-") {
        return fcm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
        );
    }
    if device.starts_with("payload-") {
        return fcm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid value at 'message.data[0].value'",
        );
    }
    if device.starts_with("busy-") && fake.busy_seen.insert(device.clone()) {
        let mut response = fcm_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The service is currently unavailable.",
        );
        let after = fake.retry_after_secs.unwrap_or(7).to_string();
        response
            .headers_mut()
            .insert("retry-after", after.parse().unwrap());
        return response;
    }
    fake.arrivals
        .push((std::time::Instant::now(), device.clone()));
    let n = fake.sent.len();
    Json(json!({"name": format!("projects/{project}/messages/0:{n}")})).into_response()
}

/// Starts the stand-in on a free loopback port: `(base URL, state)`.
pub async fn start() -> (String, Shared) {
    let fake: Shared = Arc::default();
    let app = Router::new()
        .route("/token", post(token))
        .route("/v1/projects/{project}/{verb}", post(send))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    fake.lock().unwrap().token_uri = format!("{base}/token");
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, fake)
}

/// A service-account JSON whose token endpoint is the stand-in at `base`.
pub fn service_account_json(base: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "k1",
        "private_key": PRIVATE_KEY,
        "client_email": CLIENT_EMAIL,
        "token_uri": format!("{base}/token"),
    })
    .to_string()
}

/// A service-account file for chatd pointing at the stand-in at `base`
/// (kept as long as the returned handle lives).
pub fn credentials_file(base: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), service_account_json(base)).expect("credentials");
    file
}

/// The `messageId` of each push the stand-in accepted for `device_token`,
/// in the order received.
pub fn pushed_message_ids(fake: &Shared, device_token: &str) -> Vec<String> {
    fake.lock()
        .unwrap()
        .sent
        .iter()
        .filter(|m| m["message"]["token"] == device_token)
        .filter_map(|m| {
            m["message"]["data"]["messageId"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

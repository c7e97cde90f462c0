//! The FCM client against a local stand-in that implements FCM HTTP v1's
//! `messages:send` and Google's OAuth2 token endpoint (JWT bearer grant),
//! checking what the real ones check: the RS256 assertion signed with the
//! service account's key, its audience and scope, the bearer token.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use chat_push::fcm::{FcmClient, FcmConfig, SCOPE, ServiceAccount};
use chat_push::{Notification, Outcome};
use serde_json::{Value, json};

const PRIVATE_KEY: &str = include_str!("../../core/testdata/rs256-private.pem");
const PUBLIC_KEY: &str = include_str!("../../core/testdata/rs256-public.pem");
const CLIENT_EMAIL: &str = "chat-push@shop-test.iam.gserviceaccount.com";

#[derive(Default)]
struct Fake {
    token_uri: String,
    issued: HashSet<String>,
    tokens_issued: usize,
    busy_seen: HashSet<String>,
    sent: Vec<Value>,
}

type Shared = Arc<Mutex<Fake>>;

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
    if verb != "messages:send" || project != "shop-test" {
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
        response
            .headers_mut()
            .insert("retry-after", "7".parse().unwrap());
        return response;
    }
    let n = fake.sent.len();
    Json(json!({"name": format!("projects/{project}/messages/0:{n}")})).into_response()
}

async fn stand_in() -> (String, Shared) {
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

fn client(base: &str) -> FcmClient {
    let account = ServiceAccount::from_json(
        &json!({
            "type": "service_account",
            "project_id": "shop-test",
            "private_key_id": "k1",
            "private_key": PRIVATE_KEY,
            "client_email": CLIENT_EMAIL,
            "token_uri": format!("{base}/token"),
        })
        .to_string(),
    )
    .unwrap();
    FcmClient::new(FcmConfig {
        base_url: base.to_owned(),
        account,
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn notification() -> Notification {
    Notification {
        title: "Shop Áo Đẹp".into(),
        body: "Dạ còn size M ạ".into(),
        collapse_key: "thread-t1".into(),
        badge: 3,
        data: vec![
            ("threadId".into(), "t1".into()),
            ("messageId".into(), "m1".into()),
        ],
    }
}

#[tokio::test]
async fn sends_with_a_cached_oauth_token_and_collapse_headers() {
    let (base, fake) = stand_in().await;
    let fcm = client(&base);
    for _ in 0..2 {
        match fcm.send("device-1", &notification()).await.unwrap() {
            Outcome::Sent { id } => assert!(id.starts_with("projects/shop-test/messages/")),
            other => panic!("{other:?}"),
        }
    }
    let fake = fake.lock().unwrap();
    assert_eq!(fake.tokens_issued, 1, "the access token is cached");
    let message = &fake.sent[0]["message"];
    assert_eq!(message["token"], "device-1");
    assert_eq!(message["notification"]["title"], "Shop Áo Đẹp");
    assert_eq!(message["data"]["threadId"], "t1");
    assert_eq!(message["android"]["collapse_key"], "thread-t1");
    assert_eq!(message["android"]["notification"]["notification_count"], 3);
    assert_eq!(message["apns"]["headers"]["apns-collapse-id"], "thread-t1");
    assert_eq!(message["apns"]["payload"]["aps"]["badge"], 3);
}

#[tokio::test]
async fn classifies_fcm_errors_as_documented() {
    let (base, _fake) = stand_in().await;
    let fcm = client(&base);
    let n = notification();
    assert!(matches!(
        fcm.send("gone-1", &n).await.unwrap(),
        Outcome::TokenGone { .. }
    ));
    assert!(matches!(
        fcm.send("bad-1", &n).await.unwrap(),
        Outcome::TokenGone { .. }
    ));
    assert!(matches!(
        fcm.send("payload-1", &n).await.unwrap(),
        Outcome::Rejected { .. }
    ));
    match fcm.send("busy-1", &n).await.unwrap() {
        Outcome::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(7))),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        fcm.send("busy-1", &n).await.unwrap(),
        Outcome::Sent { .. }
    ));
}

#[tokio::test]
async fn a_revoked_access_token_is_refreshed_once() {
    let (base, fake) = stand_in().await;
    let fcm = client(&base);
    assert!(matches!(
        fcm.send("device-1", &notification()).await.unwrap(),
        Outcome::Sent { .. }
    ));
    fake.lock().unwrap().issued.clear();
    assert!(matches!(
        fcm.send("device-1", &notification()).await.unwrap(),
        Outcome::Sent { .. }
    ));
    assert_eq!(fake.lock().unwrap().tokens_issued, 2);
}

#[tokio::test]
async fn a_wrong_key_gets_no_token() {
    let (base, _fake) = stand_in().await;
    let mut account: Value = json!({
        "project_id": "shop-test",
        "private_key": include_str!("../../core/testdata/es256-private.pem"),
        "client_email": CLIENT_EMAIL,
        "token_uri": format!("{base}/token"),
    });
    // An EC key is not an RSA service-account key.
    assert!(
        FcmClient::new(FcmConfig {
            base_url: base.clone(),
            account: serde_json::from_value(account.clone()).unwrap(),
            timeout: Duration::from_secs(5),
        })
        .is_err()
    );
    // A different issuer is refused by the token endpoint.
    account["private_key"] = json!(PRIVATE_KEY);
    account["client_email"] = json!("intruder@example.com");
    let fcm = FcmClient::new(FcmConfig {
        base_url: base,
        account: serde_json::from_value(account).unwrap(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    assert!(fcm.send("device-1", &notification()).await.is_err());
}

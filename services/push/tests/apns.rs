//! The APNs client against a local stand-in of `POST /3/device/<token>`:
//! HTTP/2 only (as APNs), checking the ES256 provider token (`kid`, `iss`,
//! signature), `apns-topic`, `apns-push-type` and the collapse id, and
//! answering with APNs's documented statuses and reasons.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chat_push::apns::{ApnsClient, ApnsConfig};
use chat_push::{Notification, Outcome};
use serde_json::{Value, json};

const KEY: &str = include_str!("../../core/testdata/es256-private.pem");
const PUBLIC: &str = include_str!("../../core/testdata/es256-public.pem");
const TEAM: &str = "TEAM123456";
const KEY_ID: &str = "KEY1234567";
const TOPIC: &str = "vn.example.shop";

#[derive(Default)]
struct Fake {
    expire_tokens_before: u64,
    provider_tokens: HashSet<String>,
    busy_seen: HashSet<String>,
    received: Vec<(String, Value, Value)>,
}

type Shared = Arc<Mutex<Fake>>;

fn reason(status: StatusCode, reason: &str) -> Response {
    let mut response = (status, Json(json!({"reason": reason}))).into_response();
    response.headers_mut().insert(
        "apns-id",
        "00000000-0000-0000-0000-000000000000".parse().unwrap(),
    );
    response
}

async fn push(
    State(fake): State<Shared>,
    Path(device): Path<String>,
    request: Request,
) -> Response {
    if request.version() != Version::HTTP_2 {
        return StatusCode::HTTP_VERSION_NOT_SUPPORTED.into_response();
    }
    let headers = request.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let body: Value = {
        let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    let Some(jwt) = header("authorization")
        .strip_prefix("bearer ")
        .map(str::to_owned)
    else {
        return reason(StatusCode::FORBIDDEN, "MissingProviderToken");
    };
    let jwt_header = jsonwebtoken::decode_header(&jwt).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[TEAM]);
    validation.required_spec_claims = ["iss".to_owned()].into();
    validation.validate_exp = false;
    let key = jsonwebtoken::DecodingKey::from_ec_pem(PUBLIC.as_bytes()).unwrap();
    let Ok(claims) = jsonwebtoken::decode::<Value>(&jwt, &key, &validation) else {
        return reason(StatusCode::FORBIDDEN, "InvalidProviderToken");
    };
    if jwt_header.kid.as_deref() != Some(KEY_ID) {
        return reason(StatusCode::FORBIDDEN, "InvalidProviderToken");
    }
    let mut fake = fake.lock().unwrap();
    if claims.claims["iat"].as_u64().unwrap_or(0) < fake.expire_tokens_before
        || (fake.expire_tokens_before > 0 && fake.provider_tokens.contains(&jwt))
    {
        return reason(StatusCode::FORBIDDEN, "ExpiredProviderToken");
    }
    fake.provider_tokens.insert(jwt);
    if header("apns-topic") != TOPIC {
        return reason(StatusCode::BAD_REQUEST, "DeviceTokenNotForTopic");
    }
    if header("apns-push-type") != "alert" {
        return reason(StatusCode::BAD_REQUEST, "InvalidPushType");
    }
    let collapse = header("apns-collapse-id");
    fake.received.push((device.clone(), body, json!(collapse)));
    if device.starts_with("gone") {
        return reason(StatusCode::GONE, "Unregistered");
    }
    if device.starts_with("bad") {
        return reason(StatusCode::BAD_REQUEST, "BadDeviceToken");
    }
    if device.starts_with("busy") && fake.busy_seen.insert(device.clone()) {
        return reason(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
    }
    if collapse.len() > 64 {
        return reason(StatusCode::BAD_REQUEST, "BadCollapseId");
    }
    let mut ok = StatusCode::OK.into_response();
    ok.headers_mut().insert(
        "apns-id",
        "11111111-2222-3333-4444-555555555555".parse().unwrap(),
    );
    ok
}

async fn stand_in() -> (String, Shared) {
    let fake: Shared = Arc::default();
    let app = Router::new()
        .route("/3/device/{token}", post(push))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, fake)
}

fn client(base: &str) -> ApnsClient {
    ApnsClient::new(ApnsConfig {
        base_url: base.to_owned(),
        team_id: TEAM.into(),
        key_id: KEY_ID.into(),
        private_key_pem: KEY.into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn notification() -> Notification {
    Notification {
        title: "Shop Áo Đẹp".into(),
        body: "Dạ còn size M ạ".into(),
        collapse_key: "thread-t1".into(),
        badge: 4,
        data: vec![("threadId".into(), "t1".into())],
    }
}

#[tokio::test]
async fn sends_an_alert_over_http2_with_a_provider_token() {
    let (base, fake) = stand_in().await;
    let apns = client(&base);
    match apns.send("a1b2c3", TOPIC, &notification()).await.unwrap() {
        Outcome::Sent { id } => assert_eq!(id, "11111111-2222-3333-4444-555555555555"),
        other => panic!("{other:?}"),
    }
    let fake = fake.lock().unwrap();
    let (device, body, collapse) = &fake.received[0];
    assert_eq!(device, "a1b2c3");
    assert_eq!(body["aps"]["alert"]["title"], "Shop Áo Đẹp");
    assert_eq!(body["aps"]["badge"], 4);
    assert_eq!(body["aps"]["thread-id"], "thread-t1");
    assert_eq!(body["threadId"], "t1");
    assert_eq!(collapse, "thread-t1");
}

#[tokio::test]
async fn classifies_apns_errors_as_documented() {
    let (base, _fake) = stand_in().await;
    let apns = client(&base);
    let n = notification();
    assert!(matches!(
        apns.send("gone-1", TOPIC, &n).await.unwrap(),
        Outcome::TokenGone { .. }
    ));
    assert!(matches!(
        apns.send("bad-1", TOPIC, &n).await.unwrap(),
        Outcome::TokenGone { .. }
    ));
    assert!(matches!(
        apns.send("ok-1", "other.app", &n).await.unwrap(),
        Outcome::TokenGone { .. }
    ));
    assert!(matches!(
        apns.send("busy-1", TOPIC, &n).await.unwrap(),
        Outcome::Retry { .. }
    ));
    assert!(matches!(
        apns.send("busy-1", TOPIC, &n).await.unwrap(),
        Outcome::Sent { .. }
    ));
}

#[tokio::test]
async fn an_expired_provider_token_is_replaced_once() {
    let (base, fake) = stand_in().await;
    let apns = client(&base);
    assert!(matches!(
        apns.send("ok-1", TOPIC, &notification()).await.unwrap(),
        Outcome::Sent { .. }
    ));
    // APNs now says the cached token expired: one fresh token, then sent.
    fake.lock().unwrap().expire_tokens_before = 1;
    assert!(matches!(
        apns.send("ok-1", TOPIC, &notification()).await.unwrap(),
        Outcome::Sent { .. }
    ));
    assert_eq!(fake.lock().unwrap().provider_tokens.len(), 2);
}

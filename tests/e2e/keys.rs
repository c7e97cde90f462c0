//! Signing keys rotate at the identity provider without a restart of chat:
//! the JWKS is served over real HTTP by a stand-in provider and changed
//! under a running server.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chat_e2e::{Client, Connect, Server, Via, options};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::CHATD;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../services/core/testdata")
        .join(name)
}

/// What the provider answers, and how often it was asked.
#[derive(Default)]
struct Provider {
    answer: Mutex<(u16, String)>,
    hits: Mutex<u32>,
}

async fn jwks(State(provider): State<Arc<Provider>>) -> (StatusCode, String) {
    *provider.hits.lock().unwrap() += 1;
    let (status, body) = provider.answer.lock().unwrap().clone();
    (StatusCode::from_u16(status).unwrap(), body)
}

async fn serve(provider: Arc<Provider>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(provider);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/.well-known/jwks.json")
}

fn rs256(pem: &str, kid: &str, user: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_rsa_pem(&std::fs::read(testdata(pem)).unwrap()).unwrap();
    jsonwebtoken::encode(&header, &Server::claims(user, "buyer"), &key).unwrap()
}

async fn inbox_status(server: &Server, token: &str) -> u16 {
    server.request("GET", "/chat/threads", token, None).await.0
}

/// Polls `check` every 100 ms until it holds, or panics after `within`.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_rotate_without_a_restart() {
    let provider = Arc::new(Provider::default());
    *provider.answer.lock().unwrap() =
        (200, std::fs::read_to_string(testdata("jwks.json")).unwrap());
    let url = serve(provider.clone()).await;
    let server = Server::start_with(
        CHATD,
        &[
            ("CHAT_AUTH__ALGORITHMS", "[\"HS256\",\"RS256\",\"ES256\"]"),
            ("CHAT_AUTH__JWKS_URL", &url),
            ("CHAT_AUTH__JWKS_REFRESH_SECS", "3600"),
            ("CHAT_AUTH__JWKS_MIN_REFRESH_SECS", "1"),
        ],
    )
    .await;
    server.put_users(&["kb1"]).await;
    let old = rs256("rs256-private.pem", "rsa-1", "kb1");
    let new = rs256("rs256-2-private.pem", "rs-2", "kb1");
    assert_eq!(
        inbox_status(&server, &old).await,
        200,
        "the provider's key works"
    );
    assert_eq!(
        inbox_status(&server, &new).await,
        401,
        "a key not yet published does not"
    );

    // The provider rotates: rsa-1 and ec-1 are withdrawn, rs-2 published.
    // The next token naming rs-2 brings the next read forward (the hourly
    // one is far away); rsa-1 is refused from then on.
    *provider.answer.lock().unwrap() = (
        200,
        std::fs::read_to_string(testdata("jwks-rotated.json")).unwrap(),
    );
    eventually(
        "the rotated key to be taken",
        Duration::from_secs(10),
        || {
            let (server, new) = (&server, &new);
            async move { inbox_status(server, new).await == 200 }
        },
    )
    .await;
    assert_eq!(
        inbox_status(&server, &old).await,
        401,
        "the withdrawn key is revoked"
    );
    let opts = options(&server, "kb1", "kb1", &new, Via::Tcp);
    let Connect::Accepted(mut client) = Client::try_connect(opts, "kb1").await else {
        panic!("MQTT refuses the new key");
    };
    client.subscribe_inbox().await;
    let opts = options(&server, "kb1:old", "kb1", &old, Via::Tcp);
    assert!(
        matches!(Client::try_connect(opts, "kb1").await, Connect::Refused(_)),
        "MQTT still takes the withdrawn key"
    );

    // A provider failing, or answering an empty set, keeps the keys; forged
    // kids do not make chat hammer it (at most one read per second here).
    for answer in [(500, "oops".to_owned()), (200, r#"{"keys":[]}"#.to_owned())] {
        *provider.answer.lock().unwrap() = answer;
        let hits = *provider.hits.lock().unwrap();
        let forged = rs256("rs256-2-private.pem", "forged", "kb1");
        for _ in 0..50 {
            assert_eq!(inbox_status(&server, &forged).await, 401);
        }
        eventually(
            "a read of the failing provider",
            Duration::from_secs(5),
            || {
                let provider = &provider;
                async move { *provider.hits.lock().unwrap() > hits }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let reads = *provider.hits.lock().unwrap() - hits;
        assert!(reads <= 3, "{reads} reads for 50 forged kids in ~2 s");
        assert_eq!(inbox_status(&server, &new).await, 200, "the keys stay");
    }
}

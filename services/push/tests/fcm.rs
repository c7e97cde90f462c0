//! The FCM client against the local stand-in of FCM HTTP v1 and Google's
//! OAuth2 token endpoint (`chat_e2e::fake_fcm`).

use std::time::Duration;

use chat_e2e::fake_fcm::{self, CLIENT_EMAIL, PRIVATE_KEY};
use chat_push::fcm::{FcmClient, FcmConfig, ServiceAccount};
use chat_push::{Notification, Outcome};
use serde_json::{Value, json};

async fn stand_in() -> (String, fake_fcm::Shared) {
    fake_fcm::start().await
}

fn client(base: &str) -> FcmClient {
    let account = ServiceAccount::from_json(&fake_fcm::service_account_json(base)).unwrap();
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

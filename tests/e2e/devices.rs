//! Push tokens over REST: how a mobile app registers the token FCM or APNs
//! gave it, and what happens when a phone changes hands.

use chat_e2e::Server;
use serde_json::json;

use crate::CHATD;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_register_move_and_delete_push_tokens() {
    let server = Server::start(CHATD).await;
    let alice = server.token("d-alice", "buyer");
    let shop = server.token("d-shop", "seller");
    let tokens_of = |token: String| {
        let server = &server;
        async move {
            let (status, list) = server.request("GET", "/chat/devices", &token, None).await;
            assert_eq!(status, 200, "{list}");
            let mut tokens: Vec<String> = list["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["token"].as_str().unwrap().to_owned())
                .collect();
            tokens.sort();
            tokens
        }
    };

    for body in [
        json!({"platform": "fcm", "token": "fcm-tok-1", "appId": "vn.example.shop"}),
        json!({"platform": "apns", "token": "a1b2c3", "appId": "vn.example.shop.ios", "locale": "en"}),
        // Registering again refreshes, it does not duplicate.
        json!({"platform": "fcm", "token": "fcm-tok-1", "appId": "vn.example.shop"}),
    ] {
        let (status, body) = server
            .request("PUT", "/chat/devices", &alice, Some(body))
            .await;
        assert_eq!(status, 204, "{body}");
    }
    assert_eq!(tokens_of(alice.clone()).await, ["a1b2c3", "fcm-tok-1"]);
    let (_, list) = server.request("GET", "/chat/devices", &alice, None).await;
    let apns = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["platform"] == "apns")
        .unwrap()
        .clone();
    assert_eq!(apns["locale"], "en");
    assert_eq!(apns["appId"], "vn.example.shop.ios");

    // The shop's account logs in on Alice's old phone: the token moves.
    let (status, _) = server
        .request(
            "PUT",
            "/chat/devices",
            &shop,
            Some(json!({"platform": "fcm", "token": "fcm-tok-1", "appId": "vn.example.shop"})),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(tokens_of(alice.clone()).await, ["a1b2c3"]);
    assert_eq!(tokens_of(shop.clone()).await, ["fcm-tok-1"]);

    // Nobody deletes another user's token; one's own goes.
    let (status, body) = server
        .request("DELETE", "/chat/devices/fcm-tok-1", &alice, None)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = server
        .request("DELETE", "/chat/devices/a1b2c3", &alice, None)
        .await;
    assert_eq!(status, 204);
    assert!(tokens_of(alice.clone()).await.is_empty());

    // Bad input is refused with a reason; platform tokens have no phone.
    for bad in [
        json!({"platform": "sms", "token": "x", "appId": "a"}),
        json!({"platform": "fcm", "token": "has space", "appId": "a"}),
        json!({"platform": "fcm", "token": "", "appId": "a"}),
        json!({"platform": "fcm", "token": "x", "appId": ""}),
    ] {
        let (status, body) = server
            .request("PUT", "/chat/devices", &alice, Some(bad))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{body}");
    }
    let platform = server.token("backend", "platform");
    let (status, _) = server
        .request(
            "PUT",
            "/chat/devices",
            &platform,
            Some(json!({"platform": "fcm", "token": "x", "appId": "a"})),
        )
        .await;
    assert_eq!(status, 403);
}

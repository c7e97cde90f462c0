//! The demo storefront (`chatd/src/demo.rs`): the pages, the catalog, and
//! sessions whose tokens work on REST and MQTT, for the demo users only.

use chat_e2e::{Client, Connect, Server, Via, options, repo_root};
use serde_json::{Value, json};

use crate::CHATD;

/// A client that shows redirects instead of following them.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(server: &Server, path: &str) -> reqwest::Response {
    http().get(server.url(path)).send().await.expect("GET")
}

async fn session(server: &Server, user: &str) -> (u16, Value) {
    let response = http()
        .post(server.url("/demo/api/session"))
        .header("accept-language", "en")
        .json(&json!({"userId": user}))
        .send()
        .await
        .expect("POST session");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_storefront_pages_catalog_and_sessions() {
    let server = Server::start_with(CHATD, &[("CHAT_DEMO__ENABLED", "true")]).await;
    assert!(
        server.log().contains(&format!(
            "demo storefront: http://127.0.0.1:{}/demo/",
            server.http_port
        )),
        "{}",
        server.log()
    );

    // The pages: web/dist as built, with types, never cached stale.
    let index = get(&server, "/demo/").await;
    assert_eq!(index.status(), 200);
    assert_eq!(header(&index, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&index, "cache-control"), "no-cache");
    let on_disk = std::fs::read_to_string(repo_root().join("web/dist/index.html")).unwrap();
    assert_eq!(index.text().await.unwrap(), on_disk);
    for (path, location) in [("/demo", "/demo/"), ("/", "/demo/")] {
        let response = get(&server, path).await;
        assert!(response.status().is_redirection(), "{path}");
        assert_eq!(header(&response, "location"), location, "{path}");
    }
    assert_eq!(get(&server, "/").await.status(), 307);
    assert_eq!(get(&server, "/demo/nope.js").await.status(), 404);
    assert_eq!(
        get(&server, "/demo/%2e%2e/Cargo.toml").await.status(),
        404,
        "nothing outside web/dist"
    );

    // The catalog: the seeded users, products and orders.
    let catalog: Value = get(&server, "/demo/api/catalog")
        .await
        .json()
        .await
        .unwrap();
    let users = catalog["users"].as_array().unwrap();
    assert_eq!(users.len(), 5, "{catalog}");
    assert!(users.contains(&json!({
        "id": "demo-buyer-1", "displayName": "Nguyễn Văn An", "role": "buyer", "locale": "vi"
    })));
    assert!(users.contains(&json!({
        "id": "demo-shop-2", "displayName": "Gia Dụng Xanh", "role": "seller", "locale": "vi"
    })));
    let products = catalog["products"].as_array().unwrap();
    assert_eq!(products.len(), 4);
    assert!(products.contains(&json!({
        "id": "demo-p-aothun", "sellerId": "demo-shop-1", "title": "Áo thun cotton basic",
        "price": 149000, "currency": "VND", "imageUrl": "/demo/img/demo-p-aothun.svg"
    })));
    assert!(catalog["orders"].as_array().unwrap().contains(&json!({
        "id": "demo-o-1003", "buyerId": "demo-buyer-3", "sellerId": "demo-shop-1",
        "summary": "Order #1003 · Linen shirt ×1 · 329,000₫"
    })));
    for product in products {
        let image = get(&server, product["imageUrl"].as_str().unwrap()).await;
        assert_eq!(image.status(), 200, "{product}");
        assert_eq!(header(&image, "content-type"), "image/svg+xml");
    }

    // A session: a buyer token good for REST and MQTT.
    let (status, buyer) = session(&server, "demo-buyer-1").await;
    assert_eq!(status, 200, "{buyer}");
    assert_eq!(buyer["userId"], "demo-buyer-1");
    assert_eq!(buyer["role"], "buyer");
    assert_eq!(buyer["displayName"], "Nguyễn Văn An");
    assert_eq!(buyer["locale"], "vi");
    assert_eq!(buyer["restUrl"], "");
    assert_eq!(
        buyer["mqttUrl"],
        format!("ws://127.0.0.1:{}/mqtt", server.ws_port)
    );
    let token = buyer["token"].as_str().unwrap();
    let (status, inbox) = server.request("GET", "/chat/threads", token, None).await;
    assert_eq!(status, 200, "{inbox}");
    // Seeded through the store: the product and the order open threads.
    for body in [
        json!({"sellerId": "demo-shop-1", "productId": "demo-p-aothun"}),
        json!({"orderId": "demo-o-1001"}),
    ] {
        let (status, thread) = server
            .request("POST", "/chat/threads", token, Some(body))
            .await;
        assert_eq!(status, 200, "{thread}");
        assert_eq!(thread["otherDisplayName"], "Shop Áo Đẹp");
    }
    let opts = options(
        &server,
        "demo-buyer-1:web-e2e",
        "demo-buyer-1",
        token,
        Via::WebSocket,
    );
    match Client::try_connect(opts, "demo-buyer-1").await {
        Connect::Accepted(mut client) => {
            // Protocol v2: the user's one topic.
            assert!(client.subscribe("u/demo-buyer-1").await);
        }
        Connect::Refused(why) => panic!("the demo token was refused over MQTT: {why}"),
    }

    let (status, seller) = session(&server, "demo-shop-1").await;
    assert_eq!(status, 200, "{seller}");
    assert_eq!(seller["role"], "seller");
    let (status, inbox) = server
        .request(
            "GET",
            "/chat/threads",
            seller["token"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(status, 200, "{inbox}");
    assert_eq!(inbox["threads"].as_array().unwrap().len(), 2, "{inbox}");

    // Nobody else gets a token.
    for user in ["someone-else", "platform-bot", ""] {
        let (status, body) = session(&server, user).await;
        assert_eq!(status, 404, "{user}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_storefront_off_when_disabled() {
    let server = Server::start_with(CHATD, &[("CHAT_DEMO__ENABLED", "false")]).await;
    for path in ["/demo/", "/demo/index.html", "/demo/api/catalog", "/"] {
        assert_eq!(get(&server, path).await.status(), 404, "{path}");
    }
    let (status, _) = session(&server, "demo-buyer-1").await;
    assert_eq!(status, 404);
    assert!(!server.log().contains("demo storefront"));
}

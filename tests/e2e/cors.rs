//! CORS (`cors_allowed_origins`): a chat widget on a marketplace's origin
//! calls the REST facade and PUTs images to the local upload URLs. Only the
//! configured origins get an allow-origin header; without the setting there
//! are no CORS headers at all; a malformed origin stops the server.

use chat_e2e::Server;
use reqwest::header::HeaderMap;
use serde_json::json;

use crate::CHATD;

const SHOP: &str = "http://shop.test";

/// Sends a preflight for `method` on `url` from `origin`, asking for
/// `headers`: its status and response headers.
async fn preflight(url: &str, origin: &str, method: &str, headers: &str) -> (u16, HeaderMap) {
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
        .send()
        .await
        .expect("preflight");
    (response.status().as_u16(), response.headers().clone())
}

/// A token-carrying GET of `path` from a page on `origin`.
async fn get_from(server: &Server, path: &str, token: &str, origin: &str) -> (u16, HeaderMap) {
    let response = reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token)
        .header("origin", origin)
        .send()
        .await
        .expect("GET");
    (response.status().as_u16(), response.headers().clone())
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .map(|v| v.to_str().expect("ASCII header"))
        .unwrap_or("")
}

/// The comma-separated list in `name`, lower-cased.
fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    header(headers, name)
        .split(',')
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

fn has_cors_headers(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| name.as_str().starts_with("access-control-"))
}

#[tokio::test]
async fn cors_allows_the_configured_origin_only() {
    let server = Server::start_with(
        CHATD,
        &[("CHAT_CORS_ALLOWED_ORIGINS", &format!("[\"{SHOP}\"]"))],
    )
    .await;
    let thread = server.thread_between("cb", "cs").await;
    let token = server.token("cb", "buyer");

    // The widget's preflight before opening a thread.
    let (status, headers) = preflight(
        &server.url("/chat/threads"),
        SHOP,
        "POST",
        "authorization,content-type",
    )
    .await;
    assert!((200..300).contains(&status), "preflight status {status}");
    assert_eq!(header(&headers, "access-control-allow-origin"), SHOP);
    let methods = list(&headers, "access-control-allow-methods");
    for method in ["get", "post", "put", "delete", "options"] {
        assert!(methods.iter().any(|m| m == method), "{method}: {methods:?}");
    }
    let allowed = list(&headers, "access-control-allow-headers");
    for name in ["authorization", "content-type", "accept-language"] {
        assert!(allowed.iter().any(|h| h == name), "{name}: {allowed:?}");
    }
    assert_eq!(header(&headers, "access-control-max-age"), "600");
    assert!(headers.get("access-control-allow-credentials").is_none());
    assert!(list(&headers, "vary").iter().any(|v| v == "origin"));

    // The real request carries the allow-origin header and exposes
    // Retry-After and ETag to the page.
    let (status, headers) = get_from(&server, "/chat/threads", &token, SHOP).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), SHOP);
    let exposed = list(&headers, "access-control-expose-headers");
    for name in ["retry-after", "etag"] {
        assert!(exposed.iter().any(|h| h == name), "{name}: {exposed:?}");
    }
    assert!(list(&headers, "vary").iter().any(|v| v == "origin"));
    // So do errors: the page can read why it was refused.
    let (status, headers) = get_from(&server, "/chat/threads", "not-a-token", SHOP).await;
    assert_eq!(status, 401);
    assert_eq!(header(&headers, "access-control-allow-origin"), SHOP);

    // Another origin gets nothing it could use.
    let evil = "http://evil.test";
    let (_, headers) = preflight(
        &server.url("/chat/threads"),
        evil,
        "POST",
        "authorization,content-type",
    )
    .await;
    assert!(headers.get("access-control-allow-origin").is_none());
    let (status, headers) = get_from(&server, "/chat/threads", &token, evil).await;
    assert_eq!(status, 200, "CORS is enforced by browsers, not here");
    assert!(headers.get("access-control-allow-origin").is_none());
    // A look-alike of the allowed origin neither.
    let (_, headers) = get_from(&server, "/chat/threads", &token, "http://shop.test:8080").await;
    assert!(headers.get("access-control-allow-origin").is_none());

    // The image upload: the browser PUTs to the signed URL with the slot's
    // headers (Content-Length it sets itself, but a client may list it).
    let (status, slot) = server
        .request(
            "POST",
            &format!("/chat/threads/{thread}/uploads"),
            &token,
            Some(json!({"contentType": "image/png", "size": 1234})),
        )
        .await;
    assert_eq!(status, 201, "{slot}");
    assert_eq!(slot["method"], "PUT");
    let url = slot["url"].as_str().unwrap();
    assert!(url.contains("/files/"), "{url}");
    let signed: Vec<String> = slot["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].as_str().unwrap().to_ascii_lowercase())
        .collect();
    assert!(signed.iter().any(|h| h == "content-type"), "{signed:?}");
    // The slot's URL names the public base URL; ask this server.
    let path = &url[url.find("/files/").unwrap()..];
    let (status, headers) = preflight(&server.url(path), SHOP, "PUT", &signed.join(",")).await;
    assert!((200..300).contains(&status), "preflight status {status}");
    assert_eq!(header(&headers, "access-control-allow-origin"), SHOP);
    assert!(
        list(&headers, "access-control-allow-methods")
            .iter()
            .any(|m| m == "put")
    );
    let allowed = list(&headers, "access-control-allow-headers");
    for name in &signed {
        assert!(allowed.contains(name), "{name}: {allowed:?}");
    }
}

#[tokio::test]
async fn cors_is_off_without_the_setting() {
    let server = Server::start(CHATD).await;
    server.put_users(&["nb"]).await;
    let token = server.token("nb", "buyer");
    let (status, headers) = get_from(&server, "/chat/threads", &token, SHOP).await;
    assert_eq!(status, 200);
    assert!(!has_cors_headers(&headers), "{headers:?}");
    let (_, headers) = preflight(
        &server.url("/chat/threads"),
        SHOP,
        "POST",
        "authorization,content-type",
    )
    .await;
    assert!(!has_cors_headers(&headers), "{headers:?}");
}

#[tokio::test]
async fn cors_any_origin_with_a_single_star() {
    let server = Server::start_with(CHATD, &[("CHAT_CORS_ALLOWED_ORIGINS", "[\"*\"]")]).await;
    server.put_users(&["sb"]).await;
    let token = server.token("sb", "buyer");
    let (status, headers) =
        get_from(&server, "/chat/threads", &token, "http://anywhere.test").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), "*");
    assert!(headers.get("access-control-allow-credentials").is_none());
}

#[tokio::test]
async fn cors_malformed_origin_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(CHATD)
        .arg("serve")
        .current_dir(dir.path())
        .env("CHAT_DATA_DIR", dir.path().join("data"))
        .env("CHAT_HTTP_ADDR", "127.0.0.1:0")
        .env("CHAT_MQTT__TCP_ADDR", "127.0.0.1:0")
        .env("CHAT_MQTT__WS_ADDR", "127.0.0.1:0")
        .env(
            "CHAT_CORS_ALLOWED_ORIGINS",
            "[\"https://shop.example.vn/chat\"]",
        )
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), output)
        .await
        .expect("chatd exits")
        .expect("chatd runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cors_allowed_origins")
            && stderr.contains("https://shop.example.vn/chat")
            && stderr.contains("scheme://host[:port]"),
        "{stderr}"
    );
}

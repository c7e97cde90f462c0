//! The demo storefront at `/demo/`: with no configuration, `chatd` serves a
//! small shop so that a newcomer can chat between two browser windows, one
//! as a buyer and one as a seller.
//!
//! It serves the pages built into `web/dist/` (embedded in the binary, so
//! no Node.js is needed to run it), seeds the users, products and orders of
//! [`USERS`], [`PRODUCTS`] and [`ORDERS`] through the same store upserts as
//! `PUT /internal/...`, and hands out tokens for those users only
//! (`POST /demo/api/session`). On by default exactly when the development
//! HS256 secret of the data directory is in use (`[demo] enabled`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chat_core::auth::{AuthConfig, Role, claims_for, mint_hs256};
use chat_core::i18n::Lang;
use chat_core::model::{Order, Product, User};
use chat_core::store::{ChatStore, StoreResult};
use chat_rest::{ApiError, ApiJson};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Lifetime of a demo session's token; the pages ask for a new one when it
/// runs out.
const TOKEN_TTL_SECS: i64 = 3600;

const CURRENCY: &str = "VND";

/// Every demo user's id starts with this; the chat service keeps them to
/// themselves (`ChatService::with_sandbox`).
pub const ID_PREFIX: &str = "demo-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Buyer,
    Seller,
}

impl Kind {
    fn role(self) -> Role {
        match self {
            Kind::Buyer => Role::Buyer,
            Kind::Seller => Role::Seller,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Buyer => "buyer",
            Kind::Seller => "seller",
        }
    }
}

struct DemoUser {
    id: &'static str,
    display_name: &'static str,
    kind: Kind,
    locale: &'static str,
}

struct DemoProduct {
    id: &'static str,
    seller_id: &'static str,
    title: &'static str,
    price: i64,
}

struct DemoOrder {
    id: &'static str,
    buyer_id: &'static str,
    seller_id: &'static str,
    summary: &'static str,
}

// The seed data, in one place: the catalog, the store and the sessions all
// come from these tables. Product pictures are `img/<id>.svg` in web/dist.
const USERS: &[DemoUser] = &[
    DemoUser {
        id: "demo-buyer-1",
        display_name: "Nguyễn Văn An",
        kind: Kind::Buyer,
        locale: "vi",
    },
    DemoUser {
        id: "demo-buyer-2",
        display_name: "Trần Thị Bình",
        kind: Kind::Buyer,
        locale: "vi",
    },
    DemoUser {
        id: "demo-buyer-3",
        display_name: "Alex Nguyen",
        kind: Kind::Buyer,
        locale: "en",
    },
    DemoUser {
        id: "demo-shop-1",
        display_name: "Shop Áo Đẹp",
        kind: Kind::Seller,
        locale: "vi",
    },
    DemoUser {
        id: "demo-shop-2",
        display_name: "Gia Dụng Xanh",
        kind: Kind::Seller,
        locale: "vi",
    },
];

const PRODUCTS: &[DemoProduct] = &[
    DemoProduct {
        id: "demo-p-aothun",
        seller_id: "demo-shop-1",
        title: "Áo thun cotton basic",
        price: 149_000,
    },
    DemoProduct {
        id: "demo-p-somi",
        seller_id: "demo-shop-1",
        title: "Áo sơ mi linen tay dài",
        price: 329_000,
    },
    DemoProduct {
        id: "demo-p-noicom",
        seller_id: "demo-shop-2",
        title: "Nồi cơm điện 1.8L",
        price: 890_000,
    },
    DemoProduct {
        id: "demo-p-binhnuoc",
        seller_id: "demo-shop-2",
        title: "Bình giữ nhiệt 500ml",
        price: 199_000,
    },
];

const ORDERS: &[DemoOrder] = &[
    DemoOrder {
        id: "demo-o-1001",
        buyer_id: "demo-buyer-1",
        seller_id: "demo-shop-1",
        summary: "Đơn #1001 · Áo thun cotton basic ×2 · 298.000₫",
    },
    DemoOrder {
        id: "demo-o-1002",
        buyer_id: "demo-buyer-2",
        seller_id: "demo-shop-2",
        summary: "Đơn #1002 · Nồi cơm điện 1.8L ×1 · 890.000₫",
    },
    DemoOrder {
        id: "demo-o-1003",
        buyer_id: "demo-buyer-3",
        seller_id: "demo-shop-1",
        summary: "Order #1003 · Linen shirt ×1 · 329,000₫",
    },
];

fn image_url(product_id: &str) -> String {
    format!("/demo/img/{product_id}.svg")
}

/// The pages, built by the web workspace (`web/dist/`). Release builds
/// embed them; debug builds read them from disk, so a rebuilt page shows
/// without recompiling chatd.
#[derive(rust_embed::RustEmbed)]
#[folder = "$CARGO_MANIFEST_DIR/../web/dist/"]
struct Pages;

/// Whether the demo is on: as configured, or, when unset, exactly when the
/// development HS256 secret from the data directory is in use.
pub fn enabled(config: &Config) -> bool {
    config
        .demo
        .enabled
        .unwrap_or_else(|| uses_dev_secret(&config.auth))
}

/// HS256 accepted, no secret configured (so the random one in the data
/// directory signs), and no public keys: a development setup.
fn uses_dev_secret(auth: &AuthConfig) -> bool {
    auth.hs256_secret.is_none()
        && auth.algorithms.iter().any(|a| a == "HS256")
        && auth.public_key_pem.is_none()
        && auth.jwks_file.is_none()
        && auth.jwks_url.is_none()
}

/// What the demo routes need.
pub struct Demo {
    /// The HS256 secret the server verifies tokens with.
    secret: String,
    auth: AuthConfig,
    mqtt_ws_url: Option<String>,
    ws_addr: SocketAddr,
    allow_remote_sessions: bool,
}

/// Whether a demo session may be handed to a browser at `peer`.
fn may_hand_out(peer: SocketAddr, allow_remote: bool) -> bool {
    allow_remote || peer.ip().to_canonical().is_loopback()
}

impl Demo {
    /// The demo of this configuration, `None` when it is off.
    pub fn from_config(
        config: &Config,
        hs256_secret: Option<&str>,
    ) -> anyhow::Result<Option<Demo>> {
        if !enabled(config) {
            return Ok(None);
        }
        let secret = hs256_secret.context(
            "demo.enabled needs HS256 in auth.algorithms (demo sessions are HS256 tokens)",
        )?;
        if !uses_dev_secret(&config.auth) {
            tracing::warn!(
                "demo storefront on with a configured key: anyone who reaches /demo/ gets tokens for the demo users (set demo.enabled = false in production)"
            );
        }
        Ok(Some(Demo {
            secret: secret.to_owned(),
            auth: config.auth.clone(),
            mqtt_ws_url: config.demo.mqtt_ws_url.clone(),
            ws_addr: config.mqtt.ws_addr,
            allow_remote_sessions: config.demo.allow_remote_sessions,
        }))
    }
}

/// Where a person opens the storefront, for the startup log.
pub fn storefront_url(http_addr: SocketAddr) -> String {
    if http_addr.ip().is_unspecified() {
        format!("http://localhost:{}/demo/", http_addr.port())
    } else {
        format!("http://{http_addr}/demo/")
    }
}

/// Upserts the demo users, products and orders (idempotent: every start
/// writes the same rows).
pub async fn seed(store: &dyn ChatStore) -> StoreResult<()> {
    for u in USERS {
        store
            .put_user(&User {
                id: u.id.to_owned(),
                display_name: u.display_name.to_owned(),
                avatar_url: None,
                email: None,
                locale: u.locale.to_owned(),
                seller: u.kind == Kind::Seller,
            })
            .await?;
    }
    for p in PRODUCTS {
        store
            .put_product(&Product {
                id: p.id.to_owned(),
                seller_id: p.seller_id.to_owned(),
                title: p.title.to_owned(),
                price: p.price,
                currency: CURRENCY.to_owned(),
                image_url: Some(image_url(p.id)),
            })
            .await?;
    }
    for o in ORDERS {
        store
            .put_order(&Order {
                id: o.id.to_owned(),
                buyer_id: o.buyer_id.to_owned(),
                seller_id: o.seller_id.to_owned(),
                summary: o.summary.to_owned(),
            })
            .await?;
    }
    Ok(())
}

/// `/` (redirect), `/demo/` and its files, `/demo/api/catalog`,
/// `/demo/api/session`. Merged into the app only when the demo is on.
pub fn router(demo: Demo) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/demo/") }))
        .route("/demo", get(to_folder))
        .route("/demo/", get(index))
        .route("/demo/api/catalog", get(catalog))
        .route("/demo/api/session", post(session))
        .route("/demo/{*path}", get(page_file))
        .with_state(Arc::new(demo))
}

fn lang_of(headers: &HeaderMap) -> Lang {
    Lang::from_locale(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// `/demo` → `/demo/`, so that the pages' relative links resolve.
async fn to_folder(uri: Uri) -> Redirect {
    match uri.query() {
        Some(query) => Redirect::permanent(&format!("/demo/?{query}")),
        None => Redirect::permanent("/demo/"),
    }
}

async fn index(headers: HeaderMap) -> Response {
    serve_file("index.html", &headers)
}

async fn page_file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve_file(&path, &headers)
}

fn serve_file(path: &str, headers: &HeaderMap) -> Response {
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_owned()
    };
    let clean = !path.contains('\\') && path.split('/').all(|s| !matches!(s, "" | "." | ".."));
    let Some(file) = clean.then(|| Pages::get(&path)).flatten() else {
        return ApiError::not_found(lang_of(headers)).into_response();
    };
    let etag = format!(
        "\"{}\"",
        file.metadata.sha256_hash()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let common = [
        (header::CACHE_CONTROL, "no-cache".to_owned()),
        (header::ETAG, etag),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        [(header::CONTENT_TYPE, content_type(&path))],
        common,
        Body::from(file.data),
    )
        .into_response()
}

fn content_type(path: &str) -> &'static str {
    let extension = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Catalog {
    users: Vec<CatalogUser>,
    products: Vec<CatalogProduct>,
    orders: Vec<CatalogOrder>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CatalogUser {
    id: &'static str,
    display_name: &'static str,
    role: &'static str,
    locale: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CatalogProduct {
    id: &'static str,
    seller_id: &'static str,
    title: &'static str,
    price: i64,
    currency: &'static str,
    image_url: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CatalogOrder {
    id: &'static str,
    buyer_id: &'static str,
    seller_id: &'static str,
    summary: &'static str,
}

async fn catalog() -> Json<Catalog> {
    Json(Catalog {
        users: USERS
            .iter()
            .map(|u| CatalogUser {
                id: u.id,
                display_name: u.display_name,
                role: u.kind.as_str(),
                locale: u.locale,
            })
            .collect(),
        products: PRODUCTS
            .iter()
            .map(|p| CatalogProduct {
                id: p.id,
                seller_id: p.seller_id,
                title: p.title,
                price: p.price,
                currency: CURRENCY,
                image_url: image_url(p.id),
            })
            .collect(),
        orders: ORDERS
            .iter()
            .map(|o| CatalogOrder {
                id: o.id,
                buyer_id: o.buyer_id,
                seller_id: o.seller_id,
                summary: o.summary,
            })
            .collect(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionRequest {
    user_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    token: String,
    user_id: &'static str,
    role: &'static str,
    display_name: &'static str,
    locale: &'static str,
    mqtt_url: String,
    /// Empty: the REST facade is on the pages' own origin.
    rest_url: &'static str,
}

/// A token for one of the demo users (and nobody else), signed like the
/// `chatd token` subcommand signs them.
async fn session(
    State(demo): State<Arc<Demo>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    ApiJson(request): ApiJson<SessionRequest>,
) -> Result<Json<Session>, ApiError> {
    if !may_hand_out(peer, demo.allow_remote_sessions) {
        tracing::info!(%peer, "demo session refused: not from this machine");
        return Err(ApiError::forbidden(lang_of(&headers)));
    }
    let user = USERS
        .iter()
        .find(|u| u.id == request.user_id)
        .ok_or_else(|| ApiError::not_found(lang_of(&headers)))?;
    let claims = claims_for(&demo.auth, user.id, user.kind.role(), TOKEN_TTL_SECS);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    Ok(Json(Session {
        token: mint_hs256(&demo.secret, &claims),
        user_id: user.id,
        role: user.kind.as_str(),
        display_name: user.display_name,
        locale: user.locale,
        mqtt_url: mqtt_ws_url(demo.mqtt_ws_url.as_deref(), host, demo.ws_addr),
        rest_url: "",
    }))
}

/// The MQTT-over-WebSocket URL for a page requested with this `Host`: the
/// configured one, or the same host name with the WebSocket listener's
/// port and path `/mqtt`.
pub fn mqtt_ws_url(configured: Option<&str>, host: Option<&str>, ws_addr: SocketAddr) -> String {
    if let Some(url) = configured {
        return url.to_owned();
    }
    let host = host
        .and_then(host_name)
        .map(str::to_owned)
        .unwrap_or_else(|| match ws_addr.ip() {
            ip if ip.is_unspecified() => "localhost".to_owned(),
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        });
    format!("ws://{host}:{}/mqtt", ws_addr.port())
}

/// The host name of a `Host` header (`name[:port]`, `[v6][:port]`), if it
/// is a plausible one.
fn host_name(authority: &str) -> Option<&str> {
    let authority = authority.trim();
    let host = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let inner = &authority[1..end];
        (!inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'))
        .then_some(&authority[..=end])?
    } else {
        let name = authority
            .split_once(':')
            .map_or(authority, |(name, _)| name);
        (!name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'))
        .then_some(name)?
    };
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_sessions_go_to_this_machine_only_unless_allowed() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        for local in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            assert!(may_hand_out(at(local), false), "{local}");
        }
        for remote in ["192.0.2.2:5000", "10.0.0.7:40000", "[2001:db8::1]:5000"] {
            assert!(!may_hand_out(at(remote), false), "{remote}");
            assert!(may_hand_out(at(remote), true), "{remote} when allowed");
        }
    }

    fn config_with(auth: AuthConfig, enabled: Option<bool>) -> Config {
        let mut config = Config {
            auth,
            ..Config::default()
        };
        config.demo.enabled = enabled;
        config
    }

    #[test]
    fn on_by_default_only_with_the_development_secret() {
        assert!(
            enabled(&Config::default()),
            "no config: dev secret, demo on"
        );
        let secret = AuthConfig {
            hs256_secret: Some("s".into()),
            ..AuthConfig::default()
        };
        assert!(!enabled(&config_with(secret.clone(), None)));
        assert!(enabled(&config_with(secret, Some(true))), "explicitly on");
        let rs256 = AuthConfig {
            algorithms: vec!["RS256".into()],
            public_key_pem: Some("key.pem".into()),
            ..AuthConfig::default()
        };
        assert!(!enabled(&config_with(rs256, None)));
        let mixed = AuthConfig {
            algorithms: vec!["HS256".into(), "RS256".into()],
            jwks_file: Some("keys.json".into()),
            ..AuthConfig::default()
        };
        assert!(!enabled(&config_with(mixed, None)));
        assert!(!enabled(&config_with(AuthConfig::default(), Some(false))));
    }

    #[test]
    fn explicitly_on_needs_an_hs256_secret() {
        let config = config_with(
            AuthConfig {
                algorithms: vec!["RS256".into()],
                ..AuthConfig::default()
            },
            Some(true),
        );
        assert!(Demo::from_config(&config, None).is_err());
        assert!(
            Demo::from_config(&Config::default(), Some("dev"))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn ws_url_follows_the_page_host() {
        let ws: SocketAddr = "0.0.0.0:8083".parse().unwrap();
        assert_eq!(
            mqtt_ws_url(None, Some("localhost:8080"), ws),
            "ws://localhost:8083/mqtt"
        );
        assert_eq!(
            mqtt_ws_url(None, Some("192.168.1.20:8080"), ws),
            "ws://192.168.1.20:8083/mqtt"
        );
        assert_eq!(
            mqtt_ws_url(None, Some("shop.example.vn"), ws),
            "ws://shop.example.vn:8083/mqtt"
        );
        assert_eq!(
            mqtt_ws_url(None, Some("[::1]:8080"), ws),
            "ws://[::1]:8083/mqtt"
        );
        // No usable Host: the listener's own address, or localhost.
        assert_eq!(mqtt_ws_url(None, None, ws), "ws://localhost:8083/mqtt");
        assert_eq!(
            mqtt_ws_url(None, Some("evil/path:1"), ws),
            "ws://localhost:8083/mqtt"
        );
        assert_eq!(
            mqtt_ws_url(None, None, "127.0.0.1:9001".parse().unwrap()),
            "ws://127.0.0.1:9001/mqtt"
        );
        assert_eq!(
            mqtt_ws_url(Some("wss://chat.example.vn/mqtt"), Some("localhost"), ws),
            "wss://chat.example.vn/mqtt"
        );
    }

    #[test]
    fn storefront_url_for_the_log() {
        assert_eq!(
            storefront_url("0.0.0.0:8080".parse().unwrap()),
            "http://localhost:8080/demo/"
        );
        assert_eq!(
            storefront_url("127.0.0.1:9000".parse().unwrap()),
            "http://127.0.0.1:9000/demo/"
        );
    }

    #[test]
    fn seed_tables_are_consistent() {
        let is = |id: &str, kind: Kind| USERS.iter().any(|u| u.id == id && u.kind == kind);
        assert!(PRODUCTS.iter().all(|p| is(p.seller_id, Kind::Seller)));
        assert!(USERS.iter().all(|u| u.id.starts_with(ID_PREFIX)));
        assert!(
            ORDERS
                .iter()
                .all(|o| is(o.buyer_id, Kind::Buyer) && is(o.seller_id, Kind::Seller))
        );
        let ids = USERS
            .iter()
            .map(|u| u.id)
            .chain(PRODUCTS.iter().map(|p| p.id))
            .chain(ORDERS.iter().map(|o| o.id));
        assert!(ids.into_iter().all(chat_protocol::topics::is_valid_id));
    }

    #[test]
    fn page_files_have_their_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("img/a.SVG"), "image/svg+xml");
        assert_eq!(content_type("chat-ui.js.map"), "application/json");
        assert!(Pages::get("index.html").is_some(), "web/dist/index.html");
    }
}

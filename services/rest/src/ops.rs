//! Operations endpoints for load balancers and Prometheus. The same router
//! serves `chatd serve` (merged into the REST facade) and the workers
//! (`chatd push`, `chatd persist`, on their own port):
//!
//! - `GET /healthz`: 200 while the process serves HTTP at all.
//! - `GET /readyz`: 200 `{"ready":true,"checks":{..}}` when every check of
//!   the [`Readiness`] registry passes, else 503 with the same shape; 503 at
//!   once while the node drains.
//! - `GET /metrics`: the process's metrics in the Prometheus text format, to
//!   this machine (loopback) or to a scraper sending
//!   `Authorization: Bearer <metrics_token>`; 403 to anyone else (they
//!   tell load and traffic to whoever asks on the public port).

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chat_ops::Readiness;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of `/readyz`.
#[derive(Serialize, ToSchema)]
pub struct ReadyView {
    pub ready: bool,
    /// Each check by name: `"ok"` or why not (`"draining"` for `drain`).
    #[schema(example = json!({"drain": "ok", "mqtt": "ok", "store": "ok"}))]
    pub checks: BTreeMap<String, String>,
}

/// `/healthz`, `/readyz` and `/metrics`; `metrics_token` lets a scraper on
/// another machine read `/metrics`.
pub fn router(readiness: Readiness, metrics_token: Option<String>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Ops {
            readiness,
            metrics_token: metrics_token.filter(|t| !t.is_empty()).map(Into::into),
        })
}

#[derive(Clone)]
pub(crate) struct Ops {
    readiness: Readiness,
    metrics_token: Option<std::sync::Arc<str>>,
}

/// Loopback peers, or the scraper's token.
fn may_scrape(request: &Request, token: Option<&str>) -> bool {
    let local = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer.ip().to_canonical().is_loopback());
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    local || matches!((token, bearer), (Some(t), Some(b)) if t.len() == b.len() && t == b)
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")))]
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, body = ReadyView, description = "Ready for traffic"),
    (status = 503, body = ReadyView, description = "Not ready, or draining")
))]
pub(crate) async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let report = ops.readiness.report().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !report.ready {
        tracing::debug!(checks = ?report.checks, "not ready");
    }
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(ReadyView {
            ready: report.ready,
            checks: report.checks,
        }),
    )
}

#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, content_type = "text/plain", description = "Prometheus text exposition format 0.0.4"),
    (status = 403, content_type = "text/plain", description = "Not from this machine and no valid `Authorization: Bearer <metrics_token>`")
))]
pub(crate) async fn metrics(State(ops): State<Ops>, request: Request) -> axum::response::Response {
    if !may_scrape(&request, ops.metrics_token.as_deref()) {
        return (
            StatusCode::FORBIDDEN,
            "metrics: this machine only, or Authorization: Bearer <metrics_token>",
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        chat_ops::metrics().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get_readyz(app: Router) -> (StatusCode, serde_json::Value) {
        let response = app
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn metrics_answer_this_machine_or_the_scrapers_token_only() {
        let scrape = |peer: &str, token: Option<&str>, bearer: Option<&str>| {
            let app = router(Readiness::new(), token.map(str::to_owned));
            let mut request = Request::get("/metrics");
            if let Some(b) = bearer {
                request = request.header("authorization", format!("Bearer {b}"));
            }
            let mut request = request.body(Body::empty()).unwrap();
            let peer: std::net::SocketAddr = peer.parse().unwrap();
            request.extensions_mut().insert(ConnectInfo(peer));
            async move { app.oneshot(request).await.unwrap().status() }
        };
        assert_eq!(scrape("127.0.0.1:9", None, None).await, StatusCode::OK);
        assert_eq!(scrape("[::1]:9", None, None).await, StatusCode::OK);
        assert_eq!(
            scrape("192.0.2.7:9", None, None).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            scrape("192.0.2.7:9", None, Some("x")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            scrape("192.0.2.7:9", Some("s3cret"), Some("wrong")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            scrape("192.0.2.7:9", Some("s3cret"), Some("s3cret")).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn readyz_is_200_then_503_when_a_check_fails_or_the_node_drains() {
        let readiness = Readiness::new();
        readiness.register("store", Duration::from_secs(1), || async { Ok(()) });
        let (status, body) = get_readyz(router(readiness.clone(), None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"ready": true, "checks": {"drain": "ok", "store": "ok"}})
        );

        readiness.register("nats", Duration::from_secs(1), || async {
            Err("disconnected".to_owned())
        });
        let (status, body) = get_readyz(router(readiness.clone(), None)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["checks"]["nats"], "disconnected");

        readiness.start_draining();
        let (status, body) = get_readyz(router(readiness, None)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            serde_json::json!({"ready": false, "checks": {"drain": "draining"}})
        );
    }

    #[tokio::test]
    async fn metrics_are_text() {
        chat_ops::metrics().messages_in.inc_by(0);
        let mut request = Request::get("/metrics").body(Body::empty()).unwrap();
        let local: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(local));
        let response = router(Readiness::new(), None)
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("# TYPE chat_messages_in_total counter"),
            "{text}"
        );
    }
}

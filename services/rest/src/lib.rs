//! The REST facade for Seller Center, history and the platform's internal
//! API. Thin: every rule lives in `chat_core`; handlers translate HTTP to
//! service calls and errors to JSON with a stable `code`.

mod dto;
mod error;
mod files;
mod moderation;
pub mod ops;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chat_core::auth::{Claims, Role, TokenVerifier};
use chat_core::i18n::Lang;
use chat_core::model::{Device, DevicePlatform, InboxCursor, MessageRange, Order, Product, User};
use chat_core::service::{ChatService, OpenFrom, Record};
use utoipa::OpenApi;

pub use dto::*;
pub use error::ApiError;

/// Largest page a client may ask for.
const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 30;

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<ChatService>,
    pub verifier: Arc<TokenVerifier>,
    /// The local attachment directory, when it is the storage backend:
    /// this facade then serves its signed upload and download URLs.
    pub local_files: Option<Arc<chat_attachments::storage::Storage>>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "chatd REST facade", description = "Buyer–seller chat: inbox, history, threads, platform data."),
    paths(
        ops::healthz, ops::readyz, ops::metrics, list_threads, open_thread, list_messages, mark_read,
        put_user, put_product, put_order, put_device, list_devices, delete_device,
        notification_log, moderation::preview, moderation::queue, moderation::record,
        moderation::resolve, moderation::keywords, moderation::change_keyword,
        moderation::block, moderation::unblock, moderation::report, moderation::audit,
        files::create_upload
    ),
    components(schemas(
        ThreadView, ThreadPage, MessageView, MessagePage, ReadMarkerView, OpenThreadRequest, MarkReadRequest,
        ReadView, UserBody, ProductBody, OrderBody, ErrorBodyJson, ErrorEnvelope, PreviewView,
        DeviceBody, DeviceView, DeviceList, NotificationView, NotificationLog,
        moderation::PreviewRequest, moderation::FindingView, moderation::ModerationPreview,
        moderation::RecordView, moderation::QueuePage, moderation::ResolveRequest,
        moderation::KeywordLists, moderation::KeywordChange, moderation::ReportRequest,
        moderation::ReportCreated, moderation::AuditView, moderation::AuditPage, ops::ReadyView,
        files::UploadRequest, files::UploadCreated
    )),
    modifiers(&BearerAuth, &CommonErrors)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every error a route can answer, on every operation that lacks it: the
/// OpenAPI document must list each status a client can see (generated
/// clients fail on an undocumented one; schemathesis checks it in the test
/// command). Bodies are the one error envelope.
struct CommonErrors;

impl utoipa::Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        const ERRORS: [(&str, &str); 7] = [
            (
                "400",
                "The request is malformed: body, query or path parameter",
            ),
            ("401", "No token, or a token that is invalid or expired"),
            ("403", "The caller's role or membership does not allow this"),
            (
                "404",
                "The thread, message, record or device does not exist",
            ),
            ("413", "The body is larger than accepted"),
            (
                "429",
                "Too many requests: retry after `Retry-After` seconds",
            ),
            ("503", "The store is unavailable: retry later"),
        ];
        // Operations every caller may use without a token.
        const OPEN: [&str; 3] = ["/healthz", "/readyz", "/metrics"];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if OPEN.contains(&path.as_str()) {
                continue;
            }
            let has_id = path.contains('{');
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for (code, why) in ERRORS {
                    if code == "404" && !has_id && operation.request_body.is_none() {
                        continue;
                    }
                    operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(why)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                                        .build(),
                                )
                                .into()
                        });
                }
            }
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/chat/threads", get(list_threads).post(open_thread))
        .route("/chat/threads/{id}/messages", get(list_messages))
        .route("/chat/threads/{id}/read", post(mark_read))
        .route("/chat/devices", put(put_device).get(list_devices))
        .route(
            "/chat/devices/{token}",
            axum::routing::delete(delete_device),
        )
        .route("/admin/notifications", get(notification_log))
        .route(
            "/chat/threads/{id}/block",
            post(moderation::block).delete(moderation::unblock),
        )
        .route("/chat/threads/{id}/reports", post(moderation::report))
        .route("/admin/audit", get(moderation::audit))
        .route("/chat/threads/{id}/uploads", post(files::create_upload))
        .route(
            "/files/{*key}",
            // The upload reads its body itself, after the signature and
            // only up to the signed content-length.
            get(files::download).put(files::upload),
        )
        .route("/admin/moderation/preview", post(moderation::preview))
        .route("/admin/moderation/queue", get(moderation::queue))
        .route("/admin/moderation/records/{id}", get(moderation::record))
        .route(
            "/admin/moderation/records/{id}/resolve",
            post(moderation::resolve),
        )
        .route(
            "/admin/moderation/keywords",
            get(moderation::keywords).post(moderation::change_keyword),
        )
        .route("/internal/users/{id}", put(put_user))
        .route("/internal/products/{id}", put(put_product))
        .route("/internal/orders/{id}", put(put_order))
        .fallback(no_route)
        .with_state(state)
}

/// `Json` whose rejections (bad body, wrong content type) are JSON errors
/// with a stable code, like every other error of this API.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let lang = lang_of(req.headers());
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiError::bad_request(lang, &rejection.body_text())),
        }
    }
}

/// `Query` with JSON errors.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let lang = lang_of(&parts.headers);
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::bad_request(lang, &rejection.body_text())),
        }
    }
}

async fn no_route(headers: HeaderMap) -> ApiError {
    ApiError::not_found(lang_of(&headers))
}

/// The authenticated caller and the language for their error texts.
pub struct Caller {
    pub claims: Claims,
    pub lang: Lang,
}

/// A service answer turned into a REST answer in the caller's language,
/// the one place where domain errors become HTTP ones:
/// `state.service.x(&caller.claims).await.for_caller(&caller)?`.
pub trait ForCaller<T> {
    fn for_caller(self, caller: &Caller) -> Result<T, ApiError>;
}

impl<T> ForCaller<T> for Result<T, chat_core::service::ServiceError> {
    fn for_caller(self, caller: &Caller) -> Result<T, ApiError> {
        self.map_err(|e| ApiError::from_service(caller.lang, e))
    }
}

fn lang_of(headers: &HeaderMap) -> Lang {
    Lang::from_locale(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let lang = lang_of(&parts.headers);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let claims = state
            .verifier
            .verify(token.trim())
            .map_err(|e| ApiError::unauthorized(lang, e.to_string()))?;
        if claims.role == Role::Loadtest {
            return Err(ApiError::forbidden(lang));
        }
        // The marketplace's own back end (bulk user and product updates)
        // is not rate limited; people are.
        if claims.role != Role::Platform
            && let Err(wait) = state.service.rate_limiter().check_rest(&claims.sub)
        {
            tracing::info!(user_id = claims.sub, ?wait, "REST request limited");
            return Err(ApiError::rate_limited(lang, wait));
        }
        Ok(Caller { claims, lang })
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

fn page_size(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

#[utoipa::path(
    get, path = "/chat/threads", params(ThreadsQuery),
    responses((status = 200, body = ThreadPage), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = []))
)]
async fn list_threads(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ThreadsQuery>,
) -> Result<Json<ThreadPage>, ApiError> {
    let limit = page_size(q.limit);
    let cursor = match q.cursor.as_deref() {
        Some(c) => Some(
            InboxCursor::decode(c).ok_or_else(|| ApiError::bad_request(caller.lang, "cursor"))?,
        ),
        None => None,
    };
    let page = state
        .service
        .inbox_page(&caller.claims, cursor.as_ref(), limit)
        .await
        .for_caller(&caller)?;
    Ok(Json(ThreadPage {
        threads: page
            .threads
            .iter()
            .map(|card| ThreadView::of(card, &caller.claims.sub))
            .collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

#[utoipa::path(
    post, path = "/chat/threads", request_body = OpenThreadRequest,
    responses((status = 200, body = ThreadView), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []))
)]
async fn open_thread(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<OpenThreadRequest>,
) -> Result<Json<ThreadView>, ApiError> {
    let from = match (req.seller_id, req.product_id, req.order_id) {
        (Some(seller_id), product_id, None) => OpenFrom::Seller {
            seller_id,
            product_id,
        },
        (None, None, Some(order_id)) => OpenFrom::Order { order_id },
        _ => {
            return Err(ApiError::bad_request(
                caller.lang,
                "give either sellerId (with optional productId) or orderId",
            ));
        }
    };
    let service = &state.service;
    let card = async {
        let thread = service.open_thread(&caller.claims, from).await?;
        service.thread_card(&caller.claims, thread).await
    }
    .await
    .for_caller(&caller)?;
    Ok(Json(ThreadView::of(&card, &caller.claims.sub)))
}

#[utoipa::path(
    get, path = "/chat/threads/{id}/messages", params(("id" = String, Path), MessagesQuery),
    responses((status = 200, body = MessagePage), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []))
)]
async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let range = MessageRange {
        before: q.before,
        after: q.after,
    };
    let page = state
        .service
        .history_page(&caller.claims, &id, &range, page_size(q.limit))
        .await
        .for_caller(&caller)?;
    Ok(Json(MessagePage {
        messages: page.messages.into_iter().map(MessageView::from).collect(),
        has_more: page.has_more,
        read_markers: page
            .read_markers
            .into_iter()
            .map(ReadMarkerView::from)
            .collect(),
    }))
}

#[utoipa::path(
    post, path = "/chat/threads/{id}/read", params(("id" = String, Path)), request_body = MarkReadRequest,
    responses((status = 200, body = ReadView), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = []))
)]
async fn mark_read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MarkReadRequest>,
) -> Result<Json<ReadView>, ApiError> {
    state
        .service
        .readable_thread(&caller.claims, &id)
        .await
        .for_caller(&caller)?;
    let marked = state
        .service
        .mark_read(&caller.claims.sub, &id, &req.up_to)
        .await
        .for_caller(&caller)?;
    Ok(Json(ReadView {
        thread_id: id,
        up_to: marked.up_to,
        unread_count: marked.thread.unread_for(&caller.claims.sub),
    }))
}

fn valid_id(lang: Lang, id: &str) -> Result<(), ApiError> {
    if chat_protocol::topics::is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            lang,
            "ids are 1-64 characters of A-Z a-z 0-9 - _ .",
        ))
    }
}

/// `PUT /internal/<kind>/{id}`: the platform registers or replaces one
/// record of its reference data; the body is checked, then core checks
/// the caller.
async fn put_record(
    state: &AppState,
    caller: &Caller,
    id: String,
    body: impl RecordBody,
) -> Result<axum::http::StatusCode, ApiError> {
    valid_id(caller.lang, &id)?;
    let record = body.into_record(id, caller.lang)?;
    state
        .service
        .put_record(&caller.claims, &record)
        .await
        .for_caller(caller)?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// A platform body that becomes a [`Record`] once its ids are valid.
trait RecordBody {
    fn into_record(self, id: String, lang: Lang) -> Result<Record, ApiError>;
}

impl RecordBody for UserBody {
    fn into_record(self, id: String, _lang: Lang) -> Result<Record, ApiError> {
        Ok(Record::User(User {
            id,
            display_name: self.display_name,
            avatar_url: self.avatar_url,
            email: self.email,
            locale: self.locale.unwrap_or_else(|| "vi".into()),
            seller: self.seller,
        }))
    }
}

impl RecordBody for ProductBody {
    fn into_record(self, id: String, lang: Lang) -> Result<Record, ApiError> {
        valid_id(lang, &self.seller_id)?;
        Ok(Record::Product(Product {
            id,
            seller_id: self.seller_id,
            title: self.title,
            price: self.price,
            currency: self.currency.unwrap_or_else(|| "VND".into()),
            image_url: self.image_url,
        }))
    }
}

impl RecordBody for OrderBody {
    fn into_record(self, id: String, lang: Lang) -> Result<Record, ApiError> {
        valid_id(lang, &self.buyer_id)?;
        valid_id(lang, &self.seller_id)?;
        Ok(Record::Order(Order {
            id,
            buyer_id: self.buyer_id,
            seller_id: self.seller_id,
            summary: self.summary,
        }))
    }
}

/// One documented handler per record kind; each is [`put_record`].
// rustfmt re-indents attributes inside macro bodies on every run.
#[rustfmt::skip]
macro_rules! put_record_handler {
    ($name:ident, $path:literal, $body:ident) => {
        #[utoipa::path(
            put, path = $path, params(("id" = String, Path)), request_body = $body,
            responses((status = 204), (status = 403, body = ErrorEnvelope)),
            security(("bearer" = []))
        )]
        async fn $name(
            State(state): State<AppState>,
            caller: Caller,
            Path(id): Path<String>,
            ApiJson(body): ApiJson<$body>,
        ) -> Result<axum::http::StatusCode, ApiError> {
            put_record(&state, &caller, id, body).await
        }
    };
}

put_record_handler!(put_user, "/internal/users/{id}", UserBody);
put_record_handler!(put_product, "/internal/products/{id}", ProductBody);
put_record_handler!(put_order, "/internal/orders/{id}", OrderBody);

/// Push tokens are opaque strings of printable ASCII (FCM ~160 chars, APNs
/// 64 hex, Web Push endpoints are URLs).
fn valid_token(lang: Lang, token: &str) -> Result<(), ApiError> {
    if (1..=4096).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            lang,
            "token: 1-4096 printable ASCII characters",
        ))
    }
}

/// Only people register devices: platform and service tokens have no
/// phone to notify.

#[utoipa::path(
    put, path = "/chat/devices", request_body = DeviceBody,
    responses((status = 204), (status = 400, body = ErrorEnvelope)), security(("bearer" = []))
)]
async fn put_device(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<DeviceBody>,
) -> Result<axum::http::StatusCode, ApiError> {
    let platform = DevicePlatform::parse(&body.platform)
        .ok_or_else(|| ApiError::bad_request(caller.lang, "platform: fcm, apns or web"))?;
    valid_token(caller.lang, &body.token)?;
    if body.app_id.is_empty() || body.app_id.len() > 255 {
        return Err(ApiError::bad_request(
            caller.lang,
            "appId: 1-255 characters",
        ));
    }
    let locale = body.locale.unwrap_or_else(|| "vi".into());
    if locale.is_empty() || locale.len() > 35 {
        return Err(ApiError::bad_request(caller.lang, "locale: a BCP 47 tag"));
    }
    let device = Device {
        token: body.token,
        user_id: caller.claims.sub.clone(),
        platform,
        app_id: body.app_id,
        locale,
        updated_at: chat_core::now_millis(),
    };
    state
        .service
        .register_device(&caller.claims, &device)
        .await
        .for_caller(&caller)?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/chat/devices",
    responses((status = 200, body = DeviceList)), security(("bearer" = []))
)]
async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<DeviceList>, ApiError> {
    let devices = state
        .service
        .devices(&caller.claims)
        .await
        .for_caller(&caller)?;
    Ok(Json(DeviceList {
        devices: devices
            .into_iter()
            .map(|d| DeviceView {
                platform: d.platform.as_str().to_owned(),
                token: d.token,
                app_id: d.app_id,
                locale: d.locale,
                updated_at: d.updated_at,
            })
            .collect(),
    }))
}

#[utoipa::path(
    delete, path = "/chat/devices/{token}", params(("token" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorEnvelope)), security(("bearer" = []))
)]
async fn delete_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(token): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    valid_token(caller.lang, &token)?;
    // Someone else's token looks exactly like a missing one.
    state
        .service
        .remove_device(&caller.claims, &token)
        .await
        .for_caller(&caller)?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/admin/notifications", params(NotificationQuery),
    responses((status = 200, body = NotificationLog), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = []))
)]
async fn notification_log(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<NotificationQuery>,
) -> Result<Json<NotificationLog>, ApiError> {
    valid_id(caller.lang, &query.user)?;
    let attempts = state
        .service
        .notification_log(&caller.claims, &query.user, page_size(query.limit))
        .await
        .for_caller(&caller)?;
    Ok(Json(NotificationLog {
        notifications: attempts
            .into_iter()
            .map(|a| NotificationView {
                id: a.id,
                user_id: a.user_id,
                thread_id: a.thread_id,
                message_id: a.message_id,
                channel: a.channel.as_str().to_owned(),
                device: a.device,
                outcome: a.outcome.as_str().to_owned(),
                error: a.error,
                latency_ms: a.latency_ms,
                at: a.at,
            })
            .collect(),
    }))
}

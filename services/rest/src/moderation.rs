//! Admin endpoints of moderation: what the pipeline would do to a text,
//! the review queue, the keyword lists. Admin role only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chat_core::model::{KeywordList, ModerationRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::{ApiJson, ApiQuery, AppState, Caller, ForCaller, page_size};

#[derive(Debug, Deserialize, ToSchema)]
pub struct PreviewRequest {
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindingView {
    /// `phone`, `email`, `link`, `social_handle`, `bank_account`,
    /// `channel_mention`, `keyword`.
    pub category: String,
    /// `flag`, `mask`, `block`.
    pub action: String,
    pub original: String,
    /// Byte offsets in the text.
    pub start: usize,
    pub end: usize,
    pub keyword: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModerationPreview {
    /// The text as it would be stored and delivered.
    pub text: String,
    pub blocked: bool,
    pub flagged: bool,
    pub findings: Vec<FindingView>,
}

#[utoipa::path(
    post, path = "/admin/moderation/preview", request_body = PreviewRequest,
    responses((status = 200, body = ModerationPreview), (status = 403, body = crate::dto::ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PreviewRequest>,
) -> Result<Json<ModerationPreview>, ApiError> {
    let outcome = state
        .service
        .preview_moderation(&caller.claims, &body.text)
        .for_caller(&caller)?;
    let action = |a: chat_moderation::Action| {
        match a {
            chat_moderation::Action::Allow => "allow",
            chat_moderation::Action::Flag => "flag",
            chat_moderation::Action::Mask => "mask",
            chat_moderation::Action::Block => "block",
        }
        .to_owned()
    };
    Ok(Json(ModerationPreview {
        blocked: outcome.blocked(),
        flagged: outcome.flagged(),
        findings: outcome
            .findings
            .iter()
            .map(|f| FindingView {
                category: f.category.as_str().to_owned(),
                action: action(f.action),
                original: f.original.clone(),
                start: f.start,
                end: f.end,
                keyword: f.keyword.clone(),
            })
            .collect(),
        text: outcome.text,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordView {
    pub id: String,
    pub thread_id: String,
    pub user_id: String,
    pub message_id: Option<String>,
    /// `masked`, `blocked`, `flagged`, `report`.
    pub kind: String,
    pub categories: Vec<String>,
    /// The text as sent (never delivered when masked or blocked).
    pub original: String,
    pub keywords: Vec<String>,
    pub reported_by: Option<String>,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub created_at: i64,
}

impl From<ModerationRecord> for RecordView {
    fn from(r: ModerationRecord) -> Self {
        RecordView {
            id: r.id,
            thread_id: r.thread_id,
            user_id: r.user_id,
            message_id: r.message_id,
            kind: r.kind.as_str().to_owned(),
            categories: r.categories,
            original: r.original,
            keywords: r.keywords,
            reported_by: r.reported_by,
            resolution: r.resolution,
            resolved_by: r.resolved_by,
            resolved_at: r.resolved_at,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuePage {
    /// Oldest first; page on with `after` = the last id.
    pub items: Vec<RecordView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    pub after: Option<String>,
    pub limit: Option<usize>,
}

#[utoipa::path(
    get, path = "/admin/moderation/queue", params(QueueQuery),
    responses((status = 200, body = QueuePage), (status = 403, body = crate::dto::ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn queue(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<QueueQuery>,
) -> Result<Json<QueuePage>, ApiError> {
    let items = state
        .service
        .moderation_queue(
            &caller.claims,
            query.after.as_deref(),
            page_size(query.limit),
        )
        .await
        .for_caller(&caller)?;
    Ok(Json(QueuePage {
        items: items.into_iter().map(RecordView::from).collect(),
    }))
}

#[utoipa::path(
    get, path = "/admin/moderation/records/{id}", params(("id" = String, Path)),
    responses((status = 200, body = RecordView), (status = 404, body = crate::dto::ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn record(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RecordView>, ApiError> {
    state
        .service
        .moderation_record(&caller.claims, &id)
        .await
        .map(|r| Json(r.into()))
        .for_caller(&caller)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResolveRequest {
    /// The decision, e.g. `dismissed`, `warned`, `muted`, `banned`.
    pub resolution: String,
}

#[utoipa::path(
    post, path = "/admin/moderation/records/{id}/resolve", params(("id" = String, Path)),
    request_body = ResolveRequest,
    responses((status = 204), (status = 404, body = crate::dto::ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResolveRequest>,
) -> Result<StatusCode, ApiError> {
    // Unknown, or not waiting for review (already resolved): 404.
    state
        .service
        .resolve_moderation(&caller.claims, &id, &body.resolution)
        .await
        .for_caller(&caller)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeywordLists {
    /// Messages containing these are refused.
    pub block: Vec<String>,
    /// Messages containing these are delivered and queued for review.
    pub flag: Vec<String>,
}

#[utoipa::path(
    get, path = "/admin/moderation/keywords",
    responses((status = 200, body = KeywordLists), (status = 403, body = crate::dto::ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn keywords(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<KeywordLists>, ApiError> {
    let rows = state
        .service
        .keyword_lists(&caller.claims)
        .await
        .for_caller(&caller)?;
    let pick = |list: KeywordList| {
        rows.iter()
            .filter(|(l, _)| *l == list)
            .map(|(_, k)| k.clone())
            .collect()
    };
    Ok(Json(KeywordLists {
        block: pick(KeywordList::Block),
        flag: pick(KeywordList::Flag),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct KeywordChange {
    /// `block` or `flag`.
    pub list: String,
    pub keyword: String,
    /// `true` adds, `false` removes.
    pub present: bool,
}

#[utoipa::path(
    post, path = "/admin/moderation/keywords", request_body = KeywordChange,
    responses((status = 204), (status = 400, body = crate::dto::ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn change_keyword(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<KeywordChange>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .change_keyword(&caller.claims, &body.list, &body.keyword, body.present)
        .await
        .for_caller(&caller)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/chat/threads/{id}/block", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::dto::ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn block(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .set_block(&caller.claims, &id, true)
        .await
        .for_caller(&caller)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete, path = "/chat/threads/{id}/block", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::dto::ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn unblock(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .set_block(&caller.claims, &id, false)
        .await
        .for_caller(&caller)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportRequest {
    /// The message reported; the whole thread when absent.
    pub message_id: Option<String>,
    /// `spam`, `scam`, `abuse`, `off_platform`, `prohibited_item`, `other`.
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportCreated {
    pub id: String,
}

#[utoipa::path(
    post, path = "/chat/threads/{id}/reports", params(("id" = String, Path)),
    request_body = ReportRequest,
    responses((status = 201, body = ReportCreated), (status = 400, body = crate::dto::ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReportRequest>,
) -> Result<(StatusCode, Json<ReportCreated>), ApiError> {
    let record = state
        .service
        .report(
            &caller.claims,
            &id,
            body.message_id.as_deref(),
            &body.reason,
        )
        .await
        .for_caller(&caller)?;
    Ok((StatusCode::CREATED, Json(ReportCreated { id: record })))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first; page on with `before` = the last id.
    pub entries: Vec<AuditView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub before: Option<String>,
    pub limit: Option<usize>,
}

#[utoipa::path(
    get, path = "/admin/audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 403, body = crate::dto::ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let entries = state
        .service
        .audit_log(
            &caller.claims,
            query.actor.as_deref(),
            query.before.as_deref(),
            page_size(query.limit),
        )
        .await
        .for_caller(&caller)?;
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .map(|e| AuditView {
                id: e.id,
                at: e.at,
                actor: e.actor,
                action: e.action,
                target: e.target,
                detail: e.detail,
            })
            .collect(),
    }))
}

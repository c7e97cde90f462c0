//! JSON shapes of the REST API (camelCase), with their OpenAPI schemas.

use chat_core::model::{ReadMarker, Thread, User};
use chat_core::presence::PresenceStatus;
use chat_protocol::{Card, Message, MessagePreview};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewView {
    pub message_id: String,
    pub from: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    pub created_at: i64,
}

impl From<&MessagePreview> for PreviewView {
    fn from(p: &MessagePreview) -> Self {
        PreviewView {
            message_id: p.message_id.clone(),
            from: p.from.clone(),
            kind: p.kind.as_str().to_owned(),
            text: p.text.clone(),
            created_at: p.created_at,
        }
    }
}

/// One inbox row, seen by the caller.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThreadView {
    pub id: String,
    pub buyer_id: String,
    pub seller_id: String,
    pub product_id: Option<String>,
    pub order_id: Option<String>,
    /// The other participant's id and, when the platform told us, name.
    pub other_user_id: String,
    pub other_display_name: Option<String>,
    pub other_avatar_url: Option<String>,
    /// Whether the other participant has a live session ("Đang hoạt động").
    pub other_online: bool,
    /// When the other participant was last connected (ms), if ever.
    pub other_last_seen: Option<i64>,
    pub last_message: Option<PreviewView>,
    pub last_message_at: Option<i64>,
    /// The caller's unread count.
    pub unread_count: u32,
    pub unread_buyer: u32,
    pub unread_seller: u32,
    pub created_at: i64,
}

impl ThreadView {
    /// `card` as the caller sees it.
    pub fn of(card: &chat_core::service::ThreadCard, caller: &str) -> Self {
        Self::new(&card.thread, caller, card.other.as_ref(), card.presence)
    }

    pub fn new(
        thread: &Thread,
        caller: &str,
        other: Option<&User>,
        presence: PresenceStatus,
    ) -> Self {
        ThreadView {
            id: thread.id.clone(),
            buyer_id: thread.buyer_id.clone(),
            seller_id: thread.seller_id.clone(),
            product_id: thread.product_id.clone(),
            order_id: thread.order_id.clone(),
            other_user_id: thread.other_participant(caller).to_owned(),
            other_display_name: other.map(|u| u.display_name.clone()),
            other_avatar_url: other.and_then(|u| u.avatar_url.clone()),
            other_online: presence.online,
            other_last_seen: presence.last_seen,
            last_message: thread.last_message.as_ref().map(PreviewView::from),
            last_message_at: thread.last_message_at,
            unread_count: thread.unread_for(caller),
            unread_buyer: thread.unread_buyer,
            unread_seller: thread.unread_seller,
            created_at: thread.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThreadPage {
    pub threads: Vec<ThreadView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThreadsQuery {
    pub cursor: Option<String>,
    /// 1 to 100, default 30.
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: String,
    pub thread_id: String,
    pub from: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: String,
    /// Product or order card of a `system` message.
    #[schema(value_type = Option<Object>)]
    pub card: Option<CardView>,
    pub client_msg_id: Option<String>,
    pub created_at: i64,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        MessageView {
            id: m.id,
            thread_id: m.thread_id,
            from: m.from,
            kind: m.kind.as_str().to_owned(),
            content: m.content,
            card: m.card.map(CardView::from),
            client_msg_id: m.client_msg_id,
            created_at: m.created_at,
        }
    }
}

/// A card as REST shows it: the protocol's card with camelCase keys,
/// `card` telling which kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "card",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum CardView {
    Product {
        product_id: String,
        title: String,
        price: i64,
        currency: String,
        image_url: Option<String>,
    },
    Order {
        order_id: String,
        summary: String,
    },
    /// About the conversation itself: `blocked`, `unblocked`.
    Notice {
        code: String,
        text: String,
    },
    /// An image message's picture; URLs signed, valid for a while.
    Image {
        width: u32,
        height: u32,
        mime: String,
        thumb_width: u32,
        thumb_height: u32,
        url: Option<String>,
        thumb_url: Option<String>,
    },
}

impl From<Card> for CardView {
    fn from(card: Card) -> Self {
        match card {
            Card::Product {
                product_id,
                title,
                price,
                currency,
                image_url,
            } => CardView::Product {
                product_id,
                title,
                price,
                currency,
                image_url,
            },
            Card::Order { order_id, summary } => CardView::Order { order_id, summary },
            Card::Notice { code, text } => CardView::Notice { code, text },
            Card::Image {
                width,
                height,
                mime,
                thumb_width,
                thumb_height,
                url,
                thumb_url,
                ..
            } => CardView::Image {
                width,
                height,
                mime,
                thumb_width,
                thumb_height,
                url,
                thumb_url,
            },
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagePage {
    /// Oldest first.
    pub messages: Vec<MessageView>,
    /// More messages exist beyond this page, in the direction of travel.
    pub has_more: bool,
    /// How far each participant has read the thread (whatever page this
    /// is), so a client can mark its own messages as seen after a reload.
    /// A participant who never read nor sent anything has no marker.
    pub read_markers: Vec<ReadMarkerView>,
}

/// A participant's read marker: every message up to and including `upTo`
/// has been read (message ids sort in history order).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadMarkerView {
    pub user_id: String,
    /// Id of the newest message this user has read.
    pub up_to: String,
    /// When the marker last moved, milliseconds since the epoch.
    pub read_at: i64,
}

impl From<ReadMarker> for ReadMarkerView {
    fn from(m: ReadMarker) -> Self {
        ReadMarkerView {
            user_id: m.user_id,
            up_to: m.up_to,
            read_at: m.read_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Messages strictly older than this message id (newest page if absent).
    pub before: Option<String>,
    /// Messages strictly newer than this message id, oldest first.
    pub after: Option<String>,
    /// 1 to 100, default 30.
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenThreadRequest {
    pub seller_id: Option<String>,
    pub product_id: Option<String>,
    pub order_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarkReadRequest {
    pub up_to: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadView {
    pub thread_id: String,
    pub up_to: String,
    pub unread_count: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserBody {
    pub display_name: String,
    pub avatar_url: Option<String>,
    pub email: Option<String>,
    /// `vi` (default) or `en`.
    pub locale: Option<String>,
    /// The account has a shop: buyers may open a chat with it. Default
    /// `false`: a buyer cannot start a chat with another buyer.
    #[serde(default)]
    pub seller: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductBody {
    pub seller_id: String,
    pub title: String,
    pub price: i64,
    /// Default `VND`.
    pub currency: Option<String>,
    pub image_url: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderBody {
    pub buyer_id: String,
    pub seller_id: String,
    pub summary: String,
}

/// `PUT /chat/devices`: register the calling user's push token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceBody {
    /// `fcm`, `apns` or `web`.
    pub platform: String,
    /// The token FCM / APNs / the browser gave the app.
    pub token: String,
    /// Bundle id (APNs topic) or FCM app id.
    pub app_id: String,
    /// Language for notification texts; `vi` when absent.
    pub locale: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub platform: String,
    pub token: String,
    pub app_id: String,
    pub locale: String,
    pub updated_at: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceView>,
}

/// One row of `GET /admin/notifications`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationView {
    pub id: String,
    pub user_id: String,
    pub thread_id: String,
    pub message_id: String,
    pub channel: String,
    pub device: String,
    pub outcome: String,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub at: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationLog {
    pub notifications: Vec<NotificationView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    pub user: String,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBodyJson {
    /// Stable machine-readable code, e.g. `forbidden`, `not_found`.
    pub code: String,
    /// Human-readable, Vietnamese unless `Accept-Language` prefers English.
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBodyJson,
}

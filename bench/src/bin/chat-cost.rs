//! The work one send costs inside chatd, without sockets: `handle_inbound`
//! on a `ChatService` over the real SQLite store, with moderation, rate
//! limits and the fan-out encoding, as the broker drives it. Meant to run
//! under `valgrind --tool=callgrind`, twice (with `--sends 0` and with
//! `--sends N`), so that the difference is N sends' instructions and
//! nothing of the start-up: `scripts/cost-guard.sh` compares it with the
//! committed baseline. Instructions, not seconds: the same count whatever
//! else the machine is doing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chat_core::auth::{Claims, Role};
use chat_core::bus::InProcessBus;
use chat_core::membership::MembershipCache;
use chat_core::model::User;
use chat_core::moderation::{Moderation, ModerationConfig};
use chat_core::outbound::{Outbound, Qos};
use chat_core::presence::LocalPresence;
use chat_core::ratelimit::{RateLimitConfig, RateLimiter};
use chat_core::service::{
    AfterInbound, ChatService, Deps, Limits, OpenFrom, PubackAnswer, PushRoute, Record, Reply,
};
use chat_core::store::ChatStore;
use chat_protocol::{MessageType, v2};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Instructions of in-process sends (run under callgrind)")]
struct Args {
    /// Sends to make after the warm-up (0: start-up and warm-up only).
    #[arg(long, default_value_t = 400)]
    sends: usize,
    /// Sends before the measured ones, so caches and statements are warm
    /// in both runs alike.
    #[arg(long, default_value_t = 50)]
    warm_up: usize,
    /// Decode every published event and fail on any refusal (a run to
    /// trust the counts of, not one to count).
    #[arg(long)]
    verify: bool,
}

/// Texts as buyers and sellers write them: mostly plain Vietnamese, some
/// with a number or a link that moderation masks, one emoji line.
const TEXTS: [&str; 8] = [
    "Chào shop, áo này còn size M không?",
    "Dạ còn ạ, bạn đặt luôn nhé",
    "Ship về Đà Nẵng mất mấy ngày vậy shop?",
    "Khoảng 2-3 ngày bạn nhé 🚚",
    "Gọi mình số 0912 345 678 nha",
    "Shop có màu đen không, mình lấy 2 cái",
    "Bạn xem thêm ở shopee.vn/shop123 nhé",
    "Cảm ơn shop nhiều! ❤️",
];

/// Counts what is published; the bytes are already encoded by then.
#[derive(Default)]
struct Counting {
    verify: bool,
    packets: AtomicUsize,
    bytes: AtomicUsize,
    acks: AtomicUsize,
    refusals: AtomicUsize,
}

#[async_trait]
impl Outbound for Counting {
    async fn publish(&self, _topic: String, payload: Vec<u8>, _qos: Qos) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(payload.len(), Ordering::Relaxed);
        if !self.verify {
            return;
        }
        // A refusal would come back as an event; stored messages go out
        // as `msg` copies (their acks are the PUBACKs, counted below).
        match v2::decode_event(&payload) {
            Ok(
                v2::Event::Msg(_)
                | v2::Event::Thread(_)
                | v2::Event::Read { .. }
                | v2::Event::Masked { .. },
            ) => {}
            Ok(_) | Err(_) => {
                self.refusals.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn claims(sub: &str, role: Role) -> Claims {
    Claims {
        sub: sub.to_owned(),
        role,
        iss: "chat-cost".into(),
        aud: "chat".into(),
        exp: i64::MAX / 1000,
        nbf: None,
        iat: None,
    }
}

fn user(id: &str, seller: bool) -> User {
    User {
        id: id.into(),
        display_name: id.into(),
        avatar_url: None,
        email: None,
        locale: "vi".into(),
        seller,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One thread: the count must not depend on how work is scheduled.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn ChatStore> = Arc::new(chat_store::SqliteStore::open(dir.path())?);
    let outbound = Arc::new(Counting {
        verify: args.verify,
        ..Counting::default()
    });
    let unlimited = RateLimitConfig {
        messages_per_minute: u32::MAX / 2,
        messages_burst: u32::MAX / 2,
        connection_messages_per_minute: u32::MAX / 2,
        connection_messages_burst: u32::MAX / 2,
        duplicate_threads: usize::MAX / 2,
        ..RateLimitConfig::default()
    };
    let service = ChatService::new(Deps {
        store: store.clone(),
        membership: Arc::new(MembershipCache::new(store.clone())),
        outbound: outbound.clone(),
        bus: Arc::new(InProcessBus::new(64)),
        limits: Limits::default(),
        presence: Arc::new(LocalPresence::new()),
        moderation: Arc::new(Moderation::load(ModerationConfig::default(), store.clone()).await?),
        limiter: Arc::new(RateLimiter::new(unlimited)),
        attachments: None,
        push: PushRoute::Nowhere,
        sandbox_prefix: None,
        protocol_v1: false,
    });
    let platform = claims("platform", Role::Platform);
    let (buyer, seller) = ("buyer-1", "shop-1");
    service
        .put_record(&platform, &Record::User(user(buyer, false)))
        .await?;
    service
        .put_record(&platform, &Record::User(user(seller, true)))
        .await?;
    let thread = service
        .open_thread(
            &claims(buyer, Role::Buyer),
            OpenFrom::Seller {
                seller_id: seller.into(),
                product_id: None,
            },
        )
        .await?;

    for i in 0..args.warm_up + args.sends {
        // Both sides write, so the thread turns and unread counts move.
        let from = if i % 3 == 2 { seller } else { buyer };
        let payload = v2::encode(&v2::Command::Msg {
            client_msg_id: format!("c-{i}"),
            kind: MessageType::Text,
            content: TEXTS[i % TEXTS.len()].into(),
        });
        let connection = format!("{from}:phone");
        // v2 over MQTT 5: the PUBACK answers, as on a phone.
        let handled = service
            .handle_command(from, Some(&connection), &thread.id, &payload, Reply::Puback)
            .await;
        anyhow::ensure!(handled.after == AfterInbound::Keep, "send {i}: {handled:?}");
        if matches!(handled.puback, Some(PubackAnswer::Stored { .. })) {
            outbound.acks.fetch_add(1, Ordering::Relaxed);
        }
    }
    if args.verify {
        let (acks, refusals) = (
            outbound.acks.load(Ordering::Relaxed),
            outbound.refusals.load(Ordering::Relaxed),
        );
        let sent = args.warm_up + args.sends;
        anyhow::ensure!(
            acks == sent && refusals == 0,
            "{sent} sends: {acks} acks, {refusals} refusals"
        );
    }
    eprintln!(
        "chat-cost: {} sends after {} warm-up: {} packets, {} bytes published",
        args.sends,
        args.warm_up,
        outbound.packets.load(Ordering::Relaxed),
        outbound.bytes.load(Ordering::Relaxed)
    );
    Ok(())
}

//! The behaviour every [`ChatStore`] backend must have, written once and run
//! against each backend's real engine (see the `contract_tests!` callers in
//! the store crates), so the backends cannot drift apart.
//!
//! Each check takes a namespace and only touches ids under it, because a
//! shared database (one Cassandra for a whole test run) holds many runs.

use std::collections::HashSet;
use std::sync::Arc;

use chat_protocol::{Message, MessageType};

use crate::model::{
    AuditEntry, Device, DevicePlatform, InboxCursor, MessageRange, ModerationRecord, NewMessage,
    NotificationAttempt, OpenThread, Order, Product, ReadMarker, Thread, ThreadKey, UNREAD_CAP,
    User,
};
use crate::store::{ChatStore, StoreError};

/// Ids unique to one check, so runs sharing a database never meet.
pub fn namespace(check: &str) -> String {
    let short = uuid::Uuid::new_v4().simple().to_string();
    format!("{check}-{}", &short[..12])
}

pub fn text(thread_id: &str, from: &str, client_msg_id: &str) -> NewMessage {
    let (id, created_at) = crate::new_timed_id();
    NewMessage {
        id,
        thread_id: thread_id.into(),
        from: from.into(),
        kind: MessageType::Text,
        content: format!("hello {client_msg_id}"),
        card: None,
        client_msg_id: Some(client_msg_id.into()),
        created_at,
        sets_product: None,
        owes_push: false,
    }
}

/// A time-ordered id (UUIDv7) carrying `millis`.
pub fn id_at(millis: i64) -> String {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        (millis / 1000) as u64,
        ((millis % 1000) * 1_000_000) as u32,
    );
    uuid::Uuid::new_v7(ts).to_string()
}

/// A text message stamped `millis` (its id carries the same time), for
/// histories spread over days.
pub fn text_at(thread_id: &str, from: &str, client_msg_id: &str, millis: i64) -> NewMessage {
    NewMessage {
        id: id_at(millis),
        created_at: millis,
        ..text(thread_id, from, client_msg_id)
    }
}

pub async fn open_pair(store: &dyn ChatStore, buyer: &str, seller: &str) -> Thread {
    let spec = OpenThread {
        key: ThreadKey::Pair {
            buyer_id: buyer.into(),
            seller_id: seller.into(),
        },
        buyer_id: buyer.into(),
        seller_id: seller.into(),
    };
    store.open_thread(&spec).await.expect("open thread").thread
}

fn ids_of(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.id.clone()).collect()
}

pub async fn ping_answers(store: &dyn ChatStore) {
    store.ping().await.expect("a working store answers a ping");
}

pub async fn reference_data_round_trips(store: &dyn ChatStore) {
    let ns = namespace("ref");
    let user = User {
        id: format!("{ns}-u"),
        display_name: "Nguyễn Văn A".into(),
        avatar_url: Some("https://cdn.example/a.png".into()),
        email: None,
        locale: "vi".into(),
        seller: false,
    };
    store.put_user(&user).await.unwrap();
    assert_eq!(store.user(&user.id).await.unwrap(), Some(user.clone()));
    let renamed = User {
        display_name: "Shop A".into(),
        seller: true,
        ..user.clone()
    };
    store.put_user(&renamed).await.unwrap();
    assert_eq!(store.user(&user.id).await.unwrap(), Some(renamed));
    assert_eq!(store.user(&format!("{ns}-nobody")).await.unwrap(), None);

    let product = Product {
        id: format!("{ns}-p"),
        seller_id: format!("{ns}-s"),
        title: "Áo thun".into(),
        price: 199_000,
        currency: "VND".into(),
        image_url: None,
    };
    store.put_product(&product).await.unwrap();
    assert_eq!(store.product(&product.id).await.unwrap(), Some(product));
    let order = Order {
        id: format!("{ns}-o"),
        buyer_id: format!("{ns}-b"),
        seller_id: format!("{ns}-s"),
        summary: "2 sản phẩm".into(),
    };
    store.put_order(&order).await.unwrap();
    assert_eq!(store.order(&order.id).await.unwrap(), Some(order));
}

pub async fn devices_register_move_and_prune(store: &dyn ChatStore) {
    let ns = namespace("devices");
    let (a, b) = (format!("{ns}-a"), format!("{ns}-b"));
    let device = |user: &str, token: &str, platform| Device {
        token: format!("{ns}-{token}"),
        user_id: user.to_owned(),
        platform,
        app_id: "vn.example.shop".into(),
        locale: "vi".into(),
        updated_at: crate::now_millis(),
    };
    let phone = device(&a, "phone", DevicePlatform::Fcm);
    let tablet = device(&a, "tablet", DevicePlatform::Apns);
    store.put_device(&phone).await.unwrap();
    store.put_device(&tablet).await.unwrap();
    store.put_device(&phone).await.unwrap();
    let mut mine = store.devices_of(&a).await.unwrap();
    mine.sort_by(|x, y| x.token.cmp(&y.token));
    assert_eq!(mine, vec![phone.clone(), tablet.clone()]);

    // Another account logs in on the phone: the token moves.
    let moved = Device {
        locale: "en".into(),
        ..device(&b, "phone", DevicePlatform::Fcm)
    };
    store.put_device(&moved).await.unwrap();
    assert_eq!(store.devices_of(&a).await.unwrap(), vec![tablet.clone()]);
    assert_eq!(store.devices_of(&b).await.unwrap(), vec![moved.clone()]);

    // Only the holder may delete; pruning ignores who holds it.
    assert!(!store.delete_device(&a, &moved.token).await.unwrap());
    assert!(store.delete_device(&a, &tablet.token).await.unwrap());
    assert!(!store.delete_device(&a, &tablet.token).await.unwrap());
    store.prune_device(&moved.token).await.unwrap();
    store.prune_device(&format!("{ns}-unknown")).await.unwrap();
    assert!(store.devices_of(&a).await.unwrap().is_empty());
    assert!(store.devices_of(&b).await.unwrap().is_empty());
}

pub async fn notification_log_lists_newest_first(store: &dyn ChatStore) {
    let ns = namespace("notiflog");
    let user = format!("{ns}-u");
    use crate::model::{AttemptOutcome, NotifyChannel};
    let attempt = |outcome: AttemptOutcome, error: Option<&str>| NotificationAttempt {
        id: crate::new_id(),
        user_id: user.clone(),
        thread_id: format!("{ns}-t"),
        message_id: crate::new_id(),
        channel: NotifyChannel::Fcm,
        device: "…a1b2c3".into(),
        outcome,
        error: error.map(str::to_owned),
        latency_ms: 42,
        at: crate::now_millis(),
    };
    let first = attempt(AttemptOutcome::Retry, Some("503 UNAVAILABLE"));
    let second = attempt(AttemptOutcome::Sent, None);
    store.log_notification(&first).await.unwrap();
    store.log_notification(&second).await.unwrap();
    store
        .log_notification(&attempt(AttemptOutcome::Sent, None))
        .await
        .unwrap();
    let log = store.notifications_of(&user, 2).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1], second);
    let all = store.notifications_of(&user, 10).await.unwrap();
    assert_eq!(all.last(), Some(&first));
    assert!(
        store
            .notifications_of(&format!("{ns}-x"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn moderation_records_queue_and_resolve(store: &dyn ChatStore) {
    let ns = namespace("moderation");
    let record = |kind: crate::model::ModerationKind, needs_review: bool| ModerationRecord {
        id: crate::new_id(),
        thread_id: format!("{ns}-t"),
        user_id: format!("{ns}-u"),
        message_id: None,
        kind,
        categories: vec!["phone".into()],
        original: "gọi 0912345678".into(),
        keywords: vec![],
        reported_by: None,
        needs_review,
        resolution: None,
        resolved_by: None,
        resolved_at: None,
        created_at: crate::now_millis(),
    };
    use crate::model::ModerationKind;
    let masked = record(ModerationKind::Masked, false);
    let flagged = record(ModerationKind::Flagged, true);
    let blocked = record(ModerationKind::Blocked, true);
    for r in [&masked, &flagged, &blocked] {
        store.record_moderation(r).await.unwrap();
    }
    assert_eq!(
        store.moderation_record(&masked.id).await.unwrap().as_ref(),
        Some(&masked)
    );
    // Other checks share the store: look at this check's records only.
    let waiting = |queue: Vec<ModerationRecord>| -> Vec<String> {
        queue
            .into_iter()
            .filter(|r| r.thread_id == format!("{ns}-t"))
            .map(|r| r.id)
            .collect()
    };
    let queue = waiting(store.moderation_queue(None, 1000).await.unwrap());
    assert_eq!(
        queue,
        [flagged.id.clone(), blocked.id.clone()],
        "oldest first, masked not queued"
    );
    let after = waiting(
        store
            .moderation_queue(Some(&flagged.id), 1000)
            .await
            .unwrap(),
    );
    assert_eq!(after, std::slice::from_ref(&blocked.id));

    assert!(
        store
            .resolve_moderation(&flagged.id, "dismissed", "admin-1", 7)
            .await
            .unwrap()
    );
    assert!(
        !store
            .resolve_moderation(&flagged.id, "again", "admin-2", 8)
            .await
            .unwrap()
    );
    assert!(
        !store
            .resolve_moderation(&masked.id, "x", "admin-1", 9)
            .await
            .unwrap()
    );
    let resolved = store.moderation_record(&flagged.id).await.unwrap().unwrap();
    assert_eq!(resolved.resolution.as_deref(), Some("dismissed"));
    assert_eq!(resolved.resolved_by.as_deref(), Some("admin-1"));
    let queue = waiting(store.moderation_queue(None, 1000).await.unwrap());
    assert_eq!(queue, std::slice::from_ref(&blocked.id));

    let keyword = format!("{ns} lừa đảo");
    store.set_keyword("flag", &keyword, true).await.unwrap();
    store.set_keyword("flag", &keyword, true).await.unwrap();
    let mine = |all: Vec<(String, String)>| -> Vec<(String, String)> {
        all.into_iter()
            .filter(|(_, k)| k.starts_with(&ns))
            .collect()
    };
    assert_eq!(
        mine(store.keywords().await.unwrap()),
        [("flag".to_owned(), keyword.clone())]
    );
    store.set_keyword("flag", &keyword, false).await.unwrap();
    assert!(mine(store.keywords().await.unwrap()).is_empty());
}

pub async fn uploads_are_used_once_and_stale_ones_found(store: &dyn ChatStore) {
    let ns = namespace("uploads");
    let upload = |created_at: i64| crate::attachments::Upload {
        id: crate::new_id(),
        thread_id: format!("{ns}-t"),
        user_id: format!("{ns}-u"),
        content_type: "image/jpeg".into(),
        size: 12345,
        status: crate::attachments::UploadStatus::Pending,
        card: None,
        created_at,
    };
    let now = crate::now_millis();
    let old = upload(now - 3_600_000);
    let fresh = upload(now);
    store.create_upload(&old).await.unwrap();
    store.create_upload(&fresh).await.unwrap();
    assert_eq!(
        store.upload(&fresh.id).await.unwrap().as_ref(),
        Some(&fresh)
    );
    assert!(
        store
            .finish_upload(
                &fresh.id,
                crate::attachments::UploadStatus::Used,
                Some("m1")
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_upload(
                &fresh.id,
                crate::attachments::UploadStatus::Used,
                Some("m2")
            )
            .await
            .unwrap(),
        "used once"
    );
    let used = store.upload(&fresh.id).await.unwrap().unwrap();
    assert_eq!(
        (used.status, used.card.as_deref()),
        (crate::attachments::UploadStatus::Used, Some("m1"))
    );
    let stale: Vec<String> = store
        .stale_uploads(now - 60_000, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.thread_id == format!("{ns}-t"))
        .map(|u| u.id)
        .collect();
    assert_eq!(stale, std::slice::from_ref(&old.id));
    assert!(
        store
            .finish_upload(&old.id, crate::attachments::UploadStatus::Expired, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .stale_uploads(now, 1000)
            .await
            .unwrap()
            .iter()
            .all(|u| u.thread_id != format!("{ns}-t"))
    );
}

pub async fn blocks_and_the_audit_log(store: &dyn ChatStore) {
    let ns = namespace("blocks");
    let (a, b) = (format!("{ns}-a"), format!("{ns}-b"));
    assert!(store.blockers_between(&a, &b).await.unwrap().is_empty());
    store.set_block(&a, &b, true).await.unwrap();
    store.set_block(&a, &b, true).await.unwrap();
    assert_eq!(
        store.blockers_between(&b, &a).await.unwrap(),
        std::slice::from_ref(&a)
    );
    store.set_block(&b, &a, true).await.unwrap();
    assert_eq!(store.blockers_between(&a, &b).await.unwrap().len(), 2);
    store.set_block(&a, &b, false).await.unwrap();
    assert_eq!(
        store.blockers_between(&a, &b).await.unwrap(),
        std::slice::from_ref(&b)
    );

    let first = AuditEntry::new(&a, "block", &b, "thread t1");
    let second = AuditEntry::new(&b, "report", &a, "spam");
    let third = AuditEntry::new(&a, "unblock", &b, "");
    for e in [&first, &second, &third] {
        store.append_audit(e).await.unwrap();
    }
    let of_a = store.audit_log(Some(&a), None, 10).await.unwrap();
    assert_eq!(of_a, [third.clone(), first.clone()], "newest first");
    let page = store
        .audit_log(Some(&a), Some(&third.id), 10)
        .await
        .unwrap();
    assert_eq!(page, std::slice::from_ref(&first));
    let everyone: Vec<AuditEntry> = store
        .audit_log(None, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.actor.starts_with(&ns))
        .collect();
    assert_eq!(everyone, [third, second, first]);
}

/// The review queue, the audit log and the upload sweep on the first and
/// last millisecond of months and years (and a leap day), with the store's
/// clock standing there: what was written "now" and within the look-back
/// is found. Backends partitioned by day or month (Scylla) once missed the
/// current month from the 1st to about the 15th.
pub async fn dated_partitions_on_calendar_boundaries(
    store: &dyn ChatStore,
    clock: &crate::clock::ManualClock,
) {
    use crate::calendar::{Date, millis_of_date};
    let ns = namespace("dated");
    let midnight = |year, month, day| millis_of_date(Date { year, month, day });
    let instants = [
        midnight(2026, 12, 1) - 1,
        midnight(2026, 12, 1),
        midnight(2026, 12, 15) + 43_200_000,
        midnight(2027, 1, 1) - 1,
        midnight(2027, 1, 1),
        midnight(2028, 2, 29) + 43_200_000,
        midnight(2028, 3, 1),
        midnight(2028, 3, 31) - 1,
    ];
    for (i, now) in instants.into_iter().enumerate() {
        clock.set(now);
        let thread = format!("{ns}-t{i}");
        let record = |at: i64| ModerationRecord {
            id: id_at(at),
            thread_id: thread.clone(),
            user_id: format!("{ns}-u"),
            message_id: None,
            kind: crate::model::ModerationKind::Flagged,
            categories: vec!["phone".into()],
            original: "gọi 0912345678".into(),
            keywords: vec![],
            reported_by: None,
            needs_review: true,
            resolution: None,
            resolved_by: None,
            resolved_at: None,
            created_at: at,
        };
        // Eleven months back, last month's last millisecond, and now.
        let flagged = [
            record(now - 335 * 86_400_000),
            record(midnight_of_month(now) - 1),
            record(now),
        ];
        for r in &flagged {
            store.record_moderation(r).await.unwrap();
        }
        let ours = |queue: Vec<ModerationRecord>| -> Vec<String> {
            queue
                .into_iter()
                .filter(|r| r.thread_id == thread)
                .map(|r| r.id)
                .collect()
        };
        let ids: Vec<String> = flagged.iter().map(|r| r.id.clone()).collect();
        assert_eq!(
            ours(store.moderation_queue(None, 1000).await.unwrap()),
            ids,
            "review queue at {now}"
        );
        assert_eq!(
            ours(store.moderation_queue(Some(&ids[0]), 1000).await.unwrap()),
            ids[1..],
            "review queue after the oldest, at {now}"
        );
        for r in &flagged {
            assert!(
                store
                    .resolve_moderation(&r.id, "dismissed", "admin", now)
                    .await
                    .unwrap()
            );
        }

        let actor = format!("{ns}-a{i}");
        let entry = |at: i64, action: &str| AuditEntry {
            id: id_at(at),
            at,
            actor: actor.clone(),
            action: action.into(),
            target: "x".into(),
            detail: String::new(),
        };
        let (yesterday, today) = (entry(now - 86_400_000, "yesterday"), entry(now, "now"));
        store.append_audit(&yesterday).await.unwrap();
        store.append_audit(&today).await.unwrap();
        let audit: Vec<AuditEntry> = store
            .audit_log(None, None, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.actor == actor)
            .collect();
        assert_eq!(audit, [today, yesterday], "audit log at {now}");

        let upload = crate::attachments::Upload {
            id: id_at(now - 13 * 86_400_000),
            thread_id: thread.clone(),
            user_id: format!("{ns}-u"),
            content_type: "image/jpeg".into(),
            size: 1,
            status: crate::attachments::UploadStatus::Pending,
            card: None,
            created_at: now - 13 * 86_400_000,
        };
        store.create_upload(&upload).await.unwrap();
        let stale: Vec<String> = store
            .stale_uploads(now, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|u| u.thread_id == thread)
            .map(|u| u.id)
            .collect();
        assert_eq!(
            stale,
            std::slice::from_ref(&upload.id),
            "upload sweep at {now}"
        );
        assert!(
            store
                .finish_upload(&upload.id, crate::attachments::UploadStatus::Expired, None)
                .await
                .unwrap()
        );
    }
}

/// Midnight UTC starting the month of `millis`.
fn midnight_of_month(millis: i64) -> i64 {
    crate::calendar::millis_of_date(crate::calendar::month_of_millis(millis).first_day())
}

pub async fn notified_marks_only_move_forward(store: &dyn ChatStore) {
    let push_tok = crate::model::MarkChannel::Push {
        token: "tok".into(),
    };
    let ns = namespace("marks");
    let (user, thread) = (format!("{ns}-u"), format!("{ns}-t"));
    let (older, _) = crate::new_timed_id();
    let (newer, _) = crate::new_timed_id();
    assert_eq!(
        store
            .notified_up_to(&user, &thread, &crate::model::MarkChannel::Email)
            .await
            .unwrap(),
        None
    );
    store
        .set_notified_up_to(&user, &thread, &crate::model::MarkChannel::Email, &newer)
        .await
        .unwrap();
    // A late worker finishing an older job must not move the mark back.
    store
        .set_notified_up_to(&user, &thread, &crate::model::MarkChannel::Email, &older)
        .await
        .unwrap();
    assert_eq!(
        store
            .notified_up_to(&user, &thread, &crate::model::MarkChannel::Email)
            .await
            .unwrap(),
        Some(newer.clone())
    );
    // Channels are independent.
    assert_eq!(
        store
            .notified_up_to(&user, &thread, &push_tok)
            .await
            .unwrap(),
        None
    );
    store
        .set_notified_up_to(&user, &thread, &push_tok, &older)
        .await
        .unwrap();
    assert_eq!(
        store
            .notified_up_to(&user, &thread, &push_tok)
            .await
            .unwrap(),
        Some(older)
    );
}

pub async fn open_thread_is_idempotent_per_pair_and_per_order(store: &dyn ChatStore) {
    let ns = namespace("open");
    let (buyer, seller) = (format!("{ns}-b"), format!("{ns}-s"));
    let spec = OpenThread {
        key: ThreadKey::Pair {
            buyer_id: buyer.clone(),
            seller_id: seller.clone(),
        },
        buyer_id: buyer.clone(),
        seller_id: seller.clone(),
    };
    let first = store.open_thread(&spec).await.unwrap();
    assert!(first.created);
    assert_eq!(first.thread.buyer_id, buyer);
    assert_eq!(first.thread.last_message, None);
    let again = store.open_thread(&spec).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.thread.id, first.thread.id);

    let order_spec = OpenThread {
        key: ThreadKey::Order {
            order_id: format!("{ns}-o"),
        },
        buyer_id: buyer.clone(),
        seller_id: seller.clone(),
    };
    let racers: Vec<_> = (0..8)
        .map(|_| store.open_thread(&order_spec))
        .collect::<Vec<_>>();
    let mut ids = HashSet::new();
    let mut created = 0;
    for opened in futures_join_all(racers).await {
        let opened = opened.unwrap();
        ids.insert(opened.thread.id.clone());
        created += usize::from(opened.created);
        assert_eq!(opened.thread.order_id.as_deref(), Some(&*format!("{ns}-o")));
    }
    assert_eq!(ids.len(), 1, "concurrent opens agree on one thread");
    assert_eq!(created, 1, "exactly one open created it");
    assert_ne!(ids.into_iter().next().unwrap(), first.thread.id);
    assert_eq!(
        store.participants(&first.thread.id).await.unwrap(),
        Some((buyer.clone(), seller.clone()))
    );
    assert_eq!(
        store.participants(&format!("{ns}-none")).await.unwrap(),
        None
    );
    assert_eq!(
        store.thread(&first.thread.id).await.unwrap(),
        Some(first.thread)
    );
    assert_eq!(store.thread(&format!("{ns}-none")).await.unwrap(), None);
}

/// Polls futures concurrently without pulling in the `futures` crate.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *output = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("polled to completion"))
        .collect()
}

pub async fn append_is_idempotent_and_counts_unread(store: &dyn ChatStore) {
    let ns = namespace("append");
    let (b, s) = (format!("{ns}-b"), format!("{ns}-s"));
    let thread = open_pair(store, &b, &s).await;
    let message = text(&thread.id, &b, "c1");
    let first = store.append_message(&message).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.message.content, "hello c1");
    assert_eq!(
        (first.thread.unread_buyer, first.thread.unread_seller),
        (0, 1)
    );
    assert_eq!(
        first.thread.last_message.as_ref().map(|m| &m.message_id),
        Some(&first.message.id)
    );
    // A retry carries a new server id and time; the first one is kept.
    let retry = store
        .append_message(&text(&thread.id, &b, "c1"))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message.id, first.message.id);
    assert_eq!(retry.thread.unread_seller, 1);
    // The same client id from the other participant is another message.
    let other = store
        .append_message(&text(&thread.id, &s, "c1"))
        .await
        .unwrap();
    assert!(!other.duplicate);
    let all = store
        .messages(&thread.id, &MessageRange::default(), 10)
        .await
        .unwrap();
    assert_eq!(ids_of(&all), vec![first.message.id, other.message.id]);
    assert!(matches!(
        store
            .append_message(&text(&format!("{ns}-none"), &b, "x"))
            .await,
        Err(StoreError::NotFound("thread"))
    ));
}

/// Answering a thread means having read it: the sender's count drops to 0
/// and stays there until the other side writes again.
pub async fn sending_marks_the_thread_read_for_the_sender(store: &dyn ChatStore) {
    let ns = namespace("sendread");
    let (b, s) = (format!("{ns}-b"), format!("{ns}-s"));
    let thread = open_pair(store, &b, &s).await;
    for i in 0..3 {
        store
            .append_message(&text(&thread.id, &b, &format!("b{i}")))
            .await
            .unwrap();
    }
    let reply = store
        .append_message(&text(&thread.id, &s, "s0"))
        .await
        .unwrap();
    assert_eq!(
        (reply.thread.unread_buyer, reply.thread.unread_seller),
        (1, 0)
    );
    let more = store
        .append_message(&text(&thread.id, &b, "b3"))
        .await
        .unwrap();
    assert_eq!(
        (more.thread.unread_buyer, more.thread.unread_seller),
        (0, 1)
    );
}

pub async fn read_marker_recomputes_unread_and_never_moves_back(store: &dyn ChatStore) {
    let ns = namespace("marker");
    let (b, s) = (format!("{ns}-b"), format!("{ns}-s"));
    let thread = open_pair(store, &b, &s).await;
    let mut ids = vec![];
    for i in 0..3 {
        let a = store
            .append_message(&text(&thread.id, &b, &format!("c{i}")))
            .await
            .unwrap();
        ids.push(a.message.id);
    }
    let marked = store.mark_read(&thread.id, &s, &ids[1]).await.unwrap();
    assert!(marked.moved);
    assert_eq!(marked.up_to, ids[1]);
    assert_eq!(marked.thread.unread_seller, 1);
    let back = store.mark_read(&thread.id, &s, &ids[0]).await.unwrap();
    assert!(!back.moved);
    assert_eq!(back.up_to, ids[1]);
    assert_eq!(back.thread.unread_seller, 1);
    let all = store.mark_read(&thread.id, &s, &ids[2]).await.unwrap();
    assert_eq!(all.thread.unread_seller, 0);
    assert_eq!(
        store
            .thread(&thread.id)
            .await
            .unwrap()
            .unwrap()
            .unread_seller,
        0
    );
    assert!(matches!(
        store.mark_read(&thread.id, &s, "nope").await,
        Err(StoreError::NotFound("message"))
    ));
    assert!(matches!(
        store
            .mark_read(&thread.id, &format!("{ns}-x"), &ids[0])
            .await,
        Err(StoreError::NotFound("thread"))
    ));
}

/// History pages carry the markers, so a client can show "seen" after a
/// reload: one per participant who read or sent, never moving back.
pub async fn read_markers_list_each_participant(store: &dyn ChatStore) {
    let ns = namespace("markers");
    let (b, s) = (format!("{ns}-b"), format!("{ns}-s"));
    let thread = open_pair(store, &b, &s).await;
    assert!(store.read_markers(&thread.id).await.unwrap().is_empty());
    let mut sent = vec![];
    for i in 0..3 {
        let a = store
            .append_message(&text(&thread.id, &b, &format!("c{i}")))
            .await
            .unwrap();
        sent.push(a.message);
    }
    let marker_of = |markers: Vec<ReadMarker>, user: &str| -> Option<ReadMarker> {
        assert!(markers.iter().all(|m| m.user_id == b || m.user_id == s));
        markers.into_iter().find(|m| m.user_id == user)
    };
    // Sending marks the thread read for the sender.
    let markers = store.read_markers(&thread.id).await.unwrap();
    assert_eq!(markers.len(), 1, "{markers:?}");
    let buyer = marker_of(markers, &b).unwrap();
    assert_eq!(buyer.up_to, sent[2].id);
    assert!(buyer.read_at >= sent[2].created_at);

    store.mark_read(&thread.id, &s, &sent[1].id).await.unwrap();
    let seller = marker_of(store.read_markers(&thread.id).await.unwrap(), &s).unwrap();
    assert_eq!(seller.up_to, sent[1].id);
    assert!(seller.read_at > 0);
    store.mark_read(&thread.id, &s, &sent[0].id).await.unwrap();
    let markers = store.read_markers(&thread.id).await.unwrap();
    assert_eq!(markers.len(), 2, "{markers:?}");
    assert_eq!(
        marker_of(markers, &s).unwrap(),
        seller,
        "a marker never moves backwards"
    );
    store.mark_read(&thread.id, &s, &sent[2].id).await.unwrap();
    let markers = store.read_markers(&thread.id).await.unwrap();
    assert_eq!(marker_of(markers.clone(), &s).unwrap().up_to, sent[2].id);
    assert_eq!(marker_of(markers, &b).unwrap().up_to, sent[2].id);
    assert!(
        store
            .read_markers(&format!("{ns}-none"))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Badges show "99+": counts stop at [`UNREAD_CAP`], so no backend has to
/// count a huge backlog on every message.
pub async fn unread_counts_stop_at_the_cap(store: &dyn ChatStore) {
    let ns = namespace("cap");
    let (b, s) = (format!("{ns}-b"), format!("{ns}-s"));
    let thread = open_pair(store, &b, &s).await;
    let sends: Vec<_> = (0..UNREAD_CAP + 20)
        .map(|i| text(&thread.id, &b, &format!("c{i}")))
        .collect();
    let mut last = None;
    for m in &sends {
        last = Some(store.append_message(m).await.unwrap());
    }
    assert_eq!(last.unwrap().thread.unread_seller, UNREAD_CAP);
    let marked = store.mark_read(&thread.id, &s, &sends[9].id).await.unwrap();
    assert_eq!(marked.thread.unread_seller, UNREAD_CAP);
    let marked = store
        .mark_read(&thread.id, &s, &sends[sends.len() - 3].id)
        .await
        .unwrap();
    assert_eq!(marked.thread.unread_seller, 2);
}

pub async fn history_pages_in_both_directions(store: &dyn ChatStore) {
    let ns = namespace("history");
    let (b, s) = (format!("{ns}-b"), format!("{ns}-s"));
    let thread = open_pair(store, &b, &s).await;
    let mut ids = vec![];
    for i in 0..7 {
        let a = store
            .append_message(&text(&thread.id, &s, &format!("c{i}")))
            .await
            .unwrap();
        ids.push(a.message.id);
    }
    let latest = store
        .messages(&thread.id, &MessageRange::default(), 3)
        .await
        .unwrap();
    assert_eq!(ids_of(&latest), ids[4..7]);
    let before = MessageRange {
        before: Some(ids[4].clone()),
        after: None,
    };
    assert_eq!(
        ids_of(&store.messages(&thread.id, &before, 3).await.unwrap()),
        ids[1..4]
    );
    let after = MessageRange {
        before: None,
        after: Some(ids[1].clone()),
    };
    assert_eq!(
        ids_of(&store.messages(&thread.id, &after, 3).await.unwrap()),
        ids[2..5]
    );
    let between = MessageRange {
        before: Some(ids[5].clone()),
        after: Some(ids[1].clone()),
    };
    assert_eq!(
        ids_of(&store.messages(&thread.id, &between, 10).await.unwrap()),
        ids[2..5]
    );
    assert!(
        store
            .messages(&format!("{ns}-none"), &MessageRange::default(), 3)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `count` messages one minute apart (so about five 10-day buckets for
/// 50,000), paged back to the first and forward again to the last.
pub async fn long_history_pages_without_gap_or_duplicate(store: Arc<dyn ChatStore>, count: usize) {
    let ns = namespace("long");
    let (b, s) = (format!("{ns}-b"), format!("{ns}-s"));
    let thread = open_pair(&*store, &b, &s).await;
    let start = crate::now_millis() + 1_000;
    let messages: Vec<NewMessage> = (0..count)
        .map(|i| {
            let from = if i % 3 == 0 { &s } else { &b };
            text_at(
                &thread.id,
                from,
                &format!("m{i}"),
                start + i as i64 * 60_000,
            )
        })
        .collect();
    let expected: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
    let queue = Arc::new(parking_lot::Mutex::new(messages.into_iter()));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (store, queue) = (store.clone(), queue.clone());
        writers.spawn(async move {
            loop {
                let next = queue.lock().next();
                let Some(message) = next else { break };
                store.append_message(&message).await.expect("append");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer task");
    }

    let page_size = 500;
    let mut backwards: Vec<String> = Vec::with_capacity(count);
    let mut range = MessageRange::default();
    loop {
        let page = store.messages(&thread.id, &range, page_size).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= page_size);
        range.before = Some(page[0].id.clone());
        for m in page.iter().rev() {
            backwards.push(m.id.clone());
        }
    }
    backwards.reverse();
    assert_eq!(backwards.len(), count, "paging back saw every message once");
    assert!(
        backwards == expected,
        "paging back: no gap, no duplicate, in order"
    );

    let mut forwards: Vec<String> = vec![expected[0].clone()];
    let mut range = MessageRange {
        before: None,
        after: Some(expected[0].clone()),
    };
    loop {
        let page = store.messages(&thread.id, &range, page_size).await.unwrap();
        if page.is_empty() {
            break;
        }
        range.after = Some(page.last().unwrap().id.clone());
        forwards.extend(page.iter().map(|m| m.id.clone()));
    }
    assert!(forwards == expected, "paging forward: no gap, no duplicate");
}

/// Imported history (a migration) pages like sent history, across
/// buckets, and its newest message becomes the preview; importing twice
/// changes nothing.
pub async fn imported_history_pages_like_sent_history(store: &dyn ChatStore) {
    let ns = namespace("import");
    let (b, s) = (format!("{ns}-b"), format!("{ns}-s"));
    let thread = open_pair(store, &b, &s).await;
    let start = crate::now_millis() + 1_000;
    // Two days apart: about 20 buckets of 10 days for 100 messages.
    let messages: Vec<Message> = (0..100)
        .map(|i| {
            let from = if i % 2 == 0 { &b } else { &s };
            text_at(
                &thread.id,
                from,
                &format!("i{i}"),
                start + i * 2 * 86_400_000,
            )
            .into_message()
        })
        .collect();
    let mut shuffled = messages.clone();
    shuffled.reverse();
    store.import_history(&thread.id, &shuffled).await.unwrap();
    store
        .import_history(&thread.id, &messages[..10])
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut range = MessageRange::default();
    loop {
        let page = store.messages(&thread.id, &range, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        range.before = Some(page[0].id.clone());
        seen.splice(0..0, page);
    }
    assert_eq!(
        seen, messages,
        "all imported, in order, once, bodies intact"
    );
    let after = store.thread(&thread.id).await.unwrap().unwrap();
    assert_eq!(
        after.last_message.map(|m| m.message_id),
        Some(messages[99].id.clone())
    );
    assert!(matches!(
        store.import_history(&format!("{ns}-none"), &[]).await,
        Err(StoreError::NotFound("thread"))
    ));
}

pub async fn inbox_is_newest_activity_first_with_cursor(store: &dyn ChatStore) {
    let ns = namespace("inbox");
    let b = format!("{ns}-b");
    let mut threads = vec![];
    for seller in ["s1", "s2", "s3", "s4"] {
        threads.push(open_pair(store, &b, &format!("{ns}-{seller}")).await);
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    // Activity reorders the inbox: thread 0 gets two messages, thread 2 one.
    store
        .append_message(&text(&threads[0].id, &b, "x"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    store
        .append_message(&text(&threads[2].id, &format!("{ns}-s3"), "y"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    store
        .append_message(&text(&threads[0].id, &b, "z"))
        .await
        .unwrap();
    let expected = vec![
        threads[0].id.clone(),
        threads[2].id.clone(),
        threads[3].id.clone(),
        threads[1].id.clone(),
    ];
    let mut seen = vec![];
    let mut cursor: Option<InboxCursor> = None;
    loop {
        let page = store.threads_of(&b, cursor.as_ref(), 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        cursor = Some(InboxCursor {
            activity_at: last.activity_at(),
            thread_id: last.id.clone(),
        });
        seen.extend(page.iter().map(|t| t.id.clone()));
    }
    assert_eq!(seen, expected);
    let first = store.threads_of(&b, None, 1).await.unwrap();
    assert_eq!(first[0].unread_buyer, 0);
    assert_eq!(
        first[0].last_message.as_ref().map(|m| m.text.as_str()),
        Some("hello z")
    );
    let third_seller = store
        .threads_of(&format!("{ns}-s3"), None, 10)
        .await
        .unwrap();
    assert_eq!(third_seller.len(), 1);
    assert_eq!(third_seller[0].unread_seller, 0);
    assert_eq!(third_seller[0].unread_buyer, 1);
}

/// Many writers at once: every message stored once and every count right.
pub async fn concurrent_writes_all_land(store: Arc<dyn ChatStore>) {
    let ns = namespace("concurrent");
    let (b, s) = (format!("{ns}-b"), format!("{ns}-s"));
    let thread = open_pair(&*store, &b, &s).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let (store, thread_id, b) = (store.clone(), thread.id.clone(), b.clone());
        tasks.spawn(async move {
            store
                .append_message(&text(&thread_id, &b, &format!("c{i}")))
                .await
        });
    }
    assert!(matches!(
        store
            .append_message(&text(&format!("{ns}-none"), &b, "x"))
            .await,
        Err(StoreError::NotFound("thread"))
    ));
    while let Some(result) = tasks.join_next().await {
        assert!(!result.unwrap().unwrap().duplicate);
    }
    let all = store
        .messages(&thread.id, &MessageRange::default(), 1000)
        .await
        .unwrap();
    assert_eq!(all.len(), 60);
    let thread = store.thread(&thread.id).await.unwrap().unwrap();
    assert_eq!(thread.unread_seller, 60);
    assert_eq!(
        thread.last_message.map(|m| m.message_id),
        all.last().map(|m| m.id.clone()),
        "the newest message is the preview, whatever order writes landed in"
    );
}

/// Declares one `#[tokio::test]` per contract check for a backend.
/// `$make` is an async expression yielding `Arc<dyn ChatStore>` (and may
/// keep a guard such as a temporary directory alive via `$guard`).
#[macro_export]
macro_rules! contract_tests {
    ($make:expr, dated = |$clock:ident| $dated:expr, long_history = $long:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn dated_partitions_on_calendar_boundaries() {
            let manual = $crate::clock::ManualClock::at(0);
            let $clock: std::sync::Arc<dyn $crate::clock::Clock> = manual.clone();
            let (_guard, store) = $dated;
            $crate::contract::dated_partitions_on_calendar_boundaries(&*store, &manual).await;
        }

        $crate::contract_tests!($make, long_history = $long);
    };
    ($make:expr, long_history = $long:expr) => {
        $crate::contract_tests!(@one $make, ping_answers);
        $crate::contract_tests!(@one $make, reference_data_round_trips);
        $crate::contract_tests!(@one $make, devices_register_move_and_prune);
        $crate::contract_tests!(@one $make, notification_log_lists_newest_first);
        $crate::contract_tests!(@one $make, notified_marks_only_move_forward);
        $crate::contract_tests!(@one $make, moderation_records_queue_and_resolve);
        $crate::contract_tests!(@one $make, blocks_and_the_audit_log);
        $crate::contract_tests!(@one $make, uploads_are_used_once_and_stale_ones_found);
        $crate::contract_tests!(@one $make, open_thread_is_idempotent_per_pair_and_per_order);
        $crate::contract_tests!(@one $make, append_is_idempotent_and_counts_unread);
        $crate::contract_tests!(@one $make, sending_marks_the_thread_read_for_the_sender);
        $crate::contract_tests!(@one $make, read_marker_recomputes_unread_and_never_moves_back);
        $crate::contract_tests!(@one $make, read_markers_list_each_participant);
        $crate::contract_tests!(@one $make, unread_counts_stop_at_the_cap);
        $crate::contract_tests!(@one $make, history_pages_in_both_directions);
        $crate::contract_tests!(@one $make, imported_history_pages_like_sent_history);
        $crate::contract_tests!(@one $make, inbox_is_newest_activity_first_with_cursor);

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_writes_all_land() {
            let (_guard, store) = $make;
            $crate::contract::concurrent_writes_all_land(store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn long_history_pages_without_gap_or_duplicate() {
            let (_guard, store) = $make;
            $crate::contract::long_history_pages_without_gap_or_duplicate(store, $long).await;
        }
    };
    (@one $make:expr, $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_guard, store) = $make;
            $crate::contract::$name(&*store).await;
        }
    };
}

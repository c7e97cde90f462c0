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
    AuditEntry, Device, DevicePlatform, InboxCursor, KeywordList, MessageRange, ModerationRecord,
    NewMessage, NotificationAttempt, OpenThread, Order, Product, ReadMarker, Thread, ThreadKey,
    UNREAD_CAP, User,
};
use crate::store::{ChatStore, StoreError};

mod calendar;
mod conversations;
mod devices;
mod directory;
mod safety;
mod uploads;

pub use calendar::*;
pub use conversations::*;
pub use devices::*;
pub use directory::*;
pub use safety::*;
pub use uploads::*;

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

pub(super) fn ids_of(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.id.clone()).collect()
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

//! Contract: Threads, messages, read markers, unread counts, history and the inbox.

use super::*;

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
pub(super) async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
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

//! Contract: Moderation records, blocks and the audit log.

use super::*;

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
    store
        .set_keyword(KeywordList::Flag, &keyword, true)
        .await
        .unwrap();
    store
        .set_keyword(KeywordList::Flag, &keyword, true)
        .await
        .unwrap();
    let mine = |all: Vec<(KeywordList, String)>| -> Vec<(KeywordList, String)> {
        all.into_iter()
            .filter(|(_, k)| k.starts_with(&ns))
            .collect()
    };
    assert_eq!(
        mine(store.keywords().await.unwrap()),
        [(KeywordList::Flag, keyword.clone())]
    );
    store
        .set_keyword(KeywordList::Flag, &keyword, false)
        .await
        .unwrap();
    assert!(mine(store.keywords().await.unwrap()).is_empty());
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

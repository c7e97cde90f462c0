//! Contract: Devices, the notification log and the notified marks.

use super::*;

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

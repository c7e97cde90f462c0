//! Contract: Upload slots.

use super::*;

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

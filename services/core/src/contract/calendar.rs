//! Contract: Day and month partitions on calendar boundaries (clock injected).

use super::*;

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
pub(super) fn midnight_of_month(millis: i64) -> i64 {
    crate::calendar::millis_of_date(crate::calendar::month_of_millis(millis).first_day())
}

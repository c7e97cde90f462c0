//! SQLite: the `Devices` role of the store.

use async_trait::async_trait;
use chat_core::store::Devices;

use super::*;
use chat_core::model::{AttemptOutcome, MarkChannel, NotifyChannel};

#[async_trait]
impl Devices for SqliteStore {
    async fn put_device(&self, d: &Device) -> StoreResult<()> {
        self.execute(
            "INSERT INTO devices (token, user_id, platform, app_id, locale, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (token) DO UPDATE SET \
             user_id = ?2, platform = ?3, app_id = ?4, locale = ?5, updated_at = ?6",
            vec![
                d.token.clone().into(),
                d.user_id.clone().into(),
                d.platform.as_str().to_owned().into(),
                d.app_id.clone().into(),
                d.locale.clone().into(),
                d.updated_at.into(),
            ],
        )
        .await
        .map(drop)
    }

    async fn devices_of(&self, user_id: &str) -> StoreResult<Vec<Device>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT token, user_id, platform, app_id, locale, updated_at FROM devices \
                     WHERE user_id = ?1 ORDER BY token",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([user_id], |r| {
                    let platform: String = r.get(2)?;
                    Ok(Device {
                        token: r.get(0)?,
                        user_id: r.get(1)?,
                        platform: DevicePlatform::parse(&platform).unwrap_or(DevicePlatform::Fcm),
                        app_id: r.get(3)?,
                        locale: r.get(4)?,
                        updated_at: r.get(5)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn delete_device(&self, user_id: &str, token: &str) -> StoreResult<bool> {
        self.execute(
            "DELETE FROM devices WHERE token = ?1 AND user_id = ?2",
            vec![token.to_owned().into(), user_id.to_owned().into()],
        )
        .await
        .map(|deleted| deleted > 0)
    }

    async fn prune_device(&self, token: &str) -> StoreResult<()> {
        self.execute(
            "DELETE FROM devices WHERE token = ?1",
            vec![token.to_owned().into()],
        )
        .await
        .map(drop)
    }

    async fn log_notification(&self, a: &NotificationAttempt) -> StoreResult<()> {
        let a = a.clone();
        self.execute(
            "INSERT OR IGNORE INTO notification_log (id, user_id, thread_id, message_id, \
             channel, device, outcome, error, latency_ms, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            vec![
                a.id.into(),
                a.user_id.into(),
                a.thread_id.into(),
                a.message_id.into(),
                a.channel.as_str().to_owned().into(),
                a.device.into(),
                a.outcome.as_str().to_owned().into(),
                a.error.into(),
                a.latency_ms.into(),
                a.at.into(),
            ],
        )
        .await
        .map(drop)
    }

    async fn notifications_of(
        &self,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<NotificationAttempt>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, user_id, thread_id, message_id, channel, device, outcome, error, \
                     latency_ms, at FROM notification_log WHERE user_id = ?1 \
                     ORDER BY id DESC LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![user_id, limit as i64], |r| {
                    Ok(NotificationAttempt {
                        id: r.get(0)?,
                        user_id: r.get(1)?,
                        thread_id: r.get(2)?,
                        message_id: r.get(3)?,
                        channel: NotifyChannel::from_stored(&r.get::<_, String>(4)?),
                        device: r.get(5)?,
                        outcome: AttemptOutcome::from_stored(&r.get::<_, String>(6)?),
                        error: r.get(7)?,
                        latency_ms: r.get(8)?,
                        at: r.get(9)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn notified_up_to(
        &self,
        user_id: &str,
        thread_id: &str,
        channel: &MarkChannel,
    ) -> StoreResult<Option<String>> {
        let key = (user_id.to_owned(), thread_id.to_owned(), channel.key());
        self.read(move |c| {
            select_text(
                c,
                "SELECT message_id FROM notified_marks \
                 WHERE user_id = ?1 AND thread_id = ?2 AND channel = ?3",
                params![key.0, key.1, key.2],
            )
        })
        .await
    }

    async fn set_notified_up_to(
        &self,
        user_id: &str,
        thread_id: &str,
        channel: &MarkChannel,
        message_id: &str,
    ) -> StoreResult<()> {
        self.execute(
            "INSERT INTO notified_marks (user_id, thread_id, channel, message_id) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_id, thread_id, channel) \
             DO UPDATE SET message_id = excluded.message_id \
             WHERE excluded.message_id > notified_marks.message_id",
            [user_id, thread_id, &channel.key(), message_id]
                .map(|v| v.to_owned().into())
                .to_vec(),
        )
        .await
        .map(drop)
    }
}

//! ScyllaDB: the `Devices` role of the store.

use async_trait::async_trait;
use chat_core::store::Devices;

use super::*;
use chat_core::model::{AttemptOutcome, MarkChannel, NotifyChannel};

#[async_trait]
impl Devices for ScyllaStore {
    async fn put_device(&self, d: &Device) -> StoreResult<()> {
        let s = &self.statements;
        let owner: Option<(Option<String>,)> = self.first(&s.device_owner, (&d.token,)).await?;
        if let Some((Some(previous),)) = owner
            && previous != d.user_id
        {
            self.exec(&s.delete_device, (&previous, &d.token)).await?;
        }
        futures::try_join!(
            self.exec(
                &s.put_device,
                (
                    &d.user_id,
                    &d.token,
                    d.platform.as_str(),
                    &d.app_id,
                    &d.locale,
                    d.updated_at
                ),
            ),
            self.exec(&s.set_device_owner, (&d.token, &d.user_id)),
        )?;
        Ok(())
    }

    async fn devices_of(&self, user_id: &str) -> StoreResult<Vec<Device>> {
        type Columns = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
        );
        let rows: Vec<Columns> = self.rows(&self.statements.devices_of, (user_id,)).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(token, platform, app_id, locale, updated_at)| {
                Some(Device {
                    token,
                    user_id: user_id.to_owned(),
                    platform: DevicePlatform::parse(platform.as_deref()?)?,
                    app_id: app_id.unwrap_or_default(),
                    locale: locale.unwrap_or_else(|| "vi".into()),
                    updated_at: updated_at.unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn delete_device(&self, user_id: &str, token: &str) -> StoreResult<bool> {
        let s = &self.statements;
        let owner: Option<(Option<String>,)> = self.first(&s.device_owner, (token,)).await?;
        if owner.and_then(|(o,)| o).as_deref() != Some(user_id) {
            return Ok(false);
        }
        futures::try_join!(
            self.exec(&s.delete_device, (user_id, token)),
            self.exec(&s.delete_device_owner, (token,)),
        )?;
        Ok(true)
    }

    async fn prune_device(&self, token: &str) -> StoreResult<()> {
        let s = &self.statements;
        let owner: Option<(Option<String>,)> = self.first(&s.device_owner, (token,)).await?;
        if let Some((Some(user_id),)) = owner {
            self.exec(&s.delete_device, (&user_id, token)).await?;
        }
        self.exec(&s.delete_device_owner, (token,)).await?;
        Ok(())
    }

    async fn log_notification(&self, a: &NotificationAttempt) -> StoreResult<()> {
        self.exec(
            &self.statements.log_notification,
            (
                &a.user_id,
                &a.id,
                &a.thread_id,
                &a.message_id,
                a.channel.as_str(),
                &a.device,
                a.outcome.as_str(),
                &a.error,
                a.latency_ms,
                a.at,
            ),
        )
        .await?;
        Ok(())
    }

    async fn notifications_of(
        &self,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<NotificationAttempt>> {
        type Columns = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Columns> = self
            .rows(&self.statements.notifications_of, (user_id, limit as i32))
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, thread_id, message_id, channel, device, outcome, error, latency_ms, at)| {
                    NotificationAttempt {
                        id,
                        user_id: user_id.to_owned(),
                        thread_id: thread_id.unwrap_or_default(),
                        message_id: message_id.unwrap_or_default(),
                        channel: NotifyChannel::from_stored(channel.as_deref().unwrap_or("")),
                        device: device.unwrap_or_default(),
                        outcome: AttemptOutcome::from_stored(outcome.as_deref().unwrap_or("")),
                        error,
                        latency_ms: latency_ms.unwrap_or_default(),
                        at: at.unwrap_or_default(),
                    }
                },
            )
            .collect())
    }

    async fn notified_up_to(
        &self,
        user_id: &str,
        thread_id: &str,
        channel: &MarkChannel,
    ) -> StoreResult<Option<String>> {
        let result = self
            .exec(
                &self.statements.notified_up_to,
                (user_id, thread_id, channel.key()),
            )
            .await?;
        let rows = result.into_rows_result().map_err(backend)?;
        let mark = rows
            .maybe_first_row::<(Option<String>,)>()
            .map_err(backend)?;
        Ok(mark.and_then(|(id,)| id))
    }

    async fn set_notified_up_to(
        &self,
        user_id: &str,
        thread_id: &str,
        channel: &MarkChannel,
        message_id: &str,
    ) -> StoreResult<()> {
        // Last write wins by the message's own time: a mark never moves
        // back, whatever order concurrent workers write in.
        let millis = millis_of_id(message_id).ok_or(StoreError::NotFound("message"))?;
        self.exec(
            &self.statements.set_notified_up_to,
            (
                user_id,
                thread_id,
                channel.key(),
                message_id,
                write_timestamp(message_id, millis),
            ),
        )
        .await?;
        Ok(())
    }
}

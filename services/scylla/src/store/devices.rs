//! ScyllaDB: the `Devices` role of the store, with its prepared statements
//! beside the queries that bind them, so a CQL text and its values change
//! together.

use async_trait::async_trait;
use chat_core::store::Devices;

use super::*;
use chat_core::model::{AttemptOutcome, MarkChannel, NotifyChannel};

/// Prepared once when the store opens.
pub(super) struct Statements {
    log_notification: PreparedStatement,
    notified_up_to: PreparedStatement,
    set_notified_up_to: PreparedStatement,
    notifications_of: PreparedStatement,
    put_device: PreparedStatement,
    set_device_owner: PreparedStatement,
    device_owner: PreparedStatement,
    devices_of: PreparedStatement,
    delete_device: PreparedStatement,
    delete_device_owner: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(prepare: &Prepare<'_>) -> StoreResult<Statements> {
        let ks = prepare.keyspace;
        Ok(Statements {
            log_notification: prepare.cql(format!("INSERT INTO {ks}.notification_log (user_id, id, thread_id, message_id, channel, device, outcome, error, latency_ms, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), true).await?,
            notified_up_to: prepare.cql(format!("SELECT message_id FROM {ks}.notified_marks WHERE user_id = ? AND thread_id = ? AND channel = ?"), true).await?,
            set_notified_up_to: prepare.cql(format!("INSERT INTO {ks}.notified_marks (user_id, thread_id, channel, message_id) VALUES (?, ?, ?, ?) USING TIMESTAMP ?"), true).await?,
            notifications_of: prepare.cql(format!("SELECT id, thread_id, message_id, channel, device, outcome, error, latency_ms, at FROM {ks}.notification_log WHERE user_id = ? LIMIT ?"), true).await?,
            put_device: prepare.cql(format!("INSERT INTO {ks}.devices (user_id, push_token, platform, app_id, locale, updated_at) VALUES (?, ?, ?, ?, ?, ?)"), true).await?,
            set_device_owner: prepare.cql(format!("INSERT INTO {ks}.device_owners (push_token, user_id) VALUES (?, ?)"), true).await?,
            device_owner: prepare.cql(format!("SELECT user_id FROM {ks}.device_owners WHERE push_token = ?"), true).await?,
            devices_of: prepare.cql(format!("SELECT push_token, platform, app_id, locale, updated_at FROM {ks}.devices WHERE user_id = ?"), true).await?,
            delete_device: prepare.cql(format!("DELETE FROM {ks}.devices WHERE user_id = ? AND push_token = ?"), true).await?,
            delete_device_owner: prepare.cql(format!("DELETE FROM {ks}.device_owners WHERE push_token = ?"), true).await?,
        })
    }
}

#[async_trait]
impl Devices for ScyllaStore {
    async fn put_device(&self, d: &Device) -> StoreResult<()> {
        let s = &self.statements.devices;
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
        let rows: Vec<Columns> = self
            .rows(&self.statements.devices.devices_of, (user_id,))
            .await?;
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
        let s = &self.statements.devices;
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
        let s = &self.statements.devices;
        let owner: Option<(Option<String>,)> = self.first(&s.device_owner, (token,)).await?;
        if let Some((Some(user_id),)) = owner {
            self.exec(&s.delete_device, (&user_id, token)).await?;
        }
        self.exec(&s.delete_device_owner, (token,)).await?;
        Ok(())
    }

    async fn log_notification(&self, a: &NotificationAttempt) -> StoreResult<()> {
        self.exec(
            &self.statements.devices.log_notification,
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
            .rows(
                &self.statements.devices.notifications_of,
                (user_id, limit as i32),
            )
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
                &self.statements.devices.notified_up_to,
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
            &self.statements.devices.set_notified_up_to,
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

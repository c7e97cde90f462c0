//! A person's push devices, and the notification log admins read.

use super::*;
use crate::model::{Device, NotificationAttempt};

/// The roles a person holds (not the platform, a worker or a load test).
const PERSON: &[Role] = &[Role::Buyer, Role::Seller, Role::Admin];

impl ChatService {
    /// Registers (or refreshes) one of the caller's push tokens.
    pub async fn register_device(
        &self,
        caller: &Claims,
        device: &Device,
    ) -> Result<(), ServiceError> {
        require(caller, PERSON)?;
        if device.user_id != caller.sub {
            return Err(ServiceError::Forbidden);
        }
        Ok(self.store.put_device(device).await?)
    }

    pub async fn devices(&self, caller: &Claims) -> Result<Vec<Device>, ServiceError> {
        require(caller, PERSON)?;
        Ok(self.store.devices_of(&caller.sub).await?)
    }

    /// Removes one of the caller's tokens; someone else's token, or a
    /// missing one, is `NotFound` alike.
    pub async fn remove_device(&self, caller: &Claims, token: &str) -> Result<(), ServiceError> {
        require(caller, PERSON)?;
        if self.store.delete_device(&caller.sub, token).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound("device"))
        }
    }

    /// Admin: a user's latest notification attempts, newest first.
    pub async fn notification_log(
        &self,
        caller: &Claims,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<NotificationAttempt>, ServiceError> {
        require(caller, &[Role::Admin])?;
        Ok(self.store.notifications_of(user_id, limit).await?)
    }
}

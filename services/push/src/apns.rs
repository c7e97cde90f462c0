//! APNs: `POST {base}/3/device/<token>` over HTTP/2, authenticated with a
//! provider token (ES256 JWT from the team's `.p8` key, `kid` = key id,
//! `iss` = team id), reused for 50 minutes as Apple asks (no more than one
//! new token per 20 minutes, none older than an hour).
//!
//! Responses as documented: 200 sent (`apns-id`); 410 `Unregistered` and
//! 400 `BadDeviceToken` mean the token is dead; 403
//! `ExpiredProviderToken` refreshes the provider token once; 429 and 5xx
//! mean retry; any other 4xx means the request itself is wrong.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;

use crate::{Notification, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error("APNs key: {0}")]
    Key(String),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
}

#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// `https://api.push.apple.com` (or `https://api.sandbox.push.apple.com`).
    /// An `http://` URL speaks HTTP/2 in cleartext (local stand-ins only).
    pub base_url: String,
    pub team_id: String,
    pub key_id: String,
    /// The `.p8` file's contents (PKCS#8 PEM, P-256).
    pub private_key_pem: String,
    pub timeout: Duration,
}

struct ProviderToken {
    value: String,
    fresh_until: Instant,
}

pub struct ApnsClient {
    config: ApnsConfig,
    key: jsonwebtoken::EncodingKey,
    http: reqwest::Client,
    token: Mutex<Option<ProviderToken>>,
}

#[derive(serde::Serialize)]
struct ProviderClaims<'a> {
    iss: &'a str,
    iat: u64,
}

#[derive(Deserialize, Default)]
struct ApnsErrorBody {
    #[serde(default)]
    reason: String,
}

/// Apple limits `apns-collapse-id` to 64 bytes.
fn collapse_id(key: &str) -> &str {
    let mut end = key.len().min(64);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

impl ApnsClient {
    pub fn new(config: ApnsConfig) -> Result<ApnsClient, ApnsError> {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(config.private_key_pem.as_bytes())
            .map_err(|e| ApnsError::Key(e.to_string()))?;
        let mut http = reqwest::Client::builder().timeout(config.timeout);
        if config.base_url.starts_with("http://") {
            http = http.http2_prior_knowledge();
        }
        Ok(ApnsClient {
            config,
            key,
            http: http.build()?,
            token: Mutex::new(None),
        })
    }

    fn provider_token(&self, force_refresh: bool) -> Result<String, ApnsError> {
        let mut cached = self.token.lock();
        if !force_refresh
            && let Some(token) = &*cached
            && token.fresh_until > Instant::now()
        {
            return Ok(token.value.clone());
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.config.key_id.clone());
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let value = jsonwebtoken::encode(
            &header,
            &ProviderClaims {
                iss: &self.config.team_id,
                iat,
            },
            &self.key,
        )
        .map_err(|e| ApnsError::Key(e.to_string()))?;
        *cached = Some(ProviderToken {
            value: value.clone(),
            fresh_until: Instant::now() + Duration::from_secs(50 * 60),
        });
        Ok(value)
    }

    /// Sends one alert to one device; `topic` is the app's bundle id.
    pub async fn send(
        &self,
        device_token: &str,
        topic: &str,
        n: &Notification,
    ) -> Result<Outcome, ApnsError> {
        let url = format!(
            "{}/3/device/{device_token}",
            self.config.base_url.trim_end_matches('/')
        );
        let mut body = serde_json::json!({
            "aps": {
                "alert": {"title": n.title, "body": n.body},
                "badge": n.badge,
                "sound": "default",
                "thread-id": n.collapse_key,
            }
        });
        for (key, value) in &n.data {
            if key != "aps" {
                body[key] = serde_json::Value::String(value.clone());
            }
        }
        let mut refreshed = false;
        loop {
            let token = self.provider_token(refreshed)?;
            let response = self
                .http
                .post(&url)
                .header("authorization", format!("bearer {token}"))
                .header("apns-topic", topic)
                .header("apns-push-type", "alert")
                .header("apns-priority", "10")
                .header("apns-collapse-id", collapse_id(&n.collapse_key))
                .json(&body)
                .send()
                .await;
            let response = match response {
                Ok(r) => r,
                Err(e) => return crate::transport_retry(&e).ok_or(e.into()),
            };
            let status = response.status().as_u16();
            let apns_id = response
                .headers()
                .get("apns-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let after = crate::retry_after(response.headers());
            if status == 200 {
                return Ok(Outcome::Sent { id: apns_id });
            }
            let text = response.text().await.unwrap_or_default();
            let error: ApnsErrorBody = serde_json::from_str(&text).unwrap_or_default();
            let reason = format!("{status} {}", error.reason);
            if status == 403 && error.reason == "ExpiredProviderToken" && !refreshed {
                refreshed = true;
                continue;
            }
            return Ok(match (status, error.reason.as_str()) {
                (410, _) | (400, "BadDeviceToken") | (400, "DeviceTokenNotForTopic") => {
                    Outcome::TokenGone { reason }
                }
                (429, _) | (500..=599, _) => Outcome::Retry { after, reason },
                _ => Outcome::Rejected { reason },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn collapse_ids_fit_apples_limit_on_a_char_boundary() {
        assert_eq!(super::collapse_id("thread-1"), "thread-1");
        let long = "đ".repeat(40);
        let cut = super::collapse_id(&long);
        assert!(cut.len() <= 64 && long.starts_with(cut));
    }
}

//! FCM HTTP v1: `POST {base}/v1/projects/{project}/messages:send`, with an
//! OAuth2 access token obtained from a service account (JWT bearer grant,
//! RS256, RFC 7523) and cached until shortly before it expires.
//!
//! Errors follow Firebase's documented mapping: `UNREGISTERED` (404) and a
//! token-related `INVALID_ARGUMENT` (400) mean the token is dead; 429 and
//! 5xx mean retry (honouring `Retry-After`); other 4xx mean the payload is
//! wrong and retrying would not help. A 401 refreshes the access token once.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::{Notification, Outcome};

pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error("service account: {0}")]
    Credentials(String),
    #[error("OAuth2 token endpoint: {0}")]
    Token(String),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
}

/// The fields of a Google service-account JSON file that matter here.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key: String,
    pub token_uri: String,
}

impl ServiceAccount {
    pub fn from_json(json: &str) -> Result<ServiceAccount, FcmError> {
        serde_json::from_str(json).map_err(|e| FcmError::Credentials(e.to_string()))
    }
}

#[derive(Debug, Clone)]
pub struct FcmConfig {
    /// `https://fcm.googleapis.com` in production.
    pub base_url: String,
    pub account: ServiceAccount,
    pub timeout: Duration,
}

struct AccessToken {
    value: String,
    valid_until: Instant,
}

pub struct FcmClient {
    config: FcmConfig,
    key: jsonwebtoken::EncodingKey,
    http: reqwest::Client,
    /// Held across a refresh, so a burst of sends fetches one token, not
    /// one each.
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

#[derive(serde::Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct SendResponse {
    name: String,
}

#[derive(Deserialize, Default)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "errorCode", default)]
    error_code: Option<String>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl FcmClient {
    pub fn new(config: FcmConfig) -> Result<FcmClient, FcmError> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(config.account.private_key.as_bytes())
            .map_err(|e| FcmError::Credentials(format!("private_key: {e}")))?;
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(FcmClient {
            config,
            key,
            http,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// `rejected`: the token the provider just refused, to be replaced
    /// (unless another task already did).
    async fn access_token(&self, rejected: Option<&str>) -> Result<String, FcmError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = &*cached
            && token.valid_until > Instant::now()
            && Some(token.value.as_str()) != rejected
        {
            return Ok(token.value.clone());
        }
        let account = &self.config.account;
        let iat = now_secs();
        let assertion = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &Assertion {
                iss: &account.client_email,
                scope: SCOPE,
                aud: &account.token_uri,
                iat,
                exp: iat + 3600,
            },
            &self.key,
        )
        .map_err(|e| FcmError::Credentials(e.to_string()))?;
        let response = self
            .http
            .post(&account.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(FcmError::Token(format!("{status}: {body}")));
        }
        let token: TokenResponse = response.json().await?;
        // Refresh a minute early: a token must not expire in flight.
        let valid_for = Duration::from_secs(token.expires_in.saturating_sub(60));
        *cached = Some(AccessToken {
            value: token.access_token.clone(),
            valid_until: Instant::now() + valid_for,
        });
        Ok(token.access_token)
    }

    fn message(device_token: &str, n: &Notification) -> serde_json::Value {
        let data: serde_json::Map<String, serde_json::Value> = n
            .data
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "message": {
                "token": device_token,
                "notification": {"title": n.title, "body": n.body},
                "data": data,
                "android": {
                    "collapse_key": n.collapse_key,
                    "notification": {"tag": n.collapse_key, "notification_count": n.badge}
                },
                "apns": {
                    "headers": {"apns-collapse-id": n.collapse_key},
                    "payload": {"aps": {"badge": n.badge}}
                }
            }
        })
    }

    /// Sends one notification to one device token.
    pub async fn send(&self, device_token: &str, n: &Notification) -> Result<Outcome, FcmError> {
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.config.base_url.trim_end_matches('/'),
            self.config.account.project_id
        );
        let body = FcmClient::message(device_token, n);
        let mut rejected: Option<String> = None;
        loop {
            let token = self.access_token(rejected.as_deref()).await?;
            let response = self
                .http
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await;
            let response = match response {
                Ok(r) => r,
                Err(e) => return crate::transport_retry(&e).ok_or(e.into()),
            };
            let status = response.status();
            if status.is_success() {
                let sent: SendResponse = response.json().await?;
                return Ok(Outcome::Sent { id: sent.name });
            }
            if status == reqwest::StatusCode::UNAUTHORIZED && rejected.is_none() {
                rejected = Some(token);
                continue;
            }
            let after = crate::retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            let error = serde_json::from_str::<ErrorEnvelope>(&text)
                .map(|e| e.error)
                .unwrap_or_default();
            let code = error
                .details
                .iter()
                .find_map(|d| d.error_code.clone())
                .unwrap_or(error.status.clone());
            let reason = format!("{status} {code}: {}", error.message);
            return Ok(match (status.as_u16(), code.as_str()) {
                (_, "UNREGISTERED") | (404, _) => Outcome::TokenGone { reason },
                (400, "INVALID_ARGUMENT")
                    if error
                        .message
                        .to_ascii_lowercase()
                        .contains("registration token") =>
                {
                    Outcome::TokenGone { reason }
                }
                (429, _) | (500..=599, _) => Outcome::Retry { after, reason },
                _ => Outcome::Rejected { reason },
            });
        }
    }
}

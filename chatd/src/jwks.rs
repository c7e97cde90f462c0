//! Keeps the token verifier's JWKS current, so that the identity provider
//! can rotate its signing keys without a restart of chat: the set
//! (`auth.jwks_file` or `auth.jwks_url`) is read again every
//! `auth.jwks_refresh_secs`, and sooner when a token names a `kid` the
//! verifier does not know (a key published since the last read), at most
//! once per `auth.jwks_min_refresh_secs` so that forged `kid`s cannot make
//! us hammer the provider. A read that fails, or a set without a usable key, keeps
//! the current keys.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context, bail};
use chat_core::auth::{AuthConfig, TokenVerifier, parse_jwks};
use jsonwebtoken::jwk::JwkSet;
use tokio::time::Instant;

/// A JWKS larger than this is not a key set.
const MAX_BYTES: usize = 1 << 20;

/// Where the key set lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Url(String),
}

impl Source {
    pub fn from_config(auth: &AuthConfig) -> anyhow::Result<Option<Source>> {
        match (&auth.jwks_file, &auth.jwks_url) {
            (Some(_), Some(_)) => bail!("set auth.jwks_file or auth.jwks_url, not both"),
            (Some(path), None) => Ok(Some(Source::File(path.clone()))),
            (None, Some(url)) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    bail!("auth.jwks_url must be an http(s) URL");
                }
                Ok(Some(Source::Url(url.clone())))
            }
            (None, None) => Ok(None),
        }
    }

    pub async fn load(&self, http: &reqwest::Client) -> anyhow::Result<JwkSet> {
        let (bytes, name) = match self {
            Source::File(path) => (
                tokio::fs::read(path)
                    .await
                    .with_context(|| format!("reading {}", path.display()))?,
                path.display().to_string(),
            ),
            Source::Url(url) => (fetch(http, url).await?, url.clone()),
        };
        if bytes.len() > MAX_BYTES {
            bail!("the JWKS at {name} is over {MAX_BYTES} bytes");
        }
        Ok(parse_jwks(&bytes, &name)?)
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<u8>> {
    let mut response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("fetching {url}"))?
        .error_for_status()?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BYTES {
            bail!("the JWKS at {url} is over {MAX_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a plain HTTP client builds")
}

/// Reads the set again periodically and on `kid` misses, for as long as
/// the verifier lives.
pub fn keep_fresh(verifier: &Arc<TokenVerifier>, source: Source, auth: &AuthConfig) {
    let verifier: Weak<TokenVerifier> = Arc::downgrade(verifier);
    let min_interval = Duration::from_secs(auth.jwks_min_refresh_secs.max(1));
    let every = Duration::from_secs(auth.jwks_refresh_secs).max(min_interval);
    tokio::spawn(async move {
        let http = client();
        let mut last_read = Instant::now();
        loop {
            let Some(strong) = verifier.upgrade() else {
                return;
            };
            let miss = tokio::select! {
                _ = tokio::time::sleep_until(last_read + every) => false,
                _ = strong.unknown_kid_seen() => true,
            };
            drop(strong);
            if miss {
                tokio::time::sleep_until(last_read + min_interval).await;
            }
            let Some(strong) = verifier.upgrade() else {
                return;
            };
            last_read = Instant::now();
            refresh(&strong, &source, &http, miss).await;
        }
    });
}

async fn refresh(verifier: &TokenVerifier, source: &Source, http: &reqwest::Client, miss: bool) {
    let before = verifier.key_ids();
    let loaded = source.load(http).await;
    match loaded.and_then(|set| Ok(verifier.replace_jwks(&set)?)) {
        Ok(keys) => {
            let after = verifier.key_ids();
            if after != before {
                tracing::info!(keys, ?after, ?before, miss, "signing keys rotated");
            } else {
                tracing::debug!(keys, miss, "signing keys unchanged");
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading the JWKS failed; the current keys stay"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_at_most() {
        let auth = |file: Option<&str>, url: Option<&str>| AuthConfig {
            jwks_file: file.map(PathBuf::from),
            jwks_url: url.map(str::to_owned),
            ..AuthConfig::default()
        };
        assert_eq!(Source::from_config(&auth(None, None)).unwrap(), None);
        assert_eq!(
            Source::from_config(&auth(Some("k.json"), None)).unwrap(),
            Some(Source::File("k.json".into()))
        );
        assert_eq!(
            Source::from_config(&auth(None, Some("https://id.example/jwks"))).unwrap(),
            Some(Source::Url("https://id.example/jwks".into()))
        );
        assert!(Source::from_config(&auth(Some("k.json"), Some("https://x/"))).is_err());
        assert!(Source::from_config(&auth(None, Some("file:///etc/passwd"))).is_err());
    }
}

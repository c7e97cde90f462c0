//! JWT verification for MQTT CONNECT and REST, and minting of development
//! tokens.
//!
//! Only the algorithms listed in the configuration are accepted, and each
//! algorithm is tied to one kind of key, so `alg: none` and key confusion
//! (an RS256 public key used as an HS256 secret) fail.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Buyer,
    Seller,
    Admin,
    /// The marketplace's own backend, for the internal API.
    Platform,
    /// Raw broker load tests: MQTT under `bench/` only, nothing else. Refused
    /// unless the deployment enables it (`mqtt.allow_loadtest`).
    Loadtest,
    /// A persistence worker (`chatd persist`): takes the inbound messages
    /// the gateways hand over and publishes the processed events. Never a
    /// person's token.
    Service,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "buyer" => Some(Role::Buyer),
            "seller" => Some(Role::Seller),
            "admin" => Some(Role::Admin),
            "platform" => Some(Role::Platform),
            "loadtest" => Some(Role::Loadtest),
            "service" => Some(Role::Service),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

/// Authentication settings (section `[auth]` of the configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    /// Accepted algorithms, among HS256, RS256 and ES256.
    pub algorithms: Vec<String>,
    /// HS256 shared secret. When unset and HS256 is accepted, a random
    /// secret is created in the data directory (development only).
    pub hs256_secret: Option<String>,
    /// PEM file with the RS256 or ES256 public key.
    pub public_key_pem: Option<PathBuf>,
    /// JWKS file with RS256/ES256 public keys, chosen by `kid`.
    pub jwks_file: Option<PathBuf>,
    /// URL of the identity provider's JWKS (e.g.
    /// `https://id.example.vn/.well-known/jwks.json`), instead of a file.
    pub jwks_url: Option<String>,
    /// How often the JWKS (file or URL) is read again, so that a rotated
    /// key is taken without a restart. A token whose `kid` is unknown
    /// brings the next read forward, at most every `jwks_min_refresh_secs`.
    pub jwks_refresh_secs: u64,
    /// The soonest a token with an unknown `kid` reads the JWKS again after
    /// the last read (forged `kid`s must not make us hammer the provider).
    pub jwks_min_refresh_secs: u64,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "chatd-dev".into(),
            audience: "chat".into(),
            algorithms: vec!["HS256".into()],
            hs256_secret: None,
            public_key_pem: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 30,
            leeway_secs: 5,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
    #[error("algorithm {0} not accepted")]
    Algorithm(String),
    #[error("user id `{0}` is not valid")]
    BadSubject(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("algorithm `{0}` is not supported (use HS256, RS256 or ES256)")]
    UnknownAlgorithm(String),
    #[error("HS256 is accepted but no secret is configured")]
    NoSecret,
    #[error("{0} is accepted but no public key (PEM or JWKS) is configured")]
    NoPublicKey(String),
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad key material in {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

type KidKeys = HashMap<String, (Algorithm, DecodingKey)>;

/// Verifies tokens against the configured keys.
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    leeway: u64,
    /// The accepted algorithms.
    algorithms: Vec<Algorithm>,
    /// Key without `kid`, per algorithm.
    default_keys: HashMap<Algorithm, DecodingKey>,
    /// JWKS keys by `kid`, with their algorithm; replaced whole when the
    /// identity provider rotates its keys.
    kid_keys: RwLock<Arc<KidKeys>>,
    /// Woken by a token whose `kid` is not in the set (a key published
    /// since the last read, or a forgery: the reader rate-limits).
    unknown_kid: Notify,
}

fn parse_algorithm(name: &str) -> Result<Algorithm, KeyError> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(KeyError::UnknownAlgorithm(other.to_owned())),
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.clone(),
        source,
    })
}

impl TokenVerifier {
    /// Builds a verifier. `hs256_secret` overrides `config.hs256_secret`
    /// (the development secret from the data directory). Reads
    /// `config.jwks_file`; a JWKS from `jwks_url` is fetched by the caller
    /// and given to [`TokenVerifier::with_jwks`].
    pub fn new(config: &AuthConfig, hs256_secret: Option<&str>) -> Result<Self, KeyError> {
        let jwks = match &config.jwks_file {
            Some(path) => Some(parse_jwks(&read(path)?, &path.display().to_string())?),
            None => None,
        };
        Self::with_jwks(config, hs256_secret, jwks.as_ref())
    }

    /// Builds a verifier with this JWKS (read from wherever it lives).
    pub fn with_jwks(
        config: &AuthConfig,
        hs256_secret: Option<&str>,
        jwks: Option<&JwkSet>,
    ) -> Result<Self, KeyError> {
        let mut default_keys = HashMap::new();
        let algorithms = config
            .algorithms
            .iter()
            .map(|name| parse_algorithm(name))
            .collect::<Result<Vec<_>, _>>()?;
        let kid_keys = jwks
            .map(|set| kid_keys(set, &algorithms))
            .unwrap_or_default();
        for (name, &alg) in config.algorithms.iter().zip(&algorithms) {
            match alg {
                Algorithm::HS256 => {
                    let secret = hs256_secret
                        .or(config.hs256_secret.as_deref())
                        .ok_or(KeyError::NoSecret)?;
                    default_keys.insert(alg, DecodingKey::from_secret(secret.as_bytes()));
                }
                _ => {
                    let mut found = false;
                    if let Some(path) = &config.public_key_pem {
                        let pem = read(path)?;
                        let key = match alg {
                            Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                            _ => DecodingKey::from_ec_pem(&pem),
                        };
                        if let Ok(key) = key {
                            default_keys.insert(alg, key);
                            found = true;
                        }
                    }
                    found |= kid_keys.values().any(|(key_alg, _)| *key_alg == alg);
                    if !found {
                        return Err(KeyError::NoPublicKey(name.clone()));
                    }
                }
            }
        }
        Ok(TokenVerifier {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway_secs,
            algorithms,
            default_keys,
            kid_keys: RwLock::new(Arc::new(kid_keys)),
            unknown_kid: Notify::new(),
        })
    }

    /// Replaces the JWKS keys with those of `set` (a rotation: keys left
    /// out are revoked at once). A set with no usable key is refused and
    /// the current keys stay: an identity provider answering `{"keys":[]}`
    /// by mistake must not lock every user out. Returns the number of keys.
    pub fn replace_jwks(&self, set: &JwkSet) -> Result<usize, KeyError> {
        let keys = kid_keys(set, &self.algorithms);
        if keys.is_empty() {
            return Err(KeyError::NoPublicKey("the new JWKS".into()));
        }
        let count = keys.len();
        *self.kid_keys.write() = Arc::new(keys);
        Ok(count)
    }

    /// The `kid`s currently trusted, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.kid_keys.read().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Resolves when a token named a `kid` the verifier does not know.
    pub async fn unknown_kid_seen(&self) {
        self.unknown_kid.notified().await
    }

    /// Clock skew tolerated on `exp`, for sessions that outlive a check.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        // Header parsing refuses `alg: none` (no such `Algorithm`).
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let kid_keys = self.kid_keys.read().clone();
        let key = match header.kid.as_deref().map(|kid| kid_keys.get(kid)) {
            Some(Some((alg, key))) if *alg == header.alg => key,
            Some(Some(_)) => return Err(AuthError::Algorithm(format!("{:?}", header.alg))),
            found => {
                if found.is_some() && header.alg != Algorithm::HS256 {
                    self.unknown_kid.notify_one();
                }
                self.default_keys
                    .get(&header.alg)
                    .ok_or_else(|| AuthError::Algorithm(format!("{:?}", header.alg)))?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        })?;
        if !chat_protocol::topics::is_valid_id(&data.claims.sub) {
            return Err(AuthError::BadSubject(data.claims.sub));
        }
        Ok(data.claims)
    }
}

/// Parses a JWKS document; `source` names it in the error.
pub fn parse_jwks(bytes: &[u8], source: &str) -> Result<JwkSet, KeyError> {
    serde_json::from_slice(bytes).map_err(|e| KeyError::Parse {
        path: PathBuf::from(source),
        reason: e.to_string(),
    })
}

/// The keys of `set` usable with the accepted algorithms, by `kid`. Each
/// key is bound to the algorithm it declares, so a token cannot choose.
fn kid_keys(set: &JwkSet, accepted: &[Algorithm]) -> KidKeys {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(alg) = jwk
            .common
            .key_algorithm
            .and_then(|a| parse_algorithm(&format!("{a:?}")).ok())
            .filter(|alg| *alg != Algorithm::HS256 && accepted.contains(alg))
        else {
            continue;
        };
        if let (Some(kid), Ok(key)) = (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) {
            keys.insert(kid.clone(), (alg, key));
        }
    }
    keys
}

/// Mints an HS256 token (development and tests).
pub fn mint_hs256(secret: &str, claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 encoding cannot fail")
}

/// Claims for a token valid from now for `ttl_secs`.
pub fn claims_for(config: &AuthConfig, user: &str, role: Role, ttl_secs: i64) -> Claims {
    let now = crate::now_millis() / 1000;
    Claims {
        sub: user.to_owned(),
        role,
        iss: config.issuer.clone(),
        aud: config.audience.clone(),
        exp: now + ttl_secs,
        nbf: Some(now),
        iat: Some(now),
    }
}

/// Whether an MQTT client id belongs to the token's user: `<sub>` or
/// `<sub>:<device>`. Keeps one user from taking over another's session.
pub fn client_id_belongs_to(client_id: &str, sub: &str) -> bool {
    match client_id.strip_prefix(sub) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix(':')
            .is_some_and(|device| !device.is_empty() && chat_protocol::topics::is_valid_id(device)),
        None => false,
    }
}

/// The user id encoded in a client id that passed [`client_id_belongs_to`].
pub fn user_of_client_id(client_id: &str) -> &str {
    client_id.split(':').next().unwrap_or(client_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig::default()
    }

    #[test]
    fn accepts_a_valid_token() {
        let v = TokenVerifier::new(&config(), Some("s3cret")).unwrap();
        let token = mint_hs256("s3cret", &claims_for(&config(), "u1", Role::Buyer, 60));
        let claims = v.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("u1", Role::Buyer));
    }

    #[test]
    fn refuses_bad_signature_expiry_audience_issuer_and_none() {
        let v = TokenVerifier::new(&config(), Some("s3cret")).unwrap();
        let good = claims_for(&config(), "u1", Role::Buyer, 60);
        assert!(matches!(
            v.verify(&mint_hs256("other", &good)),
            Err(AuthError::Invalid(_))
        ));
        let mut expired = good.clone();
        expired.exp -= 3600;
        assert_eq!(
            v.verify(&mint_hs256("s3cret", &expired)),
            Err(AuthError::Expired)
        );
        let mut aud = good.clone();
        aud.aud = "elsewhere".into();
        assert!(v.verify(&mint_hs256("s3cret", &aud)).is_err());
        let mut iss = good.clone();
        iss.iss = "evil".into();
        assert!(v.verify(&mint_hs256("s3cret", &iss)).is_err());
        let mut future = good.clone();
        future.nbf = Some(good.exp);
        assert!(v.verify(&mint_hs256("s3cret", &future)).is_err());
        // alg: none, hand-made: header {"alg":"none","typ":"JWT"}.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            mint_hs256("s3cret", &good).split('.').nth(1).unwrap()
        );
        assert!(v.verify(&none).is_err());
        assert_eq!(v.verify(""), Err(AuthError::Missing));
    }

    #[test]
    fn client_ids_must_belong_to_the_subject() {
        assert!(client_id_belongs_to("u1", "u1"));
        assert!(client_id_belongs_to("u1:phone", "u1"));
        assert!(!client_id_belongs_to("u12", "u1"));
        assert!(!client_id_belongs_to("u1:", "u1"));
        assert!(!client_id_belongs_to("u2", "u1"));
        assert!(!client_id_belongs_to("u1:a:b", "u1"));
        assert_eq!(user_of_client_id("u1:phone"), "u1");
    }

    fn testdata(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name)
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Claims) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn es256_key() -> EncodingKey {
        EncodingKey::from_ec_pem(&std::fs::read(testdata("es256-private.pem")).unwrap()).unwrap()
    }

    fn rs256_key() -> EncodingKey {
        EncodingKey::from_rsa_pem(&std::fs::read(testdata("rs256-private.pem")).unwrap()).unwrap()
    }

    #[test]
    fn public_keys_from_pem_verify_es256_and_rs256() {
        let claims = claims_for(&config(), "u1", Role::Seller, 60);
        for (alg, name, pem, key) in [
            (Algorithm::ES256, "ES256", "es256-public.pem", es256_key()),
            (Algorithm::RS256, "RS256", "rs256-public.pem", rs256_key()),
        ] {
            let cfg = AuthConfig {
                algorithms: vec![name.into()],
                public_key_pem: Some(testdata(pem)),
                ..config()
            };
            let v = TokenVerifier::new(&cfg, None).unwrap();
            assert_eq!(v.verify(&sign(alg, None, &key, &claims)).unwrap().sub, "u1");
            // HS256 is not accepted by this deployment at all.
            assert!(matches!(
                v.verify(&mint_hs256("anything", &claims)),
                Err(AuthError::Algorithm(_))
            ));
        }
    }

    #[test]
    fn key_confusion_fails() {
        // The classic attack: sign HS256 with the server's *public* key as
        // the HMAC secret, hoping it is used as one.
        let public_pem = std::fs::read_to_string(testdata("rs256-public.pem")).unwrap();
        let claims = claims_for(&config(), "u1", Role::Admin, 60);
        let forged = mint_hs256(&public_pem, &claims);
        let rs_only = AuthConfig {
            algorithms: vec!["RS256".into()],
            public_key_pem: Some(testdata("rs256-public.pem")),
            ..config()
        };
        assert!(
            TokenVerifier::new(&rs_only, None)
                .unwrap()
                .verify(&forged)
                .is_err()
        );
        let both = AuthConfig {
            algorithms: vec!["RS256".into(), "HS256".into()],
            ..rs_only
        };
        let v = TokenVerifier::new(&both, Some("the-real-secret")).unwrap();
        assert!(v.verify(&forged).is_err());
        assert!(v.verify(&mint_hs256("the-real-secret", &claims)).is_ok());
    }

    #[test]
    fn jwks_keys_are_chosen_by_kid_and_bound_to_their_algorithm() {
        let cfg = AuthConfig {
            algorithms: vec!["ES256".into(), "RS256".into()],
            jwks_file: Some(testdata("jwks.json")),
            ..config()
        };
        let v = TokenVerifier::new(&cfg, None).unwrap();
        let claims = claims_for(&config(), "u1", Role::Buyer, 60);
        assert!(
            v.verify(&sign(Algorithm::ES256, Some("ec-1"), &es256_key(), &claims))
                .is_ok()
        );
        assert!(
            v.verify(&sign(
                Algorithm::RS256,
                Some("rsa-1"),
                &rs256_key(),
                &claims
            ))
            .is_ok()
        );
        // A kid naming a key of another algorithm is refused.
        assert!(
            v.verify(&sign(Algorithm::RS256, Some("ec-1"), &rs256_key(), &claims))
                .is_err()
        );
        // Unknown kid and no default key for the algorithm.
        assert!(
            v.verify(&sign(Algorithm::ES256, Some("nope"), &es256_key(), &claims))
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_rotated_jwks_replaces_the_keys_and_an_empty_one_is_refused() {
        let cfg = AuthConfig {
            algorithms: vec!["ES256".into(), "RS256".into()],
            jwks_file: Some(testdata("jwks.json")),
            ..config()
        };
        let v = TokenVerifier::new(&cfg, None).unwrap();
        let claims = claims_for(&config(), "u1", Role::Buyer, 60);
        let old = sign(Algorithm::RS256, Some("rsa-1"), &rs256_key(), &claims);
        let new_key =
            EncodingKey::from_rsa_pem(&std::fs::read(testdata("rs256-2-private.pem")).unwrap())
                .unwrap();
        let new = sign(Algorithm::RS256, Some("rs-2"), &new_key, &claims);
        assert!(v.verify(&old).is_ok());
        assert!(v.verify(&new).is_err());
        // The unknown kid asked for a fresh read.
        tokio::time::timeout(std::time::Duration::from_secs(1), v.unknown_kid_seen())
            .await
            .expect("an unknown kid wakes the reader");

        let rotated = parse_jwks(
            &std::fs::read(testdata("jwks-rotated.json")).unwrap(),
            "rotated",
        )
        .unwrap();
        assert_eq!(v.replace_jwks(&rotated).unwrap(), 1);
        assert_eq!(v.key_ids(), ["rs-2"]);
        assert!(v.verify(&new).is_ok());
        assert!(v.verify(&old).is_err(), "a key left out is revoked");

        let empty = parse_jwks(br#"{"keys": []}"#, "empty").unwrap();
        assert!(v.replace_jwks(&empty).is_err());
        assert!(
            v.verify(&new).is_ok(),
            "an empty set keeps the current keys"
        );
        assert!(parse_jwks(b"<html>", "garbage").is_err());
    }

    #[test]
    fn misconfiguration_is_reported() {
        let no_key = AuthConfig {
            algorithms: vec!["ES256".into()],
            ..config()
        };
        assert!(matches!(
            TokenVerifier::new(&no_key, None),
            Err(KeyError::NoPublicKey(_))
        ));
        assert!(matches!(
            TokenVerifier::new(&config(), None),
            Err(KeyError::NoSecret)
        ));
        let unknown = AuthConfig {
            algorithms: vec!["none".into()],
            ..config()
        };
        assert!(matches!(
            TokenVerifier::new(&unknown, None),
            Err(KeyError::UnknownAlgorithm(_))
        ));
    }
}

//! AWS Signature Version 4, as much as S3 needs: header-signed requests
//! (the server's own PUT/GET/DELETE) and presigned URLs (the client's
//! upload, the short-lived download). Pure: time is passed in.
//!
//! Presigned uploads sign `content-length` and `content-type` along with
//! `host`, so S3 refuses a body of another size or type than the one the
//! server allowed (`SignatureDoesNotMatch`).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Credentials and where they apply.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

/// A UTC instant as SigV4 wants it: `20261126T183000Z` and `20261126`.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub datetime: String,
    pub date: String,
}

impl Stamp {
    pub fn at_unix(secs: i64) -> Stamp {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let civil = chat_core::calendar::date_of_days(days);
        let date = format!("{:04}{:02}{:02}", civil.year, civil.month, civil.day);
        Stamp {
            datetime: format!(
                "{date}T{:02}{:02}{:02}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            ),
            date,
        }
    }

    pub fn now() -> Stamp {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Stamp::at_unix(secs)
    }
}

/// RFC 3986 encoding as SigV4 wants it; `/` kept in paths.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn signature(creds: &Credentials, stamp: &Stamp, string_to_sign: &str) -> String {
    let k_date = hmac(format!("AWS4{}", creds.secret_key).as_bytes(), &stamp.date);
    let k_region = hmac(&k_date, &creds.region);
    let k_service = hmac(&k_region, "s3");
    let k_signing = hmac(&k_service, "aws4_request");
    hex::encode(hmac(&k_signing, string_to_sign))
}

fn scope(creds: &Credentials, stamp: &Stamp) -> String {
    format!("{}/{}/s3/aws4_request", stamp.date, creds.region)
}

/// Canonical request → string to sign → signature.
#[allow(clippy::too_many_arguments)]
fn sign(
    creds: &Credentials,
    stamp: &Stamp,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    payload_hash: &str,
) -> (String, String) {
    let mut query: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{method}\n{}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        uri_encode(path, true)
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{}\n{}",
        stamp.datetime,
        scope(creds, stamp),
        sha256_hex(canonical.as_bytes())
    );
    (signature(creds, stamp, &to_sign), signed_headers)
}

/// Where a request goes: `endpoint` (`http://127.0.0.1:9400`), its
/// `host` header (`127.0.0.1:9400`) and the path (`/bucket/key`).
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub endpoint: &'a str,
    pub host: &'a str,
    pub path: &'a str,
}

/// A presigned URL: `{endpoint}{path}?X-Amz-…`. `headers` (besides
/// `host`) must be sent exactly so by the client.
pub fn presign(
    creds: &Credentials,
    stamp: &Stamp,
    method: &str,
    target: &Target<'_>,
    expires_secs: u64,
    headers: &[(String, String)],
) -> String {
    let (endpoint, host, path) = (target.endpoint, target.host, target.path);
    let mut all_headers = vec![("host".to_owned(), host.to_owned())];
    all_headers.extend(headers.iter().cloned());
    let mut names: Vec<String> = all_headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    names.sort();
    let mut query = vec![
        ("X-Amz-Algorithm".to_owned(), "AWS4-HMAC-SHA256".to_owned()),
        (
            "X-Amz-Credential".to_owned(),
            format!("{}/{}", creds.access_key, scope(creds, stamp)),
        ),
        ("X-Amz-Date".to_owned(), stamp.datetime.clone()),
        ("X-Amz-Expires".to_owned(), expires_secs.to_string()),
        ("X-Amz-SignedHeaders".to_owned(), names.join(";")),
    ];
    let (signature, _) = sign(
        creds,
        stamp,
        method,
        path,
        &query,
        &all_headers,
        "UNSIGNED-PAYLOAD",
    );
    query.push(("X-Amz-Signature".to_owned(), signature));
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
        .collect();
    format!(
        "{}{}?{}",
        endpoint.trim_end_matches('/'),
        uri_encode(path, true),
        query.join("&")
    )
}

/// Headers for a request the server makes itself (`Authorization`,
/// `x-amz-date`, `x-amz-content-sha256`), given the other signed headers.
pub fn authorization_headers(
    creds: &Credentials,
    stamp: &Stamp,
    method: &str,
    host: &str,
    path: &str,
    payload: &[u8],
) -> Vec<(String, String)> {
    let payload_hash = sha256_hex(payload);
    let headers = vec![
        ("host".to_owned(), host.to_owned()),
        ("x-amz-content-sha256".to_owned(), payload_hash.clone()),
        ("x-amz-date".to_owned(), stamp.datetime.clone()),
    ];
    let (signature, signed) = sign(creds, stamp, method, path, &[], &headers, &payload_hash);
    vec![
        (
            "authorization".to_owned(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={signed}, Signature={signature}",
                creds.access_key,
                scope(creds, stamp)
            ),
        ),
        ("x-amz-content-sha256".to_owned(), payload_hash),
        ("x-amz-date".to_owned(), stamp.datetime.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example: "GET Object" with a presigned URL
    /// (S3 docs, "Authenticating Requests: Using Query Parameters").
    #[test]
    fn matches_the_aws_documentation_example() {
        let creds = Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        };
        let stamp = Stamp {
            datetime: "20130524T000000Z".into(),
            date: "20130524".into(),
        };
        let url = presign(
            &creds,
            &stamp,
            "GET",
            &Target {
                endpoint: "https://examplebucket.s3.amazonaws.com",
                host: "examplebucket.s3.amazonaws.com",
                path: "/test.txt",
            },
            86400,
            &[],
        );
        assert!(
            url.ends_with(
                "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
            ),
            "{url}"
        );
    }

    #[test]
    fn stamps_are_utc_calendar_times() {
        let s = Stamp::at_unix(1_795_717_800); // 2026-11-26T18:30:00Z
        assert_eq!(s.datetime, "20261126T183000Z");
        assert_eq!(s.date, "20261126");
    }
}

//! CORS for the REST facade (`cors_allowed_origins`): lets a chat widget
//! served from another origin (a marketplace's pages) call the REST API and
//! PUT images to the local backend's signed upload URLs. Off by default:
//! no CORS headers at all, same-origin only.

use std::time::Duration;

use anyhow::bail;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer.
const MAX_AGE: Duration = Duration::from_secs(600);

/// Request headers a page may send: bearer tokens, JSON bodies, the
/// language of error texts, and the headers an upload slot signs
/// (`content-type`, and `content-length`, which browsers set themselves and
/// never list in a preflight; allowed for clients that do).
const ALLOWED_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT_LANGUAGE,
    header::CONTENT_LENGTH,
];

/// The layer for the configured origins; `None` when none are configured.
/// An entry that is not an origin is a configuration error.
pub fn layer(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    let allow_origin = match origins {
        [] => return Ok(None),
        [only] if only.trim() == "*" => AllowOrigin::any(),
        _ => {
            let mut list = Vec::with_capacity(origins.len());
            for entry in origins {
                match parse_origin(entry) {
                    Ok(origin) => list.push(
                        HeaderValue::from_str(&origin).expect("an origin is a valid header value"),
                    ),
                    Err(why) => bail!(
                        "cors_allowed_origins: `{entry}` is not an origin: {why} (expected scheme://host[:port] without a path, e.g. https://shop.example.vn, or a single \"*\")"
                    ),
                }
            }
            AllowOrigin::list(list)
        }
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers(ALLOWED_HEADERS)
            // Clients read `Retry-After` on 429.
            .expose_headers([header::RETRY_AFTER, header::ETAG])
            .max_age(MAX_AGE),
        // No credentials: tokens travel in the Authorization header, and
        // no cookie is ever involved.
    ))
}

/// `scheme://host[:port]` as browsers send it in `Origin` (lower case, no
/// default port, no trailing slash): the normalised entry, or why not.
fn parse_origin(entry: &str) -> Result<String, &'static str> {
    let entry = entry.trim();
    if entry == "*" {
        return Err("`*` must be the only entry");
    }
    let Some((scheme, rest)) = entry.split_once("://") else {
        return Err("no scheme");
    };
    let scheme = scheme.to_ascii_lowercase();
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err("bad scheme");
    }
    if rest.is_empty() {
        return Err("no host");
    }
    if rest.contains(['/', '?', '#']) {
        return Err("an origin has no path, query or fragment (not even a trailing `/`)");
    }
    if rest.contains('@') {
        return Err("an origin has no user name or password");
    }
    // `[v6]:port`, `host:port` or `host`.
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((address, after)) = v6.split_once(']') else {
            return Err("unclosed `[`");
        };
        if address.is_empty() || !address.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err("bad IPv6 address");
        }
        match after {
            "" => (&rest[..address.len() + 2], None),
            _ => match after.strip_prefix(':') {
                Some(port) => (&rest[..address.len() + 2], Some(port)),
                None => return Err("bad port"),
            },
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err("no host");
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err("bad host name (letters, digits, `-` and `.`; punycode for others)");
    }
    let host = host.to_ascii_lowercase();
    match port {
        None => Ok(format!("{scheme}://{host}")),
        Some(port) => {
            let number: u16 = match port.parse() {
                Ok(n) if n > 0 && port.chars().all(|c| c.is_ascii_digit()) => n,
                _ => return Err("bad port"),
            };
            if (scheme == "http" && number == 80) || (scheme == "https" && number == 443) {
                return Err("browsers leave the default port out of Origin; drop it");
            }
            Ok(format!("{scheme}://{host}:{number}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_validated_and_normalised() {
        let ok = [
            ("https://shop.example.vn", "https://shop.example.vn"),
            ("http://shop.test", "http://shop.test"),
            ("http://localhost:5173", "http://localhost:5173"),
            ("HTTPS://Shop.Example.VN", "https://shop.example.vn"),
            (" https://shop.example.vn ", "https://shop.example.vn"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:3000", "http://[::1]:3000"),
            ("capacitor://localhost", "capacitor://localhost"),
        ];
        for (entry, origin) in ok {
            assert_eq!(parse_origin(entry).as_deref(), Ok(origin), "{entry}");
        }
        let bad = [
            "shop.example.vn",
            "https://",
            "https://shop.example.vn/",
            "https://shop.example.vn/chat",
            "https://shop.example.vn?x=1",
            "https://shop.example.vn#x",
            "https://user@shop.example.vn",
            "https://shop.example.vn:",
            "https://shop.example.vn:abc",
            "https://shop.example.vn:0",
            "https://shop.example.vn:70000",
            "https://shop.example.vn:443",
            "http://shop.example.vn:80",
            "https://shop example.vn",
            "https://*.example.vn",
            "https://[::1",
            "https://[zz]:1",
            "1http://shop.test",
            "null",
            "",
            "*",
        ];
        for entry in bad {
            assert!(parse_origin(entry).is_err(), "{entry} was accepted");
        }
    }

    #[test]
    fn layer_from_config() {
        assert!(layer(&[]).unwrap().is_none());
        assert!(layer(&["*".into()]).unwrap().is_some());
        assert!(
            layer(&[
                "https://a.example.vn".into(),
                "http://localhost:5173".into()
            ])
            .unwrap()
            .is_some()
        );
        let error = layer(&["https://shop.example.vn/".into()])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cors_allowed_origins")
                && error.contains("`https://shop.example.vn/`")
                && error.contains("scheme://host[:port]"),
            "{error}"
        );
        let error = layer(&["*".into(), "https://a.example.vn".into()])
            .unwrap_err()
            .to_string();
        assert!(error.contains("only entry"), "{error}");
    }
}

//! The opening handshake (RFC 6455 section 4.2): origin check, request validation,
//! subprotocol choice, and the 101 answer.

use pingora::http::{RequestHeader, ResponseHeader};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::config::{Origins, RouteConfig};
use super::deflate::{self, Agreed};

/// A handshake refused before any 101: the status, a short reason for the body, and the
/// `outcome` label it is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
    pub outcome: &'static str,
}

impl Refusal {
    pub fn new(status: u16, reason: impl Into<String>, outcome: &'static str) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
            outcome,
        }
    }
}

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn has_token(req: &RequestHeader, name: &str, token: &str) -> bool {
    req.headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the browser origin may open this route. Clients that send no Origin (not
/// browsers) are let through: the check protects browser sessions from other sites.
/// On a TLS listener (`https`) the same-host check also wants an https:// origin: a page
/// served over plain HTTP must not drive a wss:// session. (On a plain listener either
/// scheme passes: a TLS proxy in front may have served the page.)
pub fn origin_allowed(req: &RequestHeader, origins: &Origins, https: bool) -> bool {
    let Some(origin) = header(req, "origin") else {
        return true;
    };
    let origin = origin.to_ascii_lowercase();
    match origins {
        Origins::Any => true,
        Origins::List(list) => list.iter().any(|o| *o == origin),
        Origins::SameHost => {
            let host = header(req, "host").map(str::to_ascii_lowercase);
            let Some((scheme, origin_host)) = origin.split_once("://") else {
                return false;
            };
            (!https || scheme == "https") && host.is_some_and(|h| h == origin_host)
        }
    }
}

/// permessage-deflate for this connection, when the route allows it and the client offers
/// an acceptable variant: the agreement and the Sec-WebSocket-Extensions answer.
pub fn deflate(req: &RequestHeader, route: &RouteConfig) -> Option<(Agreed, String)> {
    if !route.compression.enabled {
        return None;
    }
    let offers = req
        .headers
        .get_all("sec-websocket-extensions")
        .iter()
        .filter_map(|v| v.to_str().ok());
    deflate::negotiate(offers, header(req, "user-agent"))
}

/// Validates the upgrade request and builds the 101; `Err` says why not.
pub fn accept(
    req: &RequestHeader,
    route: &RouteConfig,
) -> Result<(ResponseHeader, Option<String>), Refusal> {
    let bad = |why: &str| Refusal::new(400, why, "bad_handshake");
    if req.method != http::Method::GET {
        return Err(bad("a WebSocket handshake must be a GET"));
    }
    if !has_token(req, "upgrade", "websocket") || !has_token(req, "connection", "upgrade") {
        return Err(Refusal::new(
            426,
            "this path only speaks WebSocket (Upgrade: websocket)",
            "bad_handshake",
        ));
    }
    if header(req, "sec-websocket-version") != Some("13") {
        return Err(Refusal::new(
            426,
            "unsupported Sec-WebSocket-Version; this server speaks 13",
            "bad_handshake",
        ));
    }
    let key = header(req, "sec-websocket-key").ok_or_else(|| bad("missing Sec-WebSocket-Key"))?;
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(k) if k.len() == 16 => {}
        _ => return Err(bad("Sec-WebSocket-Key must be 16 bytes in base64")),
    }
    let offered: Vec<&str> = req
        .headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let chosen = route
        .subprotocols
        .iter()
        .find(|p| offered.contains(&p.as_str()))
        .cloned();
    let build = || -> pingora::Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(101, Some(4))?;
        resp.insert_header("upgrade", "websocket")?;
        resp.insert_header("connection", "Upgrade")?;
        resp.insert_header("sec-websocket-accept", derive_accept_key(key.as_bytes()))?;
        if let Some(p) = &chosen {
            resp.insert_header("sec-websocket-protocol", p.as_str())?;
        }
        Ok(resp)
    };
    let resp = build().map_err(|e| {
        Refusal::new(
            500,
            format!("cannot build the handshake answer: {e}"),
            "bad_handshake",
        )
    })?;
    Ok((resp, chosen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::config::RouteConfig;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/ws/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    const GOOD: &[(&str, &str)] = &[
        ("host", "app.example.org"),
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-protocol", "v2.chat, v1.chat"),
    ];

    fn route(subprotocols: &[&str]) -> RouteConfig {
        let text = format!(
            "[upstream]\nservers=[\"127.0.0.1:1\"]\n[[ws]]\npath=\"/ws/\"\nsubprotocols={:?}\n",
            subprotocols
        );
        crate::config::Config::parse(&text, std::path::Path::new("t"))
            .unwrap()
            .ws
            .remove(0)
    }

    #[test]
    fn accepts_rfc_example_and_negotiates() {
        let (resp, chosen) = accept(&req(GOOD), &route(&["v1.chat"])).unwrap();
        assert_eq!(resp.status.as_u16(), 101);
        assert_eq!(
            resp.headers["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(chosen.as_deref(), Some("v1.chat"));
        let (_, none) = accept(&req(GOOD), &route(&[])).unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn refuses_bad_handshakes() {
        let without = |name: &str| {
            req(&GOOD
                .iter()
                .copied()
                .filter(|(k, _)| *k != name)
                .collect::<Vec<_>>())
        };
        assert_eq!(
            accept(&without("sec-websocket-key"), &route(&[]))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            accept(&without("sec-websocket-version"), &route(&[]))
                .unwrap_err()
                .status,
            426
        );
        assert_eq!(
            accept(&without("upgrade"), &route(&[])).unwrap_err().status,
            426
        );
        let mut bad_key = GOOD.to_vec();
        bad_key[4] = ("sec-websocket-key", "c2hvcnQ=");
        assert_eq!(accept(&req(&bad_key), &route(&[])).unwrap_err().status, 400);
    }

    #[test]
    fn origins() {
        let with = |o: &str| {
            let mut h = GOOD.to_vec();
            h.push(("origin", o));
            req(&h)
        };
        assert!(origin_allowed(
            &with("https://app.example.org"),
            &Origins::SameHost,
            false
        ));
        assert!(!origin_allowed(
            &with("https://evil.example"),
            &Origins::SameHost,
            false
        ));
        assert!(!origin_allowed(&with("null"), &Origins::SameHost, false));
        assert!(origin_allowed(&req(GOOD), &Origins::SameHost, true));
        let list = Origins::List(vec!["https://app.example.org".into()]);
        assert!(origin_allowed(
            &with("https://APP.example.org"),
            &list,
            true
        ));
        assert!(!origin_allowed(
            &with("http://app.example.org"),
            &list,
            false
        ));
        assert!(origin_allowed(
            &with("https://evil.example"),
            &Origins::Any,
            true
        ));
        // wss on a TLS listener: the page must be https too.
        let same = &Origins::SameHost;
        assert!(origin_allowed(&with("https://app.example.org"), same, true));
        assert!(!origin_allowed(&with("http://app.example.org"), same, true));
        assert!(origin_allowed(&with("http://app.example.org"), same, false));
    }
}

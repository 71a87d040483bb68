//! Authentication by the app, like nginx `auth_request`: before the 101, channelgate asks
//! the app at the route's `auth.path` with the client's cookies and credentials. 2xx
//! accepts, and may name the user and extra groups; 401/403 refuse with the same status.

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use pingora::http::RequestHeader;
use serde_json::Value;

use super::config::AuthConfig;
use super::handshake::Refusal;
use crate::metrics::Metrics;
use crate::proxy::headers;
use crate::upstream::Upstreams;

/// What the app said about a connection it accepted.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Identity {
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub meta: Value,
    /// Group patterns the user may subscribe to later (`awx` routes), e.g. `["jobs-*"]`.
    pub subscribe: Option<Vec<String>>,
}

/// Headers of the client's request that the app sees on the auth subrequest.
const PASSED: &[&str] = &[
    "cookie",
    "authorization",
    "user-agent",
    "origin",
    "accept-language",
    "x-forwarded-for",
];

/// The subrequest for `req`, sent as the client would have sent it.
pub fn subrequest(
    forwarding: &headers::Forwarding,
    cfg_path: &str,
    req: &RequestHeader,
    client: Option<IpAddr>,
    request_id: &str,
    channel: &str,
    https: bool,
) -> pingora::Result<RequestHeader> {
    let mut sub = RequestHeader::build("GET", cfg_path.as_bytes(), None)?;
    for name in PASSED
        .iter()
        .chain(["host", "x-forwarded-proto", "x-forwarded-host"].iter())
    {
        for v in req.headers.get_all(*name) {
            sub.append_header(*name, v.clone())?;
        }
    }
    let uri = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    sub.insert_header("x-original-uri", uri)?;
    sub.insert_header("x-original-method", req.method.as_str())?;
    sub.insert_header("x-channelgate-channel", channel)?;
    forwarding.apply(&mut sub, client, request_id, https);
    Ok(sub)
}

/// Reads the app's 2xx answer: JSON `{"user", "groups", "meta"}` and/or the headers
/// `X-Channelgate-User` and `X-Channelgate-Groups` (comma-separated).
pub fn identity(headers: &http::HeaderMap, body: &Bytes) -> Result<Identity, String> {
    let mut id = Identity::default();
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json && !body.is_empty() {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("auth answer is not JSON: {e}"))?;
        match v.get("user") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => id.user = Some(s.clone()),
            Some(Value::Number(n)) => id.user = Some(n.to_string()),
            Some(_) => return Err("auth answer: `user` must be a string or a number".into()),
        }
        match v.get("groups") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for g in a {
                    id.groups.push(
                        g.as_str()
                            .ok_or("auth answer: `groups` must be strings")?
                            .to_string(),
                    );
                }
            }
            Some(_) => return Err("auth answer: `groups` must be a list".into()),
        }
        id.meta = v.get("meta").cloned().unwrap_or(Value::Null);
        match v.get("subscribe") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                let mut patterns = Vec::new();
                for p in a {
                    patterns.push(
                        p.as_str()
                            .ok_or("auth answer: `subscribe` must be strings")?
                            .to_string(),
                    );
                }
                id.subscribe = Some(patterns);
            }
            Some(_) => {
                return Err("auth answer: `subscribe` must be a list of group patterns".into())
            }
        }
    }
    if let Some(u) = headers
        .get("x-channelgate-user")
        .and_then(|v| v.to_str().ok())
    {
        id.user = Some(u.trim().to_string());
    }
    if let Some(gs) = headers
        .get("x-channelgate-groups")
        .and_then(|v| v.to_str().ok())
    {
        id.groups.extend(
            gs.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string),
        );
    }
    for g in &id.groups {
        crate::hub::check_group_name(g)
            .map_err(|e| format!("auth answer names group `{g}`: {e}"))?;
    }
    if let Some(u) = &id.user {
        if u.is_empty()
            || u.len() > 64
            || !u
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(format!(
                "auth answer: user `{u}` must be 1-64 characters of letters, digits, - _ . @"
            ));
        }
    }
    Ok(id)
}

/// Asks the app; `Err` is the refusal to send the client.
pub async fn authenticate(
    upstreams: &Upstreams,
    metrics: &Metrics,
    cfg: &AuthConfig,
    sub: RequestHeader,
) -> Result<Identity, Refusal> {
    let started = Instant::now();
    let answer = upstreams.call(sub, Bytes::new(), cfg.timeout).await;
    let observe = |outcome: &str| {
        metrics
            .ws
            .auth_seconds
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64())
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            observe("error");
            return Err(Refusal::new(
                503,
                format!("authentication unavailable: {e}"),
                "auth_error",
            ));
        }
    };
    match answer.status {
        200..=299 => match identity(&answer.headers, &answer.body) {
            Ok(id) => {
                observe("accepted");
                Ok(id)
            }
            Err(e) => {
                observe("error");
                Err(Refusal::new(502, e, "auth_error"))
            }
        },
        s @ (401 | 403) => {
            observe("denied");
            Err(Refusal::new(
                s,
                if s == 401 {
                    "not authenticated"
                } else {
                    "access denied"
                },
                "auth_denied",
            ))
        }
        400..=499 => {
            observe("denied");
            Err(Refusal::new(403, "access denied", "auth_denied"))
        }
        s => {
            observe("error");
            Err(Refusal::new(
                503,
                format!("authentication unavailable: the app answered {s}"),
                "auth_error",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn reads_json_and_headers() {
        let id = identity(
            &hm(&[
                ("content-type", "application/json"),
                ("x-channelgate-groups", "a, b"),
            ]),
            &Bytes::from_static(br#"{"user": 5, "groups": ["updates-5"], "meta": {"k": 1}}"#),
        )
        .unwrap();
        assert_eq!(id.user.as_deref(), Some("5"));
        assert_eq!(id.groups, ["updates-5", "a", "b"]);
        assert_eq!(id.meta["k"], 1);
        assert!(identity(&hm(&[("x-channelgate-groups", "bad group")]), &Bytes::new()).is_err());
        assert!(identity(
            &hm(&[("content-type", "application/json")]),
            &Bytes::from_static(b"{nope")
        )
        .is_err());
        assert_eq!(
            identity(&hm(&[("x-channelgate-user", "7")]), &Bytes::new())
                .unwrap()
                .user
                .as_deref(),
            Some("7")
        );
    }

    #[test]
    fn subrequest_carries_credentials_and_context() {
        let mut req = RequestHeader::build("GET", b"/ws/chat/x/?a=1", None).unwrap();
        req.insert_header("cookie", "sessionid=abc").unwrap();
        req.insert_header("host", "app.example.org").unwrap();
        req.insert_header("x-unrelated", "no").unwrap();
        let sub = subrequest(
            &headers::Forwarding::default(),
            "/ws-auth/",
            &req,
            Some("127.0.0.2".parse().unwrap()),
            "rid",
            "ch!x",
            false,
        )
        .unwrap();
        assert_eq!(sub.uri.path(), "/ws-auth/");
        assert_eq!(sub.headers["cookie"], "sessionid=abc");
        assert_eq!(sub.headers["host"], "app.example.org");
        assert_eq!(sub.headers["x-original-uri"], "/ws/chat/x/?a=1");
        assert_eq!(sub.headers["x-channelgate-channel"], "ch!x");
        assert_eq!(sub.headers["x-forwarded-for"], "127.0.0.2");
        assert!(!sub.headers.contains_key("x-unrelated"));
    }
}

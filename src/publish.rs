//! Publishing from the app: `POST /publish/{group}` (and `POST /send/{channel}` for one
//! connection) on the admin listener, and `channelgate publish` for shells and cron. A
//! sync WSGI view publishes with one `requests.post`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::broker::{Broker, PublishError};
use crate::hub::{check_group_name, Event};
use crate::metrics::Metrics;

/// Largest publish body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// The `type` given to text/plain publishes.
pub const TEXT_EVENT_TYPE: &str = "channelgate.message";

pub struct PublishApi {
    pub broker: Arc<dyn Broker>,
    pub metrics: Arc<Metrics>,
    /// When set, requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

fn json_response(status: StatusCode, body: Value) -> Response<Vec<u8>> {
    let body = format!("{body}\n").into_bytes();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    r
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response<Vec<u8>> {
    json_response(status, json!({ "error": msg.into() }))
}

/// Where a publish goes.
enum Target<'a> {
    Group(&'a str),
    Channel(&'a str),
}

/// Channels' channel-name rule: `name!suffix`, shorter than 100.
fn check_channel_name(name: &str) -> Result<(), String> {
    let (head, tail) = name
        .split_once('!')
        .ok_or("a channel name looks like channels_xxxx!yyyy")?;
    check_group_name(head)?;
    if name.len() >= 100
        || !tail
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.".contains(c))
    {
        return Err("invalid channel name".into());
    }
    Ok(())
}

impl PublishApi {
    /// Handles `POST /publish/{group}` and `POST /send/{channel}`; None for other paths.
    pub async fn route(
        &self,
        session: &mut ServerSession,
        path: &str,
    ) -> Option<Response<Vec<u8>>> {
        let target = if let Some(g) = path.strip_prefix("/publish/") {
            Target::Group(g.trim_end_matches('/'))
        } else if let Some(c) = path.strip_prefix("/send/") {
            Target::Channel(c.trim_end_matches('/'))
        } else {
            return None;
        };
        let resp = self.handle(session, target).await;
        let outcome = if resp.status().is_success() {
            "ok"
        } else {
            "error"
        };
        self.metrics
            .ws
            .published
            .with_label_values(&["admin", outcome])
            .inc();
        Some(resp)
    }

    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = session
            .get_header(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        // Constant-time comparison so the token cannot be guessed byte by byte.
        given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0
        })
    }

    async fn handle(&self, session: &mut ServerSession, target: Target<'_>) -> Response<Vec<u8>> {
        if session.req_header().method != http::Method::POST {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
            r.headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
            return r;
        }
        if !self.authorized(session) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token ([admin] publish_token)",
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
        let checked = match target {
            Target::Group(g) => check_group_name(g),
            Target::Channel(c) => check_channel_name(c),
        };
        if let Err(e) = checked {
            return error(StatusCode::BAD_REQUEST, e);
        }
        let content_type = session
            .get_header(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("a message is at most {MAX_BODY} bytes"),
                        );
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the body: {e}"),
                    )
                }
            }
        }
        let event = if content_type.starts_with("application/json") {
            match serde_json::from_slice::<Value>(&body)
                .map_err(|e| e.to_string())
                .and_then(|v| Event::from_json(v).map_err(str::to_string))
            {
                Ok(e) => e,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad JSON event: {e}")),
            }
        } else if content_type.is_empty() || content_type.starts_with("text/plain") {
            match String::from_utf8(body) {
                Ok(t) => Event::text(TEXT_EVENT_TYPE, t),
                Err(_) => return error(StatusCode::BAD_REQUEST, "a text/plain body must be UTF-8"),
            }
        } else {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send application/json (an event object) or text/plain",
            );
        };
        if let Err(e) = event.to_outbound() {
            return error(StatusCode::BAD_REQUEST, e);
        }
        let (key, name, sent) = match target {
            Target::Group(g) => ("group", g, self.broker.group_send(g, event).await),
            Target::Channel(c) => ("channel", c, self.broker.send(c, event).await),
        };
        match sent {
            Ok(p) => json_response(StatusCode::OK, json!({ key: name, "delivered": p.local })),
            Err(PublishError::Invalid(e)) => error(StatusCode::BAD_REQUEST, e),
            Err(e @ PublishError::Unavailable(_)) => {
                error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            Err(e @ PublishError::Refused(_)) => {
                error(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
            }
        }
    }
}

/// `channelgate publish`: POSTs one message to a running instance's admin listener.
/// Returns the HTTP status and the answer body.
pub fn post(
    admin: &str,
    group: &str,
    body: &[u8],
    content_type: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let addr = admin
        .strip_prefix("http://")
        .ok_or("--admin must be an http:// URL such as http://127.0.0.1:9100")?
        .trim_end_matches('/');
    check_group_name(group)?;
    let mut s = TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /publish/{group} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("reading the answer from {addr}: {e}"))?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer from {addr}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        assert!(check_channel_name("channels_abcdefghijkl!mnopqrstuvwx").is_ok());
        assert!(check_channel_name("nobang").is_err());
        assert!(check_channel_name("bad group!x").is_err());
    }
}

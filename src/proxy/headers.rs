//! The headers channelgate adds to what it forwards: X-Forwarded-For/-Proto/-Host and a
//! request id. Used for proxied requests, upgrade pass-through and (later) auth subrequests.

use std::net::IpAddr;

use pingora::http::RequestHeader;

pub const REQUEST_ID: &str = "x-request-id";
const MAX_REQUEST_ID: usize = 128;

/// The client's `X-Request-Id` when it is a sane token, else a new random one.
pub fn request_id(req: &RequestHeader) -> String {
    req.headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

fn is_valid_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

/// 32 hex digits.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Sets the forwarding headers on a request about to go upstream. `client` is the peer's
/// IP (None on a unix-socket listener), `host` the Host the client asked for.
pub fn add_forwarding(req: &mut RequestHeader, client: Option<IpAddr>, request_id: &str) {
    if let Some(ip) = client {
        let previous: Vec<&str> = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let value = if previous.is_empty() {
            ip.to_string()
        } else {
            format!("{}, {ip}", previous.join(", "))
        };
        set(req, "x-forwarded-for", &value);
    }
    set(req, "x-forwarded-proto", "http");
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri.authority().map(|a| a.to_string()));
    match host {
        Some(h) => set(req, "x-forwarded-host", &h),
        None => {
            req.remove_header("x-forwarded-host");
        }
    }
    set(req, REQUEST_ID, request_id);
}

fn set(req: &mut RequestHeader, name: &'static str, value: &str) {
    // Every value set here is built from validated parts (IP addresses, a Host header that
    // was already a valid header value, a checked request id), so it is a valid value.
    if let Err(e) = req.insert_header(name, value) {
        tracing::debug!(header = name, error = %e, "could not set forwarding header");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn appends_forwarded_for_and_sets_proto_host_id() {
        let mut r = req(&[
            ("host", "app.example.org"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        add_forwarding(&mut r, Some("127.0.0.9".parse().unwrap()), "abc");
        assert_eq!(
            r.headers["x-forwarded-for"],
            "10.0.0.1, 10.0.0.2, 127.0.0.9"
        );
        assert_eq!(r.headers["x-forwarded-proto"], "http");
        assert_eq!(r.headers["x-forwarded-host"], "app.example.org");
        assert_eq!(r.headers["x-request-id"], "abc");
        assert_eq!(r.headers.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn request_id_kept_when_sane() {
        assert_eq!(request_id(&req(&[("x-request-id", "req-42")])), "req-42");
        let generated = request_id(&req(&[("x-request-id", "has space")]));
        assert_eq!(generated.len(), 32);
        assert_ne!(request_id(&req(&[])), request_id(&req(&[])));
    }
}

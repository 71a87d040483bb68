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

/// How large a request head may be (`[server] max_header_line`, `max_header_size`): the
/// same defaults as nginx's `large_client_header_buffers 4 8k`. Pingora alone accepts up
/// to 1 MiB and forwards it; gunicorn refuses lines over 8190 bytes, an in-process
/// WebSocket route would take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderLimits {
    /// The request line, or any one header line (`name: value`), in bytes.
    pub line: usize,
    /// The request line and every header line together, in bytes.
    pub total: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        HeaderLimits {
            line: 8 << 10,
            total: 32 << 10,
        }
    }
}

/// Why a request head is refused: the status and the `reason` label of
/// `channelgate_http_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge {
    pub status: u16,
    pub reason: &'static str,
}

impl HeaderLimits {
    /// `None` when `req` fits; else 414 for a long request line, 431 for the headers.
    pub fn check(&self, req: &RequestHeader) -> Option<TooLarge> {
        // "METHOD URI HTTP/1.1"
        let request_line = req.method.as_str().len() + 1 + uri_len(&req.uri) + 9;
        if request_line > self.line {
            return Some(TooLarge {
                status: 414,
                reason: "uri_too_long",
            });
        }
        let mut total = request_line;
        for (name, value) in req.headers.iter() {
            let line = name.as_str().len() + 2 + value.len();
            if line > self.line {
                return Some(TooLarge {
                    status: 431,
                    reason: "header_line_too_large",
                });
            }
            total += line;
        }
        (total > self.total).then_some(TooLarge {
            status: 431,
            reason: "headers_too_large",
        })
    }
}

fn uri_len(uri: &http::Uri) -> usize {
    uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
}

/// A network of trusted proxies: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Parses "10.0.0.0/8", "::1" or "127.0.0.1".
    pub fn parse(raw: &str) -> Result<Net, String> {
        let (a, p) = raw
            .split_once('/')
            .map_or((raw, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{raw}` is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{raw}`: bad prefix length"))?,
        };
        Ok(Net { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> Option<u128> {
            match (self.addr, ip) {
                (IpAddr::V4(_), IpAddr::V4(v)) => Some(u128::from(u32::from(v)) << 96),
                (IpAddr::V6(_), IpAddr::V6(v)) => Some(u128::from(v)),
                (IpAddr::V4(_), IpAddr::V6(v)) => {
                    v.to_ipv4_mapped().map(|v| u128::from(u32::from(v)) << 96)
                }
                _ => None,
            }
        };
        let (Some(net), Some(ip)) = (bits(self.addr), bits(ip)) else {
            return false;
        };
        let len = u32::from(self.prefix);
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        net & mask == ip & mask
    }
}

/// How forwarding headers are written: a client in `trusted` (a proxy in front of
/// channelgate, such as nginx terminating TLS) keeps the X-Forwarded-Proto and
/// X-Forwarded-Host it sent; anyone else's are replaced. X-Forwarded-Proto is "https" on the
/// TLS listeners.
#[derive(Clone, Debug, Default)]
pub struct Forwarding {
    pub trusted: Vec<Net>,
}

impl Forwarding {
    pub fn apply(
        &self,
        req: &mut RequestHeader,
        client: Option<IpAddr>,
        request_id: &str,
        https: bool,
    ) {
        let trusted = client.is_some_and(|ip| self.trusted.iter().any(|n| n.contains(ip)));
        let keep = |req: &RequestHeader, name: &str| {
            trusted && req.headers.get(name).is_some_and(|v| !v.is_empty())
        };
        let (keep_proto, keep_host) = (
            keep(req, "x-forwarded-proto"),
            keep(req, "x-forwarded-host"),
        );
        add_forwarding_inner(req, client, request_id, keep_proto, keep_host);
        if https && !keep_proto {
            set(req, "x-forwarded-proto", "https");
        }
    }
}

/// Sets the forwarding headers on a request about to go upstream. `client` is the peer's
/// IP (None on a unix-socket listener).
fn add_forwarding_inner(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    request_id: &str,
    keep_proto: bool,
    keep_host: bool,
) {
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
    if !keep_proto {
        set(req, "x-forwarded-proto", "http");
    }
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri.authority().map(|a| a.to_string()));
    match (keep_host, host) {
        (true, _) => {}
        (false, Some(h)) => set(req, "x-forwarded-host", &h),
        (false, None) => {
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

    #[test]
    fn header_limits_follow_nginx_defaults() {
        let limits = HeaderLimits::default();
        let build = |path: &str, headers: &[(&str, String)]| {
            let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
            for (k, v) in headers {
                r.insert_header(k.to_string(), v.as_str()).unwrap();
            }
            r
        };
        let ok = build("/ok/", &[("cookie", "a".repeat(8000))]);
        assert_eq!(limits.check(&ok), None);
        let long_uri = build(&format!("/{}", "x".repeat(8200)), &[]);
        assert_eq!(limits.check(&long_uri).map(|t| t.status), Some(414));
        let long_line = build("/", &[("cookie", "a".repeat(8200))]);
        assert_eq!(
            limits.check(&long_line),
            Some(TooLarge {
                status: 431,
                reason: "header_line_too_large"
            })
        );
        let many: Vec<(&str, String)> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| (*n, "v".repeat(7000)))
            .collect();
        assert_eq!(
            limits.check(&build("/", &many)).map(|t| t.reason),
            Some("headers_too_large")
        );
    }

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
        Forwarding::default().apply(&mut r, Some("127.0.0.9".parse().unwrap()), "abc", false);
        assert_eq!(
            r.headers["x-forwarded-for"],
            "10.0.0.1, 10.0.0.2, 127.0.0.9"
        );
        assert_eq!(r.headers["x-forwarded-proto"], "http");
        assert_eq!(r.headers["x-forwarded-host"], "app.example.org");
        assert_eq!(r.headers["x-request-id"], "abc");
        assert_eq!(r.headers.get_all("x-forwarded-for").iter().count(), 1);
        Forwarding::default().apply(&mut r, None, "abc", true);
        assert_eq!(r.headers["x-forwarded-proto"], "https");
    }

    #[test]
    fn trusted_proxies_keep_proto_and_host() {
        let f = Forwarding {
            trusted: vec![
                Net::parse("10.0.0.0/8").unwrap(),
                Net::parse("::1").unwrap(),
            ],
        };
        let incoming = [
            ("host", "app"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example"),
        ];
        let mut r = req(&incoming);
        f.apply(&mut r, Some("10.1.2.3".parse().unwrap()), "id", false);
        assert_eq!(r.headers["x-forwarded-proto"], "https");
        assert_eq!(r.headers["x-forwarded-host"], "public.example");
        let mut r = req(&incoming);
        f.apply(&mut r, Some("192.168.0.1".parse().unwrap()), "id", false);
        assert_eq!(
            r.headers["x-forwarded-proto"], "http",
            "untrusted clients cannot claim https"
        );
        assert_eq!(r.headers["x-forwarded-host"], "app");
        assert!(Net::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(!Net::parse("10.0.0.0/8")
            .unwrap()
            .contains("11.0.0.1".parse().unwrap()));
        assert!(Net::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Net::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn request_id_kept_when_sane() {
        assert_eq!(request_id(&req(&[("x-request-id", "req-42")])), "req-42");
        let generated = request_id(&req(&[("x-request-id", "has space")]));
        assert_eq!(generated.len(), 32);
        assert_ne!(request_id(&req(&[])), request_id(&req(&[])));
    }
}

//! The headers channelgate adds to what it forwards: X-Forwarded-For/-Proto/-Host,
//! X-Real-IP and a request id, after removing what no client may send (see [`reserved`]).
//! [`Forwarding::apply`] is the one function every request to the app goes through:
//! proxied requests, upgrade pass-through and the auth subrequest.

pub mod reserved;

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

/// 400 for a request whose length is ambiguous: `Content-Length` given more than once or
/// as a list (`5, 5`), which nginx refuses. (Pingora itself refuses differing values and
/// reconciles equal ones; an intermediary that picks another line than ours would see
/// another body: request smuggling.)
pub fn ambiguous_length(req: &RequestHeader) -> Option<TooLarge> {
    let mut values = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let ambiguous = match (values.next(), values.next()) {
        (Some(v), None) => v.as_bytes().contains(&b','),
        (Some(_), Some(_)) => true,
        _ => false,
    };
    ambiguous.then_some(TooLarge {
        status: 400,
        reason: "bad_content_length",
    })
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
/// channelgate, such as nginx terminating TLS) keeps the X-Forwarded-Proto,
/// X-Forwarded-Host and X-Real-IP it sent; anyone else's are replaced. Nobody's
/// `X-Channelgate-*` headers, nor those in `strip`, reach the app. X-Forwarded-Proto is
/// "https" on the TLS listeners.
#[derive(Clone, Default)]
pub struct Forwarding {
    pub trusted: Vec<Net>,
    /// `[server] strip_headers`: more headers removed from every request to the app.
    pub strip: Vec<http::header::HeaderName>,
    /// `[server] underscores_in_headers`: pass names with `_` on (nginx's directive).
    /// Default false: dropped, as nginx does.
    pub underscores: bool,
    /// `channelgate_http_stripped_headers_total{kind}`, set when the server is assembled
    /// (see [`Forwarding::counted`]).
    stripped: Option<pingora_prometheus::prometheus::IntCounterVec>,
}

impl std::fmt::Debug for Forwarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarding")
            .field("trusted", &self.trusted)
            .field("strip", &self.strip)
            .field("underscores", &self.underscores)
            .finish_non_exhaustive()
    }
}

impl Forwarding {
    pub fn new(
        trusted: Vec<Net>,
        strip: Vec<http::header::HeaderName>,
        underscores: bool,
    ) -> Forwarding {
        Forwarding {
            trusted,
            strip,
            underscores,
            stripped: None,
        }
    }

    /// The same settings, counting stripped headers in `counter` (label `kind`:
    /// `reserved`, `configured`, `underscore`, `x_real_ip`).
    pub fn counted(&self, counter: &pingora_prometheus::prometheus::IntCounterVec) -> Forwarding {
        Forwarding {
            stripped: Some(counter.clone()),
            ..self.clone()
        }
    }

    /// Prepares `req` for the app: strips reserved and configured headers, then writes
    /// X-Forwarded-For/-Proto/-Host, X-Real-IP and X-Request-Id. Identity headers that
    /// channelgate itself adds (auth subrequest) must be added after this.
    pub fn apply(
        &self,
        req: &mut RequestHeader,
        client: Option<IpAddr>,
        request_id: &str,
        https: bool,
    ) {
        let trusted = client.is_some_and(|ip| self.trusted.iter().any(|n| n.contains(ip)));
        let stripped = reserved::strip(req, &self.strip, !self.underscores);
        let real_ip_replaced = self.real_ip(req, client, trusted);
        if let Some(c) = &self.stripped {
            let count = |kind: &str, n: usize| {
                if n > 0 {
                    c.with_label_values(&[kind]).inc_by(n as u64);
                }
            };
            count("reserved", stripped.reserved);
            count("configured", stripped.configured);
            count("underscore", stripped.underscore);
            count("x_real_ip", usize::from(real_ip_replaced));
        }
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

    /// X-Real-IP is the client's address, or what a trusted proxy said it is (when that is
    /// an IP address). True when the client sent one that was not kept.
    fn real_ip(&self, req: &mut RequestHeader, client: Option<IpAddr>, trusted: bool) -> bool {
        let sent: Vec<&[u8]> = req
            .headers
            .get_all(reserved::REAL_IP)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        // `X_Real_IP` would reach a WSGI app as X-Real-IP: never passed on.
        let smuggled: Vec<http::header::HeaderName> = req
            .headers
            .keys()
            .filter(|n| n.as_str() != reserved::REAL_IP && reserved::is_real_ip(n.as_str()))
            .cloned()
            .collect();
        let keep = trusted
            && sent.len() == 1
            && std::str::from_utf8(sent[0])
                .ok()
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
                .is_some();
        let replaced = (!sent.is_empty() && !keep) || !smuggled.is_empty();
        for n in smuggled {
            req.remove_header(&n);
        }
        if keep {
            return replaced;
        }
        req.remove_header(reserved::REAL_IP);
        if let Some(ip) = client {
            set(req, reserved::REAL_IP, &ip.to_string());
        }
        replaced
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

    #[test]
    fn repeated_content_length_is_refused() {
        assert_eq!(ambiguous_length(&req(&[("content-length", "5")])), None);
        assert_eq!(ambiguous_length(&req(&[])), None);
        let refused = |h: &[(&str, &str)]| ambiguous_length(&req(h)).map(|t| t.status);
        assert_eq!(refused(&[("content-length", "5, 5")]), Some(400));
        assert_eq!(
            refused(&[("content-length", "5"), ("content-length", "5")]),
            Some(400)
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
        let f = Forwarding::new(
            vec![
                Net::parse("10.0.0.0/8").unwrap(),
                Net::parse("::1").unwrap(),
            ],
            Vec::new(),
            false,
        );
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
    fn reserved_headers_never_pass_and_real_ip_is_the_client() {
        let reg = pingora_prometheus::prometheus::Registry::new();
        let c = pingora_prometheus::prometheus::IntCounterVec::new(
            pingora_prometheus::prometheus::Opts::new("s", "s"),
            &["kind"],
        )
        .unwrap();
        reg.register(Box::new(c.clone())).unwrap();
        let f =
            Forwarding::new(vec![Net::parse("10.0.0.0/8").unwrap()], Vec::new(), true).counted(&c);
        let forged = [
            ("x-channelgate-user", "admin"),
            ("X-Channelgate-Signature", "t=1,v1=00"),
            ("x-real-ip", "1.2.3.4"),
        ];
        let mut r = req(&forged);
        f.apply(&mut r, Some("192.168.0.9".parse().unwrap()), "id", false);
        assert!(!r
            .headers
            .keys()
            .any(|n| n.as_str().starts_with("x-channelgate-")));
        assert_eq!(r.headers["x-real-ip"], "192.168.0.9");
        assert_eq!(r.headers.get_all("x-real-ip").iter().count(), 1);
        assert_eq!(c.with_label_values(&["reserved"]).get(), 2);
        assert_eq!(c.with_label_values(&["x_real_ip"]).get(), 1);
        // A trusted proxy's X-Real-IP is kept; its X-Channelgate-* headers are not.
        let mut r = req(&forged);
        f.apply(&mut r, Some("10.0.0.1".parse().unwrap()), "id", false);
        assert_eq!(r.headers["x-real-ip"], "1.2.3.4");
        assert!(!r.headers.contains_key("x-channelgate-user"));
        let mut r = req(&[("x_real_ip", "1.1.1.1")]);
        f.apply(&mut r, Some("192.168.0.9".parse().unwrap()), "id", false);
        assert!(!r.headers.contains_key("x_real_ip"));
        assert_eq!(r.headers["x-real-ip"], "192.168.0.9");
        let mut r = req(&[("x-real-ip", "not an ip")]);
        f.apply(&mut r, Some("10.0.0.1".parse().unwrap()), "id", false);
        assert_eq!(r.headers["x-real-ip"], "10.0.0.1");
    }

    #[test]
    fn request_id_kept_when_sane() {
        assert_eq!(request_id(&req(&[("x-request-id", "req-42")])), "req-42");
        let generated = request_id(&req(&[("x-request-id", "has space")]));
        assert_eq!(generated.len(), 32);
        assert_ne!(request_id(&req(&[])), request_id(&req(&[])));
    }
}

//! `[[ws]]`: the WebSocket routes channelgate answers itself.

use std::time::Duration;

use serde::Deserialize;

use super::ratelimit::Rate;
use super::route::{GroupTemplate, PathTemplate};
use crate::config::values;
use crate::config::{Errors, KeyPath};

/// One WebSocket route.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// Path template, e.g. `/ws/chat/{room}/`; `/ws/*` (or `prefix = true`) for a prefix.
    pub path: PathTemplate,
    /// Groups joined on connect, e.g. `chat-{room}`, `updates-{user}`, `feed-{query.topic}`.
    pub groups: Vec<GroupTemplate>,
    /// Which browser origins may connect. Default: the request's own host.
    pub origins: Origins,
    /// Ask the app before accepting. Default: no auth.
    pub auth: Option<AuthConfig>,
    /// What happens to frames clients send. Default: dropped (counted).
    pub inbound: Inbound,
    /// Largest message a client may send, in bytes. Default 64 KiB; larger closes with 1009.
    pub max_message: usize,
    /// Keepalive ping period; a client silent for two periods is closed. Default 20s; "0s" disables.
    pub ping_interval: Option<Duration>,
    /// Messages queued per connection before the slow-client policy applies. Default 256.
    pub send_queue: usize,
    /// Payload bytes queued per connection before the slow-client policy applies. Default 1 MiB.
    pub send_queue_bytes: usize,
    pub slow_client: SlowClient,
    /// Messages (text, binary) a client may send, sustained. Default 20/s.
    pub inbound_rate: Rate,
    /// Messages a client may send at once above the rate. Default 40.
    pub inbound_burst: u32,
    /// What a client over its rate gets. Default: closed with 1008.
    pub inbound_limit: InboundLimit,
    /// Longest a single write to the client may take before the connection is dropped. Default 10s.
    pub send_timeout: Duration,
    /// Close a connection that sent nothing (pongs included) for this long. Default: off.
    pub idle_timeout: Option<Duration>,
    /// Close every connection after this long (1001), so clients reconnect. Default: off.
    pub max_lifetime: Option<Duration>,
    /// Subprotocols offered by this route, in order of preference. Default: none.
    pub subprotocols: Vec<String>,
    /// What client frames mean. Default: channels (the `inbound` mode over `groups`).
    pub protocol: Protocol,
    /// `awx`: asked once per new group (`?group=...`) unless the auth answer's `subscribe`
    /// patterns allow it. Default: none.
    pub authorize: Option<AuthConfig>,
    /// `awx`: most groups one connection may subscribe to. Default 100.
    pub max_groups: usize,
    /// permessage-deflate (RFC 7692): `compression = "deflate"` (the default: used when the
    /// client offers it) or `"off"`; messages shorter than `compression_min_size` (default
    /// 256 bytes) go uncompressed; `compression_level` 1-9 (default 6).
    pub compression: crate::ws::deflate::DeflateConfig,
}

impl RouteConfig {
    /// Whether connections must keep the client's Cookie, Authorization and Host for later
    /// calls to the app: `inbound = { http = ... }` and `authorize`.
    pub fn keeps_credentials(&self) -> bool {
        matches!(self.inbound, Inbound::Http { .. }) || self.authorize.is_some()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    Channels,
    Awx,
    AmqpBridge(crate::protocols::bridge::BridgeConfig),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origins {
    /// The Origin's host must be the request's Host. Requests without Origin (non-browser
    /// clients) are allowed.
    SameHost,
    Any,
    /// Exact `scheme://host[:port]` values, lower-case.
    List(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Path on the upstream app, e.g. `/ws-auth/`.
    pub path: String,
    /// Longest wait for the app's answer; exceeded → 503. Default 2s.
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub enum Inbound {
    Drop,
    Echo,
    /// Publish the frame to a group as `{"type": type, "text"|"bytes": ...}`.
    Group {
        group: GroupTemplate,
        event_type: String,
    },
    /// POST the frame to the app; a non-empty answer goes back to the sender.
    Http {
        path: String,
        timeout: Duration,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundLimit {
    /// Close the connection with 1008 "rate limit". The default.
    Close,
    /// Drop the message (counted) and keep the connection.
    Drop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowClient {
    /// Close the connection with 1013 (try again later). The default.
    Close,
    /// Drop the message for that client only (counted) and keep the connection.
    Drop,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawRoute {
    path: Option<String>,
    prefix: Option<bool>,
    groups: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    auth: Option<RawAuth>,
    inbound: Option<RawInbound>,
    max_message: Option<RawSize>,
    ping_interval: Option<String>,
    send_queue: Option<usize>,
    send_queue_bytes: Option<RawSize>,
    slow_client: Option<String>,
    inbound_rate: Option<String>,
    inbound_burst: Option<u32>,
    inbound_limit: Option<String>,
    send_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_lifetime: Option<String>,
    subprotocols: Option<Vec<String>>,
    protocol: Option<String>,
    authorize: Option<RawAuth>,
    max_groups: Option<usize>,
    bridge: Option<RawBridge>,
    compression: Option<String>,
    compression_min_size: Option<RawSize>,
    compression_level: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawBridge {
    url: Option<String>,
    exchange: Option<String>,
    bindings: Option<Vec<String>>,
    commander: Option<String>,
    consumers: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawAuth {
    path: Option<String>,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawInbound {
    Mode(String),
    Table {
        group: Option<String>,
        http: Option<String>,
        #[serde(rename = "type")]
        event_type: Option<String>,
        timeout: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

pub const DEFAULT_EVENT_TYPE: &str = "channelgate.message";

/// Parses "64KiB", "1MiB", "512", "2MB" into bytes.
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{raw}` is not a size; write it like \"64KiB\" or \"1MiB\""))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1024,
        "kb" => 1000,
        "mib" => 1024 * 1024,
        "mb" => 1_000_000,
        "gib" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "`{other}` is not a size unit; use B, KiB, MiB, KB or MB"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{raw}` is too large"))
}

/// A `"close"` (the default) or `"drop"` policy key: whether it says drop.
fn drops(raw: Option<String>, close_code: u16, path: &KeyPath, errs: &mut Errors) -> bool {
    match raw.as_deref() {
        None | Some("close") => false,
        Some("drop") => true,
        Some(o) => {
            errs.add(
                path,
                format!("`{o}` is not a policy; use \"close\" ({close_code}) or \"drop\""),
            );
            false
        }
    }
}

/// A size key: a number of bytes or a text like "64KiB"; 0 (with an error) when bad.
fn size(raw: Option<RawSize>, default: u64, path: &KeyPath, errs: &mut Errors) -> u64 {
    match raw {
        None => default,
        Some(RawSize::Bytes(n)) => n,
        Some(RawSize::Text(t)) => parse_size(&t).unwrap_or_else(|e| {
            errs.add(path, e);
            0
        }),
    }
}

fn optional_duration(
    raw: Option<String>,
    default: Option<Duration>,
    path: &KeyPath,
    errs: &mut Errors,
) -> Option<Duration> {
    match raw {
        None => default,
        Some(r) => {
            let d = values::duration(Some(&r), Duration::ZERO, true, path, errs);
            (!d.is_zero()).then_some(d)
        }
    }
}

impl RawRoute {
    pub(crate) fn validate(self, path: &KeyPath, errs: &mut Errors) -> Option<RouteConfig> {
        let tpl = match self
            .path
            .as_deref()
            .map(|p| PathTemplate::parse(p, self.prefix.unwrap_or(false)))
        {
            None => {
                errs.add(
                    &path.key("path"),
                    "is required, e.g. path = \"/ws/chat/{room}/\"",
                );
                return None;
            }
            Some(Err(e)) => {
                errs.add(&path.key("path"), e);
                return None;
            }
            Some(Ok(t)) => t,
        };
        let params: Vec<&str> = tpl.params().collect();
        let group_tpl =
            |raw: &str, p: &KeyPath, errs: &mut Errors| match GroupTemplate::parse(raw, &params) {
                Ok(g) => Some(g),
                Err(e) => {
                    errs.add(p, e);
                    None
                }
            };
        let groups: Vec<GroupTemplate> = self
            .groups
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, g)| group_tpl(g, &path.key("groups").index(i), errs))
            .collect();
        let auth_cfg = |a: RawAuth, key: &str, errs: &mut Errors| {
            let p = a.path.unwrap_or_default();
            if !p.starts_with('/') {
                errs.add(
                    &path.key(key).key("path"),
                    "is required and must start with /, e.g. \"/ws-auth/\"",
                );
            }
            AuthConfig {
                path: p,
                timeout: values::duration(
                    a.timeout.as_deref(),
                    Duration::from_secs(2),
                    false,
                    &path.key(key).key("timeout"),
                    errs,
                ),
            }
        };
        let auth = self.auth.map(|a| auth_cfg(a, "auth", errs));
        let authorize = self.authorize.map(|a| auth_cfg(a, "authorize", errs));
        let inbound_set = self.inbound.is_some();
        let has_bridge = self.bridge.is_some();
        let protocol = match self.protocol.as_deref() {
            None | Some("channels") => Protocol::Channels,
            Some("awx") => Protocol::Awx,
            Some("amqp-bridge") => {
                let b = self.bridge.unwrap_or_default();
                let commander = b.commander.unwrap_or_else(|| "channelgate".into());
                if commander.is_empty()
                    || !commander
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    errs.add(
                        &path.key("bridge").key("commander"),
                        "must be letters, digits, - _ .",
                    );
                }
                if let Some(u) = &b.url {
                    if let Err(e) = u.parse::<lapin::uri::AMQPUri>() {
                        errs.add(
                            &path.key("bridge").key("url"),
                            format!(
                                "`{}` is not an AMQP URL ({e})",
                                crate::broker::amqp::redact(u)
                            ),
                        );
                    }
                }
                let bindings = b.bindings.unwrap_or_else(|| vec!["reply.#".into()]);
                if bindings.is_empty() {
                    errs.add(
                        &path.key("bridge").key("bindings"),
                        "needs at least one routing key, e.g. [\"reply.#\"]",
                    );
                }
                Protocol::AmqpBridge(crate::protocols::bridge::BridgeConfig {
                    url: b.url,
                    exchange: b.exchange.unwrap_or_else(|| "sdss_exchange".into()),
                    bindings,
                    commander,
                    consumers: b.consumers,
                })
            }
            Some(other) => {
                errs.add(
                    &path.key("protocol"),
                    format!(
                        "`{other}` is not a protocol; use \"channels\", \"awx\" or \"amqp-bridge\""
                    ),
                );
                Protocol::Channels
            }
        };
        if inbound_set && protocol != Protocol::Channels {
            errs.add(&path.key("inbound"), "only applies to protocol = \"channels\"; awx and amqp-bridge define what client frames mean");
        }
        if authorize.is_some() && protocol != Protocol::Awx {
            errs.add(&path.key("authorize"), "only applies to protocol = \"awx\"");
        }
        if has_bridge && !matches!(protocol, Protocol::AmqpBridge(_)) {
            errs.add(
                &path.key("bridge"),
                "only applies to protocol = \"amqp-bridge\"",
            );
        }
        let inbound = match self.inbound {
            None => Inbound::Drop,
            Some(RawInbound::Mode(m)) => match m.as_str() {
                "drop" => Inbound::Drop,
                "echo" => Inbound::Echo,
                other => {
                    errs.add(&path.key("inbound"), format!("`{other}` is not an inbound mode; use \"drop\", \"echo\", {{ group = \"...\" }} or {{ http = \"/path/\" }}"));
                    Inbound::Drop
                }
            },
            Some(RawInbound::Table {
                group,
                http,
                event_type,
                timeout,
            }) => match (group, http) {
                (Some(g), None) => match group_tpl(&g, &path.key("inbound").key("group"), errs) {
                    Some(group) => Inbound::Group {
                        group,
                        event_type: event_type.unwrap_or_else(|| DEFAULT_EVENT_TYPE.into()),
                    },
                    None => Inbound::Drop,
                },
                (None, Some(h)) => {
                    if !h.starts_with('/') {
                        errs.add(
                            &path.key("inbound").key("http"),
                            format!("`{h}` must start with /"),
                        );
                    }
                    Inbound::Http {
                        path: h,
                        timeout: values::duration(
                            timeout.as_deref(),
                            Duration::from_secs(5),
                            false,
                            &path.key("inbound").key("timeout"),
                            errs,
                        ),
                    }
                }
                _ => {
                    errs.add(
                        &path.key("inbound"),
                        "needs exactly one of group = \"...\" or http = \"/path/\"",
                    );
                    Inbound::Drop
                }
            },
        };
        let uses_user = groups.iter().any(|g| g.uses_user())
            || matches!(&inbound, Inbound::Group { group, .. } if group.uses_user());
        if uses_user && auth.is_none() {
            errs.add(
                &path.key("groups"),
                "{user} needs an auth = { path = ... } on this route to know the user",
            );
        }
        let max_message = size(self.max_message, 64 * 1024, &path.key("max_message"), errs);
        if max_message == 0 || max_message > 64 * 1024 * 1024 {
            errs.add(&path.key("max_message"), "must be between 1 byte and 64MiB");
        }
        let origins = match self.allowed_origins {
            None => Origins::SameHost,
            Some(list) if list.iter().any(|o| o == "*") => Origins::Any,
            Some(list) => {
                for (i, o) in list.iter().enumerate() {
                    if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/')
                    {
                        errs.add(&path.key("allowed_origins").index(i), format!("`{o}` must look like \"https://app.example.org\" (scheme and host, no path), or be \"*\""));
                    }
                }
                Origins::List(list.into_iter().map(|o| o.to_ascii_lowercase()).collect())
            }
        };
        let send_queue = match self.send_queue {
            Some(0) => {
                errs.add(&path.key("send_queue"), "must be at least 1");
                1
            }
            n => n.unwrap_or(256),
        };
        let send_queue_bytes = size(
            self.send_queue_bytes,
            1024 * 1024,
            &path.key("send_queue_bytes"),
            errs,
        );
        if send_queue_bytes == 0 || send_queue_bytes > 1024 * 1024 * 1024 {
            errs.add(
                &path.key("send_queue_bytes"),
                "must be between 1 byte and 1GiB",
            );
        }
        let inbound_rate = match self.inbound_rate.as_deref().map(Rate::parse) {
            None => Rate {
                count: 20,
                per: Duration::from_secs(1),
            },
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                errs.add(&path.key("inbound_rate"), e);
                Rate {
                    count: 1,
                    per: Duration::from_secs(1),
                }
            }
        };
        let inbound_burst = match self.inbound_burst {
            Some(0) => {
                errs.add(&path.key("inbound_burst"), "must be at least 1");
                1
            }
            n => n.unwrap_or(40),
        };
        let inbound_limit = if drops(self.inbound_limit, 1008, &path.key("inbound_limit"), errs) {
            InboundLimit::Drop
        } else {
            InboundLimit::Close
        };
        let slow_client = if drops(self.slow_client, 1013, &path.key("slow_client"), errs) {
            SlowClient::Drop
        } else {
            SlowClient::Close
        };
        let compression = crate::ws::deflate::DeflateConfig {
            enabled: match self.compression.as_deref() {
                None | Some("deflate") => true,
                Some("off") => false,
                Some(other) => {
                    errs.add(
                        &path.key("compression"),
                        format!("`{other}` is not a compression; use \"deflate\" or \"off\""),
                    );
                    false
                }
            },
            min_size: size(
                self.compression_min_size,
                256,
                &path.key("compression_min_size"),
                errs,
            ) as usize,
            level: match self.compression_level {
                None => 6,
                Some(l @ 1..=9) => l,
                Some(l) => {
                    errs.add(
                        &path.key("compression_level"),
                        format!("{l} is not a level; use 1 (fastest) to 9 (smallest)"),
                    );
                    6
                }
            },
        };
        Some(RouteConfig {
            path: tpl,
            groups,
            origins,
            auth,
            inbound,
            max_message: max_message as usize,
            ping_interval: optional_duration(
                self.ping_interval,
                Some(Duration::from_secs(20)),
                &path.key("ping_interval"),
                errs,
            ),
            send_queue,
            send_queue_bytes: send_queue_bytes as usize,
            slow_client,
            inbound_rate,
            inbound_burst,
            inbound_limit,
            send_timeout: values::duration(
                self.send_timeout.as_deref(),
                Duration::from_secs(10),
                false,
                &path.key("send_timeout"),
                errs,
            ),
            idle_timeout: optional_duration(
                self.idle_timeout,
                None,
                &path.key("idle_timeout"),
                errs,
            ),
            max_lifetime: optional_duration(
                self.max_lifetime,
                None,
                &path.key("max_lifetime"),
                errs,
            ),
            subprotocols: self.subprotocols.unwrap_or_default(),
            protocol,
            authorize,
            max_groups: match self.max_groups {
                Some(0) => {
                    errs.add(&path.key("max_groups"), "must be at least 1");
                    1
                }
                n => n.unwrap_or(100),
            },
            compression,
        })
    }
}

/// Checks every route and that no two routes can match the same path.
pub(crate) fn validate_routes(
    raw: Vec<RawRoute>,
    path: &KeyPath,
    errs: &mut Errors,
) -> Vec<RouteConfig> {
    let mut routes: Vec<RouteConfig> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let p = path.index(i);
        if let Some(route) = r.validate(&p, errs) {
            if let Some(other) = routes.iter().find(|o| o.path.overlaps(&route.path)) {
                errs.add(
                    &p.key("path"),
                    format!(
                        "overlaps the route {}: a request could match both",
                        other.path
                    ),
                );
            }
            routes.push(route);
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(extra: &str) -> Result<RouteConfig, String> {
        let text =
            format!("[upstream]\nservers=[\"127.0.0.1:1\"]\n[[ws]]\npath=\"/ws/\"\n{extra}\n");
        crate::config::Config::parse(&text, std::path::Path::new("t"))
            .map(|mut c| c.ws.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn per_connection_bounds_have_defaults_and_are_checked() {
        let r = route("").unwrap();
        assert_eq!(r.send_queue_bytes, 1 << 20);
        assert_eq!(r.inbound_rate.to_string(), "20/s");
        assert_eq!(r.inbound_burst, 40);
        assert_eq!(r.inbound_limit, InboundLimit::Close);
        let r = route("send_queue_bytes = \"256KiB\"\ninbound_rate = \"5/m\"\ninbound_burst = 2\ninbound_limit = \"drop\"").unwrap();
        assert_eq!(r.send_queue_bytes, 256 * 1024);
        assert_eq!(r.inbound_rate.to_string(), "5/m");
        assert_eq!((r.inbound_burst, r.inbound_limit), (2, InboundLimit::Drop));
        for (bad, key) in [
            ("send_queue_bytes = 0", "send_queue_bytes"),
            ("send_queue_bytes = \"lots\"", "send_queue_bytes"),
            ("inbound_rate = \"20\"", "inbound_rate"),
            ("inbound_rate = \"0/s\"", "inbound_rate"),
            ("inbound_burst = 0", "inbound_burst"),
            ("inbound_limit = \"ignore\"", "inbound_limit"),
        ] {
            let e = route(bad).unwrap_err();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn compression_keys() {
        let r = route("").unwrap();
        assert!(r.compression.enabled);
        assert_eq!((r.compression.min_size, r.compression.level), (256, 6));
        let r =
            route("compression = \"off\"\ncompression_min_size = \"1KiB\"\ncompression_level = 1")
                .unwrap();
        assert!(!r.compression.enabled);
        assert_eq!((r.compression.min_size, r.compression.level), (1024, 1));
        for (bad, key) in [
            ("compression = \"gzip\"", "compression"),
            ("compression_level = 0", "compression_level"),
            ("compression_level = 10", "compression_level"),
            ("compression_min_size = \"big\"", "compression_min_size"),
        ] {
            let e = route(bad).unwrap_err();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1 MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}

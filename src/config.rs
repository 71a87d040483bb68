//! The TOML configuration: read once at start (and by `channelgate check`), validated in one
//! step into typed values. Every error names its key and line; all of them are reported at once.
//!
//! Each part of channelgate owns its section: `[server]` and `[log]` live here,
//! `[upstream]` in [`crate::upstream::config`], `[admin]` in [`crate::admin`].

mod errors;
mod fields;
mod summary;
pub mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use errors::{ConfigError, ConfigErrors, Errors, KeyPath};
use values::{Address, Resolve};

use crate::admin::{AdminConfig, RawAdmin};
use crate::broker::{BrokerConfig, RawBroker};
use crate::upstream::config::{RawUpstream, UpstreamConfig};
use crate::ws::config::{RawRoute, RouteConfig};

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    /// `[[ws]]`: the WebSocket routes served in-process.
    pub ws: Vec<RouteConfig>,
    pub broker: BrokerConfig,
    /// `[tls]`: HTTPS listeners and certificates; None when the section is absent.
    pub tls: Option<crate::tls::TlsConfig>,
    /// `[[static]]`: locations served from disk.
    pub statics: Vec<crate::files::Location>,
    /// `[compression]`: compression of proxied responses.
    pub compression: crate::proxy::compress::CompressionConfig,
}

/// `[server]`: the client-facing listeners and process behaviour.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Addresses that accept client traffic (TCP or `unix:` paths).
    pub listen: Vec<Address>,
    /// Worker threads for the proxy.
    pub threads: usize,
    /// How long a shutdown waits for in-flight requests before it cuts them.
    pub grace_period: Duration,
    /// Where a running instance hands its listening sockets to its successor (`run --upgrade`).
    pub upgrade_sock: PathBuf,
    /// Where the process id is written.
    pub pid_file: PathBuf,
    /// Proxies in front of channelgate whose X-Forwarded-Proto/-Host are kept.
    pub forwarding: crate::proxy::headers::Forwarding,
    /// Extra read buffer per client connection, in bytes; 0 reads the socket directly.
    pub read_buffer: usize,
    /// The largest request line / header line and request head accepted.
    pub header_limits: crate::proxy::headers::HeaderLimits,
    /// Client timeouts and connection limits.
    pub limits: crate::proxy::limits::ClientLimits,
    /// `temp_dir` and `max_body_size`.
    pub body: crate::proxy::buffer::BodyLimits,
}

/// `[log]`.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A `tracing` filter such as "info" or "channelgate=debug,warn"; `RUST_LOG` wins over it.
    pub level: String,
    /// One line per request on the `access` target.
    pub access_log: bool,
    /// "text" or "json".
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawConfig {
    server: RawServer,
    upstream: RawUpstream,
    admin: RawAdmin,
    log: RawLog,
    ws: Vec<RawRoute>,
    broker: RawBroker,
    tls: Option<crate::tls::config::RawTls>,
    #[serde(rename = "static")]
    statics: Vec<crate::files::config::RawStatic>,
    compression: crate::proxy::compress::RawCompression,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawServer {
    listen: Option<Vec<String>>,
    threads: Option<usize>,
    grace_period: Option<String>,
    upgrade_sock: Option<String>,
    pid_file: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    strip_headers: Option<Vec<String>>,
    underscores_in_headers: Option<bool>,
    read_buffer: Option<String>,
    max_header_line: Option<String>,
    max_header_size: Option<String>,
    header_timeout: Option<String>,
    keepalive_timeout: Option<String>,
    keepalive_requests: Option<u32>,
    body_timeout: Option<String>,
    send_timeout: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    temp_dir: Option<String>,
    max_body_size: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawLog {
    level: Option<String>,
    access_log: Option<bool>,
    format: Option<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: file.clone(),
            errors: vec![ConfigError {
                key: "(file)".into(),
                position: None,
                message: format!("cannot read the configuration file: {e}"),
            }],
        })?;
        Config::parse(&text, path)
    }

    /// Validates configuration text; `source` names it in errors.
    pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigErrors> {
        let file = source.display().to_string();
        let mut errs = Errors::new(text);
        let mut unknown = Vec::new();
        let de = toml::Deserializer::new(text);
        let raw: Option<RawConfig> =
            match serde_ignored::deserialize(de, |p| unknown.push(KeyPath::from_ignored(&p))) {
                Ok(raw) => Some(raw),
                Err(e) => {
                    let e: toml::de::Error = e;
                    errs.add_at("(syntax)".into(), e.span(), e.message().to_string());
                    None
                }
            };
        for path in unknown {
            let (section, key) = (path.section(), path.to_string());
            let name = key.rsplit(['.', ']']).next().unwrap_or(&key).to_string();
            let valid = fields::valid_keys(&section_of(&section));
            let msg = match errors::suggest(&name, valid) {
                Some(s) => format!("unknown key; did you mean `{s}`?"),
                None if valid.is_empty() => "unknown key".to_string(),
                None => format!("unknown key; valid keys here: {}", valid.join(", ")),
            };
            errs.add(&path, msg);
        }
        let Some(raw) = raw else {
            return Err(errs.into_errors(&file));
        };
        let root = KeyPath::root();
        let server = raw.server.validate(&root.key("server"), &mut errs);
        let upstream = raw.upstream.validate(&root.key("upstream"), &mut errs);
        let admin = raw.admin.validate(&root.key("admin"), &mut errs);
        let log = raw.log.validate(&root.key("log"), &mut errs);
        let ws = crate::ws::config::validate_routes(raw.ws, &root.key("ws"), &mut errs);
        let broker = raw.broker.validate(&root.key("broker"), &mut errs);
        let tls = raw.tls.map(|t| t.validate(&root.key("tls"), &mut errs));
        let statics = crate::files::config::validate(raw.statics, &root.key("static"), &mut errs);
        let compression = raw
            .compression
            .validate(&root.key("compression"), &mut errs);
        crate::router::check_overlaps(&ws, &statics, &root, &mut errs);
        let statics = statics.into_iter().map(|(_, l)| l).collect();
        if let (Some(a), true) = (
            &admin.listen,
            server
                .listen
                .iter()
                .any(|l| Some(l) == admin.listen.as_ref()),
        ) {
            errs.add(
                &root.key("admin").key("listen"),
                format!("{a} is also a [server] listener"),
            );
        }
        for (i, r) in ws.iter().enumerate() {
            if let Some(a) = r
                .auth
                .as_ref()
                .filter(|a| ws.iter().any(|o| o.path.matches(&a.path).is_some()))
            {
                errs.add(
                    &root.key("ws").index(i).key("auth").key("path"),
                    format!(
                        "{} is itself a WebSocket route; auth must go to the app",
                        a.path
                    ),
                );
            }
        }
        let config = Config {
            source: source.to_path_buf(),
            server,
            upstream,
            admin,
            log,
            ws,
            broker,
            tls,
            statics,
            compression,
        };
        errs.into_result(&file, config)
    }

    /// What `channelgate check` prints: the configuration as channelgate understood it.
    pub fn summary(&self) -> String {
        summary::render(self)
    }
}

/// The section of an unknown key: the dotted path without the key itself.
fn section_of(dotted: &str) -> String {
    dotted
        .rsplit_once('.')
        .map(|(s, _)| s.to_string())
        .unwrap_or_default()
}

impl RawServer {
    fn validate(self, path: &KeyPath, errs: &mut Errors) -> ServerConfig {
        let raw_listen = self
            .listen
            .unwrap_or_else(|| vec![DEFAULT_LISTEN.to_string()]);
        if raw_listen.is_empty() {
            errs.add(&path.key("listen"), "needs at least one address");
        }
        let mut listen: Vec<Address> = Vec::new();
        for (i, raw) in raw_listen.iter().enumerate() {
            let p = path.key("listen").index(i);
            if let Some(a) = values::address(raw, Resolve::IpOnly, &p, errs) {
                if listen.contains(&a) {
                    errs.add(&p, format!("{a} is listed twice"));
                }
                listen.push(a);
            }
        }
        let threads = match self.threads {
            Some(0) => {
                errs.add(&path.key("threads"), "must be at least 1");
                1
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let grace_period = values::duration(
            self.grace_period.as_deref(),
            DEFAULT_GRACE_PERIOD,
            true,
            &path.key("grace_period"),
            errs,
        );
        let mut trusted = Vec::new();
        for (i, raw) in self.trusted_proxies.unwrap_or_default().iter().enumerate() {
            match crate::proxy::headers::Net::parse(raw) {
                Ok(n) => trusted.push(n),
                Err(e) => errs.add(&path.key("trusted_proxies").index(i), e),
            }
        }
        let mut strip = Vec::new();
        for (i, raw) in self.strip_headers.unwrap_or_default().iter().enumerate() {
            match crate::proxy::headers::reserved::configured_name(raw) {
                Ok(n) => strip.push(n),
                Err(e) => errs.add(&path.key("strip_headers").index(i), e),
            }
        }
        let read_buffer = size_key(
            self.read_buffer.as_deref(),
            0,
            (0, 1 << 20),
            &path.key("read_buffer"),
            errs,
        );
        let defaults = crate::proxy::headers::HeaderLimits::default();
        let line = size_key(
            self.max_header_line.as_deref(),
            defaults.line,
            (1 << 10, 1 << 20),
            &path.key("max_header_line"),
            errs,
        );
        let total = size_key(
            self.max_header_size.as_deref(),
            defaults.total.max(line),
            (1 << 10, 1 << 20),
            &path.key("max_header_size"),
            errs,
        );
        if total < line {
            errs.add(
                &path.key("max_header_size"),
                format!("must be at least max_header_line ({line} bytes)"),
            );
        }
        let limits = crate::proxy::limits::RawClientLimits {
            header_timeout: self.header_timeout,
            keepalive_timeout: self.keepalive_timeout,
            keepalive_requests: self.keepalive_requests,
            body_timeout: self.body_timeout,
            send_timeout: self.send_timeout,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
        }
        .validate(path, errs);
        let body = crate::proxy::buffer::BodyLimits::validate(
            self.temp_dir,
            self.max_body_size,
            path,
            errs,
        );
        ServerConfig {
            limits,
            body,
            read_buffer,
            header_limits: crate::proxy::headers::HeaderLimits { line, total },
            forwarding: crate::proxy::headers::Forwarding::new(
                trusted,
                strip,
                self.underscores_in_headers.unwrap_or(false),
            ),
            listen,
            threads,
            grace_period,
            upgrade_sock: PathBuf::from(
                self.upgrade_sock
                    .unwrap_or_else(|| "/tmp/channelgate_upgrade.sock".into()),
            ),
            pid_file: PathBuf::from(
                self.pid_file
                    .unwrap_or_else(|| "/tmp/channelgate.pid".into()),
            ),
        }
    }
}

impl RawLog {
    fn validate(self, path: &KeyPath, errs: &mut Errors) -> LogConfig {
        let level = self.level.unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&level) {
            errs.add(&path.key("level"), format!("`{level}` is not a log filter ({e}); use e.g. \"info\" or \"channelgate=debug,warn\""));
        }
        let format = match self.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                errs.add(
                    &path.key("format"),
                    format!("`{other}` is not a log format; use \"text\" or \"json\""),
                );
                LogFormat::Text
            }
        };
        LogConfig {
            level,
            access_log: self.access_log.unwrap_or(true),
            format,
        }
    }
}

/// A size key ("8KiB", "1MiB", "0") within `min..=max` bytes; `default` when absent.
fn size_key(
    raw: Option<&str>,
    default: usize,
    (min, max): (usize, usize),
    key: &KeyPath,
    errs: &mut Errors,
) -> usize {
    match raw.map(crate::ws::config::parse_size) {
        None => default,
        Some(Ok(n)) if (min as u64..=max as u64).contains(&n) => n as usize,
        Some(Ok(_)) => {
            errs.add(
                key,
                format!("must be between {} and {}", show_size(min), show_size(max)),
            );
            default
        }
        Some(Err(e)) => {
            errs.add(key, e);
            default
        }
    }
}

fn show_size(n: usize) -> String {
    match n {
        0 => "0".into(),
        n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, Path::new("test.toml"))
    }

    const MINIMAL: &str = "[upstream]\nservers = [\"127.0.0.1:8050\"]\n";

    #[test]
    fn hook_secret_file_must_be_private_and_strip_headers_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hook.secret");
        std::fs::write(&f, "0123456789abcdef0123456789abcdef\n").unwrap();
        let cfg = |extra: &str| {
            format!(
                "[server]\nstrip_headers = [\"X-Internal\"{extra}]\n[upstream]\nservers = [\"127.0.0.1:2\"]\nhook_secret_file = \"{}\"\n",
                f.display()
            )
        };
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = parse(&cfg("")).unwrap_err();
        assert_eq!(e.errors[0].key, "upstream.hook_secret_file");
        assert!(e.errors[0].message.contains("chmod 600"), "{e:?}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = parse(&cfg("")).unwrap();
        assert!(c.upstream.hook_secret.is_some());
        assert_eq!(c.server.forwarding.strip[0].as_str(), "x-internal");
        let e = parse(&cfg(", \"Host\"")).unwrap_err();
        assert_eq!(e.errors[0].key, "server.strip_headers[1]");
        let e = parse("[upstream]\nservers = [\"127.0.0.1:2\"]\nhook_secret = \"short\"\n")
            .unwrap_err();
        assert_eq!(e.errors[0].key, "upstream.hook_secret");
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.server.listen,
            vec![Address::Tcp("127.0.0.1:8000".parse().unwrap())]
        );
        assert_eq!(c.server.grace_period, DEFAULT_GRACE_PERIOD);
        assert_eq!(c.admin.listen.unwrap().to_string(), "127.0.0.1:9100");
        assert_eq!(c.upstream.servers.len(), 1);
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_suggestion() {
        let e = parse("[server]\nlisten = [\"127.0.0.1:1\"]\nlisen = 3\n\n[upstream]\nservers = [\"127.0.0.1:2\"]\nconect_timeout = \"1s\"\n[bogus]\nx = 1\n")
            .unwrap_err();
        let msgs: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert_eq!(
            msgs[0],
            "line 3, column 1: server.lisen: unknown key; did you mean `listen`?"
        );
        assert_eq!(msgs[1], "line 7, column 1: upstream.conect_timeout: unknown key; did you mean `connect_timeout`?");
        assert!(
            msgs[2].starts_with("line 8, column 2: bogus: unknown key"),
            "{}",
            msgs[2]
        );
    }

    #[test]
    fn all_value_errors_are_reported_at_once() {
        let e = parse(
            "[server]\nlisten = [\"nowhere\", \"127.0.0.1:1\"]\nthreads = 0\ngrace_period = \"ten\"\n[upstream]\nservers = []\n[log]\nformat = \"xml\"\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = e.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.listen[0]",
                "server.threads",
                "server.grace_period",
                "upstream.servers",
                "log.format"
            ]
        );
    }

    #[test]
    fn header_limits_parse_and_are_checked() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.server.header_limits,
            crate::proxy::headers::HeaderLimits::default()
        );
        let c = parse(&format!(
            "[server]\nmax_header_line = \"16KiB\"\nmax_header_size = \"64KiB\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(
            (c.server.header_limits.line, c.server.header_limits.total),
            (16 << 10, 64 << 10)
        );
        let e = parse(&format!(
            "[server]\nmax_header_line = \"64KiB\"\nmax_header_size = \"16KiB\"\nread_buffer = \"2MiB\"\n{MINIMAL}"
        ))
        .unwrap_err();
        let msgs: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs.iter().any(
            |m| m.contains("server.max_header_size") && m.contains("at least max_header_line")
        ));
        assert!(msgs
            .iter()
            .any(|m| m.contains("server.read_buffer") && m.contains("between 0 and 1MiB")));
    }

    #[test]
    fn syntax_and_type_errors_have_positions() {
        let e = parse("[server]\nthreads = \"two\"\n").unwrap_err();
        assert_eq!(e.errors[0].position, Some((2, 11)));
        let e = parse("[server\n").unwrap_err();
        assert_eq!(e.errors[0].position.map(|p| p.0), Some(1));
    }

    #[test]
    fn admin_may_not_share_a_listener() {
        let e =
            parse("[server]\nlisten=[\"127.0.0.1:9100\"]\n[upstream]\nservers=[\"127.0.0.1:1\"]\n")
                .unwrap_err();
        assert_eq!(e.errors[0].key, "admin.listen");
    }

    #[test]
    fn shipped_example_ws_block_is_valid_when_uncommented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/channelgate.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let (head, tail) = text
            .split_once("# [[ws]]")
            .expect("the example documents [[ws]]");
        let block: String = tail
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let c = parse(&format!("{head}[[ws]]{block}\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.ws.len(), 1);
        assert_eq!(c.ws[0].groups.len(), 1);
    }

    #[test]
    fn seed_deployment_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/examples");
        // [[static]] roots must exist: point them at a directory that does.
        let root = tempfile::tempdir().unwrap();
        for name in ["catmaid", "awx", "clu"] {
            let path = dir.join(format!("{name}.toml"));
            let text: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| match l.starts_with("root = ") {
                    true => format!("root = \"{}\"\n", root.path().display()),
                    false => format!("{l}\n"),
                })
                .collect();
            if let Err(e) = Config::parse(&text, &path) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/channelgate.toml");
        if let Err(e) = Config::load(&path) {
            panic!("{e}");
        }
    }
}

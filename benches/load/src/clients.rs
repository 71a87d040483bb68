//! Opening N WebSocket clients: bounded connect concurrency, source addresses spread over
//! 127.0.0.x, connect-time statistics, the READY signal. The modes (connect, hold, fanout)
//! give each client a body to run once it is connected.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::raw::{self, RawWs, Recv, WireStats};
use crate::util::{self, parse_duration, parse_header};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One client connection: tokio-tungstenite's, or the raw client's (`--raw`, `--deflate`).
pub enum Conn {
    Tungstenite(Box<Ws>),
    Raw(Box<RawWs<MaybeTlsStream<TcpStream>>>),
}

impl Conn {
    /// The next text or binary message (pings are answered on the way), a close, the
    /// end of the stream or an error.
    pub async fn recv(&mut self) -> Recv {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::{Bytes, Message};
        match self {
            Conn::Raw(r) => r.recv().await,
            Conn::Tungstenite(ws) => loop {
                return match ws.next().await {
                    Some(Ok(Message::Text(t))) => Recv::Data(Bytes::from(t)),
                    Some(Ok(Message::Binary(b))) => Recv::Data(b),
                    Some(Ok(Message::Close(f))) => Recv::Close(f.as_ref().map_or(1005, |f| u16::from(f.code))),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => Recv::Error(crate::hold::short_err(&e)),
                    None => Recv::Eof,
                };
            },
        }
    }

    /// Sends a close (1000) and flushes it.
    pub async fn close(&mut self) {
        match self {
            Conn::Raw(r) => r.close().await,
            Conn::Tungstenite(ws) => {
                let _ = ws.close(Some(normal_close())).await;
            }
        }
    }

    /// What the raw client counted (None for tungstenite's).
    pub fn wire(&self) -> Option<&WireStats> {
        match self {
            Conn::Raw(r) => Some(&r.stats),
            Conn::Tungstenite(_) => None,
        }
    }

    /// Whether the server agreed to permessage-deflate.
    pub fn deflate(&self) -> bool {
        matches!(self, Conn::Raw(r) if r.deflate().is_some())
    }

    /// The server's Sec-WebSocket-Extensions answer (raw client only).
    pub fn extensions(&self) -> Option<&str> {
        match self {
            Conn::Raw(r) => r.extensions.as_deref(),
            Conn::Tungstenite(_) => None,
        }
    }
}

/// Options every client mode shares.
#[derive(Args, Clone, Debug)]
pub struct ClientOpts {
    /// WebSocket URL (ws:// or wss:// on a loopback address; wss needs --ca-file). Repeat to spread the clients over
    /// several URLs, e.g. several groups: client i uses URL i mod count.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,

    /// Number of connections.
    #[arg(short = 'n', long = "connections", default_value_t = 1000)]
    pub connections: usize,

    /// Extra request header for the handshake, "Name: value" (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// Connection attempts (TCP connect + handshake) in flight at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,

    /// Longest one attempt (TCP connect + handshake) may take.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Bind client i to source address 127.0.0.(1 + i mod K) before connecting, so
    /// ephemeral ports last for 10k-100k connections (1..=254). 0: let the kernel choose.
    #[arg(long, default_value_t = 200)]
    pub source_ips: u32,

    /// Also signal readiness by writing this file (JSON with the connect counts) once
    /// every connection attempt has finished.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,

    /// Initial read buffer per connection, in bytes (tungstenite allocates it eagerly).
    #[arg(long, default_value_t = 8192)]
    pub read_buffer: usize,

    /// PEM file of the CA (or self-signed certificate) that wss:// servers are checked
    /// against (the certificate must name the URL's host, e.g. IP:127.0.0.1).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,

    /// Use the raw client (its own handshake and frame parser) instead of tokio-tungstenite:
    /// counts every frame's bytes as received (`wire` in the JSON).
    #[arg(long)]
    pub raw: bool,

    /// Offer permessage-deflate like Chrome (`Sec-WebSocket-Extensions: permessage-deflate;
    /// client_max_window_bits`) and inflate what arrives compressed. Implies --raw.
    #[arg(long)]
    pub deflate: bool,

    /// With --deflate: only client i with i mod K = 0 inflates (and so reads timestamps and
    /// sequence numbers); the others count compressed messages without inflating them,
    /// which spares the clients' CPU. 1: every client inflates every message.
    #[arg(long, default_value_t = 1)]
    pub inflate_every: usize,

    /// Free-form label copied into the JSON line (e.g. the server under test).
    #[arg(long)]
    pub label: Option<String>,

    /// Print progress to stderr every few seconds.
    #[arg(long)]
    pub progress: bool,
}

/// One URL, checked and resolved once.
struct Target {
    url: String,
    addr: SocketAddr,
    tls: bool,
    /// Host header value and request path (raw client).
    authority: String,
    host: String,
    path: String,
}

fn targets(urls: &[String]) -> Result<Vec<Target>, String> {
    urls.iter()
        .map(|u| {
            let default_port = if u.starts_with("wss://") { 443 } else { 80 };
            let (scheme, host, port, path) = util::split_url(u, default_port)?;
            if scheme != "ws" && scheme != "wss" {
                return Err(format!("`{u}`: only ws:// and wss:// URLs are supported"));
            }
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            Ok(Target {
                url: u.clone(),
                addr: util::loopback_addr(&host, port)?,
                tls: scheme == "wss",
                authority,
                host,
                path,
            })
        })
        .collect()
}

/// Shortens an error to a label with few distinct values (for the error counts).
fn error_kind(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Http(resp) => format!("http {}", resp.status().as_u16()),
        E::Io(io) => format!("io {:?}", io.kind()),
        E::Protocol(p) => format!("protocol: {p}"),
        other => {
            let s = other.to_string();
            s.chars().take(60).collect()
        }
    }
}

async fn connect_one(
    i: usize,
    t: &Target,
    opts: &ClientOpts,
    cfg: WebSocketConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Conn, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket {:?}", e.kind()))?;
    if opts.source_ips > 0 && t.addr.is_ipv4() {
        let last = 1 + (i as u32 % opts.source_ips.min(254)) as u8;
        let src = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0);
        sock.bind(src).map_err(|e| format!("bind {:?}", e.kind()))?;
    }
    let stream = sock
        .connect(t.addr)
        .await
        .map_err(|e| format!("connect {:?}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    if opts.raw || opts.deflate {
        return connect_raw(i, t, opts, stream, tls).await;
    }
    let mut req = t
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    for (k, v) in &opts.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("bad header name {k}"))?;
        let value = HeaderValue::from_str(v).map_err(|_| format!("bad header value for {k}"))?;
        req.headers_mut().append(name, value);
    }
    // ws:// URLs stay plain whatever the connector; wss:// ones use it.
    let connector = tls.map(Connector::Rustls).unwrap_or(Connector::Plain);
    let (ws, _resp) = tokio_tungstenite::client_async_tls_with_config(req, stream, Some(cfg), Some(connector))
        .await
        .map_err(|e| error_kind(&e))?;
    Ok(Conn::Tungstenite(Box::new(ws)))
}

/// The raw client: TLS (for wss://) with tokio-rustls, then its own upgrade.
async fn connect_raw(
    i: usize,
    t: &Target,
    opts: &ClientOpts,
    stream: TcpStream,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Conn, String> {
    let io = match (t.tls, tls) {
        (false, _) => MaybeTlsStream::Plain(stream),
        (true, Some(cfg)) => {
            let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                .map_err(|e| format!("tls: server name {}: {e}", t.host))?;
            let s = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, stream)
                .await
                .map_err(|e| format!("tls: {:?}", e.kind()))?;
            MaybeTlsStream::Rustls(s)
        }
        (true, None) => return Err("wss:// needs --ca-file".into()),
    };
    let seed = util::now_ns() ^ ((i as u64) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    let mut ws = raw::handshake(io, &t.authority, &t.path, &opts.headers, opts.deflate, seed).await?;
    ws.inflate = i % opts.inflate_every.max(1) == 0;
    Ok(Conn::Raw(Box::new(ws)))
}

/// A rustls client config trusting only the certificates in `ca` (PEM).
fn tls_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("--ca-file {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        let c = c.map_err(|e| format!("--ca-file {}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("--ca-file {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("--ca-file {}: no certificate in it", ca.display()));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// What the connect phase saw.
#[derive(Default)]
pub struct ConnectLog {
    pub times_ns: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
}

/// Handed to each client's body.
pub struct Client {
    pub index: usize,
    pub ws: Conn,
    /// Becomes true when the run is over: the body should close and return.
    pub stop: watch::Receiver<bool>,
}

/// The run-wide state the driver and the bodies share.
pub struct Phase {
    pub connected: AtomicUsize,
    /// Connections on which the server agreed to permessage-deflate.
    pub deflate_agreed: AtomicUsize,
    /// The servers' Sec-WebSocket-Extensions answers, counted ("" = none; raw client).
    pub extension_answers: Mutex<BTreeMap<String, u64>>,
    pub failed: AtomicUsize,
    pub log: Mutex<ConnectLog>,
    pub started: Instant,
}

/// Connects `opts.connections` clients, runs `body` on each as soon as it is connected,
/// and returns once every attempt has finished (READY has been signalled by then), with
/// the join handles of the bodies and the stop switch.
pub async fn open_all<B, F, R>(
    opts: &ClientOpts,
    body: B,
) -> Result<(Arc<Phase>, Vec<tokio::task::JoinHandle<Option<R>>>, watch::Sender<bool>), String>
where
    B: Fn(Client) -> F + Send + Sync + 'static,
    F: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    if opts.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if opts.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let targets = Arc::new(targets(&opts.urls)?);
    let tls = match &opts.ca_file {
        Some(p) => Some(tls_config(p)?),
        None if opts.urls.iter().any(|u| u.starts_with("wss://")) => {
            return Err("wss:// URLs need --ca-file".into());
        }
        None => None,
    };
    let cfg = WebSocketConfig::default()
        .read_buffer_size(opts.read_buffer.max(256))
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let phase = Arc::new(Phase {
        connected: AtomicUsize::new(0),
        deflate_agreed: AtomicUsize::new(0),
        extension_answers: Mutex::new(BTreeMap::new()),
        failed: AtomicUsize::new(0),
        log: Mutex::new(ConnectLog::default()),
        started: Instant::now(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let sem = Arc::new(Semaphore::new(opts.concurrency));
    let body = Arc::new(body);
    let opts_arc = Arc::new(opts.clone());
    let mut handles = Vec::with_capacity(opts.connections);
    for i in 0..opts.connections {
        let (targets, phase, sem, body, opts, stop) = (
            targets.clone(),
            phase.clone(),
            sem.clone(),
            body.clone(),
            opts_arc.clone(),
            stop_rx.clone(),
        );
        let tls = tls.clone();
        handles.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.ok()?;
            let t = &targets[i % targets.len()];
            let t0 = Instant::now();
            let res = tokio::time::timeout(opts.connect_timeout, connect_one(i, t, &opts, cfg, tls)).await;
            drop(permit);
            let elapsed = t0.elapsed().as_nanos() as u64;
            match res {
                Ok(Ok(ws)) => {
                    phase.log.lock().unwrap().times_ns.push(elapsed);
                    if matches!(ws, Conn::Raw(_)) {
                        let answer = ws.extensions().unwrap_or("").to_string();
                        *phase.extension_answers.lock().unwrap().entry(answer).or_default() += 1;
                    }
                    if ws.deflate() {
                        phase.deflate_agreed.fetch_add(1, Ordering::SeqCst);
                    }
                    phase.connected.fetch_add(1, Ordering::SeqCst);
                    Some(body(Client { index: i, ws, stop }).await)
                }
                Ok(Err(kind)) => {
                    *phase.log.lock().unwrap().errors.entry(kind).or_default() += 1;
                    phase.failed.fetch_add(1, Ordering::SeqCst);
                    None
                }
                Err(_) => {
                    *phase.log.lock().unwrap().errors.entry("timeout".into()).or_default() += 1;
                    phase.failed.fetch_add(1, Ordering::SeqCst);
                    None
                }
            }
        }));
    }

    // Every attempt is bounded by connect_timeout, so this loop ends; the extra bound is
    // a safety net.
    let limit =
        opts.connect_timeout.as_secs_f64() * ((opts.connections as f64 / opts.concurrency as f64).ceil() + 1.0) + 10.0;
    let mut last_progress = Instant::now();
    loop {
        let (ok, failed) = (
            phase.connected.load(Ordering::SeqCst),
            phase.failed.load(Ordering::SeqCst),
        );
        if ok + failed >= opts.connections {
            break;
        }
        if phase.started.elapsed().as_secs_f64() > limit {
            eprintln!("cg-load: connect phase exceeded {limit:.0}s; going on with {ok} connections");
            break;
        }
        if opts.progress && last_progress.elapsed() >= Duration::from_secs(5) {
            eprintln!("cg-load: connected {ok}/{} failed {failed}", opts.connections);
            last_progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal_ready(opts, &phase);
    Ok((phase, handles, stop_tx))
}

fn signal_ready(opts: &ClientOpts, phase: &Phase) {
    let (ok, failed) = (
        phase.connected.load(Ordering::SeqCst),
        phase.failed.load(Ordering::SeqCst),
    );
    println!("READY");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    eprintln!(
        "cg-load: READY: {ok} connected, {failed} failed in {:.2}s",
        phase.started.elapsed().as_secs_f64()
    );
    if let Some(p) = &opts.ready_file {
        let content = json!({"connected": ok, "failed": failed}).to_string() + "\n";
        if let Err(e) = util::write_atomic(p, &content) {
            eprintln!("cg-load: cannot write ready file {}: {e}", p.display());
        }
    }
}

/// The "connect" part of every JSON line.
pub fn connect_report(opts: &ClientOpts, phase: &Phase, connect_wall: Duration) -> Value {
    let mut log = phase.log.lock().unwrap();
    let ok = log.times_ns.len();
    let failed: u64 = log.errors.values().sum();
    let times = util::summary_ms(&mut log.times_ns);
    json!({
        "requested": opts.connections,
        "ok": ok,
        "failed": failed,
        "errors": log.errors,
        "wall_s": util::round3(connect_wall.as_secs_f64()),
        "per_s": if connect_wall.as_secs_f64() > 0.0 { util::round3(ok as f64 / connect_wall.as_secs_f64()) } else { 0.0 },
        "time_ms": times,
        "deflate_offered": opts.deflate,
        "deflate_agreed": phase.deflate_agreed.load(Ordering::SeqCst),
        "extension_answers": phase.extension_answers.lock().unwrap().clone(),
    })
}

/// The "params" shared by the client modes.
pub fn client_params(opts: &ClientOpts) -> Value {
    json!({
        "urls": opts.urls,
        "connections": opts.connections,
        "headers": opts.headers.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "concurrency": opts.concurrency,
        "connect_timeout_s": opts.connect_timeout.as_secs_f64(),
        "source_ips": opts.source_ips,
        "read_buffer": opts.read_buffer,
        "client": if opts.raw || opts.deflate { "raw" } else { "tokio-tungstenite" },
        "offer_deflate": opts.deflate.then_some(raw::DEFLATE_OFFER),
        "inflate_every": opts.deflate.then_some(opts.inflate_every.max(1)),
    })
}

/// The close frame clients end with: 1000, no reason.
pub fn normal_close() -> tokio_tungstenite::tungstenite::protocol::CloseFrame {
    tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Waits for the bodies to return after `stop` was set, at most `limit`; late ones are
/// aborted and left out.
pub async fn collect<R>(handles: Vec<tokio::task::JoinHandle<Option<R>>>, limit: Duration) -> (Vec<R>, usize) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::with_capacity(handles.len());
    let mut late = 0;
    for h in handles {
        let abort = h.abort_handle();
        match tokio::time::timeout_at(deadline, h).await {
            Ok(Ok(Some(r))) => out.push(r),
            Ok(_) => {}
            Err(_) => {
                abort.abort();
                late += 1;
            }
        }
    }
    (out, late)
}

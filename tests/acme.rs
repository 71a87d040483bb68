//! ACME end to end against Debian's pebble on loopback (tests/acme/pebble.rs).
//!
//! Under CI=true these fail when pebble cannot be installed; elsewhere they skip.

mod common;
#[path = "acme/pebble.rs"]
mod pebble;
#[path = "acme/tls_client.rs"]
mod tls_client;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channelgate::metrics::Metrics;
use channelgate::tls::acme::{AcmeConfig, AcmeService, Challenge, Challenges};
use common::*;
use pebble::Pebble;
use pingora::services::background::BackgroundService;
use rustls::sign::CertifiedKey;

/// An http-01 responder and certificate sink outside channelgate's listeners: checks the
/// client (order flow, account, state_dir) on its own.
#[derive(Default)]
struct Sink {
    tokens: Mutex<HashMap<String, String>>,
    installed: Mutex<Vec<Vec<u8>>>,
}

impl Challenges for Sink {
    fn set_alpn_challenge(&self, _: &str, _: Option<Arc<CertifiedKey>>) {}
    fn set_http01(&self, token: &str, key_authorization: Option<String>) {
        let mut t = self.tokens.lock().unwrap();
        match key_authorization {
            Some(k) => t.insert(token.to_string(), k),
            None => t.remove(token),
        };
    }
    fn set_certificate(&self, _: &[String], key: Arc<CertifiedKey>) {
        self.installed
            .lock()
            .unwrap()
            .push(key.cert[0].as_ref().to_vec());
    }
}

fn serve_tokens(listener: TcpListener, sink: Arc<Sink>) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let token = line
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.strip_prefix("/.well-known/acme-challenge/"))
                .unwrap_or("")
                .to_string();
            let answer = sink.tokens.lock().unwrap().get(&token).cloned();
            let mut out = &stream;
            let _ = match answer {
                Some(a) => write!(
                    out,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{a}",
                    a.len()
                ),
                None => write!(out, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            };
        }
    });
}

/// Pebble validating http-01 through an in-test responder; the client's settings for
/// `domains` with the given `renew_before`.
fn pebble_and_responder(
    dir: &std::path::Path,
    domains: &[&str],
    renew_before: Duration,
) -> (Pebble, Arc<Sink>, AcmeConfig) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let http_port = listener.local_addr().expect("addr").port();
    let pebble = Pebble::start(dir, http_port, free_port(), 3600);
    let sink = Arc::new(Sink::default());
    serve_tokens(listener, sink.clone());
    let settings = AcmeConfig {
        domains: domains.iter().map(|d| d.to_string()).collect(),
        email: Some("ops@acme.test".into()),
        directory: pebble.directory(),
        state_dir: dir.join("acme"),
        challenge: Challenge::Http01,
        renew_before,
        directory_ca: Some(pebble.directory_ca.clone()),
    };
    (pebble, sink, settings)
}

#[test]
fn client_obtains_and_renews_from_pebble_over_http01() {
    if !pebble::available() {
        return;
    }
    let dir = tempdir();
    // Pebble's certificates live an hour: a renewal 10 s after each issuance.
    let (pebble, sink, settings) = pebble_and_responder(
        dir.path(),
        &["app.acme.test", "www.acme.test"],
        Duration::from_secs(3590),
    );
    let metrics = Arc::new(Metrics::new());
    let service = AcmeService::new(settings, sink.clone(), metrics.clone());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (stop, watch) = tokio::sync::watch::channel(false);
    let task = rt.spawn(async move { service.start(watch).await });
    wait_for("two certificates", Duration::from_secs(120), || {
        sink.installed.lock().unwrap().len() >= 2
    });
    let _ = stop.send(true);
    rt.block_on(task).expect("service ends on shutdown");
    let issued = metrics.acme.orders.with_label_values(&["issued"]).get();
    assert!(issued >= 2, "{issued}\n{}", pebble.log());
    assert!(
        sink.tokens.lock().unwrap().is_empty(),
        "challenges withdrawn"
    );
}

/// Two instances on one state_dir: one orders (it holds the lock), the other installs the
/// certificate it wrote; the CA sees one order.
#[test]
fn instances_sharing_a_state_dir_order_once() {
    if !pebble::available() {
        return;
    }
    let dir = tempdir();
    let (pebble, sink, settings) = pebble_and_responder(
        dir.path(),
        &["shared.acme.test"],
        Duration::from_secs(30 * 86400),
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (stop, watch) = tokio::sync::watch::channel(false);
    let mut instances = Vec::new();
    for _ in 0..2 {
        let own = Arc::new(Sink::default());
        let metrics = Arc::new(Metrics::new());
        // Each instance installs into its own store, and answers through the shared port.
        let both = Arc::new(Tee(own.clone(), sink.clone()));
        let service = AcmeService::new(settings.clone(), both, metrics.clone());
        let watch = watch.clone();
        rt.spawn(async move { service.start(watch).await });
        instances.push((own, metrics));
    }
    wait_for(
        "both instances serve a certificate",
        Duration::from_secs(120),
        || {
            instances
                .iter()
                .all(|(own, _)| !own.installed.lock().unwrap().is_empty())
        },
    );
    let _ = stop.send(true);
    let orders: u64 = instances
        .iter()
        .map(|(_, m)| m.acme.orders.with_label_values(&["issued"]).get())
        .sum();
    assert_eq!(orders, 1, "one order for both\n{}", pebble.log());
    let loaded: u64 = instances.iter().map(|(_, m)| m.acme.loaded.get()).sum();
    assert_eq!(loaded, 1, "the other instance loaded it from state_dir");
    let leaves: Vec<Vec<u8>> = instances
        .iter()
        .map(|(own, _)| own.installed.lock().unwrap()[0].clone())
        .collect();
    assert_eq!(leaves[0], leaves[1], "the same certificate");
}

/// Installs into the first sink, answers challenges through the second.
struct Tee(Arc<Sink>, Arc<Sink>);

impl Challenges for Tee {
    fn set_alpn_challenge(&self, _: &str, _: Option<Arc<CertifiedKey>>) {}
    fn set_http01(&self, token: &str, key_authorization: Option<String>) {
        self.1.set_http01(token, key_authorization);
    }
    fn set_certificate(&self, names: &[String], key: Arc<CertifiedKey>) {
        self.0.set_certificate(names, key);
    }
}

/// channelgate with `[tls] acme` in front of pebble: the certificate is issued and served
/// on the TLS listener, renewed (pebble's certificates live an hour and renew_before asks
/// for a renewal 10 s after issuance), and served again after a restart with pebble gone.
fn issue_serve_renew_restart(challenge: &str) {
    if !pebble::available() {
        return;
    }
    let dir = tempdir();
    let (http_port, tls_port, admin_port) = (free_port(), free_port(), free_port());
    let mut pebble = Pebble::start(dir.path(), http_port, tls_port, 3600);
    let state_dir = dir.path().join("acme");
    let domain = "app.acme.test";
    let body = format!(
        "[upstream]\nservers = [\"127.0.0.1:{dead}\"]\n\n[tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n\
         acme = {{ domains = [\"{domain}\"], email = \"ops@acme.test\", directory = \"{directory}\", \
         state_dir = \"{state}\", challenge = \"{challenge}\", renew_before = \"3590s\", \
         directory_ca = \"{ca}\" }}\n",
        dead = free_port(),
        directory = pebble.directory(),
        state = state_dir.display(),
        ca = pebble.directory_ca.display(),
    );
    let mut cg = Channelgate::start_on(dir.path(), (http_port, admin_port), "", &body);
    let issued = |cg: &Channelgate| cg.metric("channelgate_acme_orders_total{outcome=\"issued\"}");

    // Issued and served.
    wait_for("the first certificate", Duration::from_secs(120), || {
        issued(&cg) >= 1.0
    });
    let root = pebble.root_pem();
    let chain_path = std::fs::read_dir(&state_dir)
        .expect("state_dir")
        .flatten()
        .map(|e| e.path().join(domain).join("fullchain.pem"))
        .find(|p| p.exists())
        .expect("fullchain.pem in state_dir");
    let on_disk = || tls_client::leaf_of(&std::fs::read_to_string(&chain_path).expect("chain"));
    let first = on_disk();
    let served = tls_client::served_leaf(tls_port, domain, &root).expect("served");
    assert_eq!(
        served, first,
        "the TLS listener serves the issued certificate"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&state_dir), 0o700);
    assert_eq!(mode(&chain_path.with_file_name("privkey.pem")), 0o600);

    // `channelgate check` reports what state_dir holds.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_channelgate"))
        .args(["check", "--config"])
        .arg(&cg.config)
        .output()
        .expect("channelgate check");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(text.contains("  account:   registered"), "{text}");
    assert!(text.contains(&format!("for {domain} (serial ")), "{text}");
    assert!(text.contains("renewal at "), "{text}");

    // Renewed: a new certificate on disk and on the listener.
    wait_for("the renewal", Duration::from_secs(120), || {
        issued(&cg) >= 2.0
    });
    wait_for(
        "the renewed certificate served",
        Duration::from_secs(30),
        || {
            let disk = on_disk();
            disk != first && tls_client::served_leaf(tls_port, domain, &root).ok() == Some(disk)
        },
    );

    // Restart with the CA gone: the stored certificate is served at once, the renewal
    // that falls due fails and is counted, and the certificate stays.
    cg.proc.signal("TERM");
    cg.proc.wait_exit(Duration::from_secs(30));
    pebble.stop();
    let stored = on_disk();
    let cg = Channelgate::start_with(dir.path(), cg.config.clone(), http_port, admin_port, false);
    wait_for("the stored certificate", Duration::from_secs(30), || {
        cg.metric("channelgate_acme_certificates_loaded_total") >= 1.0
    });
    assert_eq!(
        tls_client::served_leaf(tls_port, domain, &root).expect("served after restart"),
        stored
    );
    wait_for("a failed renewal", Duration::from_secs(60), || {
        cg.metric("channelgate_acme_failures_total{reason=\"unreachable\"}") >= 1.0
    });
    assert_eq!(
        tls_client::served_leaf(tls_port, domain, &root).expect("served after a failure"),
        stored,
        "a failed renewal keeps the certificate"
    );
    if std::env::var_os("ACME_TEST_LOG").is_some() {
        eprintln!("{}", cg.proc.output());
    }
}

#[test]
fn tls_alpn_01_issues_serves_renews_and_survives_restart() {
    issue_serve_renew_restart("tls-alpn-01");
}

#[test]
fn http_01_issues_serves_renews_and_survives_restart() {
    issue_serve_renew_restart("http-01");
}

/// A challenge the CA cannot validate: counted by reason, nothing installed, and the next
/// attempt backed off (a minute, not at once).
#[test]
fn failed_validation_is_counted_and_backed_off() {
    if !pebble::available() {
        return;
    }
    let dir = tempdir();
    // Pebble validates http-01 on a port where nobody answers.
    let pebble = Pebble::start(dir.path(), free_port(), free_port(), 3600);
    let sink = Arc::new(Sink::default());
    let settings = AcmeConfig {
        domains: vec!["unreachable.acme.test".into()],
        email: None,
        directory: pebble.directory(),
        state_dir: dir.path().join("acme"),
        challenge: Challenge::Http01,
        renew_before: Duration::from_secs(30 * 86400),
        directory_ca: Some(pebble.directory_ca.clone()),
    };
    let metrics = Arc::new(Metrics::new());
    let service = AcmeService::new(settings, sink.clone(), metrics.clone());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (stop, watch) = tokio::sync::watch::channel(false);
    let task = rt.spawn(async move { service.start(watch).await });
    let failures = || {
        metrics
            .acme
            .failures
            .with_label_values(&["validation"])
            .get()
    };
    wait_for("a failed order", Duration::from_secs(180), || {
        metrics.acme.orders.with_label_values(&["failed"]).get() >= 1
    });
    assert_eq!(
        failures(),
        1,
        "{}",
        String::from_utf8_lossy(&metrics.render())
    );
    wait_for(
        "the next attempt scheduled",
        Duration::from_secs(10),
        || metrics.acme.next_renewal.get() > 0,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    // schedule::BACKOFF_FIRST is a minute, less 10 % jitter.
    assert!(
        metrics.acme.next_renewal.get() >= now + 30,
        "retry backed off: {} vs now {now}",
        metrics.acme.next_renewal.get()
    );
    assert_eq!(metrics.acme.orders.with_label_values(&["failed"]).get(), 1);
    assert!(sink.installed.lock().unwrap().is_empty());
    assert!(
        sink.tokens.lock().unwrap().is_empty(),
        "challenge withdrawn"
    );
    let _ = stop.send(true);
    rt.block_on(task).expect("service ends on shutdown");
}

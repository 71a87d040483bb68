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
use channelgate::tls::acme::{AcmeService, ChallengeKind, Challenges, Settings};
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

#[test]
fn client_obtains_and_renews_from_pebble_over_http01() {
    if !pebble::available() {
        return;
    }
    let dir = tempdir();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let http_port = listener.local_addr().expect("addr").port();
    let pebble = Pebble::start(dir.path(), http_port, free_port(), 3600);
    let sink = Arc::new(Sink::default());
    serve_tokens(listener, sink.clone());
    let state_dir = dir.path().join("acme");
    let settings = Settings {
        domains: vec!["app.acme.test".into(), "www.acme.test".into()],
        email: Some("ops@acme.test".into()),
        directory: pebble.directory(),
        state_dir: state_dir.clone(),
        challenge: ChallengeKind::Http01,
        renew_before: Duration::from_secs(3590),
        directory_ca: Some(pebble.directory_ca.clone()),
    };
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

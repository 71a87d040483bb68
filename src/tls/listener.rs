//! The TLS listeners' Pingora settings: certificates from the [`CertStore`] (SNI, reload),
//! ALPN (h2 + http/1.1, or http/1.1 only), a callback that counts completed handshakes, and
//! the ACME tls-alpn-01 answer.
//!
//! Pingora's rustls `TlsSettings` can set only one ALPN list from a fixed menu (`H1`, `H2`,
//! `H2H1`, or one custom protocol), so it cannot offer `h2, http/1.1, acme-tls/1` together,
//! and rustls refuses a ClientHello whose ALPN list shares nothing with ours. So when ACME
//! uses tls-alpn-01, [`AlpnChallenge`] runs before Pingora's handshake: it reads the
//! ClientHello, puts the bytes back, and only when the client's ALPN list is exactly
//! `acme-tls/1` (RFC 8737: only the CA's validator sends that) completes that handshake
//! itself with the challenge certificate and ends the connection. Every other handshake is
//! Pingora's, unchanged.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{PreTlsProcess, TlsAccept, ALPN};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::TlsRef;
use pingora::{Error, ErrorType, OrErr, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::TlsConfig;
use super::metrics::TlsMetrics;
use super::store::{CertStore, ACME_TLS_ALPN};

/// The most ClientHello bytes read before deciding (a ClientHello is normally < 2 KiB;
/// post-quantum key shares push it past 1 record, still far below this).
const MAX_HELLO: usize = 64 * 1024;
/// How long a client may take to send its ClientHello to the challenge reader.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Marks the error that ends a connection after a served tls-alpn-01 challenge.
pub const CHALLENGE_DONE: &str = "acme-tls/1 challenge answered";

/// The settings of every TLS listener.
pub fn settings(cfg: &TlsConfig, store: &CertStore) -> Result<TlsSettings> {
    let mut s = TlsSettings::with_callbacks(Box::new(Handshakes {
        metrics: store.metrics().clone(),
    }))?;
    s.set_cert_resolver(Arc::new(store.clone()));
    // Never RFC 8441: Pingora does not send SETTINGS_ENABLE_CONNECT_PROTOCOL, so browsers
    // open WebSockets on a separate HTTP/1.1 connection.
    if cfg.http2 {
        s.enable_h2();
    } else {
        s.set_alpn(ALPN::H1);
    }
    Ok(s)
}

/// Counts completed handshakes by version.
struct Handshakes {
    metrics: Arc<TlsMetrics>,
}

#[async_trait]
impl TlsAccept for Handshakes {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        // rustls names versions "TLSv1_3"; the docs of Pingora say "TLSv1.3": accept both.
        let version = match tls.version().map(|v| v.replace('_', ".")).as_deref() {
            Some("TLSv1.3") => "1.3",
            Some("TLSv1.2") => "1.2",
            _ => "other",
        };
        self.metrics.handshakes.with_label_values(&[version]).inc();
        None
    }
}

/// Answers ACME tls-alpn-01 handshakes before Pingora's TLS (see the module comment).
pub struct AlpnChallenge {
    config: Arc<rustls::ServerConfig>,
}

impl AlpnChallenge {
    pub fn new(store: &CertStore) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // The ring provider supports TLS 1.2 and 1.3; this cannot fail.
        let builder = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3");
        let mut config = builder
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(store.clone()));
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        AlpnChallenge {
            config: Arc::new(config),
        }
    }
}

/// Reads one ClientHello from `stream`; returns the bytes read and whether its ALPN list is
/// exactly `acme-tls/1`. Unparseable input is left for Pingora's rustls to refuse.
async fn read_hello(stream: &mut L4Stream) -> std::io::Result<(Vec<u8>, bool)> {
    let mut seen = Vec::new();
    let mut acceptor = rustls::server::Acceptor::default();
    let mut chunk = [0u8; 4096];
    while seen.len() < MAX_HELLO {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&chunk[..n]);
        acceptor.read_tls(&mut &chunk[..n])?;
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let acme = hello
                    .alpn()
                    .is_some_and(|mut a| a.next() == Some(ACME_TLS_ALPN) && a.next().is_none());
                return Ok((seen, acme));
            }
            Err(_) => break,
        }
    }
    Ok((seen, false))
}

/// Runs before every TLS handshake when no tls-alpn-01 challenge is configured: sets
/// TCP_NODELAY on the client socket, as [`AlpnChallenge`] does too (see
/// [`crate::proxy::limits::edge`] for why).
pub struct NoDelay;

#[async_trait]
impl PreTlsProcess for NoDelay {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        // Best effort: a socket that refuses it still works, with Nagle's delays.
        let _ = stream.set_nodelay();
        Ok(())
    }
}

#[async_trait]
impl PreTlsProcess for AlpnChallenge {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        let _ = stream.set_nodelay();
        let read = tokio::time::timeout(HELLO_TIMEOUT, read_hello(stream)).await;
        let (seen, acme) = match read {
            Ok(r) => r.or_err(ErrorType::ReadError, "reading the ClientHello")?,
            Err(_) => return Error::e_explain(ErrorType::ReadTimedout, "no ClientHello"),
        };
        stream.rewind(&seen);
        if !acme {
            return Ok(());
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        let mut tls = acceptor
            .accept(&mut *stream)
            .await
            .or_err(ErrorType::TLSHandshakeFailure, "acme-tls/1 handshake")?;
        let _ = tls.shutdown().await;
        // Ends the connection: Pingora logs it as a handshake error, which the handshake log
        // filter recognises by this text and drops.
        Error::e_explain(ErrorType::Custom("acme-tls/1"), CHALLENGE_DONE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::sign::CertifiedKey;

    fn ca() -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = ca.self_signed(&key).unwrap();
        (cert.der().clone(), Issuer::new(ca, key))
    }

    fn leaf(issuer: &Issuer<'static, KeyPair>, name: &str) -> Arc<CertifiedKey> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        super::super::certs::certified(vec![cert.der().clone()], der)
            .unwrap()
            .key
    }

    /// Connects with one ALPN protocol; the negotiated protocol and the server's leaf.
    async fn client(
        addr: std::net::SocketAddr,
        ca: CertificateDer<'static>,
        alpn: &[u8],
    ) -> std::io::Result<(Option<Vec<u8>>, Vec<u8>)> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from("a.example").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await?;
        let (_, conn) = tls.get_ref();
        let out = (
            conn.alpn_protocol().map(<[u8]>::to_vec),
            conn.peer_certificates().unwrap()[0].to_vec(),
        );
        let _ = tls.shutdown().await;
        Ok(out)
    }

    #[tokio::test]
    async fn acme_tls_alpn_hellos_get_the_challenge_and_others_pass_through() {
        let store = CertStore::default();
        let (ca, issuer) = ca();
        let challenge = leaf(&issuer, "a.example");
        let real = leaf(&issuer, "a.example");
        store.set_alpn_challenge("a.example", Some(challenge.clone()));
        store.set_certificate(&["a.example".into()], real.clone());
        let pre = AlpnChallenge::new(&store);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        // acme-tls/1: answered by the pre-TLS step with the challenge certificate.
        let c = tokio::spawn(client(addr, ca.clone(), ACME_TLS_ALPN));
        let mut s: L4Stream = listener.accept().await.unwrap().0.into();
        let e = pre.process(&mut s).await.unwrap_err();
        assert!(e.to_string().contains(CHALLENGE_DONE), "{e}");
        let (alpn, cert) = c.await.unwrap().unwrap();
        assert_eq!(alpn.as_deref(), Some(ACME_TLS_ALPN));
        assert_eq!(cert, challenge.cert[0].to_vec());

        // h2: left alone; the normal handshake reads the same bytes again and gets the
        // real certificate.
        let c = tokio::spawn(client(addr, ca, b"h2"));
        let mut s: L4Stream = listener.accept().await.unwrap().0.into();
        pre.process(&mut s).await.unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(store.clone()));
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let server = tokio::spawn(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)).accept(s));
        let (alpn, cert) = c.await.unwrap().unwrap();
        assert!(server.await.unwrap().is_ok());
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(cert, real.cert[0].to_vec());
        let served = store
            .metrics()
            .alpn_challenges
            .with_label_values(&["served"]);
        assert_eq!(served.get(), 1);
    }
}

//! A small rustls client: the certificate a server presents for a name, checked against a
//! given root (so "served" means "a client trusting that CA accepts it").

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

fn config(root_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn connect(
    port: u16,
    name: &str,
    root_pem: &str,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let conn =
        rustls::ClientConnection::new(config(root_pem)?, server_name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake with {name} on port {port}: {e}"))?;
    }
    Ok(tls)
}

/// The leaf certificate (DER) the server on `port` presents for SNI `name`, if it verifies
/// against `root_pem`.
pub fn served_leaf(port: u16, name: &str, root_pem: &str) -> Result<Vec<u8>, String> {
    let tls = connect(port, name, root_pem)?;
    let certs = tls.conn.peer_certificates().ok_or("no peer certificate")?;
    Ok(certs[0].as_ref().to_vec())
}

/// GET `path` over HTTPS/1.0: (leaf DER, body).
pub fn get(port: u16, name: &str, root_pem: &str, path: &str) -> Result<(Vec<u8>, String), String> {
    let mut tls = connect(port, name, root_pem)?;
    let leaf = tls.conn.peer_certificates().ok_or("no peer certificate")?[0]
        .as_ref()
        .to_vec();
    write!(tls, "GET {path} HTTP/1.0\r\nHost: {name}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // Servers may close without close_notify; what arrived is the answer.
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((leaf, body))
}

/// The leaf certificate (DER) of the first certificate in a PEM chain.
pub fn leaf_of(chain_pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("valid PEM")
        .as_ref()
        .to_vec()
}

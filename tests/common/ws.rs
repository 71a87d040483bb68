//! WebSocket client helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// A runtime for the async parts of a test (the fixture itself is blocking).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Opens `ws://addr/path` with extra request headers.
pub async fn connect_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).expect("header name");
        req.headers_mut()
            .insert(name, v.parse().expect("header value"));
    }
    let stream = TcpStream::connect(addr).await.map_err(WsError::Io)?;
    Ok(tokio_tungstenite::client_async(req, stream).await?.0)
}

/// Opens `ws://addr/path`; the handshake must succeed.
pub async fn connect(addr: &str, path: &str) -> Ws {
    connect_with(addr, path, &[])
        .await
        .expect("WebSocket handshake")
}

/// The status of a refused handshake.
pub fn refused_status(r: Result<Ws, WsError>) -> u16 {
    match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got a 101"),
    }
}

/// The next text message, skipping pings and pongs (over TCP or any other stream).
pub async fn next_text<S>(ws: &mut WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a message within 15s")
        {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The next text message as JSON (a JSON string when it is not JSON).
pub async fn next_json(ws: &mut Ws) -> Value {
    let t = next_text(ws).await;
    serde_json::from_str(&t).unwrap_or(Value::String(t))
}

/// The close code the server sends (1006 when the connection just ends).
pub async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a close within 10s")
        {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("connection failed instead of closing: {e}"),
            None => return 1006,
        }
    }
}

/// Nothing but pings arrives for a while.
pub async fn quiet(ws: &mut Ws) {
    if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(700), ws.next()).await {
        assert!(matches!(m, Message::Ping(_)), "unexpected message {m:?}");
    }
}

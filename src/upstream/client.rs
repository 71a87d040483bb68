//! channelgate's own requests to the app (WebSocket auth, inbound frames): a small HTTP/1.1
//! exchange over Pingora's connector and connection pool, to a healthy server of the pool.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use pingora::connectors::http::Connector;
use pingora::prelude::*;

use super::Upstreams;

/// Largest answer body read from the app.
const MAX_BODY: usize = 1024 * 1024;

pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a call to the app gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no healthy upstream server")]
    NoUpstream,
    #[error("the app did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the app could not be reached: {0}")]
    Failed(String),
    #[error("the app's answer is larger than {MAX_BODY} bytes")]
    TooLarge,
}

pub(super) fn connector() -> Connector {
    Connector::new(None)
}

impl Upstreams {
    /// Sends `req` (with `body`) to a healthy server and reads the whole answer, all within
    /// `limit`. With a hook secret the request is signed here, the one place every call
    /// channelgate makes to the app passes (see [`super::signing`]).
    pub async fn call(
        &self,
        mut req: RequestHeader,
        body: Bytes,
        limit: Duration,
    ) -> Result<Answer, CallError> {
        if let Some(secret) = &self.config.hook_secret {
            super::signing::sign(secret, &mut req)
                .map_err(|e| CallError::Failed(format!("cannot sign the request: {e}")))?;
        }
        match tokio::time::timeout(limit, self.exchange(req, body)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(limit)),
        }
    }

    async fn exchange(&self, req: RequestHeader, body: Bytes) -> Result<Answer, CallError> {
        let backend = self.select(None).ok_or(CallError::NoUpstream)?;
        let peer = self.peer(&backend);
        let failed = |e: Box<Error>| CallError::Failed(e.to_string());
        let (mut session, _reused) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(failed)?;
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(failed)?;
        if !body.is_empty() {
            session
                .write_request_body(body, true)
                .await
                .map_err(failed)?;
        }
        session.finish_request_body().await.map_err(failed)?;
        session.read_response_header().await.map_err(failed)?;
        let (status, headers) = match session.response_header() {
            Some(h) => (h.status.as_u16(), h.headers.clone()),
            None => return Err(CallError::Failed("no response header".into())),
        };
        let mut buf = BytesMut::new();
        while let Some(chunk) = session.read_response_body().await.map_err(failed)? {
            if buf.len() + chunk.len() > MAX_BODY {
                return Err(CallError::TooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        self.connector
            .release_http_session(session, &peer, Some(self.config.keepalive_timeout))
            .await;
        Ok(Answer {
            status,
            headers,
            body: buf.freeze(),
        })
    }
}

//! `[[static]]` locations: files served from disk by channelgate itself, as nginx served
//! Django's `collectstatic` output, uploads and (through `X-Accel-Redirect`, [`accel`])
//! files the app authorizes. GET and HEAD only; ETag / Last-Modified with 304, single byte
//! ranges, precompressed siblings, bounded memory, and paths that cannot leave the root
//! ([`path`]).

pub mod accel;
pub mod config;
mod mime;
pub mod path;
mod response;
mod send;

use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::Session;

pub use config::{Encoding, Fallback, Location};
use path::Refusal;
use response::{Common, Decision, Validators};

use crate::metrics::Metrics;
use crate::proxy::compress::AcceptEncoding;
use crate::proxy::errors::error_response;

/// Every static location, shared by the router and the proxy.
pub struct Files {
    pub locations: Vec<Arc<Location>>,
    pub metrics: Arc<Metrics>,
}

/// How a request on a static location ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// Answered with this status.
    Answered(u16),
    /// No such file and `fallback = "upstream"`: proxy the request.
    Upstream,
}

/// A file opened for an answer, with everything its header needs.
struct Opened {
    file: std::fs::File,
    validators: Validators,
    content_type: &'static str,
    encoding: Option<&'static str>,
    vary: bool,
}

/// Extra say of the app over an `X-Accel-Redirect` answer.
#[derive(Default)]
pub(crate) struct Overrides {
    pub cache_control: Option<String>,
    pub content_type: Option<String>,
    /// Headers copied from the app's answer (Content-Disposition, Set-Cookie, ...).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub rate: Option<u64>,
}

impl Files {
    /// The location whose prefix starts the (leniently decoded) path.
    pub fn find(&self, decoded: &str) -> Option<&Arc<Location>> {
        self.locations
            .iter()
            .find(|l| decoded.starts_with(l.prefix.as_str()))
    }

    /// Answers a client's request on `loc`.
    pub async fn serve(
        &self,
        session: &mut Session,
        loc: &Location,
        request_id: &str,
    ) -> Result<Served> {
        if loc.internal {
            return self.error(session, loc, 404, request_id).await;
        }
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            let (mut resp, body) = error_response(405, request_id)?;
            resp.insert_header("allow", "GET, HEAD")?;
            return self.reply(session, loc, resp, Some(body)).await;
        }
        let raw = session.req_header().uri.path().to_string();
        match open(loc, &raw, &AcceptEncoding::parse(session.req_header())).await {
            Ok(f) => {
                self.answer(session, loc, f, request_id, Overrides::default())
                    .await
            }
            Err(Refusal::Missing) if loc.fallback == Fallback::Upstream => Ok(Served::Upstream),
            Err(Refusal::AddSlash) => {
                let mut resp = ResponseHeader::build(301, Some(4))?;
                let q = session.req_header().uri.query();
                // One leading slash: "//host/dir" must not become a redirect to another host.
                let path = format!("/{}", raw.trim_start_matches('/'));
                let target = format!("{path}/{}", q.map(|q| format!("?{q}")).unwrap_or_default());
                resp.insert_header("location", target)?;
                resp.insert_header("content-length", "0")?;
                resp.insert_header(crate::proxy::headers::REQUEST_ID, request_id)?;
                self.reply(session, loc, resp, None).await
            }
            Err(r) => self.refused(session, loc, r, request_id).await,
        }
    }

    async fn refused(
        &self,
        session: &mut Session,
        loc: &Location,
        r: Refusal,
        request_id: &str,
    ) -> Result<Served> {
        let status = if r == Refusal::BadPath { 400 } else { 404 };
        if r != Refusal::Missing {
            self.metrics
                .files
                .refused
                .with_label_values(&[refusal_label(r)])
                .inc();
        }
        self.error(session, loc, status, request_id).await
    }

    async fn error(
        &self,
        session: &mut Session,
        loc: &Location,
        status: u16,
        request_id: &str,
    ) -> Result<Served> {
        let (resp, body) = error_response(status, request_id)?;
        self.reply(session, loc, resp, Some(body)).await
    }

    async fn reply(
        &self,
        session: &mut Session,
        loc: &Location,
        resp: ResponseHeader,
        body: Option<bytes::Bytes>,
    ) -> Result<Served> {
        let status = resp.status.as_u16();
        let head = session.req_header().method == http::Method::HEAD;
        let end = body.is_none() || head;
        session.write_response_header(Box::new(resp), end).await?;
        if let (Some(b), false) = (body, head) {
            session.write_response_body(Some(b), true).await?;
        }
        self.count(loc, status, 0);
        Ok(Served::Answered(status))
    }

    /// Writes the answer for an opened file: 200, 206, 304, 412 or 416.
    async fn answer(
        &self,
        session: &mut Session,
        loc: &Location,
        f: Opened,
        request_id: &str,
        o: Overrides,
    ) -> Result<Served> {
        let decision = response::decide(session.req_header(), &f.validators);
        // Files only the app may hand out are for that user alone.
        let scope = if loc.internal { "private" } else { "public" };
        let cache_control = o.cache_control.or_else(|| {
            loc.expires
                .map(|e| format!("{scope}, max-age={}", e.as_secs()))
        });
        let common = Common {
            content_type: o.content_type.as_deref().unwrap_or(f.content_type),
            cache_control,
            encoding: f.encoding,
            vary: f.vary,
            request_id,
        };
        let mut resp = response::build(decision, &f.validators, &common)?;
        for (k, v) in o.headers {
            resp.append_header(k, v)?;
        }
        let status = resp.status.as_u16();
        let (start, len) = match decision {
            Decision::Full => (0, f.validators.len),
            Decision::Range(s, e) => (s, e - s + 1),
            _ => (0, 0),
        };
        let head = session.req_header().method == http::Method::HEAD;
        let with_body = len > 0 && !head;
        session
            .write_response_header(Box::new(resp), !with_body)
            .await?;
        let sent = if with_body {
            send::body(session, f.file, start, len, o.rate).await?
        } else {
            0
        };
        self.count(loc, status, sent);
        Ok(Served::Answered(status))
    }

    fn count(&self, loc: &Location, status: u16, bytes: u64) {
        let m = &self.metrics.files;
        m.responses
            .with_label_values(&[loc.prefix.as_str(), status_label(status)])
            .inc();
        m.bytes
            .with_label_values(&[loc.prefix.as_str()])
            .inc_by(bytes);
    }
}

/// Resolves and opens the file for the raw request path (blocking work off the runtime).
async fn open(loc: &Location, raw: &str, accept: &AcceptEncoding) -> Result<Opened, Refusal> {
    let decoded = path::decode_strict(raw)?;
    let slash = decoded.ends_with(b"/");
    let segs: Vec<Vec<u8>> = path::segments(&decoded, &loc.prefix)?
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    let loc = loc.clone();
    let offered: Vec<(Encoding, u16)> = loc
        .precompressed
        .iter()
        .map(|e| (*e, accept.q(e.token())))
        .collect();
    let task = tokio::task::spawn_blocking(move || {
        let refs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
        let found = path::resolve(&loc, &refs, slash)?;
        let name = found.path.to_string_lossy().into_owned();
        // The variant the client values most (ties: the location's order), else the file.
        let mut best: Option<(u16, &(Encoding, std::path::PathBuf, std::fs::Metadata))> = None;
        for v in &found.variants {
            let q = offered
                .iter()
                .find(|(e, _)| *e == v.0)
                .map_or(0, |(_, q)| *q);
            if q > 0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, v));
            }
        }
        let (p, meta, encoding) = match best {
            Some((_, (e, p, m))) => (p, m, Some(e.token())),
            None => (&found.path, &found.meta, None),
        };
        let file = std::fs::File::open(p).map_err(|_| Refusal::Missing)?;
        Ok(Opened {
            file,
            validators: Validators::of(meta),
            content_type: mime::content_type(&name),
            encoding,
            vary: !found.variants.is_empty(),
        })
    });
    task.await.unwrap_or(Err(Refusal::Missing))
}

fn refusal_label(r: Refusal) -> &'static str {
    match r {
        Refusal::BadPath => "bad_path",
        Refusal::Hidden => "hidden",
        Refusal::Missing => "missing",
        Refusal::AddSlash => "add_slash",
    }
}

/// The statuses a static answer can have; anything else would be a bug, shown as "other".
fn status_label(s: u16) -> &'static str {
    match s {
        200 => "200",
        206 => "206",
        301 => "301",
        304 => "304",
        400 => "400",
        404 => "404",
        405 => "405",
        412 => "412",
        416 => "416",
        _ => "other",
    }
}

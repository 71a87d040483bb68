//! `X-Accel-Redirect`: the app answers with the header (and an empty body) after checking
//! the user may have the file; channelgate sends the file from the static location whose
//! prefix starts the header's path, usually an `internal` one that clients cannot reach.
//! As with nginx, the app's `Content-Type`, `Content-Disposition`, `Set-Cookie`,
//! `Cache-Control` and `Expires` go with the file; `X-Accel-Limit-Rate` (bytes per second)
//! paces it; `X-Accel-Expires` (seconds, `@unix-time` or `off`) becomes the client's
//! `Cache-Control: max-age` when the app sent no `Cache-Control` (channelgate has no cache
//! of its own for it to govern).
//!
//! How the app's answer is replaced (pingora-proxy 0.9.1 has no hook for it): in
//! `response_filter`, the only asynchronous phase that sees the app's header, the file
//! answer is written to the client in full; then the client session is parked in the
//! request context and a stand-in session ([`crate::proxy::takeover::stand_in`]) takes
//! its place, to which Pingora writes the app's header and (empty, dropped) body. The real
//! session is put back in `logging()`, before Pingora decides on keep-alive, so both the
//! client connection and the upstream connection are reused as for any other answer.
//! When the app announces a body length it will not send (django-sendfile2 does), the
//! proxying ends right after the file instead ([`SERVED`]), as nginx drops such an
//! upstream connection; the client connection is then closed after the file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use pingora::prelude::*;
use pingora::proxy::Session;

use super::{open, Files, Overrides, Served};
use crate::proxy::compress::AcceptEncoding;

pub const HEADER: &str = "x-accel-redirect";

/// Ends the proxying of an app answer whose file has been sent but whose own body is
/// announced and not worth reading (see [`app_body_is_empty`]). Not a failure.
pub const SERVED: ErrorType = ErrorType::Custom("served by X-Accel-Redirect");

/// Whether the app's answer announces an empty (or chunked, soon ended) body, which
/// Pingora reads to its end so that the upstream connection can be reused. An answer
/// with a non-zero Content-Length (django-sendfile2 announces the file's length and sends
/// nothing) would leave Pingora waiting for bytes that never come.
pub fn app_body_is_empty(app: &ResponseHeader) -> bool {
    app.headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|l| l.trim() == "0")
}

/// The app's instructions to the proxy, removed from answers passed to clients (nginx's
/// `proxy_hide_header` defaults).
pub const INSTRUCTIONS: &[&str] = &[
    "x-accel-redirect",
    "x-accel-expires",
    "x-accel-limit-rate",
    "x-accel-buffering",
    "x-accel-charset",
];

/// The app's headers that go with the file, as nginx passes them.
const PASSED: &[&str] = &["content-disposition", "set-cookie", "expires"];

impl Files {
    /// Serves the file the app's `X-Accel-Redirect` names, in place of the app's answer.
    /// An error status (no location serves the path) is returned as an error for
    /// `fail_to_proxy` to answer.
    pub async fn accel_redirect(
        &self,
        session: &mut Session,
        app: &ResponseHeader,
        request_id: &str,
    ) -> Result<(Served, std::sync::Arc<super::Location>)> {
        let target = app
            .headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let path = target.split('?').next().unwrap_or("");
        let decoded = super::path::decode_lenient(path);
        let Some(loc) = self.find(&decoded).cloned() else {
            self.outcome("no_location");
            limited_warn(&LAST_NO_LOCATION, || {
                tracing::warn!(
                    request_id,
                    target = %target.chars().take(200).collect::<String>(),
                    "X-Accel-Redirect names a path no [[static]] location serves; answering 502"
                )
            });
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                "X-Accel-Redirect to a path no [[static]] location serves",
            );
        };
        let o = overrides(app, &loc);
        let accept = AcceptEncoding::parse(session.req_header());
        let served = match open(&loc, path, &accept).await {
            Ok(f) => {
                self.outcome("served");
                self.answer(session, &loc, f, request_id, o).await?
            }
            Err(r) => {
                self.outcome(if r == super::path::Refusal::Missing {
                    "missing"
                } else {
                    "refused"
                });
                self.refused(session, &loc, r, request_id).await?
            }
        };
        Ok((served, loc))
    }

    fn outcome(&self, o: &str) {
        self.metrics.files.accel.with_label_values(&[o]).inc();
    }
}

fn overrides(app: &ResponseHeader, loc: &super::Location) -> Overrides {
    let get = |n: &str| app.headers.get(n).and_then(|v| v.to_str().ok());
    let scope = if loc.internal { "private" } else { "public" };
    let cache_control = get("cache-control").map(str::to_string).or_else(|| {
        get("x-accel-expires")
            .and_then(expires_seconds)
            .map(|s| format!("{scope}, max-age={s}"))
    });
    let headers = PASSED
        .iter()
        .flat_map(|n| {
            app.headers
                .get_all(*n)
                .iter()
                .map(move |v| (http::HeaderName::from_static(n), v.clone()))
        })
        .collect();
    Overrides {
        cache_control,
        content_type: get("content-type").map(str::to_string),
        headers,
        rate: get("x-accel-limit-rate").and_then(|r| r.trim().parse().ok()),
    }
}

/// `X-Accel-Expires`: "N" seconds, "@T" an absolute Unix time, "off" / "0" none.
fn expires_seconds(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Some(at) = v.strip_prefix('@') {
        let at: u64 = at.parse().ok()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        return Some(at.saturating_sub(now));
    }
    v.parse().ok().filter(|s| *s > 0)
}

static LAST_NO_LOCATION: AtomicU64 = AtomicU64::new(0);

/// Runs `log` at most once every 10 s per `last` (the event is counted every time).
fn limited_warn(last: &AtomicU64, log: impl FnOnce()) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let prev = last.load(Ordering::Relaxed);
    if now >= prev + 10
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires() {
        assert_eq!(expires_seconds("60"), Some(60));
        assert_eq!(expires_seconds("off"), None);
        assert_eq!(expires_seconds("0"), None);
        assert_eq!(expires_seconds("@1"), Some(0));
        assert!(expires_seconds("@99999999999").unwrap() > 1000);
    }

    #[test]
    fn app_headers_pass() {
        let mut app = ResponseHeader::build(200, None).unwrap();
        app.insert_header("content-type", "image/tiff").unwrap();
        app.insert_header("content-disposition", "attachment; filename=\"a.tif\"")
            .unwrap();
        app.insert_header("x-accel-expires", "120").unwrap();
        app.insert_header("x-accel-limit-rate", "1024").unwrap();
        app.append_header("set-cookie", "a=1").unwrap();
        app.append_header("set-cookie", "b=2").unwrap();
        let loc = super::super::Location {
            prefix: "/p/".into(),
            root: "/".into(),
            expires: None,
            precompressed: vec![],
            index: None,
            fallback: super::super::Fallback::NotFound,
            internal: true,
            follow_symlinks: false,
        };
        let o = overrides(&app, &loc);
        assert_eq!(o.cache_control.as_deref(), Some("private, max-age=120"));
        assert_eq!(o.content_type.as_deref(), Some("image/tiff"));
        assert_eq!(o.rate, Some(1024));
        assert_eq!(o.headers.len(), 3);
    }
}

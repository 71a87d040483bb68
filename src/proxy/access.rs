//! One access-log line and one set of metric updates per request, in one place.

use pingora::prelude::*;
use pingora::proxy::Session;

use super::{Ctx, Proxy};
use crate::metrics::{method_label, status_class};
use crate::upstream::backend_name;

pub(super) fn record(proxy: &Proxy, session: &mut Session, e: Option<&Error>, ctx: &Ctx) {
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .or(ctx.failure.map(|f| f.status))
        .unwrap_or(0);
    let elapsed = ctx.start.elapsed();
    let req = session.req_header();
    let method = method_label(&req.method);
    let class = status_class(status);
    let http = &proxy.metrics.http;
    http.requests.with_label_values(&[method, class]).inc();
    http.duration
        .with_label_values(&[class])
        .observe(elapsed.as_secs_f64());
    if !proxy.access_log {
        return;
    }
    let upstream = ctx
        .backend
        .as_ref()
        .map(backend_name)
        .unwrap_or_else(|| "-".into());
    let client = session
        .client_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "-".into());
    let bytes = session.body_bytes_sent();
    let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let error = ctx
        .failure
        .and_then(|f| f.upstream_kind)
        .or(e
            .filter(|e| e.etype() != &crate::files::accel::SERVED)
            .map(|_| "client"))
        .unwrap_or("-");
    let location = ctx.location.as_ref().map_or("-", |l| l.prefix.as_str());
    tracing::info!(
        target: "access",
        client = %client,
        method = %req.method,
        path = %path,
        status,
        bytes,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        upstream = %upstream,
        location = %location,
        request_id = %ctx.request_id,
        error,
    );
}

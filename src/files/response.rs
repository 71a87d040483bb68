//! What a file's answer is, from the request's conditional and Range headers (RFC 9110
//! §13.2.2 order): 412, 304, 206, 416 or 200; and the header that goes with it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora::http::{RequestHeader, ResponseHeader};

/// A file's validators.
#[derive(Clone, Debug)]
pub struct Validators {
    /// Strong: `"<mtime hex>-<size hex>"`, as nginx writes it.
    pub etag: String,
    pub modified: SystemTime,
    pub len: u64,
}

impl Validators {
    pub fn of(meta: &std::fs::Metadata) -> Validators {
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let secs = modified
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        Validators {
            etag: format!("\"{secs:x}-{:x}\"", meta.len()),
            modified,
            len: meta.len(),
        }
    }

    fn last_modified(&self) -> String {
        httpdate::fmt_http_date(self.modified)
    }

    /// HTTP dates have whole seconds.
    fn modified_secs(&self) -> u64 {
        self.modified
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Full,
    /// Bytes `start..=end`.
    Range(u64, u64),
    NotModified,
    PreconditionFailed,
    Unsatisfiable,
}

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn date_secs(v: &str) -> Option<u64> {
    httpdate::parse_http_date(v.trim())
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// Whether an If-Match / If-None-Match list names `etag` (`weak`: W/ prefixes ignored).
fn etag_listed(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',').map(str::trim).any(|t| {
        t == "*"
            || if weak {
                t.trim_start_matches("W/") == etag
            } else {
                t == etag
            }
    })
}

/// The answer for a GET or HEAD of a file with validators `v`.
pub fn decide(req: &RequestHeader, v: &Validators) -> Decision {
    if let Some(m) = header(req, "if-match") {
        if !etag_listed(m, &v.etag, false) {
            return Decision::PreconditionFailed;
        }
    } else if let Some(t) = header(req, "if-unmodified-since").and_then(date_secs) {
        if v.modified_secs() > t {
            return Decision::PreconditionFailed;
        }
    }
    if let Some(m) = header(req, "if-none-match") {
        if etag_listed(m, &v.etag, true) {
            return Decision::NotModified;
        }
    } else if let Some(t) = header(req, "if-modified-since").and_then(date_secs) {
        if v.modified_secs() <= t {
            return Decision::NotModified;
        }
    }
    if req.method != http::Method::GET {
        return Decision::Full;
    }
    let Some(range) = header(req, "range") else {
        return Decision::Full;
    };
    if let Some(ir) = header(req, "if-range") {
        let still = if ir.trim_start().starts_with('"') || ir.trim_start().starts_with("W/") {
            ir.trim() == v.etag
        } else {
            date_secs(ir) == Some(v.modified_secs())
        };
        if !still {
            return Decision::Full;
        }
    }
    byte_range(range, v.len)
}

/// A single `bytes=` range; several ranges or a malformed one are ignored (200), as RFC
/// 9110 allows.
fn byte_range(range: &str, len: u64) -> Decision {
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Decision::Full;
    };
    if spec.contains(',') {
        return Decision::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Decision::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (start, end) = match (a.trim().is_empty(), num(a), num(b)) {
        // "-N": the last N bytes.
        (true, _, Some(n)) if n > 0 => (len.saturating_sub(n), len.saturating_sub(1)),
        (true, _, _) => return Decision::Unsatisfiable,
        (false, Some(s), None) if b.trim().is_empty() => (s, len.saturating_sub(1)),
        (false, Some(s), Some(e)) if e >= s => (s, e.min(len.saturating_sub(1))),
        _ => return Decision::Full,
    };
    if start >= len {
        return Decision::Unsatisfiable;
    }
    Decision::Range(start, end)
}

/// The parts of a file answer's header that do not depend on the decision.
pub struct Common<'a> {
    pub content_type: &'a str,
    pub cache_control: Option<String>,
    pub encoding: Option<&'static str>,
    pub vary: bool,
    pub request_id: &'a str,
}

/// The response header for `d` (the caller answers 412 and 416 bodies itself).
pub fn build(d: Decision, v: &Validators, c: &Common) -> pingora::Result<ResponseHeader> {
    let status = match d {
        Decision::Full => 200,
        Decision::Range(..) => 206,
        Decision::NotModified => 304,
        Decision::PreconditionFailed => 412,
        Decision::Unsatisfiable => 416,
    };
    let mut h = ResponseHeader::build(status, Some(10))?;
    h.insert_header("etag", &v.etag)?;
    h.insert_header("last-modified", v.last_modified())?;
    if let Some(cc) = &c.cache_control {
        h.insert_header("cache-control", cc)?;
    }
    if c.vary {
        h.insert_header("vary", "Accept-Encoding")?;
    }
    h.insert_header(crate::proxy::headers::REQUEST_ID, c.request_id)?;
    match d {
        Decision::NotModified => return Ok(h),
        Decision::PreconditionFailed | Decision::Unsatisfiable => {
            if d == Decision::Unsatisfiable {
                h.insert_header("content-range", format!("bytes */{}", v.len))?;
            }
            h.insert_header("content-length", "0")?;
            return Ok(h);
        }
        Decision::Full | Decision::Range(..) => {}
    }
    h.insert_header("content-type", c.content_type)?;
    h.insert_header("x-content-type-options", "nosniff")?;
    h.insert_header("accept-ranges", "bytes")?;
    if let Some(e) = c.encoding {
        h.insert_header("content-encoding", e)?;
    }
    let len = match d {
        Decision::Range(s, e) => {
            h.insert_header("content-range", format!("bytes {s}-{e}/{}", v.len))?;
            e - s + 1
        }
        _ => v.len,
    };
    h.insert_header("content-length", len.to_string())?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Validators {
        Validators {
            etag: "\"5f-64\"".into(),
            modified: UNIX_EPOCH + Duration::from_secs(0x5f),
            len: 100,
        }
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, val) in headers {
            r.insert_header(k.to_string(), *val).unwrap();
        }
        r
    }

    #[test]
    fn conditionals() {
        let v = v();
        let lm = httpdate::fmt_http_date(v.modified);
        assert_eq!(decide(&req(&[]), &v), Decision::Full);
        assert_eq!(
            decide(&req(&[("if-none-match", "\"5f-64\"")]), &v),
            Decision::NotModified
        );
        assert_eq!(
            decide(&req(&[("if-none-match", "W/\"5f-64\"")]), &v),
            Decision::NotModified
        );
        assert_eq!(
            decide(&req(&[("if-none-match", "\"x\"")]), &v),
            Decision::Full
        );
        assert_eq!(
            decide(&req(&[("if-modified-since", &lm)]), &v),
            Decision::NotModified
        );
        let earlier = httpdate::fmt_http_date(UNIX_EPOCH);
        assert_eq!(
            decide(&req(&[("if-modified-since", &earlier)]), &v),
            Decision::Full
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            decide(
                &req(&[("if-none-match", "\"x\""), ("if-modified-since", &lm)]),
                &v
            ),
            Decision::Full
        );
        assert_eq!(
            decide(&req(&[("if-match", "\"x\"")]), &v),
            Decision::PreconditionFailed
        );
    }

    #[test]
    fn ranges() {
        let v = v();
        let r = |s: &str| decide(&req(&[("range", s)]), &v);
        assert_eq!(r("bytes=0-9"), Decision::Range(0, 9));
        assert_eq!(r("bytes=90-"), Decision::Range(90, 99));
        assert_eq!(r("bytes=-10"), Decision::Range(90, 99));
        assert_eq!(r("bytes=-1000"), Decision::Range(0, 99));
        assert_eq!(r("bytes=50-5000"), Decision::Range(50, 99));
        assert_eq!(r("bytes=100-"), Decision::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Decision::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), Decision::Full);
        assert_eq!(r("bytes=9-1"), Decision::Full);
        assert_eq!(r("items=0-1"), Decision::Full);
        assert_eq!(r("bytes=99999999999999999999999-"), Decision::Full);
        let stale = decide(&req(&[("range", "bytes=0-9"), ("if-range", "\"old\"")]), &v);
        assert_eq!(stale, Decision::Full);
        let fresh = decide(
            &req(&[("range", "bytes=0-9"), ("if-range", "\"5f-64\"")]),
            &v,
        );
        assert_eq!(fresh, Decision::Range(0, 9));
    }

    #[test]
    fn headers() {
        let v = v();
        let c = Common {
            content_type: "text/css; charset=utf-8",
            cache_control: Some("public, max-age=60".into()),
            encoding: Some("gzip"),
            vary: true,
            request_id: "r",
        };
        let h = build(Decision::Range(10, 19), &v, &c).unwrap();
        assert_eq!(h.status, 206);
        assert_eq!(h.headers["content-range"], "bytes 10-19/100");
        assert_eq!(h.headers["content-length"], "10");
        assert_eq!(h.headers["x-content-type-options"], "nosniff");
        let h = build(Decision::Unsatisfiable, &v, &c).unwrap();
        assert_eq!(h.headers["content-range"], "bytes */100");
        let h = build(Decision::NotModified, &v, &c).unwrap();
        assert!(h.headers.get("content-length").is_none());
        assert_eq!(h.headers["etag"], "\"5f-64\"");
    }
}

//! Headers no client may send to the app: every `X-Channelgate-*` (channelgate's own
//! statements about a WebSocket user, which the app may trust), `X-Real-IP` (set from the
//! client address instead) and whatever `[server] strip_headers` adds. Like nginx
//! (`underscores_in_headers off`), header names with `_` are dropped too unless
//! `[server] underscores_in_headers = true`: a WSGI server maps `X_Forwarded_Proto` and
//! `X-Forwarded-Proto` to the same `HTTP_X_FORWARDED_PROTO`.

use http::header::HeaderName;
use pingora::http::RequestHeader;

/// The prefix of the headers channelgate reserves for what it tells the app.
pub const RESERVED_PREFIX: &str = "x-channelgate-";
pub const REAL_IP: &str = "x-real-ip";

/// Headers that `strip_headers` may not name: removing them would break the request
/// itself (framing, routing, the upgrade) rather than hide something from the app.
const PROTECTED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "content-type",
    "sec-websocket-key",
    "sec-websocket-version",
];

/// What [`strip`] removed, by kind (the `kind` label of
/// `channelgate_http_stripped_headers_total`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stripped {
    /// `X-Channelgate-*` headers.
    pub reserved: usize,
    /// Headers named in `strip_headers`.
    pub configured: usize,
    /// Names with `_` (unless `underscores_in_headers`).
    pub underscore: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reserved,
    Configured,
    Underscore,
}

/// The name as a WSGI server sees it: `_` and `-` both become `_` in `HTTP_*` keys, so
/// `X_Channelgate_User` would reach Django as `X-Channelgate-User`.
fn wsgi_form(name: &str) -> String {
    name.replace('_', "-")
}

/// Removes every reserved and configured header from `req`, whether spelled with `-` or
/// `_`, and with `drop_underscores` every other name containing `_`.
pub fn strip(
    req: &mut RequestHeader,
    configured: &[HeaderName],
    drop_underscores: bool,
) -> Stripped {
    let mut out = Stripped::default();
    let doomed: Vec<(HeaderName, Kind)> = req
        .headers
        .keys()
        .filter_map(|n| {
            let w = wsgi_form(n.as_str());
            let kind = if w.starts_with(RESERVED_PREFIX) {
                Kind::Reserved
            } else if configured.iter().any(|c| wsgi_form(c.as_str()) == w) {
                Kind::Configured
            } else if drop_underscores && n.as_str().contains('_') {
                Kind::Underscore
            } else {
                return None;
            };
            Some((n.clone(), kind))
        })
        .collect();
    for (name, kind) in doomed {
        let n = req.headers.get_all(&name).iter().count();
        match kind {
            Kind::Reserved => out.reserved += n,
            Kind::Configured => out.configured += n,
            Kind::Underscore => out.underscore += n,
        }
        req.remove_header(&name);
    }
    out
}

/// True for `X-Real-IP` in either spelling.
pub fn is_real_ip(name: &str) -> bool {
    wsgi_form(name) == REAL_IP
}

/// Validates one `strip_headers` entry: a header name, not one the request needs.
pub fn configured_name(raw: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(raw.trim().as_bytes())
        .map_err(|_| format!("`{raw}` is not a header name"))?;
    if PROTECTED.contains(&name.as_str()) {
        return Err(format!(
            "`{raw}` cannot be stripped: the request needs it to reach the app"
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_every_reserved_header_in_any_case() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("X-Channelgate-User", "admin").unwrap();
        r.append_header("x-channelgate-user", "root").unwrap();
        r.append_header("X-CHANNELGATE-PARAM-room", "x").unwrap();
        r.append_header("X_Channelgate_User", "smuggled").unwrap();
        r.append_header("x_secret", "s").unwrap();
        r.append_header("x_forwarded_proto", "https").unwrap();
        r.append_header("X-Secret", "s").unwrap();
        r.append_header("x-channelgatex", "kept: not the prefix")
            .unwrap();
        r.append_header("cookie", "a=b").unwrap();
        let mut kept = r.clone();
        let s = strip(&mut r, &[configured_name("X-Secret").unwrap()], true);
        assert_eq!(
            s,
            Stripped {
                reserved: 4,
                configured: 2,
                underscore: 1,
            }
        );
        let mut names: Vec<&str> = r.headers.keys().map(|n| n.as_str()).collect();
        names.sort();
        assert_eq!(names, ["cookie", "x-channelgatex"]);
        // underscores_in_headers = true: only that one survives.
        strip(&mut kept, &[configured_name("X-Secret").unwrap()], false);
        assert!(kept.headers.contains_key("x_forwarded_proto"));
        assert!(!kept.headers.contains_key("x_channelgate_user"));
    }

    #[test]
    fn configured_names_are_checked() {
        assert!(configured_name("X-Internal-Token").is_ok());
        assert!(configured_name("bad header").is_err());
        assert!(configured_name("Host").is_err());
        assert!(configured_name("content-length").is_err());
    }
}

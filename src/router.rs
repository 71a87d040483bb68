//! The one place that decides where a client request goes. `request_filter` asks
//! [`Router::route`] once and dispatches on the answer; nothing else in the proxy looks at
//! the path to choose a destination.
//!
//! The decisions, in this order (the first that claims a request wins):
//! 0. **TLS edge** (`[tls]`, plain listeners only): an ACME http-01 challenge answered
//!    from [`crate::tls::Http01Tokens`], else with `redirect_http` a 308 to https://
//!    ([`crate::tls::Edge`]);
//! 1. **WebSocket route** (`[[ws]]`): served in-process by [`crate::ws`];
//! 2. **static location** (`[[static]]`): files served by [`crate::files`], matched on the
//!    percent-decoded path so that `/st%61tic/` cannot slip past a location (an `internal`
//!    one answers clients 404); a missing file may still go on to the upstream
//!    (`fallback = "upstream"`);
//! 3. **upstream**: everything else is proxied to the upstream pool (an `Upgrade:
//!    websocket` request on no route is passed through to the app by `proxy::tunnel`).
//!
//! Adding a decision is one variant of [`Route`], one `if let` in [`Router::route`] at its
//! place in the order, one arm in `request_filter`, and — when it claims configured paths —
//! an overlap check at config time, so `channelgate check` refuses a configuration in which
//! two decisions claim the same path ([`check_overlaps`]; `[[ws]]` routes among
//! themselves: `ws::config`).

use std::collections::BTreeMap;
use std::sync::Arc;

use pingora::http::RequestHeader;

use crate::config::{Errors, KeyPath};
use crate::files::{Files, Location};
use crate::ws::route::PathTemplate;
use crate::ws::RouteConfig;

/// Where a request goes.
#[derive(Debug)]
pub enum Route<'a> {
    /// Answered by the TLS edge: an ACME challenge or a redirect to https.
    Edge(crate::tls::edge::Answer),
    /// An in-process WebSocket route, with the path parameters it matched.
    WebSocket(&'a Arc<RouteConfig>, BTreeMap<String, String>),
    /// A static location.
    Static(&'a Arc<Location>),
    /// The upstream pool.
    Upstream,
}

impl Route<'_> {
    /// A short, bounded name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Edge(crate::tls::edge::Answer::Reply {
                location: Some(_), ..
            }) => "redirect",
            Route::Edge(_) => "acme_challenge",
            Route::WebSocket(..) => "websocket",
            Route::Static(_) => "static",
            Route::Upstream => "upstream",
        }
    }
}

/// The routing table, built once from the validated configuration.
pub struct Router {
    ws: Vec<Arc<RouteConfig>>,
    files: Arc<Files>,
    edge: Option<Arc<crate::tls::Edge>>,
}

impl Router {
    pub fn new(ws: Vec<Arc<RouteConfig>>, files: Arc<Files>) -> Router {
        Router {
            ws,
            files,
            edge: None,
        }
    }

    /// With `[tls]`: challenges and redirects on the plain listeners come first.
    pub fn with_edge(mut self, edge: Option<Arc<crate::tls::Edge>>) -> Router {
        self.edge = edge;
        self
    }

    /// Decides where `req`, received on a TLS listener or not (`https`), goes; see the
    /// module documentation for the order.
    pub fn route(&self, req: &RequestHeader, https: bool) -> Route<'_> {
        if let Some(edge) = &self.edge {
            let answer = edge.decide_request(req, https);
            if answer != crate::tls::edge::Answer::Pass {
                return Route::Edge(answer);
            }
        }
        let path = req.uri.path();
        if let Some(r) = self.websocket(path) {
            return r;
        }
        if let Some(r) = self.static_location(path) {
            return r;
        }
        Route::Upstream
    }

    fn websocket(&self, path: &str) -> Option<Route<'_>> {
        self.ws
            .iter()
            .find_map(|r| r.path.matches(path).map(|p| Route::WebSocket(r, p)))
    }

    fn static_location(&self, path: &str) -> Option<Route<'_>> {
        if self.files.locations.is_empty() {
            return None;
        }
        self.files
            .find(&crate::files::path::decode_lenient(path))
            .map(Route::Static)
    }
}

/// Config-time checks that no path is claimed by two decisions: a `[[static]]` prefix may
/// not overlap another one or a `[[ws]]` route. Errors name the later key.
/// `statics` are the valid locations with their index in the file.
pub fn check_overlaps(
    ws: &[RouteConfig],
    statics: &[(usize, Location)],
    root: &KeyPath,
    errs: &mut Errors,
) {
    for (n, (i, s)) in statics.iter().enumerate() {
        let key = root.key("static").index(*i).key("prefix");
        if let Some((_, o)) = statics[..n]
            .iter()
            .find(|(_, o)| o.prefix.starts_with(&s.prefix) || s.prefix.starts_with(&o.prefix))
        {
            errs.add(
                &key,
                format!(
                    "{} overlaps the [[static]] prefix {}: a path must belong to one location",
                    s.prefix, o.prefix
                ),
            );
        }
        // A prefix is a template of literal segments (check_prefix allows no braces).
        let Ok(as_template) = PathTemplate::parse(&s.prefix, true) else {
            continue;
        };
        if let Some(r) = ws.iter().find(|r| r.path.overlaps(&as_template)) {
            errs.add(
                &key,
                format!(
                    "{} overlaps the [[ws]] route {}: a path must go to one of them",
                    s.prefix, r.path
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn config(extra: &str) -> Result<Config, crate::config::ConfigErrors> {
        Config::parse(
            &format!("[upstream]\nservers = [\"127.0.0.1:1\"]\n{extra}"),
            Path::new("t.toml"),
        )
    }

    fn files(statics: Vec<Location>) -> Arc<Files> {
        Arc::new(Files {
            locations: statics.into_iter().map(Arc::new).collect(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        })
    }

    fn req(path: &str) -> RequestHeader {
        RequestHeader::build("GET", path.as_bytes(), None).unwrap()
    }

    #[test]
    fn websocket_routes_then_upstream() {
        let c = config("[[ws]]\npath = \"/ws/{room}/\"\ngroups = [\"chat-{room}\"]\n").unwrap();
        let router = Router::new(c.ws.into_iter().map(Arc::new).collect(), files(c.statics));
        match router.route(&req("/ws/lobby/"), false) {
            Route::WebSocket(r, p) => {
                assert_eq!(r.path.to_string(), "/ws/{room}/");
                assert_eq!(p["room"], "lobby");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(router.route(&req("/ws/"), false).kind(), "upstream");
        assert_eq!(router.route(&req("/api/"), false).kind(), "upstream");
    }

    #[test]
    fn tls_edge_comes_first_on_plain_listeners_only() {
        let c = config("[[ws]]\npath = \"/ws/{room}/\"\ngroups = [\"chat-{room}\"]\n[tls]\nlisten = [\"127.0.0.1:8443\"]\nacme = { domains = [\"a.example\"], challenge = \"http-01\" }\nredirect_http = true\n").unwrap();
        let tokens = crate::tls::Http01Tokens::default();
        assert!(tokens.insert("abcdefghijklmnopqrstuvwxyz", "ka"));
        let edge = Arc::new(crate::tls::Edge::new(c.tls.as_ref().unwrap(), tokens));
        let router = Router::new(c.ws.into_iter().map(Arc::new).collect(), files(c.statics))
            .with_edge(Some(edge));
        let mut r = req("/ws/lobby/");
        r.insert_header("host", "a.example").unwrap();
        assert_eq!(router.route(&r, false).kind(), "redirect");
        assert_eq!(router.route(&r, true).kind(), "websocket");
        let challenge = req("/.well-known/acme-challenge/abcdefghijklmnopqrstuvwxyz");
        assert_eq!(router.route(&challenge, false).kind(), "acme_challenge");
    }

    #[test]
    fn static_locations_on_decoded_paths() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().display();
        let c = config(&format!(
            "[[ws]]\npath = \"/ws/{{room}}/\"\ngroups = [\"chat-{{room}}\"]\n[[static]]\nprefix = \"/static/\"\nroot = \"{root}\"\n[[static]]\nprefix = \"/protected/\"\nroot = \"{root}\"\ninternal = true\n"
        ))
        .unwrap();
        let router = Router::new(c.ws.into_iter().map(Arc::new).collect(), files(c.statics));
        assert_eq!(router.route(&req("/static/app.js"), false).kind(), "static");
        assert_eq!(
            router.route(&req("/st%61tic/app.js"), false).kind(),
            "static"
        );
        assert_eq!(
            router.route(&req("/prot%65cted/a.tif"), false).kind(),
            "static"
        );
        assert_eq!(router.route(&req("/static"), false).kind(), "upstream");
        assert_eq!(router.route(&req("/ws/x/"), false).kind(), "websocket");
    }

    #[test]
    fn overlaps_are_config_errors() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().display();
        let e = config(&format!(
            "[[ws]]\npath = \"/ws/{{room}}/\"\ngroups = [\"chat-{{room}}\"]\n[[static]]\nprefix = \"/static/\"\nroot = \"{root}\"\n[[static]]\nprefix = \"/static/img/\"\nroot = \"{root}\"\n[[static]]\nprefix = \"/ws/\"\nroot = \"{root}\"\n"
        ))
        .unwrap_err();
        let msgs: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(
            msgs[0].contains("static[1].prefix") && msgs[0].contains("/static/"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].contains("static[2].prefix") && msgs[1].contains("[[ws]]"),
            "{msgs:?}"
        );
    }
}

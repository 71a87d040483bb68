//! The one place that decides where a client request goes. `request_filter` asks
//! [`Router::route`] once and dispatches on the answer; nothing else in the proxy looks at
//! the path to choose a destination.
//!
//! The decisions, in this order (the first that claims a request wins):
//! 1. **WebSocket route** (`[[ws]]`): served in-process by [`crate::ws`];
//! 2. **upstream**: everything else is proxied to the upstream pool (an `Upgrade:
//!    websocket` request on no route is passed through to the app by `proxy::tunnel`).
//!
//! Adding a decision is one variant of [`Route`], one `if let` in [`Router::route`] at its
//! place in the order, one arm in `request_filter`, and — when it claims configured paths —
//! an overlap check at config time, so `channelgate check` refuses a configuration in which
//! two decisions claim the same path (`[[ws]]` routes among themselves: `ws::config`).

use std::collections::BTreeMap;
use std::sync::Arc;

use pingora::http::RequestHeader;

use crate::ws::RouteConfig;

/// Where a request goes.
#[derive(Debug)]
pub enum Route<'a> {
    /// An in-process WebSocket route, with the path parameters it matched.
    WebSocket(&'a Arc<RouteConfig>, BTreeMap<String, String>),
    /// The upstream pool.
    Upstream,
}

impl Route<'_> {
    /// A short, bounded name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::WebSocket(..) => "websocket",
            Route::Upstream => "upstream",
        }
    }
}

/// The routing table, built once from the validated configuration.
pub struct Router {
    ws: Vec<Arc<RouteConfig>>,
}

impl Router {
    pub fn new(ws: Vec<Arc<RouteConfig>>) -> Router {
        Router { ws }
    }

    /// Decides where `req` goes; see the module documentation for the order.
    pub fn route(&self, req: &RequestHeader) -> Route<'_> {
        let path = req.uri.path();
        if let Some(r) = self.websocket(path) {
            return r;
        }
        Route::Upstream
    }

    fn websocket(&self, path: &str) -> Option<Route<'_>> {
        self.ws
            .iter()
            .find_map(|r| r.path.matches(path).map(|p| Route::WebSocket(r, p)))
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

    fn req(path: &str) -> RequestHeader {
        RequestHeader::build("GET", path.as_bytes(), None).unwrap()
    }

    #[test]
    fn websocket_routes_then_upstream() {
        let c = config("[[ws]]\npath = \"/ws/{room}/\"\ngroups = [\"chat-{room}\"]\n").unwrap();
        let router = Router::new(c.ws.into_iter().map(Arc::new).collect());
        match router.route(&req("/ws/lobby/")) {
            Route::WebSocket(r, p) => {
                assert_eq!(r.path.to_string(), "/ws/{room}/");
                assert_eq!(p["room"], "lobby");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(router.route(&req("/ws/")).kind(), "upstream");
        assert_eq!(router.route(&req("/api/")).kind(), "upstream");
    }
}

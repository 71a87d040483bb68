//! channelgate: a Pingora reverse proxy that stands in front of a Django/WSGI app.
//!
//! A request's path through the code follows the file names: [`config`] is read once,
//! [`server`] assembles the Pingora services, [`proxy`] serves client requests where the
//! [`router`] sends them, most to the [`upstream`] pool, [`admin`] serves `/metrics`, `/healthz` and `/readyz`,
//! [`metrics`] holds the Prometheus figures, and [`shutdown`] drains on SIGTERM.
//! WebSocket upgrades on configured routes go to [`ws`], which joins connections to
//! groups in the [`hub`]; messages reach groups through the [`broker`], fed by the app
//! through [`publish`].
// `deny`, not `forbid`: proxy::unbuffered holds the one allowed `unsafe` block.
#![deny(unsafe_code)]

pub mod admin;
pub mod broker;
pub mod config;
pub mod files;
pub mod hub;
pub mod logging;
pub mod metrics;
pub mod protocols;
pub mod proxy;
pub mod publish;
pub mod router;
pub mod server;
pub mod shutdown;
pub mod tls;
pub mod upstream;
pub mod ws;

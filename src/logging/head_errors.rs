//! Pingora's own lines about a request head it could not read, before any of channelgate's
//! proxy phases run: a malformed head (Pingora answers 400 and logs at DEBUG) and a client
//! that closed or stalled mid-head (Pingora logs at ERROR). A client decides both, so
//! neither is an ERROR here: the malformed request gets one access-log line like any other
//! request, the incomplete head a DEBUG line, and both are counted in
//! `channelgate_http_refused_total{reason="malformed"|"incomplete_head"}`.

use std::fmt::Write;
use std::sync::OnceLock;

use pingora_prometheus::prometheus::IntCounterVec;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};

/// Where Pingora logs it (`log` records keep the module path as target).
pub const TARGET: &str = "pingora_proxy";
const PREFIX: &str = "Fail to proxy: Downstream ";

/// What the layer does with the events once the server is assembled.
struct Sink {
    refused: IntCounterVec,
    access_log: bool,
}

fn sink() -> &'static OnceLock<Sink> {
    static SINK: OnceLock<Sink> = OnceLock::new();
    &SINK
}

/// Counts in `refused` from now on, and writes access-log lines when `access_log`.
pub fn observe(refused: &IntCounterVec, access_log: bool) {
    let _ = sink().set(Sink {
        refused: refused.clone(),
        access_log,
    });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeadError {
    Malformed,
    Incomplete,
}

fn classify(message: &str) -> Option<HeadError> {
    let rest = message.strip_prefix(PREFIX)?;
    let kind = rest.split_whitespace().next()?;
    match kind {
        "InvalidHTTPHeader" => Some(HeadError::Malformed),
        "ConnectionClosed" | "ReadError" | "ReadTimedout" => Some(HeadError::Incomplete),
        _ => None,
    }
}

/// The message and, for a `log` record bridged into tracing, its real target.
#[derive(Default)]
struct Message {
    text: String,
    log_target: Option<String>,
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.text.push_str(value),
            "log.target" => self.log_target = Some(value.to_string()),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        }
    }
}

/// Could this be one of the lines? Pingora logs through the `log` crate, whose records
/// reach tracing under the target "log" (the real one is the field `log.target`).
fn candidate(meta: &tracing::Metadata<'_>) -> bool {
    (meta.target() == "log" || meta.target() == TARGET)
        && matches!(*meta.level(), tracing::Level::ERROR | tracing::Level::DEBUG)
}

fn head_error(event: &Event<'_>) -> Option<(HeadError, String)> {
    if !candidate(event.metadata()) {
        return None;
    }
    let mut m = Message::default();
    event.record(&mut m);
    let target = m.log_target.as_deref().unwrap_or(event.metadata().target());
    if target != TARGET {
        return None;
    }
    classify(&m.text).map(|k| (k, m.text))
}

/// The per-layer filter of [`HeadErrors`]: only what may be one of its lines.
pub struct Candidates;

impl<S> Filter<S> for Candidates {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        candidate(meta)
    }
}

/// The layer that turns those events into an access line or a DEBUG line, and counts them.
pub struct HeadErrors;

impl<S: Subscriber> Layer<S> for HeadErrors {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some((kind, message)) = head_error(event) else {
            return;
        };
        let detail: String = message.chars().skip(PREFIX.len()).take(200).collect();
        let sink = sink().get();
        match kind {
            HeadError::Malformed => {
                if let Some(s) = sink {
                    s.refused.with_label_values(&["malformed"]).inc();
                    if s.access_log {
                        tracing::info!(
                            target: "access",
                            client = "-",
                            method = "-",
                            path = "-",
                            status = 400u16,
                            error = "malformed_request",
                            detail = %detail,
                        );
                    }
                }
            }
            HeadError::Incomplete => {
                if let Some(s) = sink {
                    s.refused.with_label_values(&["incomplete_head"]).inc();
                }
                tracing::debug!(detail = %detail, "a client closed or stalled while sending its request head");
            }
        }
    }
}

/// A per-layer filter for the output layer: hides the Pingora lines [`HeadErrors`] replaces.
pub struct HideHeadErrors;

impl<S> Filter<S> for HideHeadErrors {
    fn enabled(&self, _meta: &tracing::Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }
    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        head_error(event).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_and_counts_bridged_log_records() {
        use tracing_subscriber::layer::SubscriberExt;
        let refused = IntCounterVec::new(
            pingora_prometheus::prometheus::Opts::new("r", "r"),
            &["reason"],
        )
        .unwrap();
        observe(&refused, false);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        struct Record(std::sync::Arc<std::sync::Mutex<Vec<String>>>);
        impl<S: Subscriber> Layer<S> for Record {
            fn on_event(&self, e: &Event<'_>, _: Context<'_, S>) {
                let mut m = Message::default();
                e.record(&mut m);
                self.0.lock().unwrap().push(m.text);
            }
        }
        let sub = tracing_subscriber::registry()
            .with(Record(seen.clone()).with_filter(HideHeadErrors))
            .with(HeadErrors.with_filter(Candidates));
        tracing::subscriber::with_default(sub, || {
            let record = |level, msg: &str| {
                tracing_log::format_trace(
                    &log::Record::builder()
                        .level(level)
                        .target(TARGET)
                        .args(format_args!("{msg}"))
                        .build(),
                )
                .unwrap()
            };
            record(
                log::Level::Error,
                "Fail to proxy: Downstream ConnectionClosed context: x",
            );
            record(
                log::Level::Debug,
                "Fail to proxy: Downstream InvalidHTTPHeader context: y",
            );
            record(log::Level::Error, "Fail to proxy: Upstream ConnectRefused");
        });
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "only the upstream line is output: {seen:?}");
        assert!(seen[0].contains("ConnectRefused"));
        // The sink is process-wide and set once: count through whichever counter it holds.
        let counted = |r: &str| sink().get().unwrap().refused.with_label_values(&[r]).get();
        assert!(counted("incomplete_head") >= 1);
        assert!(counted("malformed") >= 1);
    }

    #[test]
    fn recognises_pingora_head_errors() {
        assert_eq!(
            classify("Fail to proxy: Downstream InvalidHTTPHeader context: invalid Content-Length header, downstream session type: HTTP/1.1"),
            Some(HeadError::Malformed)
        );
        assert_eq!(
            classify("Fail to proxy: Downstream ConnectionClosed context: while reading request headers, bytes already read: 12, downstream session type: HTTP/1.1"),
            Some(HeadError::Incomplete)
        );
        assert_eq!(classify("Fail to proxy: Upstream ConnectRefused"), None);
        assert_eq!(classify("something else"), None);
    }
}

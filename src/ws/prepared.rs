//! A message encoded once for every connection that receives it: the frame's wire bytes
//! (header and payload in one buffer, unmasked, as a server sends them) and, for members
//! that agreed permessage-deflate, the compressed frame — deflated by the first such
//! member's delivery and shared by all the others (every connection answers
//! `server_no_context_takeover`, so a frame compressed from a fresh state is valid for all).

use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

use super::deflate;
use super::frame::{self, Message, OP_BINARY, OP_TEXT};

/// How one connection wants its frames: compressed with these settings when the message is
/// at least `min_size` bytes (`None` in [`crate::hub::QueueLimits`]: never).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateOut {
    pub window_bits: u8,
    pub level: u32,
    pub min_size: usize,
}

/// A compressed variant; `frame` is `None` when deflate failed (then the plain frame goes).
struct Variant {
    window_bits: u8,
    level: u32,
    frame: Option<Bytes>,
}

pub struct Prepared {
    /// Header and payload.
    plain: Bytes,
    /// Where the payload starts in `plain`.
    header_len: usize,
    text: bool,
    /// The compressed frame for the first (window, level) asked for.
    deflated: OnceLock<Variant>,
    /// Other (window, level) pairs: only when routes with different settings share a group
    /// or a client limited our window; rare, so a list.
    others: Mutex<Vec<Variant>>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("text", &self.text)
            .field("len", &self.payload().len())
            .finish()
    }
}

impl PartialEq for Prepared {
    fn eq(&self, other: &Prepared) -> bool {
        self.text == other.text && self.payload() == other.payload()
    }
}

impl Prepared {
    fn new(text: bool, payload: &[u8]) -> Prepared {
        let plain = frame::encode(if text { OP_TEXT } else { OP_BINARY }, false, payload);
        Prepared {
            header_len: plain.len() - payload.len(),
            plain,
            text,
            deflated: OnceLock::new(),
            others: Mutex::new(Vec::new()),
        }
    }

    /// A text frame.
    pub fn text(s: &str) -> Prepared {
        Prepared::new(true, s.as_bytes())
    }

    /// A binary frame.
    pub fn binary(b: &[u8]) -> Prepared {
        Prepared::new(false, b)
    }

    /// The frame that carries `m`.
    pub fn message(m: &Message) -> Prepared {
        match m {
            Message::Text(t) => Prepared::text(t),
            Message::Binary(b) => Prepared::binary(b),
        }
    }

    pub fn is_text(&self) -> bool {
        self.text
    }

    pub fn payload(&self) -> &[u8] {
        &self.plain[self.header_len..]
    }

    /// Payload bytes: what a queue's byte bound counts.
    pub fn len(&self) -> usize {
        self.plain.len() - self.header_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The uncompressed frame's wire bytes.
    pub fn plain(&self) -> &Bytes {
        &self.plain
    }

    fn deflate(&self, window_bits: u8, level: u32) -> Variant {
        // Compressed even when deflate does not shrink it (a few bytes more): a client
        // that agreed deflate gets every message above the size threshold compressed, as
        // from nginx+nchan or uWebSockets; some clients (Autobahn's) assume so.
        let frame = deflate::compress_always(self.payload(), level, window_bits)
            .map(|c| frame::encode(if self.text { OP_TEXT } else { OP_BINARY }, true, &c));
        Variant {
            window_bits,
            level,
            frame,
        }
    }

    /// The wire bytes for a connection that wants `out`: the compressed frame when deflate
    /// was agreed and the message is large enough; else the plain frame. Compressing
    /// happens at most once per (window, level).
    pub fn wire(&self, out: Option<&DeflateOut>) -> Bytes {
        let Some(d) = out.filter(|d| self.len() >= d.min_size) else {
            return self.plain.clone();
        };
        let first = self
            .deflated
            .get_or_init(|| self.deflate(d.window_bits, d.level));
        let pick = |v: &Variant| v.frame.clone().unwrap_or_else(|| self.plain.clone());
        if first.window_bits == d.window_bits && first.level == d.level {
            return pick(first);
        }
        // Not poisoned: nothing below panics while holding it.
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = others
            .iter()
            .find(|v| v.window_bits == d.window_bits && v.level == d.level)
        {
            return pick(v);
        }
        let v = self.deflate(d.window_bits, d.level);
        let bytes = pick(&v);
        others.push(v);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_once_and_compresses_once() {
        let json = format!(
            "{{\"event\": \"runner_on_ok\", \"stdout\": \"{}\"}}",
            "ok ".repeat(200)
        );
        let p = Prepared::text(&json);
        assert_eq!(p.len(), json.len());
        assert_eq!(&p.plain()[p.plain().len() - json.len()..], json.as_bytes());
        assert!(p.is_text());
        let d = DeflateOut {
            window_bits: 15,
            level: 6,
            min_size: 256,
        };
        let a = p.wire(Some(&d));
        assert!(
            a.len() < json.len() / 3,
            "deflated {} of {}",
            a.len(),
            json.len()
        );
        assert_eq!(a[0], 0x80 | 0x40 | OP_TEXT, "FIN, RSV1, text");
        // The second member gets the same buffer, not a second compression.
        let b = p.wire(Some(&d));
        assert_eq!(a.as_ptr(), b.as_ptr());
        // Another window size: its own variant, kept too.
        let small = DeflateOut {
            window_bits: 9,
            ..d
        };
        let c = p.wire(Some(&small));
        assert_eq!(c.as_ptr(), p.wire(Some(&small)).as_ptr());
        // Too short, or no deflate: the plain frame.
        let short = Prepared::text("hi");
        assert_eq!(short.wire(Some(&d)), short.plain().clone());
        assert_eq!(p.wire(None).as_ptr(), p.plain().as_ptr());
    }

    #[test]
    fn incompressible_payloads_cost_a_few_bytes() {
        let mut x = 0x2545F4914F6CDD1Du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let p = Prepared::binary(&noise);
        let d = DeflateOut {
            window_bits: 15,
            level: 6,
            min_size: 0,
        };
        let w = p.wire(Some(&d));
        assert_eq!(w[0], 0x80 | 0x40 | OP_BINARY);
        assert!(
            w.len() <= p.plain().len() + 16,
            "{} vs {}",
            w.len(),
            p.plain().len()
        );
    }
}

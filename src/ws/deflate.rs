//! permessage-deflate (RFC 7692): the offer negotiation, the shared per-message
//! compressor and the per-message inflater.
//!
//! The server never takes context over between messages (`server_no_context_takeover`),
//! so one compressed frame serves every member of a group, and it always asks the client
//! not to either (`client_no_context_takeover`), so an [`Inflater`] lives only while one
//! compressed message is read: an idle connection holds no zlib state at all.
//!
//! Backend: flate2 over zlib-ng (Pingora links flate2 with its `zlib-ng` feature, which
//! takes precedence over the pure-Rust `zlib-rs` we also ask for; either provides the
//! `*_with_window_bits` constructors). Both allocate through Rust's global allocator.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::ws::frame::Fail;

/// The 4 octets a sync flush ends with; stripped from compressed messages and appended
/// again before inflating (RFC 7692 7.2.1, 7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What a route allows (from its config: compression = "deflate" | "off",
/// compression_min_size, compression_level).
#[derive(Clone, Copy, Debug)]
pub struct DeflateConfig {
    pub enabled: bool,
    pub min_size: usize,
    pub level: u32,
}

/// What was agreed with one client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreed {
    /// The window our (shared, per-message) compressor may use: 15 unless the client
    /// asked for server_max_window_bits=N. N = 8 becomes 9: zlib (and zlib-ng) cannot
    /// deflate with a 256-byte window and use 512 bytes instead, but a deflater never
    /// emits a distance beyond `MAX_DIST = w_size - MIN_LOOKAHEAD` = 512 - 262 = 250
    /// bytes, so its output is valid for a client that keeps only 256 bytes of history
    /// (checked by `window_9_distances_fit_an_8_bit_window` in the tests).
    pub server_window_bits: u8,
    pub inflate: InflateParams,
}

/// How a client's compressed messages are inflated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InflateParams {
    /// The client's LZ77 window (client_max_window_bits, 8..=15; 15 when not agreed).
    pub window_bits: u8,
}

/// Parses the client's Sec-WebSocket-Extensions header values (comma-separated offers,
/// parameters after `;`, quoted values allowed) and picks the first acceptable
/// permessage-deflate offer. Returns the agreement and the response header value, e.g.
/// "permessage-deflate; server_no_context_takeover; client_no_context_takeover".
///
/// The answer always carries `server_no_context_takeover` (RFC 7692 7.1.1.1: "A server
/// MAY include the "server_no_context_takeover" extension parameter in an extension
/// negotiation response even if the extension negotiation offer being accepted by the
/// extension negotiation response didn't include [it]") and `client_no_context_takeover`
/// (7.1.1.2: "A server MAY include the "client_no_context_takeover" extension parameter
/// in an extension negotiation response."), so we inflate each message with a fresh
/// state. `server_max_window_bits=N` is answered with the same N (7.1.2.1: "the same or
/// smaller value"); `client_max_window_bits=N` is echoed, and without a value it is
/// omitted (7.1.2.2: the server "MAY include" it; the client then uses 15). An offer with
/// an unknown, duplicated or invalid parameter is declined (7.1) and the next one tried.
///
/// Safari 15.0–15.3 mishandle client_no_context_takeover (uWebSockets disables
/// compression for them by user agent, uNetworking/uWebSockets#1347): None for them.
pub fn negotiate<'a>(
    offers: impl IntoIterator<Item = &'a str>,
    user_agent: Option<&str>,
) -> Option<(Agreed, String)> {
    if user_agent.is_some_and(broken_safari) {
        return None;
    }
    offers
        .into_iter()
        .flat_map(|value| split_unquoted(value, b','))
        .find_map(accept_offer)
}

/// One offer (`permessage-deflate; name[=value]; ...`) if it is acceptable.
fn accept_offer(offer: &str) -> Option<(Agreed, String)> {
    let mut parts = split_unquoted(offer, b';');
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let (mut server_nct, mut client_nct) = (false, false);
    let mut server_bits: Option<u8> = None;
    // None: not offered; Some(None): offered without a value.
    let mut client_bits: Option<Option<u8>> = None;
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let fresh = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => {
                !std::mem::replace(&mut server_nct, true)
            }
            "client_no_context_takeover" if value.is_none() => {
                !std::mem::replace(&mut client_nct, true)
            }
            "server_max_window_bits" => {
                let bits = window_bits(value.as_deref()?)?;
                server_bits.replace(bits).is_none()
            }
            "client_max_window_bits" => {
                let bits = match value.as_deref() {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                };
                client_bits.replace(bits).is_none()
            }
            _ => return None,
        };
        if !fresh {
            return None;
        }
    }
    let mut answer =
        String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if let Some(n) = server_bits {
        answer.push_str(&format!("; server_max_window_bits={n}"));
    }
    if let Some(Some(n)) = client_bits {
        answer.push_str(&format!("; client_max_window_bits={n}"));
    }
    let agreed = Agreed {
        server_window_bits: server_bits.map_or(15, |n| n.max(9)),
        inflate: InflateParams {
            window_bits: client_bits.flatten().unwrap_or(15),
        },
    };
    Some((agreed, answer))
}

/// A window-bits value: a decimal 8..=15 without leading zeros (RFC 7692 7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = v.parse().ok()?;
    (8..=15).contains(&n).then_some(n)
}

/// A token or a quoted-string (RFC 7230 3.2.6) without its quotes and escapes; None for
/// an unterminated or malformed quoted-string.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return (!v.contains('"') && !v.contains('\\')).then(|| v.to_owned());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.next().is_none().then_some(out),
            c => out.push(c),
        }
    }
    None // no closing quote
}

/// Splits `s` at `sep` outside quoted-strings. An unterminated quote runs to the end of
/// `s` (the piece then fails to parse).
fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, b) in s.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b if b == sep && !quoted => {
                    // `sep` is ASCII, so `i` and `i + 1` are char boundaries.
                    rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

/// Safari 15.0 to 15.3 (" Version/15.N " with N <= 3, then " Safari/"), the test
/// uWebSockets uses; other WebKit browsers on iOS 15 share the engine but not the string.
fn broken_safari(ua: &str) -> bool {
    let Some(start) = ua.find(" Version/15.") else {
        return false;
    };
    let rest = &ua[start + " Version/15.".len()..];
    let Some(end) = rest.find(' ') else {
        return false;
    };
    let minor = &rest[..end];
    !minor.is_empty()
        && minor.bytes().all(|b| b.is_ascii_digit())
        && minor.parse::<u32>().is_ok_and(|m| m <= 3)
        && rest[end..].contains(" Safari/")
}

thread_local! {
    /// One compressor per thread, reset for every message: a zlib-ng deflate state costs
    /// ~276 KiB resident at level 6 with 15 bits (~197 KiB with 9), too much to allocate
    /// per message. The reset still clears its 128 KiB hash table: ~3 µs per message.
    static COMPRESSOR: RefCell<Option<(u32, u8, Compress)>> = const { RefCell::new(None) };
}

/// One message compressed for every member: raw deflate at `level` with a fresh state
/// (no context takeover), flushed with Z_SYNC_FLUSH and the trailing 00 00 FF FF removed
/// (RFC 7692 7.2.1). None when the result would not be smaller than `payload`.
/// `window_bits` is an [`Agreed::server_window_bits`] (9..=15; others are clamped).
pub fn compress(payload: &[u8], level: u32, window_bits: u8) -> Option<Bytes> {
    with_compressor(level, window_bits, |c| deflate_into(c, payload, false))
}

/// Like [`compress`], but also when the result is not smaller (None only if zlib fails).
/// For peers that mishandle uncompressed messages on a deflate connection, such as the
/// kosoku port of Autobahn used by tests/conformance: its 12.* and 13.* cases error
/// ("Strings must be encoded before hashing") on any echo sent without RSV1, though
/// RFC 7692 makes compression a per-message choice.
pub fn compress_always(payload: &[u8], level: u32, window_bits: u8) -> Option<Bytes> {
    with_compressor(level, window_bits, |c| deflate_into(c, payload, true))
}

/// Runs `f` with this thread's compressor, reset, at `level` and `window_bits`.
fn with_compressor(
    level: u32,
    window_bits: u8,
    f: impl FnOnce(&mut Compress) -> Option<Bytes>,
) -> Option<Bytes> {
    let level = level.min(9);
    let bits = window_bits.clamp(9, 15);
    // try_with: None (send uncompressed) rather than panic during thread teardown.
    let compressed = COMPRESSOR.try_with(|cell| {
        let mut cell = cell.try_borrow_mut().ok()?;
        let fresh = !matches!(&*cell, Some((l, b, _)) if *l == level && *b == bits);
        if fresh {
            let c = Compress::new_with_window_bits(Compression::new(level), false, bits);
            *cell = Some((level, bits, c));
        }
        let (_, _, c) = cell.as_mut()?;
        if !fresh {
            c.reset();
        }
        f(c)
    });
    compressed.ok().flatten()
}

/// Deflates `payload` with a sync flush and strips the tail. Unless `always`, the output
/// buffer is as long as the payload plus the tail: when that is not enough room the
/// result would not be smaller, and we stop there.
fn deflate_into(c: &mut Compress, payload: &[u8], always: bool) -> Option<Bytes> {
    let mut out = Vec::with_capacity(payload.len() + TAIL.len() + if always { 64 } else { 0 });
    loop {
        // total_in counts from the reset: what this message's earlier rounds took.
        let taken = (c.total_in() as usize).min(payload.len());
        let status = c
            .compress_vec(&payload[taken..], &mut out, FlushCompress::Sync)
            .ok()?;
        // A sync flush is complete when all input was taken and room was left over.
        let complete = status == Status::Ok
            && c.total_in() == payload.len() as u64
            && out.len() < out.capacity();
        if complete {
            break;
        }
        if !always {
            return None;
        }
        out.reserve(out.capacity());
    }
    if !out.ends_with(&TAIL) {
        return None;
    }
    out.truncate(out.len() - TAIL.len());
    (always || out.len() < payload.len()).then(|| Bytes::from(out))
}

/// Inflates one compressed message (created at its first frame, dropped at its end).
///
/// Memory while alive, measured by `inflater_memory` in the tests: ~42 KiB resident with a
/// 15-bit window (the zlib-ng inflate state, ~12 KiB, plus the 32 KiB window), ~13 KiB
/// with a 9-bit one. Nothing is held between messages: with client_no_context_takeover
/// agreed each message starts a fresh stream, so an idle connection pays nothing.
pub struct Inflater {
    z: Decompress,
    /// The client ended the stream with a BFINAL block (RFC 7692 7.2.3.3 allows it);
    /// anything after it, including the tail we append, is ignored.
    ended: bool,
}

impl Inflater {
    pub fn new(p: InflateParams) -> Inflater {
        // zlib's raw inflate takes 8 as well, but flate2 asks for 9..=15: a 9-bit window
        // reads every 8-bit stream (a larger window is a superset).
        Inflater {
            z: Decompress::new_with_window_bits(false, p.window_bits.clamp(9, 15)),
            ended: false,
        }
    }

    /// Inflates `input` (one frame's unmasked payload, or any piece of it) appending to
    /// `out`; Err(Fail::TooBig) as soon as `out` would exceed `max` bytes (no more than
    /// `max + 1` bytes are ever reserved: decompression bombs stop there), and
    /// Err(Fail::Deflate) for corrupt data.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), Fail> {
        self.run(input, out, max)
    }

    /// The message's last frame was pushed: feeds 00 00 FF FF and finishes.
    pub fn finish(&mut self, out: &mut Vec<u8>, max: usize) -> Result<(), Fail> {
        self.run(&TAIL, out, max)
    }

    fn run(&mut self, mut input: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), Fail> {
        let limit = max.saturating_add(1);
        while !self.ended {
            if out.len() == out.capacity() {
                let room = limit.saturating_sub(out.len());
                if room == 0 {
                    return Err(Fail::TooBig);
                }
                // Grow geometrically from a guess of 4x the input, never past max + 1.
                let want = out.len().max(input.len().saturating_mul(4)).max(256);
                out.reserve_exact(want.min(room));
            }
            let (in_before, out_before) = (self.z.total_in(), out.len());
            let status = self
                .z
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| Fail::Deflate)?;
            // total_in grew by what this call took, at most input.len().
            let used = (self.z.total_in() - in_before) as usize;
            input = &input[used.min(input.len())..];
            if out.len() > max {
                return Err(Fail::TooBig);
            }
            self.ended = status == Status::StreamEnd;
            // With room left over, zlib wrote all it could: done once all input is taken.
            // (Input left with room to spare and no progress cannot happen with a sound
            // stream; treat it as corrupt rather than loop.)
            if out.len() < out.capacity() {
                if input.is_empty() || self.ended {
                    break;
                }
                if used == 0 && out.len() == out_before {
                    return Err(Fail::Deflate);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const BASE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    fn agreed(server: u8, client: u8) -> Agreed {
        Agreed {
            server_window_bits: server,
            inflate: InflateParams {
                window_bits: client,
            },
        }
    }

    fn one(offer: &str) -> Option<(Agreed, String)> {
        negotiate([offer], None)
    }

    #[test]
    fn browsers_offers() {
        // Chrome, Edge, Safari >= 15.4.
        let chrome = one("permessage-deflate; client_max_window_bits");
        assert_eq!(chrome, Some((agreed(15, 15), BASE.to_string())));
        // Firefox.
        assert_eq!(
            one("permessage-deflate"),
            Some((agreed(15, 15), BASE.into()))
        );
        // A client that limits its own window: echoed, and inflated with that window.
        assert_eq!(
            one("permessage-deflate; client_max_window_bits=10"),
            Some((agreed(15, 10), format!("{BASE}; client_max_window_bits=10")))
        );
    }

    #[test]
    fn autobahn_13_offers() {
        for n in 8..=15u8 {
            for server_nct in ["", "; server_no_context_takeover"] {
                let offer = format!(
                    "permessage-deflate; client_no_context_takeover; client_max_window_bits{server_nct}; server_max_window_bits={n}"
                );
                let (a, answer) = one(&offer).unwrap_or_else(|| panic!("{offer} declined"));
                assert_eq!(a, agreed(n.max(9), 15), "{offer}");
                assert_eq!(answer, format!("{BASE}; server_max_window_bits={n}"));
            }
        }
        // 13.7: three offers in one header, the first acceptable one wins.
        let offers = "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
             server_no_context_takeover; server_max_window_bits=9, permessage-deflate; \
             client_no_context_takeover; client_max_window_bits; server_no_context_takeover, \
             permessage-deflate; client_no_context_takeover; client_max_window_bits";
        let (a, answer) = one(offers).unwrap();
        assert_eq!(a, agreed(9, 15));
        assert_eq!(answer, format!("{BASE}; server_max_window_bits=9"));
    }

    #[test]
    fn invalid_offers_are_skipped_for_the_next() {
        let cases = [
            // (header values, expected client window or None for no agreement)
            (
                vec!["permessage-deflate; server_max_window_bits=16, permessage-deflate"],
                Some(15),
            ),
            (
                vec![
                    "x-webkit-deflate-frame",
                    "permessage-deflate; client_max_window_bits=9",
                ],
                Some(9),
            ),
            (
                vec!["permessage-deflate; client_max_window_bits=\"10\""],
                Some(10),
            ),
            (
                vec!["permessage-deflate; client_max_window_bits=\"1\\0\""],
                Some(10),
            ),
            (
                vec!["PerMessage-Deflate ;  Client_Max_Window_Bits = 12 "],
                Some(12),
            ),
            (
                vec!["permessage-deflate; server_max_window_bits=\"1,0\", permessage-deflate"],
                Some(15),
            ),
            (vec!["permessage-deflate; server_max_window_bits"], None),
            (vec!["permessage-deflate; server_max_window_bits=08"], None),
            (vec!["permessage-deflate; server_max_window_bits=7"], None),
            (vec!["permessage-deflate; server_max_window_bits=+9"], None),
            (
                vec!["permessage-deflate; server_max_window_bits=9; server_max_window_bits=9"],
                None,
            ),
            (
                vec!["permessage-deflate; client_max_window_bits; client_max_window_bits=9"],
                None,
            ),
            (
                vec!["permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
                None,
            ),
            (
                vec!["permessage-deflate; client_no_context_takeover=1"],
                None,
            ),
            (
                vec!["permessage-deflate; client_max_window_bits=\"10"],
                None,
            ),
            (vec!["permessage-deflate; foo=bar"], None),
            (
                vec!["permessage-deflate; client_max_window_bits=1\"0"],
                None,
            ),
            (vec!["deflate-frame", "x-foo; permessage-deflate"], None),
            (vec!["", ",,,", ";", "=", "\"", "\\"], None),
            (vec![], None),
        ];
        for (values, want) in cases {
            let got = negotiate(values.iter().copied(), None);
            assert_eq!(got.map(|(a, _)| a.inflate.window_bits), want, "{values:?}");
        }
    }

    #[test]
    fn negotiate_never_panics_and_its_answers_are_offers() {
        let pieces = [
            "permessage-deflate",
            "x",
            ";",
            ",",
            "=",
            "\"",
            "\\",
            " ",
            "\t",
            "é",
            "9",
            "15",
            "08",
            "server_no_context_takeover",
            "client_no_context_takeover",
            "server_max_window_bits",
            "client_max_window_bits",
            "\u{0}",
            "\u{ffff}",
        ];
        let mut rng = StdRng::seed_from_u64(7692);
        let mut agreed_count = 0;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..rng.gen_range(0..12) {
                s.push_str(pieces[rng.gen_range(0..pieces.len())]);
            }
            if let Some((a, answer)) = negotiate([s.as_str()], Some(&s)) {
                agreed_count += 1;
                assert!((9..=15).contains(&a.server_window_bits), "{s:?}");
                assert!((8..=15).contains(&a.inflate.window_bits), "{s:?}");
                // What we answer is itself a valid offer agreeing to the same.
                assert_eq!(one(&answer).map(|(b, _)| b), Some(a), "{s:?} -> {answer}");
            }
        }
        assert!(
            agreed_count > 100,
            "the generator rarely makes a valid offer"
        );
    }

    #[test]
    fn safari_15_0_to_15_3_get_no_compression() {
        let mac = |v: &str| {
            format!("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{v} Safari/605.1.15")
        };
        let ios = |v: &str| {
            format!("Mozilla/5.0 (iPhone; CPU iPhone OS 15_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{v} Mobile/15E148 Safari/604.1")
        };
        let offer = ["permessage-deflate; client_max_window_bits"];
        for v in ["15.0", "15.1", "15.2", "15.3"] {
            assert_eq!(negotiate(offer, Some(&mac(v))), None, "{v}");
            assert_eq!(negotiate(offer, Some(&ios(v))), None, "{v}");
        }
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        for ua in [
            mac("15.4"),
            mac("15.6.1"),
            mac("14.1.2"),
            mac("16.0"),
            ios("17.1"),
            chrome.into(),
        ] {
            assert!(negotiate(offer, Some(&ua)).is_some(), "{ua}");
        }
        assert!(negotiate(offer, Some(" Version/15.")).is_some());
        assert!(negotiate(offer, Some(" Version/15.1")).is_some());
    }

    /// Random JSON-like text (job events) of `len` bytes.
    fn json_like(rng: &mut StdRng, len: usize) -> Vec<u8> {
        let words = [
            "runner_on_ok",
            "web-3",
            "changed",
            "ok",
            "TASK [deploy]",
            "é",
            "📦",
            "stdout",
        ];
        let mut out = Vec::with_capacity(len + 200);
        let mut counter = 0u32;
        while out.len() < len {
            counter += rng.gen_range(1..5);
            let w1 = words[rng.gen_range(0..words.len())];
            let w2 = words[rng.gen_range(0..words.len())];
            let n: u64 = rng.gen();
            out.extend_from_slice(
                format!(r#"{{"event":"{w1}","counter":{counter},"host":"{w2}","uuid":"{n:x}"}},"#)
                    .as_bytes(),
            );
        }
        out.truncate(len);
        out
    }

    /// Inflates `compressed` in pieces of random sizes.
    fn inflate(rng: &mut StdRng, compressed: &[u8], bits: u8, max: usize) -> Result<Vec<u8>, Fail> {
        let mut inflater = Inflater::new(InflateParams { window_bits: bits });
        let mut out = Vec::new();
        let mut rest = compressed;
        while !rest.is_empty() {
            let n = rng.gen_range(1..=rest.len());
            inflater.push(&rest[..n], &mut out, max)?;
            rest = &rest[n..];
        }
        inflater.finish(&mut out, max)?;
        Ok(out)
    }

    #[test]
    fn compress_then_inflate_round_trips() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut sizes = vec![
            0,
            1,
            10,
            40,
            100,
            250,
            1000,
            4096,
            30_000,
            65_536,
            100 * 1024,
        ];
        sizes.extend((0..8).map(|_| rng.gen_range(0..100 * 1024)));
        let mut compressed_count = 0;
        for &len in &sizes {
            let payload = json_like(&mut rng, len);
            for bits in 9..=15 {
                for level in [1, 6, 9] {
                    let Some(z) = compress(&payload, level, bits) else {
                        assert!(len < 100, "{len} bytes did not compress");
                        continue;
                    };
                    compressed_count += 1;
                    assert!(z.len() < payload.len());
                    assert!(!z.ends_with(&TAIL));
                    let back = inflate(&mut rng, &z, bits, len).unwrap();
                    assert!(back == payload, "len {len} bits {bits} level {level}");
                    // One byte less room than the message: too big.
                    if len > 0 {
                        assert_eq!(inflate(&mut rng, &z, bits, len - 1), Err(Fail::TooBig));
                    }
                }
            }
        }
        assert!(compressed_count > 300);
    }

    #[test]
    fn compress_declines_what_does_not_shrink() {
        let mut rng = StdRng::seed_from_u64(2);
        let noise: Vec<u8> = (0..5000).map(|_| rng.gen()).collect();
        assert_eq!(compress(&noise, 6, 15), None);
        assert_eq!(compress(b"", 6, 15), None);
        assert_eq!(compress(b"Hello", 6, 15), None); // 7 bytes compressed
        assert_eq!(compress(&[b'a'; 1000], 0, 15), None); // level 0: stored
                                                          // The thread's compressor changes level and window, and is reset between uses.
        let text = json_like(&mut rng, 2000);
        let a = compress(&text, 6, 15).unwrap();
        let _ = compress(&noise, 1, 9);
        assert_eq!(compress(&text, 6, 15).unwrap(), a);
    }

    #[test]
    fn compress_always_compresses_what_does_not_shrink() {
        let mut rng = StdRng::seed_from_u64(6);
        let noise: Vec<u8> = (0..100_000).map(|_| rng.gen()).collect();
        for payload in [&b""[..], b"Hello", &noise[..5000], &noise] {
            let z = compress_always(payload, 6, 15).unwrap();
            assert_eq!(inflate(&mut rng, &z, 15, payload.len()).unwrap(), payload);
        }
        assert_eq!(&compress_always(b"", 6, 15).unwrap()[..], &[0x00]); // RFC 7692 7.2.3.6
        let text = json_like(&mut rng, 3000);
        assert_eq!(compress_always(&text, 6, 15), compress(&text, 6, 15));
    }

    #[test]
    fn rfc_7692_examples_inflate() {
        let mut rng = StdRng::seed_from_u64(3);
        let examples: [&[u8]; 4] = [
            // 7.2.3.1: one compressed block.
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            // 7.2.3.3: a block with no compression.
            &[
                0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ],
            // 7.2.3.4: BFINAL set (the tail we append is ignored).
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
            // 7.2.3.5: two blocks in one message.
            &[
                0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
            ],
        ];
        for z in examples {
            for bits in [8, 9, 15] {
                assert_eq!(inflate(&mut rng, z, bits, 5).unwrap(), b"Hello", "{z:x?}");
            }
        }
        // The empty message (7.2.3.6) and corrupt data (reserved block type 3).
        assert_eq!(inflate(&mut rng, &[0x00], 15, 0).unwrap(), b"");
        assert_eq!(
            inflate(&mut rng, &[0xff, 0xff, 0xff], 15, 100),
            Err(Fail::Deflate)
        );
        assert_eq!(
            inflate(&mut rng, &[0x00, 0x05, 0x00, 0xfa, 0xfe], 15, 100),
            Err(Fail::Deflate)
        );
    }

    /// A 1 GiB-of-zeros bomb: fails once 1 MiB is out, having reserved no more than that.
    #[test]
    fn decompression_bomb_fails_fast() {
        // Sync-flushed blocks of 1 MiB of zeros chain into a valid stream: every copy
        // refers back to zeros. 1024 copies make 1 GiB.
        let mut c = Compress::new(Compression::best(), false);
        let mut block = Vec::with_capacity(8192);
        c.compress_vec(&vec![0u8; 1 << 20], &mut block, FlushCompress::Sync)
            .unwrap();
        assert!(block.len() < 2048, "{}", block.len());
        let max = 1 << 20;
        let mut inflater = Inflater::new(InflateParams { window_bits: 15 });
        let mut out = Vec::new();
        let mut fed = 0;
        let err = (0..1024).find_map(|_| {
            fed += block.len();
            inflater.push(&block, &mut out, max).err()
        });
        assert_eq!(err, Some(Fail::TooBig));
        assert!(fed <= 2 * block.len(), "fed {fed} bytes before failing");
        assert!(out.capacity() <= max + 1, "reserved {}", out.capacity());
    }

    /// A minimal inflater (RFC 1951) that also reports the longest back-reference: it
    /// checks what zlib's own inflater cannot, that a stream fits a given window.
    fn inflate_measuring(data: &[u8]) -> (Vec<u8>, usize) {
        struct Bits<'a>(&'a [u8], usize);
        impl Bits<'_> {
            fn get(&mut self, n: u32) -> u32 {
                let mut v = 0;
                for i in 0..n {
                    let bit = (self.0[self.1 / 8] >> (self.1 % 8)) & 1;
                    v |= (bit as u32) << i;
                    self.1 += 1;
                }
                v
            }
        }
        fn table(lengths: &[u8]) -> (Vec<u16>, Vec<u16>) {
            let mut count = vec![0u16; 16];
            lengths.iter().for_each(|&l| count[l as usize] += 1);
            count[0] = 0;
            let mut symbols: Vec<(u8, u16)> = (0..lengths.len())
                .filter(|&s| lengths[s] > 0)
                .map(|s| (lengths[s], s as u16))
                .collect();
            symbols.sort();
            (count, symbols.into_iter().map(|(_, s)| s).collect())
        }
        fn decode(b: &mut Bits, (count, symbols): &(Vec<u16>, Vec<u16>)) -> usize {
            let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
            for &n in &count[1..16] {
                code |= b.get(1) as i32;
                let n = n as i32;
                if code - first < n {
                    return symbols[(index + code - first) as usize] as usize;
                }
                index += n;
                first = (first + n) << 1;
                code <<= 1;
            }
            panic!("bad code");
        }
        const LBASE: [usize; 29] = [
            3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
            115, 131, 163, 195, 227, 258,
        ];
        const LEXT: [u32; 29] = [
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
        ];
        const DBASE: [usize; 30] = [
            1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
            1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
        ];
        const DEXT: [u32; 30] = [
            0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12,
            12, 13, 13,
        ];
        const ORDER: [usize; 19] = [
            16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
        ];
        let data = [data, &TAIL].concat();
        let mut b = Bits(&data, 0);
        let (mut out, mut longest) = (Vec::new(), 0);
        while b.1 < data.len() * 8 {
            let _final = b.get(1);
            let (lit, dist) = match b.get(2) {
                0 => {
                    b.1 = b.1.div_ceil(8) * 8;
                    let len = b.get(16) as usize;
                    b.get(16);
                    out.extend_from_slice(&data[b.1 / 8..b.1 / 8 + len]);
                    b.1 += len * 8;
                    continue;
                }
                1 => {
                    let mut l = vec![8u8; 288];
                    l[144..256].fill(9);
                    l[256..280].fill(7);
                    (table(&l), table(&[5; 30]))
                }
                2 => {
                    let (hlit, hdist, hclen) = (
                        b.get(5) as usize + 257,
                        b.get(5) as usize + 1,
                        b.get(4) as usize + 4,
                    );
                    let mut cl = [0u8; 19];
                    for &i in &ORDER[..hclen] {
                        cl[i] = b.get(3) as u8;
                    }
                    let clt = table(&cl);
                    let mut lengths = Vec::new();
                    while lengths.len() < hlit + hdist {
                        match decode(&mut b, &clt) {
                            s @ 0..=15 => lengths.push(s as u8),
                            16 => {
                                let prev = *lengths.last().unwrap();
                                lengths.extend(std::iter::repeat_n(prev, 3 + b.get(2) as usize));
                            }
                            17 => lengths.extend(std::iter::repeat_n(0, 3 + b.get(3) as usize)),
                            _ => lengths.extend(std::iter::repeat_n(0, 11 + b.get(7) as usize)),
                        }
                    }
                    (table(&lengths[..hlit]), table(&lengths[hlit..]))
                }
                _ => panic!("reserved block type"),
            };
            loop {
                match decode(&mut b, &lit) {
                    s @ 0..=255 => out.push(s as u8),
                    256 => break,
                    s => {
                        let len = LBASE[s - 257] + b.get(LEXT[s - 257]) as usize;
                        let d = decode(&mut b, &dist);
                        let distance = DBASE[d] + b.get(DEXT[d]) as usize;
                        longest = longest.max(distance);
                        for _ in 0..len {
                            out.push(out[out.len() - distance]);
                        }
                    }
                }
            }
        }
        (out, longest)
    }

    #[test]
    fn window_9_distances_fit_an_8_bit_window() {
        let mut rng = StdRng::seed_from_u64(4);
        let payload = json_like(&mut rng, 20_000);
        // The measuring inflater works: a full window reaches far back.
        let (out, longest) = inflate_measuring(&compress(&payload, 6, 15).unwrap());
        assert!(out == payload);
        assert!(longest > 1000, "{longest}");
        // server_max_window_bits=8 compresses with 9 bits: no distance over 256.
        for level in 1..=9 {
            let z = compress(&payload, level, 8).unwrap();
            let (out, longest) = inflate_measuring(&z);
            assert!(out == payload, "level {level}");
            assert!(longest <= 256, "level {level}: distance {longest}");
            let (_, longest9) = inflate_measuring(&compress(&payload, level, 9).unwrap());
            assert!(longest9 <= 256, "level {level}: distance {longest9}");
        }
    }
}

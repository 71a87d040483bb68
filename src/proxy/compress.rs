//! Compression of proxied responses (`[compression]`, nginx's `gzip` module): zstd, brotli
//! and gzip, chosen by the client's `Accept-Encoding` with its q-values (ties in that order).
//!
//! Our own encoders over flate2, zstd and brotli rather than Pingora's `ResponseCompression`
//! module, because that module ignores q-values (it takes the first token it knows),
//! compresses 206 answers and event streams, only flushes at the end of the body (a
//! server-sent event would wait for the next 64 KiB), and never finishes its brotli streams
//! (pingora#1013). Here every upstream chunk is compressed and flushed at once (a
//! `Z_SYNC_FLUSH`, a zstd block end, a brotli flush), so a streamed answer still arrives as
//! it is produced, and every stream is finished at the end of the body (brotli's
//! `into_inner` writes its last block; the tests decode each coding with Python's own
//! decoders and check that the stream is complete).

use bytes::Bytes;
use flate2::write::GzEncoder;
use pingora::http::{RequestHeader, ResponseHeader};
use serde::Deserialize;
use std::io::Write;

use crate::config::{Errors, KeyPath};

/// `[compression]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressionConfig {
    /// Whether proxied responses are compressed. Default false. nginx: `gzip on`.
    pub enabled: bool,
    /// 1 (fastest) to 9 (smallest), for gzip, zstd and brotli. Default 5.
    /// nginx: `gzip_comp_level`.
    pub level: u32,
    /// Bodies with a known length under this many bytes are sent as they are. Default 1 KiB.
    /// nginx: `gzip_min_length`.
    pub min_size: usize,
    /// MIME types compressed (without parameters); "*" for any. nginx: `gzip_types`.
    pub types: Vec<String>,
}

/// nginx's `gzip_types` as the seed deployments set it, plus JSON, JavaScript, CSS, SVG, XML.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "text/xml",
    "text/javascript",
    "text/csv",
    "text/markdown",
    "application/javascript",
    "application/x-javascript",
    "application/json",
    "application/ld+json",
    "application/manifest+json",
    "application/problem+json",
    "application/xml",
    "application/atom+xml",
    "application/rss+xml",
    "application/xhtml+xml",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
    "font/ttf",
    "font/otf",
];

pub const DEFAULT_LEVEL: u32 = 5;
/// Brotli's window (2^22 bytes), its own default.
const BROTLI_WINDOW_BITS: u32 = 22;
pub const DEFAULT_MIN_SIZE: usize = 1024;

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: false,
            level: DEFAULT_LEVEL,
            min_size: DEFAULT_MIN_SIZE,
            types: DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawCompression {
    enabled: Option<bool>,
    level: Option<u32>,
    min_size: Option<String>,
    types: Option<Vec<String>>,
}

impl RawCompression {
    pub(crate) fn validate(self, path: &KeyPath, errs: &mut Errors) -> CompressionConfig {
        let d = CompressionConfig::default();
        let level = match self.level {
            Some(l) if !(1..=9).contains(&l) => {
                errs.add(&path.key("level"), "must be between 1 and 9");
                d.level
            }
            l => l.unwrap_or(d.level),
        };
        let min_size = match self.min_size.as_deref().map(crate::ws::config::parse_size) {
            None => d.min_size,
            Some(Ok(n)) => usize::try_from(n).unwrap_or(usize::MAX),
            Some(Err(e)) => {
                errs.add(&path.key("min_size"), e);
                d.min_size
            }
        };
        let mut types = Vec::new();
        for (i, t) in self.types.unwrap_or(d.types).into_iter().enumerate() {
            let t = t.trim().to_ascii_lowercase();
            if t != "*" && (t.split('/').count() != 2 || t.contains([';', ' '])) {
                errs.add(
                    &path.key("types").index(i),
                    format!("`{t}` is not a MIME type such as \"application/json\""),
                );
            }
            types.push(t);
        }
        CompressionConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            level,
            min_size,
            types,
        }
    }
}

/// The client's `Accept-Encoding`: each coding with its q-value (1000 = q=1).
#[derive(Debug, Default)]
pub struct AcceptEncoding(Vec<(String, u16)>);

impl AcceptEncoding {
    pub fn parse(req: &RequestHeader) -> AcceptEncoding {
        let mut out = Vec::new();
        for v in req.headers.get_all("accept-encoding") {
            let Ok(v) = v.to_str() else { continue };
            for item in v.split(',').take(32) {
                let mut parts = item.split(';');
                let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                if token.is_empty() {
                    continue;
                }
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .map(parse_q)
                    .next()
                    .unwrap_or(1000);
                out.push((token, q));
            }
        }
        AcceptEncoding(out)
    }

    /// The q-value the client gives `coding` (an explicit entry, else `*`), 0 when absent.
    pub fn q(&self, coding: &str) -> u16 {
        let find = |t: &str| self.0.iter().find(|(c, _)| c == t).map(|(_, q)| *q);
        find(coding).or_else(|| find("*")).unwrap_or(0)
    }

    /// Of `offered` (in the server's order of preference), the one the client values most;
    /// ties go to the earlier. None when the client accepts none of them.
    pub fn best<'a>(&self, offered: &[&'a str]) -> Option<&'a str> {
        let mut best: Option<(&str, u16)> = None;
        for c in offered {
            let q = self.q(c);
            if q > 0 && best.is_none_or(|(_, bq)| q > bq) {
                best = Some((c, q));
            }
        }
        best.map(|(c, _)| c)
    }
}

/// "0.8" -> 800; anything unparsable counts as 0 (not acceptable).
fn parse_q(s: &str) -> u16 {
    s.trim()
        .parse::<f32>()
        .ok()
        .filter(|q| (0.0..=1.0).contains(q))
        .map_or(0, |q| (q * 1000.0).round() as u16)
}

/// Adds `Accept-Encoding` to the response's `Vary` unless it is there (or `*`).
pub fn add_vary(resp: &mut ResponseHeader) -> pingora::Result<()> {
    let present = resp
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding"));
    if !present {
        resp.append_header("vary", "Accept-Encoding")?;
    }
    Ok(())
}

/// One response being compressed.
pub struct Compressor {
    encoder: Encoder,
    pub coding: &'static str,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

enum Encoder {
    Gzip(GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Done,
}

impl CompressionConfig {
    /// Decides, from the request and the upstream's response header, whether to compress;
    /// when it does, the header is rewritten for the compressed body.
    pub fn start(
        &self,
        req: &RequestHeader,
        resp: &mut ResponseHeader,
        http2: bool,
    ) -> pingora::Result<Option<Compressor>> {
        if !self.enabled {
            return Ok(None);
        }
        let varies = self.applies_to(resp);
        if !varies {
            return Ok(None);
        }
        // Whatever this client gets, a cache must not give it to a client that accepts
        // other codings.
        add_vary(resp)?;
        if req.method == http::Method::HEAD || req.version < http::Version::HTTP_11 {
            return Ok(None);
        }
        let Some(coding) = AcceptEncoding::parse(req).best(&["zstd", "br", "gzip"]) else {
            return Ok(None);
        };
        let encoder = match coding {
            "zstd" => match zstd::stream::write::Encoder::new(Vec::new(), self.level as i32) {
                Ok(e) => Encoder::Zstd(e),
                // Only fails when zstd cannot allocate its context: send it as it is.
                Err(_) => return Ok(None),
            },
            "br" => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                self.level,
                BROTLI_WINDOW_BITS,
            ))),
            _ => Encoder::Gzip(GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(self.level),
            )),
        };
        resp.remove_header("content-length");
        resp.remove_header("accept-ranges");
        resp.insert_header("content-encoding", coding)?;
        if let Some(etag) = resp.headers.get("etag").and_then(|v| v.to_str().ok()) {
            if etag.starts_with('"') {
                let weak = format!("W/{etag}");
                resp.insert_header("etag", weak)?;
            }
        }
        if !http2 && resp.headers.get("transfer-encoding").is_none() {
            resp.insert_header("transfer-encoding", "chunked")?;
        }
        Ok(Some(Compressor {
            encoder,
            coding,
            bytes_in: 0,
            bytes_out: 0,
        }))
    }

    /// Whether this response is of a kind that is compressed at all (before asking what
    /// the client accepts).
    fn applies_to(&self, resp: &ResponseHeader) -> bool {
        let h = |n: &str| resp.headers.get(n).and_then(|v| v.to_str().ok());
        // nginx compresses these three only; 206 (a byte range of the identity body),
        // 101 and 304 never.
        if !matches!(resp.status.as_u16(), 200 | 403 | 404) {
            return false;
        }
        if h("content-encoding").is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
            return false;
        }
        if h("x-accel-buffering").is_some_and(|v| v.trim().eq_ignore_ascii_case("no")) {
            return false;
        }
        if h("cache-control").is_some_and(|v| v.to_ascii_lowercase().contains("no-transform")) {
            return false;
        }
        if h("content-length")
            .and_then(|l| l.trim().parse::<usize>().ok())
            .is_some_and(|l| l == 0 || l < self.min_size)
        {
            return false;
        }
        let Some(ct) = h("content-type") else {
            return false;
        };
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        mime != "text/event-stream" && self.types.iter().any(|t| t == "*" || *t == mime)
    }
}

impl Compressor {
    /// Compresses one chunk of the body and flushes it, so that it can be sent now; at
    /// `end`, finishes the stream. Returns what to send (possibly nothing).
    pub fn chunk(&mut self, data: Option<Bytes>, end: bool) -> std::io::Result<Option<Bytes>> {
        let input = data.unwrap_or_default();
        self.bytes_in += input.len() as u64;
        let out = match (&mut self.encoder, end) {
            (Encoder::Done, _) => Vec::new(),
            (Encoder::Gzip(g), false) => {
                g.write_all(&input)?;
                g.flush()?;
                std::mem::take(g.get_mut())
            }
            (Encoder::Zstd(z), false) => {
                z.write_all(&input)?;
                z.flush()?;
                std::mem::take(z.get_mut())
            }
            (Encoder::Brotli(b), false) => {
                b.write_all(&input)?;
                b.flush()?;
                std::mem::take(b.get_mut())
            }
            (enc, true) => {
                let done = std::mem::replace(enc, Encoder::Done);
                match done {
                    Encoder::Gzip(mut g) => {
                        g.write_all(&input)?;
                        g.finish()?
                    }
                    Encoder::Zstd(mut z) => {
                        z.write_all(&input)?;
                        z.finish()?
                    }
                    Encoder::Brotli(mut b) => {
                        b.write_all(&input)?;
                        // Writes the final block: the stream is complete.
                        b.into_inner()
                    }
                    Encoder::Done => Vec::new(),
                }
            }
        };
        self.bytes_out += out.len() as u64;
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn req(ae: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("accept-encoding", ae).unwrap();
        r
    }

    fn resp(ct: &str, len: usize) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("content-type", ct).unwrap();
        r.insert_header("content-length", len.to_string()).unwrap();
        r.insert_header("etag", "\"abc\"").unwrap();
        r
    }

    fn on() -> CompressionConfig {
        CompressionConfig {
            enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn q_values_decide() {
        let a = AcceptEncoding::parse(&req("gzip;q=1.0, zstd;q=0.5, br"));
        assert_eq!(a.best(&["zstd", "gzip"]), Some("gzip"));
        let a = AcceptEncoding::parse(&req("gzip, zstd"));
        assert_eq!(a.best(&["zstd", "gzip"]), Some("zstd"));
        let a = AcceptEncoding::parse(&req("gzip, deflate, br"));
        assert_eq!(a.best(&["zstd", "br", "gzip"]), Some("br"));
        let a = AcceptEncoding::parse(&req("gzip;q=0, identity"));
        assert_eq!(a.best(&["zstd", "gzip"]), None);
        let a = AcceptEncoding::parse(&req("*;q=0.3, zstd;q=0"));
        assert_eq!(a.best(&["zstd", "gzip"]), Some("gzip"));
        let a = AcceptEncoding::parse(&req("gzip;q=bogus"));
        assert_eq!(a.best(&["gzip"]), None);
    }

    #[test]
    fn header_is_rewritten() {
        let mut r = resp("application/json; charset=utf-8", 5000);
        let c = on().start(&req("gzip"), &mut r, false).unwrap().unwrap();
        assert_eq!(c.coding, "gzip");
        assert_eq!(r.headers["content-encoding"], "gzip");
        assert_eq!(r.headers["etag"], "W/\"abc\"");
        assert_eq!(r.headers["vary"], "Accept-Encoding");
        assert_eq!(r.headers["transfer-encoding"], "chunked");
        assert!(r.headers.get("content-length").is_none());
    }

    #[test]
    fn not_compressed() {
        let cfg = on();
        let cases: Vec<(ResponseHeader, &str)> = vec![
            (resp("application/json", 100), "small"),
            (resp("image/png", 5000), "type"),
            (resp("text/event-stream", 5000), "sse"),
            (
                {
                    let mut r = resp("text/html", 5000);
                    r.insert_header("content-encoding", "br").unwrap();
                    r
                },
                "encoded",
            ),
            (
                {
                    let mut r = resp("text/html", 5000);
                    r.set_status(206).unwrap();
                    r
                },
                "206",
            ),
            (
                {
                    let mut r = resp("text/html", 5000);
                    r.insert_header("x-accel-buffering", "no").unwrap();
                    r
                },
                "x-accel-buffering",
            ),
        ];
        for (mut r, why) in cases {
            assert!(
                cfg.start(&req("gzip"), &mut r, false).unwrap().is_none(),
                "{why}"
            );
            assert!(r.headers.get("content-encoding").is_none() || why == "encoded");
        }
        let mut r = resp("text/html", 5000);
        assert!(cfg.start(&req("deflate"), &mut r, false).unwrap().is_none());
        assert_eq!(
            r.headers["vary"], "Accept-Encoding",
            "varies even when not compressed"
        );
        let mut r = resp("text/html", 5000);
        assert!(CompressionConfig::default()
            .start(&req("gzip"), &mut r, false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn streams_round_trip_chunk_by_chunk() {
        let body: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for coding in ["gzip", "zstd", "br"] {
            let mut r = resp("text/plain", body.len());
            let mut c = on().start(&req(coding), &mut r, false).unwrap().unwrap();
            let mut out = Vec::new();
            for piece in body.chunks(7000) {
                let o = c.chunk(Some(Bytes::copy_from_slice(piece)), false).unwrap();
                // Each chunk is flushed: something comes out for every chunk.
                out.extend_from_slice(&o.expect("flushed output"));
            }
            out.extend_from_slice(&c.chunk(None, true).unwrap().unwrap_or_default());
            let mut plain = Vec::new();
            match coding {
                "gzip" => flate2::read::GzDecoder::new(&out[..])
                    .read_to_end(&mut plain)
                    .unwrap(),
                "br" => brotli::Decompressor::new(&out[..], 4096)
                    .read_to_end(&mut plain)
                    .unwrap(),
                _ => zstd::stream::read::Decoder::new(&out[..])
                    .unwrap()
                    .read_to_end(&mut plain)
                    .unwrap(),
            };
            assert_eq!(plain, body, "{coding}");
            assert_eq!(c.bytes_in, body.len() as u64);
            assert_eq!(c.bytes_out, out.len() as u64);
        }
    }
}

//! The raw client (`--raw`, `--deflate`): its own HTTP/1.1 upgrade and frame parser, so a
//! client can offer permessage-deflate (RFC 7692) the way Chrome does
//! (`permessage-deflate; client_max_window_bits`) and count every byte the server sends.
//! tokio-tungstenite has no deflate and refuses RSV1 frames, hence this.
//!
//! What it does: server frames must be unmasked; RSV1 on the first frame of a text or
//! binary message means the message is deflated (only when deflate was agreed); such a
//! message is inflated with raw DEFLATE after appending `00 00 FF FF`, with the inflater's
//! window kept across messages unless the server agreed to `server_no_context_takeover`.
//! A message that does not inflate is an error that ends the connection. Pings are
//! answered with pongs; a close is answered with the same code. Every frame's bytes as
//! received (header + payload, compressed or not) are counted in [`WireStats`].

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::Bytes;

/// What the client offers with `--deflate`: what Chrome sends.
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Largest message accepted (after inflating), in bytes.
const MAX_MESSAGE: usize = 16 << 20;
/// Largest handshake response head, in bytes.
const MAX_HEAD: usize = 16 * 1024;
/// The read buffer starts at this size and grows for large frames.
const READ_CHUNK: usize = 4096;

/// The permessage-deflate parameters the server answered with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeflateParams {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: Option<u8>,
}

/// Bytes and messages received on one connection.
#[derive(Clone, Debug, Default)]
pub struct WireStats {
    /// The 101 response head (status line and headers).
    pub handshake_bytes: u64,
    /// Text, binary and continuation frames.
    pub data_frames: u64,
    /// Their header + payload bytes, as received (compressed or not).
    pub data_bytes: u64,
    /// Ping, pong and close frames, and their header + payload bytes.
    pub control_frames: u64,
    pub control_bytes: u64,
    /// Complete text or binary messages, and how many of them were compressed (RSV1).
    pub messages: u64,
    pub compressed_messages: u64,
    /// Compressed messages counted but not inflated (`inflate` off on this connection).
    pub not_inflated: u64,
    /// Message bytes after inflating (the application payload; not_inflated ones left out).
    pub message_bytes: u64,
    /// Compressed messages that did not inflate.
    pub inflate_errors: u64,
}

impl WireStats {
    pub fn add(&mut self, o: &WireStats) {
        self.handshake_bytes += o.handshake_bytes;
        self.data_frames += o.data_frames;
        self.data_bytes += o.data_bytes;
        self.control_frames += o.control_frames;
        self.control_bytes += o.control_bytes;
        self.messages += o.messages;
        self.compressed_messages += o.compressed_messages;
        self.not_inflated += o.not_inflated;
        self.message_bytes += o.message_bytes;
        self.inflate_errors += o.inflate_errors;
    }
}

/// What one `recv` returns.
pub enum Recv {
    /// A complete text or binary message, inflated when it was compressed.
    Data(Bytes),
    /// A compressed message left compressed (`inflate` is off): counted, not read.
    Compressed,
    /// The server closed with this code (1005: no code); the close was answered.
    Close(u16),
    Eof,
    Error(String),
}

/// A client connection after a successful upgrade.
pub struct RawWs<S> {
    io: S,
    buf: Vec<u8>,
    pos: usize,
    deflate: Option<DeflateParams>,
    inflater: Option<Decompress>,
    /// A fragmented message being assembled: (compressed, payload so far).
    partial: Option<(bool, Vec<u8>)>,
    rng: u64,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    pub extensions: Option<String>,
    /// Inflate compressed messages (default); when off they are only counted, which
    /// spares the client's CPU (cg-load --inflate-every).
    pub inflate: bool,
    pub stats: WireStats,
}

/// Parses the server's `Sec-WebSocket-Extensions` answer. `offered`: whether the client
/// offered permessage-deflate. Anything not offered, unknown or malformed is an error.
pub fn parse_extensions(value: &str, offered: bool) -> Result<Option<DeflateParams>, String> {
    let mut out: Option<DeflateParams> = None;
    for ext in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = ext.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        if name != "permessage-deflate" {
            return Err(format!("server agreed to an extension that was not offered: {name}"));
        }
        if !offered {
            return Err("server agreed to permessage-deflate, which was not offered".into());
        }
        if out.is_some() {
            return Err("server answered permessage-deflate twice".into());
        }
        let mut p = DeflateParams::default();
        for param in parts.filter(|p| !p.is_empty()) {
            let (k, v) = match param.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                None => (param, None),
            };
            let bits = |v: Option<&str>| -> Result<u8, String> {
                v.and_then(|v| v.parse::<u8>().ok())
                    .filter(|b| (8..=15).contains(b))
                    .ok_or_else(|| format!("permessage-deflate: bad {k} value {v:?}"))
            };
            match k {
                "server_no_context_takeover" if v.is_none() => p.server_no_context_takeover = true,
                "client_no_context_takeover" if v.is_none() => p.client_no_context_takeover = true,
                "server_max_window_bits" => p.server_max_window_bits = Some(bits(v)?),
                "client_max_window_bits" => p.client_max_window_bits = Some(bits(v)?),
                _ => return Err(format!("permessage-deflate: unexpected parameter `{param}`")),
            }
        }
        out = Some(p);
    }
    Ok(out)
}

/// The value of header `name` (case-insensitive) in a response head; several lines are
/// joined with ", ".
fn header<'a>(lines: &[&'a str], name: &str) -> Option<String> {
    let vals: Vec<&'a str> = lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect();
    (!vals.is_empty()).then(|| vals.join(", "))
}

/// Performs the opening handshake on `io` (already connected, TLS done) and returns the
/// connection. Errors are short labels like tungstenite's ("http 403", "io ...").
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    host: &str,
    path: &str,
    headers: &[(String, String)],
    offer_deflate: bool,
    seed: u64,
) -> Result<RawWs<S>, String> {
    let mut rng = seed | 1;
    let mut key_bytes = [0u8; 16];
    for chunk in key_bytes.chunks_mut(8) {
        let r = xorshift(&mut rng).to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    let key = base64(&key_bytes);
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if offer_deflate {
        req.push_str(&format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("io {:?}", e.kind()))?;

    let mut buf = Vec::with_capacity(READ_CHUNK);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err("handshake: response head too large".into());
        }
        buf.reserve(READ_CHUNK);
        let n = io.read_buf(&mut buf).await.map_err(|e| format!("io {:?}", e.kind()))?;
        if n == 0 {
            return Err("handshake: eof".into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let lines: Vec<&str> = head.split("\r\n").collect();
    let status = lines
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("handshake: bad status line")?;
    if status != 101 {
        return Err(format!("http {status}"));
    }
    let upgrade = header(&lines, "upgrade").unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err("handshake: no `Upgrade: websocket`".into());
    }
    if header(&lines, "sec-websocket-accept").as_deref() != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err("handshake: wrong Sec-WebSocket-Accept".into());
    }
    let extensions = header(&lines, "sec-websocket-extensions");
    let deflate = match &extensions {
        Some(v) => parse_extensions(v, offer_deflate)?,
        None => None,
    };
    let stats = WireStats {
        handshake_bytes: head_end as u64,
        ..Default::default()
    };
    Ok(RawWs {
        io,
        buf,
        pos: head_end,
        deflate,
        inflater: None,
        partial: None,
        rng,
        extensions,
        inflate: true,
        stats,
    })
}

/// One parsed frame header: (fin, rsv1, opcode, header length, payload length).
type FrameHead = (bool, bool, u8, usize, usize);

/// Parses the frame header at the start of `b`: Ok(None) when more bytes are needed.
fn frame_head(b: &[u8]) -> Result<Option<FrameHead>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    let (fin, rsv1, rsv23, opcode) = (b[0] & 0x80 != 0, b[0] & 0x40 != 0, b[0] & 0x30, b[0] & 0x0f);
    if b[1] & 0x80 != 0 {
        return Err("protocol: masked frame from the server".into());
    }
    if rsv23 != 0 {
        return Err("protocol: RSV2/RSV3 set".into());
    }
    let (hlen, len) = match b[1] & 0x7f {
        126 if b.len() < 4 => return Ok(None),
        126 => (4, u16::from_be_bytes([b[2], b[3]]) as u64),
        127 if b.len() < 10 => return Ok(None),
        127 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[2..10]);
            (10, u64::from_be_bytes(a))
        }
        n => (2, n as u64),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(format!("protocol: frame of {len} bytes"));
    }
    Ok(Some((fin, rsv1, opcode, hlen, len as usize)))
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawWs<S> {
    /// Whether permessage-deflate was agreed, and with what.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref()
    }

    /// The next complete message, answering pings and a close on the way.
    pub async fn recv(&mut self) -> Recv {
        loop {
            let need = match frame_head(&self.buf[self.pos..]) {
                Err(e) => return Recv::Error(e),
                // At least one more byte: a header is 2 to 10 bytes.
                Ok(None) => self.buf.len() - self.pos + 1,
                Ok(Some(h)) if self.buf.len() - self.pos < h.3 + h.4 => h.3 + h.4,
                Ok(Some(h)) => match self.frame(h).await {
                    Ok(Some(r)) => return r,
                    Ok(None) => continue,
                    Err(e) => return Recv::Error(e),
                },
            };
            if let Err(r) = self.fill(need).await {
                return r;
            }
        }
    }

    /// Reads until at least `need` unparsed bytes are buffered (it may read more).
    async fn fill(&mut self, need: usize) -> Result<(), Recv> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        while self.buf.len() < need {
            self.buf.reserve((need - self.buf.len()).max(READ_CHUNK));
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return Err(Recv::Eof),
                Ok(_) => {}
                Err(e) => return Err(Recv::Error(format!("io {:?}", e.kind()))),
            }
        }
        Ok(())
    }

    /// Handles the complete frame at `pos`; Some when it completes a message or a close.
    async fn frame(&mut self, (fin, rsv1, opcode, hlen, len): FrameHead) -> Result<Option<Recv>, String> {
        let start = self.pos + hlen;
        let end = start + len;
        self.pos = end;
        let total = (hlen + len) as u64;
        if opcode >= 8 {
            self.stats.control_frames += 1;
            self.stats.control_bytes += total;
            if !fin || len > 125 || rsv1 {
                return Err("protocol: bad control frame".into());
            }
            let payload = self.buf[start..end].to_vec();
            return match opcode {
                0x9 => {
                    self.send(0xA, &payload).await?;
                    Ok(None)
                }
                0xA => Ok(None),
                0x8 => {
                    let code = if payload.len() >= 2 {
                        u16::from_be_bytes([payload[0], payload[1]])
                    } else {
                        1005
                    };
                    let echo = if code == 1005 {
                        vec![]
                    } else {
                        code.to_be_bytes().to_vec()
                    };
                    let _ = self.send(0x8, &echo).await;
                    Ok(Some(Recv::Close(code)))
                }
                _ => Err(format!("protocol: unknown control opcode {opcode}")),
            };
        }
        self.stats.data_frames += 1;
        self.stats.data_bytes += total;
        let (compressed, mut data) = match (opcode, self.partial.take()) {
            (0x1 | 0x2, None) => {
                if rsv1 && self.deflate.is_none() {
                    return Err("protocol: RSV1 set without permessage-deflate".into());
                }
                if fin {
                    // The common case: one frame, no copy into an assembly buffer first.
                    let msg = self.message(rsv1, start, end)?;
                    return Ok(Some(msg));
                }
                (rsv1, Vec::with_capacity(len * 2))
            }
            (0x0, Some(p)) if !rsv1 => p,
            (0x0, None) => return Err("protocol: continuation without a message".into()),
            (0x0, Some(_)) => return Err("protocol: RSV1 on a continuation frame".into()),
            (0x1 | 0x2, Some(_)) => return Err("protocol: new message inside a fragmented one".into()),
            _ => return Err(format!("protocol: unknown opcode {opcode}")),
        };
        data.extend_from_slice(&self.buf[start..end]);
        if data.len() > MAX_MESSAGE {
            return Err("protocol: message too large".into());
        }
        if !fin {
            self.partial = Some((compressed, data));
            return Ok(None);
        }
        if compressed && !self.inflate {
            return Ok(Some(self.not_inflated()));
        }
        let payload = if compressed {
            inflate_counted(&mut self.inflater, &self.deflate, &mut self.stats, &data)?
        } else {
            data
        };
        self.count(compressed, payload.len());
        Ok(Some(Recv::Data(Bytes::from(payload))))
    }

    /// A one-frame message whose payload is buf[start..end].
    fn message(&mut self, compressed: bool, start: usize, end: usize) -> Result<Recv, String> {
        if compressed && !self.inflate {
            return Ok(self.not_inflated());
        }
        let payload = if compressed {
            inflate_counted(
                &mut self.inflater,
                &self.deflate,
                &mut self.stats,
                &self.buf[start..end],
            )?
        } else {
            self.buf[start..end].to_vec()
        };
        self.count(compressed, payload.len());
        Ok(Recv::Data(Bytes::from(payload)))
    }

    fn not_inflated(&mut self) -> Recv {
        self.stats.messages += 1;
        self.stats.compressed_messages += 1;
        self.stats.not_inflated += 1;
        Recv::Compressed
    }

    fn count(&mut self, compressed: bool, len: usize) {
        self.stats.messages += 1;
        self.stats.message_bytes += len as u64;
        if compressed {
            self.stats.compressed_messages += 1;
        }
    }

    /// Sends one masked control frame.
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        let mask = (xorshift(&mut self.rng) as u32).to_be_bytes();
        let mut f = Vec::with_capacity(6 + payload.len());
        f.push(0x80 | opcode);
        f.push(0x80 | payload.len() as u8);
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.io.write_all(&f).await.map_err(|e| format!("io {:?}", e.kind()))
    }

    /// Sends a close frame with code 1000.
    pub async fn close(&mut self) {
        let _ = self.send(0x8, &1000u16.to_be_bytes()).await;
        let _ = self.io.flush().await;
    }
}

/// Inflates one compressed message (RFC 7692 7.2.2) with the connection's inflater (made
/// on first use), resetting it afterwards when the server takes no context over; counts a
/// failure.
fn inflate_counted(
    inflater: &mut Option<Decompress>,
    deflate: &Option<DeflateParams>,
    stats: &mut WireStats,
    data: &[u8],
) -> Result<Vec<u8>, String> {
    let reset = deflate.as_ref().is_some_and(|d| d.server_no_context_takeover);
    let inf = inflater.get_or_insert_with(|| Decompress::new(false));
    match inflate_message(inf, data) {
        Ok((out, ended)) => {
            if reset || ended {
                inf.reset(false);
            }
            Ok(out)
        }
        Err(e) => {
            stats.inflate_errors += 1;
            Err(format!("inflate: {e}"))
        }
    }
}

/// Inflates `data` + `00 00 FF FF` with `inf`; returns the output and whether the deflate
/// stream ended (a final block: the inflater must be reset before the next message).
pub fn inflate_message(inf: &mut Decompress, data: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let mut out = Vec::with_capacity((data.len() * 4).clamp(256, MAX_MESSAGE));
    for part in [data, &[0, 0, 0xff, 0xff][..]] {
        let mut input = part;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_MESSAGE {
                    return Err(format!("message inflates beyond {MAX_MESSAGE} bytes"));
                }
                out.reserve(out.len().max(1024));
            }
            let (in0, out0) = (inf.total_in(), inf.total_out());
            let status = inf
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|e| e.to_string())?;
            let consumed = (inf.total_in() - in0) as usize;
            let produced = inf.total_out() - out0;
            input = &input[consumed..];
            if status == Status::StreamEnd {
                return Ok((out, true));
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if consumed == 0 && produced == 0 && out.len() < out.capacity() {
                return Err("inflate made no progress".into());
            }
        }
    }
    Ok((out, false))
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};
    use tokio::io::{duplex, AsyncBufReadExt, BufReader};

    /// One message deflated the way a server with server_no_context_takeover does it.
    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n < 65536 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// A fake server: reads the request, answers 101 with `ext`, then writes `frames`.
    async fn serve(ext: Option<&str>, frames: Vec<u8>, offer: bool) -> (RawWs<tokio::io::DuplexStream>, String) {
        let (client, server) = duplex(1 << 20);
        let ext = ext.map(str::to_string);
        let (req_tx, req_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(server);
            let (mut key, mut req) = (String::new(), String::new());
            loop {
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                req.push_str(&line);
                if let Some(v) = line.strip_prefix("Sec-WebSocket-Key: ") {
                    key = v.trim().to_string();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
                derive_accept_key(key.as_bytes())
            );
            if let Some(e) = ext {
                resp.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
            }
            resp.push_str("\r\n");
            let mut s = r.into_inner();
            s.write_all(resp.as_bytes()).await.unwrap();
            s.write_all(&frames).await.unwrap();
            let _ = req_tx.send(req);
            // Stay open (and drain the pong / close answers) until the client is gone.
            let mut sink = vec![0u8; 1024];
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let ws = handshake(client, "127.0.0.1:1", "/ws/g/", &[], offer, 7).await.unwrap();
        (ws, req_rx.await.unwrap())
    }

    #[test]
    fn extensions_are_checked() {
        let p = parse_extensions(
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=15",
            true,
        )
        .unwrap()
        .unwrap();
        assert!(p.server_no_context_takeover);
        assert_eq!(p.client_max_window_bits, Some(15));
        assert!(parse_extensions("permessage-deflate", false).is_err());
        assert!(parse_extensions("x-webkit-deflate-frame", true).is_err());
        assert!(parse_extensions("permessage-deflate; server_max_window_bits=7", true).is_err());
        assert!(parse_extensions("permessage-deflate; bogus", true).is_err());
        assert_eq!(parse_extensions("", true).unwrap(), None);
    }

    #[test]
    fn base64_matches_the_rfc_example() {
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[tokio::test]
    async fn plain_messages_are_counted_with_their_headers() {
        let big = vec![b'y'; 300];
        let mut frames = frame(0x81, b"hello");
        frames.extend(frame(0x89, b"p")); // ping, answered
        frames.extend(frame(0x01, b"frag-")); // text, not final
        frames.extend(frame(0x80, b"ment")); // continuation, final
        frames.extend(frame(0x82, &big));
        frames.extend(frame(0x88, &1001u16.to_be_bytes()));
        let (mut ws, req) = serve(None, frames, false).await;
        assert!(!req.contains("Sec-WebSocket-Extensions"));
        assert!(matches!(ws.recv().await, Recv::Data(b) if &b[..] == b"hello"));
        match ws.recv().await {
            Recv::Data(b) => assert_eq!(&b[..], b"frag-ment"),
            Recv::Error(e) => panic!("error {e}"),
            _ => panic!("not data"),
        }
        assert!(matches!(ws.recv().await, Recv::Data(b) if b.len() == 300));
        assert!(matches!(ws.recv().await, Recv::Close(1001)));
        let s = &ws.stats;
        assert_eq!((s.messages, s.compressed_messages, s.data_frames), (3, 0, 4));
        assert_eq!(s.data_bytes, (2 + 5) + (2 + 5) + (2 + 4) + (4 + 300));
        assert_eq!((s.control_frames, s.control_bytes), (2, 3 + 4));
        assert_eq!(s.message_bytes, 5 + 9 + 300);
    }

    #[tokio::test]
    async fn deflated_messages_are_inflated() {
        let msg = br#"{"type": "job_event", "event": "runner_on_ok", "stdout": "ok ok ok ok ok ok ok"}"#;
        let z = deflate(msg);
        assert!(z.len() < msg.len());
        let mut frames = frame(0xC1, &z); // FIN + RSV1 + text
        frames.extend(frame(0xC1, &z)); // a fresh stream again: no context takeover
        let (first, rest) = z.split_at(z.len() / 2);
        frames.extend(frame(0x41, first)); // RSV1 + text, not final
        frames.extend(frame(0x80, rest));
        frames.extend(frame(0x81, b"plain")); // a small message sent uncompressed
        let ext = "permessage-deflate; server_no_context_takeover; client_max_window_bits=15";
        let (mut ws, req) = serve(Some(ext), frames, true).await;
        assert!(req.contains("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"));
        assert!(ws.deflate().unwrap().server_no_context_takeover);
        for _ in 0..3 {
            assert!(matches!(ws.recv().await, Recv::Data(b) if &b[..] == msg));
        }
        assert!(matches!(ws.recv().await, Recv::Data(b) if &b[..] == b"plain"));
        let s = &ws.stats;
        assert_eq!((s.messages, s.compressed_messages, s.inflate_errors), (4, 3, 0));
        // Two whole frames, two halves (two headers), one plain frame.
        assert_eq!(s.data_bytes, 3 * (2 + z.len() as u64) + 2 + (2 + 5));
    }

    #[tokio::test]
    async fn context_takeover_keeps_the_window() {
        // Two messages from one compressor: the second refers back to the first.
        let msg = b"abcdefghijklmnopqrstuvwxyz abcdefghijklmnopqrstuvwxyz";
        let mut c = Compress::new(Compression::default(), false);
        let mut zs = vec![];
        for _ in 0..2 {
            let mut out = Vec::with_capacity(256);
            c.compress_vec(msg, &mut out, FlushCompress::Sync).unwrap();
            out.truncate(out.len() - 4);
            zs.push(out);
        }
        let mut frames = frame(0xC1, &zs[0]);
        frames.extend(frame(0xC1, &zs[1]));
        let (mut ws, _) = serve(Some("permessage-deflate"), frames, true).await;
        assert!(matches!(ws.recv().await, Recv::Data(b) if &b[..] == msg));
        assert!(matches!(ws.recv().await, Recv::Data(b) if &b[..] == msg));
    }

    #[tokio::test]
    async fn compressed_messages_can_be_left_compressed() {
        let z = deflate(b"hello hello hello hello");
        let mut frames = frame(0xC1, &z);
        frames.extend(frame(0x81, b"plain"));
        let (mut ws, _) = serve(Some("permessage-deflate"), frames, true).await;
        ws.inflate = false;
        assert!(matches!(ws.recv().await, Recv::Compressed));
        assert!(matches!(ws.recv().await, Recv::Data(b) if &b[..] == b"plain"));
        let s = &ws.stats;
        assert_eq!(
            (s.messages, s.compressed_messages, s.not_inflated, s.message_bytes),
            (2, 1, 1, 5)
        );
    }

    #[tokio::test]
    async fn a_bad_deflate_stream_is_an_error() {
        let frames = frame(0xC1, &[0xff, 0xff, 0xff, 0xff, 0x00]);
        let (mut ws, _) = serve(Some("permessage-deflate"), frames, true).await;
        assert!(matches!(ws.recv().await, Recv::Error(e) if e.starts_with("inflate")));
        assert_eq!(ws.stats.inflate_errors, 1);
    }

    #[tokio::test]
    async fn rsv1_without_deflate_is_an_error() {
        let (mut ws, _) = serve(None, frame(0xC1, b"x"), false).await;
        assert!(matches!(ws.recv().await, Recv::Error(e) if e.contains("RSV1")));
    }
}

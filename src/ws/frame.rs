//! RFC 6455 frames: the wire bytes of what the server sends ([`encode`]) and the reader
//! of what clients send ([`Reader`]). Pure code over buffers, no I/O: the engine reads
//! and writes, this module only says what the bytes mean.
//!
//! The reader streams: a data frame's payload is unmasked, inflated (permessage-deflate)
//! and UTF-8-checked as its bytes arrive, so a large frame is never held twice, a bad
//! byte fails the connection at once (Autobahn 6.4 "fail fast"), and a frame or message
//! over the limit fails as soon as its header says so.

use std::mem;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ws::deflate::{InflateParams, Inflater};

pub const OP_CONT: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV2_3: u8 = 0x30;
const MASKED: u8 = 0x80;
/// The largest control frame payload (RFC 6455 5.5).
const MAX_CONTROL: usize = 125;
/// The largest read [`Reader::wants`] asks for.
const MAX_WANTS: u64 = 64 * 1024;

/// The longest header of a server frame (unmasked, 64-bit length).
pub const MAX_HEADER: usize = 10;

/// A complete data message a client sent (text already validated as UTF-8, inflated).
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Text(String),
    Binary(Bytes),
}

impl Message {
    pub fn len(&self) -> usize {
        match self {
            Message::Text(s) => s.len(),
            Message::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }
}

/// The length of a server frame's header for a payload of `len` bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

/// Writes a server frame's header (FIN set, unmasked) for a payload of `len` bytes, for
/// callers that send the payload from its own buffer (a vectored write).
pub fn put_header(out: &mut impl BufMut, opcode: u8, rsv1: bool, len: usize) {
    out.put_u8(FIN | if rsv1 { RSV1 } else { 0 } | (opcode & 0x0f));
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xffff => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

/// A server frame's wire bytes (FIN set, unmasked): header + payload in one buffer.
pub fn encode(opcode: u8, rsv1: bool, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut out, opcode, rsv1, payload.len());
    out.extend_from_slice(payload);
    out.freeze()
}

/// A close frame's payload: code (big-endian) + reason (truncated to fit 125 bytes at a
/// char boundary); empty for the codes that must not be sent (1005, 1006, 1015).
pub fn close_payload(code: u16, reason: &str) -> Bytes {
    if matches!(code, 1005 | 1006 | 1015) {
        return Bytes::new();
    }
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = BytesMut::with_capacity(2 + end);
    out.put_u16(code);
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out.freeze()
}

/// A close frame's wire bytes: `encode(OP_CLOSE, false, &close_payload(code, reason))`.
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    encode(OP_CLOSE, false, &close_payload(code, reason))
}

/// What the reader accepts.
#[derive(Clone, Copy, Debug)]
pub struct ReaderLimits {
    /// The largest message, after inflating; a frame or message over it fails with 1009.
    pub max_message: usize,
    /// RSV1 allowed (deflate agreed): how compressed messages are inflated.
    pub deflate: Option<InflateParams>,
}

/// What the client sent.
#[derive(Debug, PartialEq)]
pub enum Event {
    Message(Message),
    Ping(Bytes),
    Pong(Bytes),
    /// None when the close frame had no payload (1005 to the app).
    Close(Option<(u16, String)>),
}

/// Why a connection must be failed, with the close code the RFC asks for.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Fail {
    /// 1002.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// 1007: a text message or close reason that is not UTF-8.
    #[error("invalid UTF-8")]
    Utf8,
    /// 1009: a frame or message over `max_message`.
    #[error("message too big")]
    TooBig,
    /// 1007: a compressed message that does not inflate. 1007 ("inconsistent data") is
    /// what the ws library for Node.js sends for a bad deflate stream; a protocol error
    /// (1002) would blame framing that was fine.
    #[error("invalid compressed data")]
    Deflate,
}

impl Fail {
    pub fn code(&self) -> u16 {
        match self {
            Fail::Protocol(_) => 1002,
            Fail::Utf8 | Fail::Deflate => 1007,
            Fail::TooBig => 1009,
        }
    }

    /// The close frame's reason (short, fixed: nothing the client sent).
    pub fn reason(&self) -> &'static str {
        match self {
            Fail::Protocol(why) => why,
            Fail::Utf8 => "invalid UTF-8",
            Fail::TooBig => "message too big",
            Fail::Deflate => "invalid compressed data",
        }
    }
}

/// Client→server frame parser and message assembler. Holds no buffer while idle: 64
/// bytes in all, the message buffer and inflater exist only while a message is read.
/// After an `Err` the connection is failed and the reader must not be used again.
pub struct Reader {
    max_message: usize,
    /// Payload bytes of the current data frame not yet consumed (0 between frames).
    remaining: u64,
    /// The data message being assembled (inflated, unmasked); empty between messages.
    msg: Vec<u8>,
    /// How much of `msg` is known to be valid UTF-8 (a text message read in pieces).
    utf8_ok: usize,
    /// The compressed message's inflater: Some while one is read.
    inflater: Option<Box<Inflater>>,
    deflate: Option<InflateParams>,
    /// The current frame's mask, rotated so that index 0 applies to its next byte.
    mask: [u8; 4],
    /// The message's opcode (OP_TEXT or OP_BINARY), 0 when none is in progress.
    msg_op: u8,
    /// The current frame is its message's last.
    fin: bool,
}

/// What a frame header led to.
enum Head {
    /// Not all of it is in the buffer yet.
    Incomplete,
    /// A data frame whose payload follows (the reader's frame state is set).
    Data,
    /// A complete control frame.
    Control(Event),
}

impl Reader {
    pub fn new(limits: ReaderLimits) -> Reader {
        Reader {
            max_message: limits.max_message,
            remaining: 0,
            msg: Vec::new(),
            utf8_ok: 0,
            inflater: None,
            deflate: limits.deflate,
            mask: [0; 4],
            msg_op: 0,
            fin: false,
        }
    }

    /// Consumes frames from the front of `buf` (bytes read from the socket) and returns
    /// the next event, or Ok(None) when `buf` holds no complete frame yet. A data frame's
    /// payload is taken from `buf` as it arrives; an incomplete header or control frame
    /// stays in `buf` until the rest is appended.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, Fail> {
        loop {
            if self.remaining == 0 {
                match self.header(buf)? {
                    Head::Incomplete => return Ok(None),
                    Head::Control(event) => return Ok(Some(event)),
                    Head::Data => {}
                }
            }
            self.payload(buf)?;
            if self.remaining > 0 {
                return Ok(None);
            }
            if self.fin {
                return self.complete().map(|m| Some(Event::Message(m)));
            }
        }
    }

    /// Bytes the caller should try to read next: the rest of the data frame in progress,
    /// capped at 64 KiB; 0 when between frames.
    pub fn wants(&self) -> usize {
        self.remaining.min(MAX_WANTS) as usize
    }

    /// Whether a data message is in progress (its buffer is freed when it completes).
    pub fn in_message(&self) -> bool {
        self.msg_op != 0
    }

    /// Parses the header at the front of `buf`. Checks that need only the first two bytes
    /// fail before the rest of the header arrives.
    fn header(&mut self, buf: &mut BytesMut) -> Result<Head, Fail> {
        let [b0, b1, ..] = buf[..] else {
            return Ok(Head::Incomplete);
        };
        let (fin, rsv1, op, len7) = (b0 & FIN != 0, b0 & RSV1 != 0, b0 & 0x0f, b1 & 0x7f);
        if b0 & RSV2_3 != 0 {
            return Err(Fail::Protocol("RSV2 or RSV3 set"));
        }
        if b1 & MASKED == 0 {
            return Err(Fail::Protocol("client frame not masked"));
        }
        match op {
            OP_CLOSE | OP_PING | OP_PONG => self.control(buf, op, fin, rsv1, len7),
            OP_CONT | OP_TEXT | OP_BINARY => self.data_header(buf, op, fin, rsv1, len7),
            _ => Err(Fail::Protocol("reserved opcode")),
        }
    }

    fn control(
        &mut self,
        buf: &mut BytesMut,
        op: u8,
        fin: bool,
        rsv1: bool,
        len7: u8,
    ) -> Result<Head, Fail> {
        if !fin {
            return Err(Fail::Protocol("fragmented control frame"));
        }
        if rsv1 {
            return Err(Fail::Protocol("RSV1 set on a control frame"));
        }
        let len = len7 as usize;
        if len > MAX_CONTROL {
            return Err(Fail::Protocol("control frame over 125 bytes"));
        }
        if buf.len() < 6 + len {
            return Ok(Head::Incomplete);
        }
        let mask = [buf[2], buf[3], buf[4], buf[5]];
        buf.advance(6);
        let payload = &mut buf[..len];
        apply_mask(payload, mask);
        let event = match op {
            OP_PING => Ok(Event::Ping(Bytes::copy_from_slice(payload))),
            OP_PONG => Ok(Event::Pong(Bytes::copy_from_slice(payload))),
            _ => close_event(payload),
        };
        buf.advance(len);
        event.map(Head::Control)
    }

    fn data_header(
        &mut self,
        buf: &mut BytesMut,
        op: u8,
        fin: bool,
        rsv1: bool,
        len7: u8,
    ) -> Result<Head, Fail> {
        if op == OP_CONT {
            if self.msg_op == 0 {
                return Err(Fail::Protocol("continuation frame without a message"));
            }
            if rsv1 {
                return Err(Fail::Protocol("RSV1 set on a continuation frame"));
            }
        } else {
            if self.msg_op != 0 {
                return Err(Fail::Protocol("new message inside a fragmented message"));
            }
            if rsv1 && self.deflate.is_none() {
                return Err(Fail::Protocol("RSV1 set without permessage-deflate"));
            }
        }
        let (head_len, len) = match len7 {
            126 if buf.len() >= 8 => (8, u16::from_be_bytes([buf[2], buf[3]]) as u64),
            127 if buf.len() >= 14 => {
                let mut be = [0; 8];
                be.copy_from_slice(&buf[2..10]);
                (14, u64::from_be_bytes(be))
            }
            126 | 127 => return Ok(Head::Incomplete),
            n if buf.len() >= 6 => (6, n as u64),
            _ => return Ok(Head::Incomplete),
        };
        if len >> 63 != 0 {
            return Err(Fail::Protocol("frame length with the top bit set"));
        }
        let compressed = if op == OP_CONT {
            self.inflater.is_some()
        } else {
            rsv1
        };
        let max = self.max_message as u64;
        let too_big = if compressed {
            // The compressed bytes are streamed through the inflater, never held; bound
            // them by deflate's worst-case expansion of a max-size message.
            len > max.saturating_add(max >> 10).saturating_add(64)
        } else {
            (self.msg.len() as u64).saturating_add(len) > max
        };
        if too_big {
            return Err(Fail::TooBig);
        }
        self.mask = [
            buf[head_len - 4],
            buf[head_len - 3],
            buf[head_len - 2],
            buf[head_len - 1],
        ];
        buf.advance(head_len);
        if op != OP_CONT {
            self.msg_op = op;
            self.utf8_ok = 0;
            if let (true, Some(params)) = (rsv1, self.deflate) {
                self.inflater = Some(Box::new(Inflater::new(params)));
            }
        }
        if !compressed {
            // At most max_message (checked above); pages the client never fills are never
            // touched. Exact for a message's first frame, so that a one-frame message
            // becomes its String or Bytes without a copy; amortized for the next ones.
            if op == OP_CONT {
                self.msg.reserve(len as usize);
            } else {
                self.msg.reserve_exact(len as usize);
            }
        }
        self.fin = fin;
        self.remaining = len;
        Ok(Head::Data)
    }

    /// Takes what `buf` holds of the current data frame's payload.
    fn payload(&mut self, buf: &mut BytesMut) -> Result<(), Fail> {
        // Fits in usize: at most buf.len().
        let n = self.remaining.min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(());
        }
        let completes_message = self.fin && n as u64 == self.remaining;
        if let Some(inflater) = self.inflater.as_mut() {
            let chunk = &mut buf[..n];
            apply_mask(chunk, self.mask);
            inflater.push(chunk, &mut self.msg, self.max_message)?;
        } else {
            let start = self.msg.len();
            self.msg.extend_from_slice(&buf[..n]);
            apply_mask(&mut self.msg[start..], self.mask);
        }
        buf.advance(n);
        self.mask.rotate_left(n % 4);
        self.remaining -= n as u64;
        // A complete message is checked once, whole, by `complete`.
        if self.msg_op == OP_TEXT && !completes_message {
            self.check_utf8()?;
        }
        Ok(())
    }

    /// Fails as soon as the text so far cannot be the start of valid UTF-8.
    fn check_utf8(&mut self) -> Result<(), Fail> {
        match std::str::from_utf8(&self.msg[self.utf8_ok..]) {
            Ok(_) => self.utf8_ok = self.msg.len(),
            // Only an incomplete sequence at the end: valid so far.
            Err(e) if e.error_len().is_none() => self.utf8_ok += e.valid_up_to(),
            Err(_) => return Err(Fail::Utf8),
        }
        Ok(())
    }

    /// The message's last frame was consumed: hands the message over and frees its state.
    fn complete(&mut self) -> Result<Message, Fail> {
        if let Some(mut inflater) = self.inflater.take() {
            inflater.finish(&mut self.msg, self.max_message)?;
        }
        let op = mem::replace(&mut self.msg_op, 0);
        self.utf8_ok = 0;
        let data = mem::take(&mut self.msg);
        if op == OP_TEXT {
            String::from_utf8(data)
                .map(Message::Text)
                .map_err(|_| Fail::Utf8)
        } else {
            Ok(Message::Binary(Bytes::from(data)))
        }
    }
}

/// A close frame's payload: empty, or a valid code and a UTF-8 reason.
fn close_event(payload: &[u8]) -> Result<Event, Fail> {
    let [hi, lo, reason @ ..] = payload else {
        return match payload.len() {
            0 => Ok(Event::Close(None)),
            _ => Err(Fail::Protocol("close frame with a 1-byte payload")),
        };
    };
    let code = u16::from_be_bytes([*hi, *lo]);
    if !close_code_allowed(code) {
        return Err(Fail::Protocol("invalid close code"));
    }
    let reason = std::str::from_utf8(reason).map_err(|_| Fail::Utf8)?;
    Ok(Event::Close(Some((code, reason.to_owned()))))
}

/// The codes a peer may send (RFC 6455 7.4, IANA registry): 1000–1003, 1007–1014 and
/// the application ranges 3000–4999.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `data` with `mask` (index 0 applies to `data[0]`), eight bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask starts over at index 0.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::deflate;

    const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const F: u8 = FIN;

    /// A client frame: first byte `b0` (FIN, RSV, opcode), masked with M.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b0];
        match payload.len() {
            n @ 0..=125 => out.push(MASKED | n as u8),
            n @ 126..=0xffff => {
                out.push(MASKED | 126);
                out.extend((n as u16).to_be_bytes());
            }
            n => {
                out.push(MASKED | 127);
                out.extend((n as u64).to_be_bytes());
            }
        }
        out.extend(M);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ M[i % 4]));
        out
    }

    /// A server frame from `encode`, masked as a client would send it.
    fn masked(server: &[u8]) -> Vec<u8> {
        let head = match server[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        frame(server[0], &server[head..])
    }

    fn txt(s: &str) -> Event {
        Event::Message(Message::Text(s.into()))
    }

    fn bin(b: &[u8]) -> Event {
        Event::Message(Message::Binary(Bytes::copy_from_slice(b)))
    }

    fn close(code: u16, reason: &str) -> Event {
        Event::Close(Some((code, reason.into())))
    }

    fn limits(max_message: usize) -> ReaderLimits {
        ReaderLimits {
            max_message,
            deflate: None,
        }
    }

    fn deflating(max_message: usize) -> ReaderLimits {
        ReaderLimits {
            max_message,
            deflate: Some(deflate::InflateParams { window_bits: 15 }),
        }
    }

    type Outcome = (Vec<Event>, Option<Fail>);

    /// Events until the input ends or the first failure, `input` arriving in `pieces`.
    fn run<'a>(limits: ReaderLimits, pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut reader = Reader::new(limits);
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                match reader.next(&mut buf) {
                    Ok(Some(event)) => events.push(event),
                    Ok(None) => break,
                    Err(fail) => return (events, Some(fail)),
                }
            }
        }
        (events, None)
    }

    /// What reading `input` gives, checked to be the same whole, a byte at a time and
    /// split in two at every byte boundary (any TCP segmentation).
    fn read(limits: ReaderLimits, input: &[u8]) -> Outcome {
        let whole = run(limits, [input]);
        assert_eq!(run(limits, input.chunks(1)), whole, "fed a byte at a time");
        if input.len() <= 4096 {
            for i in 1..input.len() {
                let split = run(limits, [&input[..i], &input[i..]]);
                assert_eq!(split, whole, "split at {i}");
            }
        }
        whole
    }

    fn ok(events: Vec<Event>) -> Outcome {
        (events, None)
    }

    fn fails(events: Vec<Event>, fail: Fail) -> Outcome {
        (events, Some(fail))
    }

    fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
        frames.concat()
    }

    #[test]
    fn data_messages() {
        let l = limits(1 << 20);
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
            ("text", frame(F | OP_TEXT, b"Hello"), ok(vec![txt("Hello")])),
            ("empty text", frame(F | OP_TEXT, b""), ok(vec![txt("")])),
            (
                "empty binary",
                frame(F | OP_BINARY, b""),
                ok(vec![bin(b"")]),
            ),
            (
                "16-bit length",
                frame(F | OP_BINARY, &big[..300]),
                ok(vec![bin(&big[..300])]),
            ),
            (
                "64-bit length",
                frame(F | OP_BINARY, &big),
                ok(vec![bin(&big)]),
            ),
            (
                "fragments with control frames between",
                cat(&[
                    frame(OP_TEXT, b"Hel"),
                    frame(F | OP_PING, b"p"),
                    frame(OP_CONT, b""),
                    frame(F | OP_PONG, b""),
                    frame(F | OP_CONT, b"lo"),
                ]),
                ok(vec![
                    Event::Ping("p".into()),
                    Event::Pong(Bytes::new()),
                    txt("Hello"),
                ]),
            ),
            (
                "UTF-8 split inside a character across fragments",
                cat(&[
                    frame(OP_TEXT, "κό".as_bytes()),
                    frame(OP_CONT, &"σμε".as_bytes()[..1]),
                    frame(OP_CONT, &"σμε".as_bytes()[1..3]),
                    frame(F | OP_CONT, &"σμε".as_bytes()[3..]),
                ]),
                ok(vec![txt("κόσμε")]),
            ),
            (
                "a 4-byte character split 2/2",
                cat(&[frame(OP_TEXT, b"\xf0\x9f"), frame(F | OP_CONT, b"\x98\x80")]),
                ok(vec![txt("😀")]),
            ),
            (
                "messages back to back",
                cat(&[
                    frame(F | OP_TEXT, b"a"),
                    frame(OP_BINARY, b"b"),
                    frame(F | OP_CONT, b"c"),
                ]),
                ok(vec![txt("a"), bin(b"bc")]),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(read(l, &input), want, "{name}");
        }
    }

    #[test]
    fn control_frames() {
        let l = limits(1 << 20);
        let ping125 = [b'x'; 125];
        let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
            (
                "ping",
                frame(F | OP_PING, b"hi"),
                ok(vec![Event::Ping("hi".into())]),
            ),
            (
                "ping 125",
                frame(F | OP_PING, &ping125),
                ok(vec![Event::Ping(Bytes::copy_from_slice(&ping125))]),
            ),
            (
                "pong",
                frame(F | OP_PONG, b"x"),
                ok(vec![Event::Pong("x".into())]),
            ),
            (
                "close, no payload",
                frame(F | OP_CLOSE, b""),
                ok(vec![Event::Close(None)]),
            ),
            (
                "close, code",
                frame(F | OP_CLOSE, &[0x03, 0xe8]),
                ok(vec![close(1000, "")]),
            ),
            (
                "close, code and reason",
                frame(F | OP_CLOSE, b"\x0f\xa0bye \xc3\xa9"),
                ok(vec![close(4000, "bye é")]),
            ),
            (
                "close, 1 byte",
                frame(F | OP_CLOSE, &[0x03]),
                fails(vec![], Fail::Protocol("close frame with a 1-byte payload")),
            ),
            (
                "close, bad reason",
                frame(F | OP_CLOSE, b"\x03\xe8\xce\xba\xff"),
                fails(vec![], Fail::Utf8),
            ),
            (
                "ping not FIN",
                frame(OP_PING, b""),
                fails(vec![], Fail::Protocol("fragmented control frame")),
            ),
            (
                "ping over 125",
                frame(F | OP_PING, &[0; 126]),
                fails(vec![], Fail::Protocol("control frame over 125 bytes")),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(read(l, &input), want, "{name}");
        }
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            let input = frame(F | OP_CLOSE, &u16::to_be_bytes(code));
            assert_eq!(read(l, &input), ok(vec![close(code, "")]), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let input = frame(F | OP_CLOSE, &u16::to_be_bytes(code));
            assert_eq!(
                read(l, &input),
                fails(vec![], Fail::Protocol("invalid close code")),
                "{code}"
            );
        }
    }

    #[test]
    fn protocol_errors() {
        let proto = |why| fails(vec![], Fail::Protocol(why));
        let mut unmasked = frame(F | OP_TEXT, b"Hello");
        unmasked[1] &= !MASKED;
        let mut top_bit = vec![F | OP_BINARY, MASKED | 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        top_bit.extend(M);
        let cases: Vec<(&str, ReaderLimits, Vec<u8>, Outcome)> = vec![
            (
                "unmasked",
                limits(100),
                unmasked,
                proto("client frame not masked"),
            ),
            (
                "RSV2",
                limits(100),
                frame(F | 0x20 | OP_TEXT, b"a"),
                proto("RSV2 or RSV3 set"),
            ),
            (
                "RSV3",
                deflating(100),
                frame(F | 0x10 | OP_TEXT, b"a"),
                proto("RSV2 or RSV3 set"),
            ),
            (
                "RSV1 without deflate",
                limits(100),
                frame(F | RSV1 | OP_TEXT, b"a"),
                proto("RSV1 set without permessage-deflate"),
            ),
            (
                "RSV1 on a ping",
                deflating(100),
                frame(F | RSV1 | OP_PING, b""),
                proto("RSV1 set on a control frame"),
            ),
            (
                "RSV1 on a continuation",
                deflating(100),
                cat(&[
                    frame(RSV1 | OP_TEXT, &[0xf2, 0x48]),
                    frame(F | RSV1 | OP_CONT, &[0xcd, 0xc9, 0xc9, 0x07, 0x00]),
                ]),
                proto("RSV1 set on a continuation frame"),
            ),
            (
                "continuation first",
                limits(100),
                frame(F | OP_CONT, b"a"),
                proto("continuation frame without a message"),
            ),
            (
                "continuation after the end",
                limits(100),
                cat(&[frame(F | OP_TEXT, b"a"), frame(F | OP_CONT, b"b")]),
                fails(
                    vec![txt("a")],
                    Fail::Protocol("continuation frame without a message"),
                ),
            ),
            (
                "new message inside a fragmented one",
                limits(100),
                cat(&[frame(OP_TEXT, b"a"), frame(F | OP_BINARY, b"b")]),
                proto("new message inside a fragmented message"),
            ),
            (
                "64-bit length, top bit",
                limits(100),
                top_bit,
                proto("frame length with the top bit set"),
            ),
        ];
        for (name, l, input, want) in cases {
            assert_eq!(read(l, &input), want, "{name}");
        }
        for op in (3..=7).chain(11..=15) {
            let input = frame(F | op, b"");
            assert_eq!(
                read(limits(100), &input),
                proto("reserved opcode"),
                "opcode {op}"
            );
        }
    }

    #[test]
    fn too_big_from_the_header() {
        let l = limits(100);
        assert_eq!(
            read(l, &frame(F | OP_TEXT, &[b'a'; 100])),
            ok(vec![txt(&"a".repeat(100))])
        );
        // The header alone is enough to fail: nothing of the payload is waited for.
        let over = frame(F | OP_BINARY, &[0; 101]);
        assert_eq!(read(l, &over[..8]), fails(vec![], Fail::TooBig));
        let huge = frame(F | OP_BINARY, &vec![0; 70_000]);
        assert_eq!(
            read(limits(65_535), &huge[..14]),
            fails(vec![], Fail::TooBig)
        );
        // A message over the limit across fragments fails at the fragment's header.
        let two = cat(&[frame(OP_TEXT, &[b'a'; 60]), frame(F | OP_CONT, &[b'a'; 41])]);
        assert_eq!(read(l, &two[..66 + 8]), fails(vec![], Fail::TooBig));
        // Control frames do not count.
        let with_ping = cat(&[
            frame(OP_TEXT, &[b'a'; 60]),
            frame(F | OP_PING, &[0; 100]),
            frame(F | OP_CONT, &[b'a'; 40]),
        ]);
        assert_eq!(read(l, &with_ping).1, None);
    }

    #[test]
    fn invalid_utf8_fails_fast() {
        let l = limits(1 << 20);
        let utf8 = |events| fails(events, Fail::Utf8);
        let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
            ("one frame", frame(F | OP_TEXT, b"ab\xffcd"), utf8(vec![])),
            (
                "surrogate",
                frame(F | OP_TEXT, b"\xed\xa0\x80"),
                utf8(vec![]),
            ),
            ("overlong", frame(F | OP_TEXT, b"\xc0\xaf"), utf8(vec![])),
            (
                "above U+10FFFF",
                frame(F | OP_TEXT, b"\xf4\x90\x80\x80"),
                utf8(vec![]),
            ),
            (
                "truncated at the end",
                frame(F | OP_TEXT, b"a\xce"),
                utf8(vec![]),
            ),
            (
                "truncated at the end of fragments",
                cat(&[frame(OP_TEXT, b"a\xce"), frame(F | OP_CONT, b"")]),
                utf8(vec![]),
            ),
            (
                "binary is not checked",
                frame(F | OP_BINARY, b"\xff"),
                ok(vec![bin(b"\xff")]),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(read(l, &input), want, "{name}");
        }
        // Autobahn 6.4.*: the bad byte arrives, the rest of the frame (or message) has not.
        let mut first = frame(OP_TEXT, "κόσμε".as_bytes());
        let second = frame(F | OP_CONT, b"\xce\xba\xf4\x90\x80\x80edited");
        // F4 90 cannot start a character: fail on the 90, before "edited" arrives.
        first.extend_from_slice(&second[..6 + 4]);
        assert_eq!(read(l, &first), utf8(vec![]));
        let mut long = frame(F | OP_TEXT, &[b'a'; 1000]);
        long[8 + 10] = 0xff ^ M[10 % 4];
        assert_eq!(read(l, &long[..8 + 11]), utf8(vec![]));
    }

    fn rfc_hello() -> Vec<u8> {
        vec![0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
    }

    #[test]
    fn compressed_messages() {
        let l = deflating(1 << 20);
        let hello = rfc_hello();
        let json = br#"{"event":"runner_on_ok","counter":1}"#.repeat(40);
        let z = deflate::compress(&json, 6, 15).unwrap();
        let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
            (
                "RFC 7692 7.2.3.1",
                frame(F | RSV1 | OP_TEXT, &hello),
                ok(vec![txt("Hello")]),
            ),
            (
                "RFC 7692 7.2.3.1, in two fragments",
                cat(&[
                    frame(RSV1 | OP_TEXT, &hello[..3]),
                    frame(F | OP_CONT, &hello[3..]),
                ]),
                ok(vec![txt("Hello")]),
            ),
            (
                "RFC 7692 7.2.3.4, BFINAL",
                frame(
                    F | RSV1 | OP_TEXT,
                    &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
                ),
                ok(vec![txt("Hello")]),
            ),
            (
                "binary, fragmented, a ping between, then an uncompressed message",
                cat(&[
                    frame(RSV1 | OP_BINARY, &z[..10]),
                    frame(F | OP_PING, b""),
                    frame(OP_CONT, &z[10..]),
                    frame(F | OP_CONT, b""),
                    frame(F | OP_TEXT, b"plain"),
                ]),
                ok(vec![Event::Ping(Bytes::new()), bin(&json), txt("plain")]),
            ),
            (
                "empty",
                frame(F | RSV1 | OP_TEXT, &[0x00]),
                ok(vec![txt("")]),
            ),
            (
                "corrupt",
                frame(F | RSV1 | OP_TEXT, &[0xff, 0xff]),
                fails(vec![], Fail::Deflate),
            ),
            (
                "inflates to invalid UTF-8",
                frame(
                    F | RSV1 | OP_TEXT,
                    &deflate::compress(&[0xff; 300], 6, 15).unwrap(),
                ),
                fails(vec![], Fail::Utf8),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(read(l, &input), want, "{name}");
        }
        // max_message applies to the inflated size.
        let input = frame(F | RSV1 | OP_BINARY, &z);
        assert_eq!(read(deflating(json.len()), &input), ok(vec![bin(&json)]));
        assert_eq!(
            read(deflating(json.len() - 1), &input),
            fails(vec![], Fail::TooBig)
        );
        // A compressed frame longer than any max-size message could deflate to: at once.
        let input = frame(F | RSV1 | OP_BINARY, &[0; 200]);
        assert_eq!(
            read(deflating(100), &input[..8]),
            fails(vec![], Fail::TooBig)
        );
    }

    #[test]
    fn compressed_bomb_fails_fast() {
        // ~1 MiB of deflate that would inflate to 1 GiB of zeros; max_message 1 MiB.
        let mut c = flate2::Compress::new(flate2::Compression::best(), false);
        let mut block = Vec::with_capacity(8192);
        c.compress_vec(&vec![0u8; 1 << 20], &mut block, flate2::FlushCompress::Sync)
            .unwrap();
        let payload = block.repeat(1024);
        let input = frame(F | RSV1 | OP_BINARY, &payload);
        let mut reader = Reader::new(deflating(1 << 20));
        let mut buf = BytesMut::from(&input[..14 + 3 * block.len()]);
        assert_eq!(reader.next(&mut buf), Err(Fail::TooBig));
        assert!(reader.msg.capacity() <= (1 << 20) + 1);
    }

    #[test]
    fn idle_reader_holds_nothing() {
        assert!(size_of::<Reader>() <= 64, "{}", size_of::<Reader>());
        let mut reader = Reader::new(deflating(1 << 20));
        let mut buf = BytesMut::new();
        let big = frame(F | RSV1 | OP_TEXT, &rfc_hello());
        let input = cat(&[frame(OP_BINARY, &[1; 100_000]), frame(F | OP_CONT, b"")]);
        buf.extend_from_slice(&input[..14 + 10]);
        assert_eq!(reader.next(&mut buf), Ok(None));
        assert!(reader.in_message());
        assert_eq!(reader.wants(), 64 * 1024);
        buf.extend_from_slice(&input[14 + 10..14 + 99_990]);
        assert_eq!(reader.next(&mut buf), Ok(None));
        assert_eq!(reader.wants(), 10);
        assert!(buf.is_empty(), "payload is taken as it arrives");
        buf.extend_from_slice(&input[14 + 99_990..]);
        assert!(matches!(reader.next(&mut buf), Ok(Some(Event::Message(m))) if m.len() == 100_000));
        assert_eq!((reader.wants(), reader.in_message()), (0, false));
        assert_eq!(reader.msg.capacity(), 0);
        buf.extend_from_slice(&big[..10]);
        assert_eq!(reader.next(&mut buf), Ok(None));
        assert!(reader.inflater.is_some());
        buf.extend_from_slice(&big[10..]);
        assert_eq!(reader.next(&mut buf), Ok(Some(txt("Hello"))));
        assert!(reader.inflater.is_none() && reader.msg.capacity() == 0 && buf.is_empty());
    }

    #[test]
    fn encode_lengths_and_bits() {
        for (len, head) in [
            (0, 2),
            (125, 2),
            (126, 4),
            (65_535, 4),
            (65_536, 10),
            (100_000, 10),
        ] {
            let payload = vec![7u8; len];
            let wire = encode(OP_BINARY, false, &payload);
            assert_eq!((wire.len(), header_len(len)), (head + len, head), "{len}");
            assert_eq!(wire[0], 0x82);
            assert_eq!(&wire[head..], &payload[..]);
        }
        assert_eq!(&encode(OP_TEXT, true, b"")[..], &[0xc1, 0x00]);
        assert_eq!(
            &encode(OP_PING, false, b"ab")[..],
            &[0x89, 0x02, b'a', b'b']
        );
        assert_eq!(
            &encode(OP_TEXT, false, &[0; 126])[..4],
            &[0x81, 126, 0, 126]
        );
    }

    #[test]
    fn close_payloads() {
        assert_eq!(&close_payload(1000, "bye")[..], b"\x03\xe8bye");
        assert!(close_payload(1005, "x").is_empty());
        assert!(close_payload(1006, "").is_empty());
        let long = close_payload(1001, &"é".repeat(100));
        assert_eq!(long.len(), 2 + 122); // 123 would split an é
        assert!(std::str::from_utf8(&long[2..]).is_ok());
        assert_eq!(close_payload(4000, &"a".repeat(200)).len(), 125);
        assert_eq!(&encode_close(1000, "")[..], &[0x88, 0x02, 0x03, 0xe8]);
        let wire = masked(&encode_close(1001, "going away"));
        assert_eq!(read(limits(10), &wire), ok(vec![close(1001, "going away")]));
    }

    #[test]
    fn fail_codes() {
        assert_eq!(Fail::Protocol("x").code(), 1002);
        assert_eq!(Fail::Protocol("x").reason(), "x");
        assert_eq!(
            (Fail::Utf8.code(), Fail::Deflate.code(), Fail::TooBig.code()),
            (1007, 1007, 1009)
        );
        assert!(Fail::TooBig.reason().len() <= 123);
    }

    #[test]
    fn mask_at_every_offset_and_length() {
        for len in 0..40 {
            for rot in 0..4 {
                let mut mask = M;
                mask.rotate_left(rot);
                let mut data: Vec<u8> = (0..len as u8).collect();
                apply_mask(&mut data, mask);
                let want: Vec<u8> = (0..len as u8).map(|b| b ^ mask[b as usize % 4]).collect();
                assert_eq!(data, want);
            }
        }
    }

    #[test]
    fn encode_then_read_round_trips() {
        let l = limits(1 << 20);
        for len in [0, 1, 3, 4, 5, 8, 125, 126, 127, 65_535, 65_536, 70_001] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let text = String::from_utf8(payload.clone()).unwrap();
            let input = cat(&[
                masked(&encode(OP_TEXT, false, &payload)),
                masked(&encode(OP_BINARY, false, &payload)),
            ]);
            assert_eq!(
                run(l, [&input[..]]),
                ok(vec![txt(&text), bin(&payload)]),
                "{len}"
            );
            if len <= 125 {
                let ping = masked(&encode(OP_PING, false, &payload));
                assert_eq!(read(l, &ping), ok(vec![Event::Ping(payload.into())]));
            }
        }
    }

    mod tungstenite_interop {
        use super::*;
        use std::io::{Cursor, Read, Write};
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
        use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
        use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocket};
        use tokio_tungstenite::tungstenite::Message as TMessage;

        fn client_frame(opcode: OpCode, is_final: bool, payload: &[u8]) -> Vec<u8> {
            let header = FrameHeader {
                is_final,
                opcode,
                mask: Some([0xde, 0xad, 0xbe, 0xef]),
                ..FrameHeader::default()
            };
            let mut out = Vec::new();
            Frame::from_payload(header, Bytes::copy_from_slice(payload))
                .format(&mut out)
                .unwrap();
            out
        }

        #[test]
        fn we_read_tungstenite_client_frames() {
            let big = vec![b'z'; 70_000];
            let mut close = Vec::new();
            let mut close_frame = Frame::close(Some(CloseFrame {
                code: 1001.into(),
                reason: "bye".into(),
            }));
            close_frame.header_mut().mask = Some([1, 2, 3, 4]);
            close_frame.format(&mut close).unwrap();
            let input = cat(&[
                client_frame(OpCode::Data(Data::Text), true, "héllo".as_bytes()),
                client_frame(OpCode::Data(Data::Binary), false, &big[..1000]),
                client_frame(OpCode::Control(Control::Ping), true, b"ping"),
                client_frame(OpCode::Data(Data::Continue), true, &big[1000..]),
                client_frame(OpCode::Control(Control::Pong), true, b""),
                close,
            ]);
            let want = ok(vec![
                txt("héllo"),
                Event::Ping("ping".into()),
                bin(&big),
                Event::Pong(Bytes::new()),
                super::close(1001, "bye"),
            ]);
            assert_eq!(run(limits(1 << 20), [&input[..]]), want);
            assert_eq!(run(limits(1 << 20), input.chunks(1)), want);
        }

        /// An in-memory socket: reads what we encoded, swallows what tungstenite writes.
        struct Mem(Cursor<Vec<u8>>);
        impl Read for Mem {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.0.read(buf)
            }
        }
        impl Write for Mem {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        #[test]
        fn tungstenite_reads_what_we_encode() {
            let big = vec![b'q'; 100_000];
            let wire = cat(&[
                encode(OP_TEXT, false, "héllo".as_bytes()).to_vec(),
                encode(OP_BINARY, false, &big[..126]).to_vec(),
                encode(OP_BINARY, false, &big).to_vec(),
                encode(OP_TEXT, false, b"").to_vec(),
                encode(OP_PING, false, b"p").to_vec(),
                encode(OP_PONG, false, b"").to_vec(),
                encode_close(4000, "done").to_vec(),
            ]);
            let mut ws = WebSocket::from_raw_socket(Mem(Cursor::new(wire)), Role::Client, None);
            let mut got = Vec::new();
            for _ in 0..7 {
                got.push(ws.read().unwrap());
            }
            assert_eq!(got[0], TMessage::text("héllo"));
            assert_eq!(got[1], TMessage::binary(big[..126].to_vec()));
            assert_eq!(got[2], TMessage::binary(big.clone()));
            assert_eq!(got[3], TMessage::text(""));
            assert_eq!(got[4], TMessage::Ping("p".into()));
            assert_eq!(got[5], TMessage::Pong(Bytes::new()));
            let TMessage::Close(Some(frame)) = &got[6] else {
                panic!("{:?}", got[6]);
            };
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_str()),
                (4000, "done")
            );
        }
    }
}

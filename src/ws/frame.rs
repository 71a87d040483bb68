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
            len > max + (max >> 10) + 64
        } else {
            self.msg.len() as u64 + len > max
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
            // At most max_message (checked above). The first frame's reservation is
            // exact; pages the client never fills are never touched.
            self.msg.reserve(len as usize);
        }
        self.fin = fin;
        self.remaining = len;
        Ok(Head::Data)
    }

    /// Takes what `buf` holds of the current data frame's payload.
    fn payload(&mut self, buf: &mut BytesMut) -> Result<(), Fail> {
        // Fits in usize: at most buf.len().
        let n = self.remaining.min(buf.len() as u64) as usize;
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

//! Finding where a request body ends in the raw bytes, without decoding it: Pingora's
//! parser decodes the same bytes again when they are replayed to it.

/// How the body of a request is framed (RFC 9112 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// The framing a head declares; `None` when the head is something channelgate leaves to
/// Pingora as is (an upgrade, an unparsable head, conflicting lengths).
pub fn framing(req: &httparse::Request) -> Option<Framing> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = std::str::from_utf8(h.value).ok()?;
            if v.rsplit(',').next()?.trim().eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else {
                return None;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n: u64 = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            return None;
        }
    }
    match (chunked, length) {
        (true, Some(_)) => None,
        (true, None) => Some(Framing::Chunked),
        (false, Some(0)) | (false, None) => Some(Framing::None),
        (false, Some(n)) => Some(Framing::Length(n)),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadChunk;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Size,
    Ext,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    LastLf,
    Done,
}

/// Walks chunked framing byte by byte and says where it ends; counts the decoded size.
#[derive(Debug)]
pub struct ChunkScanner {
    state: State,
    size: u64,
    digits: u8,
    /// Decoded body bytes so far.
    pub body: u64,
}

impl Default for ChunkScanner {
    fn default() -> Self {
        ChunkScanner {
            state: State::Size,
            size: 0,
            digits: 0,
            body: 0,
        }
    }
}

impl ChunkScanner {
    /// Feeds the next raw bytes; `Some(n)` when the body ends after `n` of them.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, BadChunk> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            self.state = match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(BadChunk);
                        }
                        self.size = self.size * 16 + (b as char).to_digit(16).unwrap_or(0) as u64;
                        State::Size
                    }
                    _ if self.digits == 0 => return Err(BadChunk),
                    b';' | b' ' | b'\t' => State::Ext,
                    b'\r' => State::SizeLf,
                    b'\n' => self.after_size(),
                    _ => return Err(BadChunk),
                },
                State::Ext => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => self.after_size(),
                    _ => State::Ext,
                },
                State::SizeLf if b == b'\n' => self.after_size(),
                State::Data(left) => {
                    let n = (left.min((data.len() - i) as u64)) as usize;
                    self.body += n as u64;
                    i += n;
                    self.state = if left == n as u64 {
                        State::DataCr
                    } else {
                        State::Data(left - n as u64)
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataCr | State::DataLf if b == b'\n' => State::Size,
                State::TrailerStart => match b {
                    b'\r' => State::LastLf,
                    b'\n' => State::Done,
                    _ => State::Trailer,
                },
                State::Trailer if b == b'\n' => State::TrailerStart,
                State::Trailer => State::Trailer,
                State::LastLf if b == b'\n' => State::Done,
                _ => return Err(BadChunk),
            };
            i += 1;
            if self.state == State::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    fn after_size(&mut self) -> State {
        let size = std::mem::take(&mut self.size);
        self.digits = 0;
        if size == 0 {
            State::TrailerStart
        } else {
            State::Data(size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(raw: &[u8], piece: usize) -> (Option<usize>, u64) {
        let mut s = ChunkScanner::default();
        let mut off = 0;
        for c in raw.chunks(piece) {
            if let Some(n) = s.feed(c).unwrap() {
                return (Some(off + n), s.body);
            }
            off += c.len();
        }
        (None, s.body)
    }

    #[test]
    fn finds_the_end_of_chunked_bodies_in_any_split() {
        let raw = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for piece in 1..raw.len() {
            assert_eq!(
                scan_in_pieces(raw, piece),
                (Some(raw.len() - 4), 16),
                "{piece}"
            );
        }
        assert_eq!(scan_in_pieces(b"0\r\n\r\n", 100), (Some(5), 0));
        assert_eq!(scan_in_pieces(b"3\nabc\n0\n\n", 100), (Some(9), 3));
        assert_eq!(scan_in_pieces(b"5\r\nhel", 100), (None, 3));
    }

    #[test]
    fn refuses_garbage() {
        assert!(ChunkScanner::default().feed(b"zz\r\n").is_err());
        assert!(ChunkScanner::default()
            .feed(b"ffffffffffffffff\r\n")
            .is_err());
        assert!(ChunkScanner::default().feed(b"2\r\nabX").is_err());
    }

    fn framing_of(head: &[u8]) -> Option<Framing> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(head).unwrap();
        framing(&req)
    }

    #[test]
    fn reads_the_framing() {
        assert_eq!(
            framing_of(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
            Some(Framing::Length(12))
        );
        assert_eq!(
            framing_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(Framing::Chunked)
        );
        assert_eq!(framing_of(b"GET / HTTP/1.1\r\n\r\n"), Some(Framing::None));
        assert_eq!(
            framing_of(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            None
        );
        assert_eq!(
            framing_of(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
            None
        );
    }
}

//! Follows the frames a peer sends, header by header, on the raw bytes the WebSocket library
//! is about to read. Two uses:
//!
//! * **The pre-handshake cap** (PROTOCOL.md §1.7). Before the handshake a message may be at
//!   most 64 KiB, afterwards 10 MiB; the library takes one limit for the whole life of a
//!   socket. So the first data message (the `connect` request) is measured here: a frame is
//!   judged by the length its header declares — the moment the header arrives, before its
//!   payload is read — so a 70,000-byte `connect` is refused with 1009 however it is split
//!   into packets. The HTTP upgrade request's head has its own cap. Whatever a client
//!   pipelines after `connect` is judged by the handshake's outcome and the post-handshake
//!   limit. Control frames (ping, pong, close) are not measured: the library refuses one
//!   over 125 bytes as a protocol violation itself.
//! * **Knowing when the library's read buffer is empty.** The library keeps the capacity of
//!   the largest frame it ever read; memory per connection must not depend on past traffic.
//!   When the bytes handed over end exactly where a message ends, the library holds nothing
//!   unread, and the connection can give it a fresh buffer ([`FrameMeter::at_message_end`]).
//!
//! The meter is pure (bytes in, verdict out), so it is fuzzed on its own (`fuzz/`).

/// Why the meter stopped the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The HTTP upgrade request's head is longer than allowed.
    RequestHead,
    /// The first data message (its frames together) is longer than allowed.
    Message,
}

/// Where the meter is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// In the HTTP request head; `tail` holds its last four bytes to find `\r\n\r\n`.
    Head { tail: u32 },
    /// Collecting a frame header (2 to 14 bytes).
    Header,
    /// Skipping the payload of the current frame.
    Payload { left: u64 },
}

#[derive(Debug, Clone)]
pub struct FrameMeter {
    stage: Stage,
    max_head: usize,
    max_message: u64,
    head_len: usize,
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the data message so far (its frames' declared lengths).
    message_len: u64,
    /// The frame whose payload is being skipped ends a data message.
    ends_message: bool,
    /// The first data message has passed: no more limit.
    first_passed: bool,
    /// The bytes so far end exactly where a data message ends.
    at_message_end: bool,
    /// Data messages complete in the bytes so far.
    messages: u64,
    /// The longest data message since [`FrameMeter::take_longest`].
    longest: u64,
    /// Why the peer was stopped: from then on every feed is refused (frames are still
    /// followed, to see the peer's close frame).
    refused: Option<Exceeded>,
    /// The peer sent a close frame: it sends nothing more (RFC 6455 §5.5.1).
    peer_closed: bool,
}

impl FrameMeter {
    /// A meter for a new socket: the request head up to `max_head` bytes, then a first data
    /// message of at most `max_message` payload bytes.
    pub fn new(max_head: usize, max_message: usize) -> Self {
        FrameMeter {
            stage: Stage::Head { tail: 0 },
            max_head,
            max_message: max_message as u64,
            head_len: 0,
            header: [0; 14],
            header_len: 0,
            message_len: 0,
            ends_message: false,
            first_passed: false,
            at_message_end: false,
            messages: 0,
            longest: 0,
            refused: None,
            peer_closed: false,
        }
    }

    /// Whether the first data message has passed (no more limit applies).
    pub fn first_passed(&self) -> bool {
        self.first_passed
    }

    /// Whether the bytes so far end exactly at the end of a data message: a reader that has
    /// returned that message (the [`FrameMeter::messages`]th) holds nothing unread.
    pub fn at_message_end(&self) -> bool {
        self.at_message_end
    }

    /// Whether the bytes so far include the peer's close frame (header).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// How many data messages the bytes so far complete.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// The longest data message (payload bytes) since [`FrameMeter::take_longest`].
    pub fn longest(&self) -> u64 {
        self.longest
    }

    /// The longest data message (payload bytes) since the last call.
    pub fn take_longest(&mut self) -> u64 {
        std::mem::take(&mut self.longest)
    }

    /// Takes the next bytes the peer sent. Once it returns an error it always does.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Exceeded> {
        if self.refused == Some(Exceeded::RequestHead) {
            // No frames to follow: the request never ended.
            return Err(Exceeded::RequestHead);
        }
        while !bytes.is_empty() {
            // Every step consumes at least one byte; only a step that ends a message leaves
            // this set, so it holds only when the last byte fed ended one.
            self.at_message_end = false;
            match self.stage {
                Stage::Head { tail } => bytes = self.feed_head(tail, bytes),
                Stage::Header => bytes = self.feed_header(bytes),
                Stage::Payload { left } => {
                    let skipped = left.min(bytes.len() as u64);
                    bytes = &bytes[skipped as usize..];
                    self.stage = if skipped < left {
                        Stage::Payload {
                            left: left - skipped,
                        }
                    } else {
                        self.after_frame()
                    };
                }
            }
        }
        self.refused.map_or(Ok(()), Err)
    }

    fn feed_head<'a>(&mut self, mut tail: u32, bytes: &'a [u8]) -> &'a [u8] {
        for (i, &byte) in bytes.iter().enumerate() {
            // The head must end where the library's HTTP parser ends it, or the frames
            // would be measured from the wrong byte. That parser also takes a bare LF as a
            // line end and skips blank lines before the request line; no client sends
            // either, so both are refused rather than followed.
            let bare_lf = byte == b'\n' && tail & 0xff != u32::from(b'\r');
            let leading_blank = self.head_len == 0 && (byte == b'\r' || byte == b'\n');
            tail = (tail << 8) | u32::from(byte);
            self.head_len += 1;
            if tail == u32::from_be_bytes(*b"\r\n\r\n") {
                self.stage = Stage::Header;
                return &bytes[i + 1..];
            }
            if bare_lf || leading_blank || self.head_len >= self.max_head {
                self.stage = Stage::Head { tail };
                self.refused = Some(Exceeded::RequestHead);
                return &[];
            }
        }
        self.stage = Stage::Head { tail };
        &[]
    }

    fn feed_header<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let mut used = 0;
        while used < bytes.len() {
            self.header[self.header_len] = bytes[used];
            self.header_len += 1;
            used += 1;
            if let Some((fin, opcode, payload)) = self.complete_header() {
                self.header_len = 0;
                self.stage = self.on_frame(fin, opcode, payload);
                return &bytes[used..];
            }
        }
        &[]
    }

    /// The header's fields once all its bytes are in: (FIN, opcode, payload length).
    fn complete_header(&self) -> Option<(bool, u8, u64)> {
        let h = &self.header[..self.header_len];
        if h.len() < 2 {
            return None;
        }
        let masked = h[1] & 0x80 != 0;
        let (extended, short) = match h[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            len => (0, Some(u64::from(len))),
        };
        let needed = 2 + extended + if masked { 4 } else { 0 };
        if h.len() < needed {
            return None;
        }
        let payload = short.unwrap_or_else(|| {
            h[2..2 + extended]
                .iter()
                .fold(0u64, |len, &b| (len << 8) | u64::from(b))
        });
        Some((h[0] & 0x80 != 0, h[0] & 0x0f, payload))
    }

    fn on_frame(&mut self, fin: bool, opcode: u8, payload: u64) -> Stage {
        let control = opcode & 0x08 != 0;
        self.peer_closed |= opcode == 0x8;
        self.ends_message = false;
        if !control {
            self.message_len = self.message_len.saturating_add(payload);
            if !self.first_passed && self.message_len > self.max_message {
                self.refused = self.refused.or(Some(Exceeded::Message));
            }
            self.longest = self.longest.max(self.message_len);
            self.ends_message = fin;
        }
        if payload == 0 {
            return self.after_frame();
        }
        Stage::Payload { left: payload }
    }

    fn after_frame(&mut self) -> Stage {
        if self.ends_message {
            self.ends_message = false;
            self.message_len = 0;
            self.first_passed = true;
            self.at_message_end = true;
            self.messages += 1;
        } else {
            // A control frame between fragments, or the start of a fragmented message.
            self.at_message_end = false;
        }
        Stage::Header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    /// A masked client frame header declaring `len` payload bytes.
    fn header(first: u8, len: u64) -> Vec<u8> {
        let mut h = vec![first];
        match len {
            0..=125 => h.push(0x80 | len as u8),
            126..=0xffff => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                h.push(0x80 | 127);
                h.extend_from_slice(&len.to_be_bytes());
            }
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn meter() -> FrameMeter {
        FrameMeter::new(16 * 1024, 64 * 1024)
    }

    #[test]
    fn a_frame_is_judged_by_its_declared_length_before_its_payload() {
        let mut m = meter();
        m.feed(HEAD).unwrap();
        assert_eq!(m.feed(&header(0x81, 70_000)), Err(Exceeded::Message));
        assert_eq!(m.feed(b"more"), Err(Exceeded::Message));
    }

    #[test]
    fn exactly_the_limit_passes_and_then_nothing_is_measured() {
        let mut m = meter();
        let mut bytes = HEAD.to_vec();
        bytes.extend(header(0x81, 64 * 1024));
        bytes.extend(vec![b'x'; 64 * 1024]);
        bytes.extend(header(0x81, 10 << 20));
        bytes.extend(vec![b'y'; 1000]);
        // Split at every awkward place: one byte at a time.
        for b in bytes {
            m.feed(&[b]).unwrap();
        }
        assert!(m.first_passed());
    }

    #[test]
    fn fragments_count_together_and_control_frames_do_not() {
        let mut m = meter();
        m.feed(HEAD).unwrap();
        m.feed(&header(0x01, 40_000)).unwrap(); // text, not final
        m.feed(&vec![0; 40_000]).unwrap();
        m.feed(&header(0x89, 4)).unwrap(); // a ping in between
        m.feed(b"ping").unwrap();
        assert!(!m.first_passed());
        assert_eq!(m.feed(&header(0x80, 30_000)), Err(Exceeded::Message));
    }

    #[test]
    fn a_head_ending_otherwise_than_crlf_crlf_is_refused() {
        // The HTTP parser would end this head at `\r\n\n` and read frames from there,
        // while a meter looking for `\r\n\r\n` would still be in the head: a frame's
        // payload could then fake the head's end and a small final frame, and lift the cap.
        for head in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\n"[..],
            b"GET / HTTP/1.1\nHost: x\n\n",
            b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let mut m = meter();
            assert_eq!(m.feed(head), Err(Exceeded::RequestHead), "{head:?}");
        }
    }

    #[test]
    fn a_huge_request_head_is_refused() {
        let mut m = meter();
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.extend(vec![b'a'; 20_000]);
        assert_eq!(m.feed(&head), Err(Exceeded::RequestHead));
    }

    #[test]
    fn a_pipelined_message_after_the_first_is_not_measured() {
        let mut m = meter();
        let mut bytes = HEAD.to_vec();
        bytes.extend(header(0x81, 3));
        bytes.extend(b"{ }");
        bytes.extend(header(0x82, 1 << 40));
        m.feed(&bytes).unwrap();
        assert!(m.first_passed());
    }

    #[test]
    fn message_ends_are_seen_exactly() {
        let mut m = meter();
        m.feed(HEAD).unwrap();
        assert!(!m.at_message_end());
        m.feed(&header(0x81, 2)).unwrap();
        m.feed(b"{").unwrap();
        assert!(!m.at_message_end());
        m.feed(b"}").unwrap();
        assert!(m.at_message_end());
        assert_eq!(m.messages(), 1);
        // A ping after the message: the reader may not have read it yet.
        m.feed(&header(0x89, 0)).unwrap();
        assert!(!m.at_message_end());
        let mut big = header(0x82, 100_000);
        big.extend(vec![0; 100_000]);
        m.feed(&big).unwrap();
        assert!(m.at_message_end());
        assert_eq!(m.messages(), 2);
        assert_eq!(m.take_longest(), 100_000);
        assert_eq!(m.take_longest(), 0);
        // Part of the next header: not at an end.
        m.feed(&[0x81]).unwrap();
        assert!(!m.at_message_end());
    }

    #[test]
    fn the_peers_close_is_seen_after_a_refusal_too() {
        let mut m = meter();
        m.feed(HEAD).unwrap();
        assert_eq!(m.feed(&header(0x81, 70_000)), Err(Exceeded::Message));
        assert_eq!(m.feed(&vec![0; 70_000]), Err(Exceeded::Message));
        assert!(!m.peer_closed());
        assert_eq!(m.feed(&header(0x88, 2)), Err(Exceeded::Message));
        assert!(m.peer_closed());
    }

    #[test]
    fn bytes_after_a_message_in_the_same_read_are_not_an_end() {
        // Found by the `frame_meter` fuzz target: a message and the start of the next one
        // in one read left `at_message_end` set, so the connection would have replaced the
        // reader and lost the bytes it held.
        let mut m = meter();
        let mut bytes = HEAD.to_vec();
        bytes.extend(header(0x81, 2));
        bytes.extend(b"{}");
        bytes.push(0x81);
        m.feed(&bytes).unwrap();
        assert_eq!(m.messages(), 1);
        assert!(!m.at_message_end());
    }
}

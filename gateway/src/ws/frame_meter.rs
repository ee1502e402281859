//! Measures what a peer sends before its `connect` frame, frame by frame (PROTOCOL.md §1.7).
//!
//! Before the handshake a message may be at most 64 KiB, afterwards 10 MiB. The WebSocket
//! library takes one limit for the whole life of a socket, so the pre-handshake limit is
//! enforced here, on the raw bytes the library is about to read: the HTTP upgrade request
//! (whose head has its own cap), then each frame's header. A frame is judged by the length
//! its header declares — the moment the header arrives, before its payload is read — so a
//! 70,000-byte `connect` is refused with 1009 however it is split into packets.
//!
//! Only the first data message is measured: it is the `connect` request, and whatever a
//! client pipelines after it is judged by the handshake's outcome (and the post-handshake
//! limit), not by this cap. Control frames (ping, pong, close) are skipped: the library
//! refuses one over 125 bytes as a protocol violation itself.
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
    /// The first data message passed: nothing more is measured.
    Done,
    /// Refused; every further byte is refused too.
    Stopped(Exceeded),
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
    /// The frame whose payload is being skipped ends the first data message.
    ends_message: bool,
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
        }
    }

    /// Whether the first data message has passed (nothing more is measured).
    pub fn done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Takes the next bytes the peer sent. Once it returns an error it always does.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Exceeded> {
        while !bytes.is_empty() {
            match self.stage {
                Stage::Done => return Ok(()),
                Stage::Stopped(why) => return Err(why),
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
        match self.stage {
            Stage::Stopped(why) => Err(why),
            _ => Ok(()),
        }
    }

    fn feed_head<'a>(&mut self, mut tail: u32, bytes: &'a [u8]) -> &'a [u8] {
        for (i, &byte) in bytes.iter().enumerate() {
            tail = (tail << 8) | u32::from(byte);
            self.head_len += 1;
            if tail == u32::from_be_bytes(*b"\r\n\r\n") {
                self.stage = Stage::Header;
                return &bytes[i + 1..];
            }
            if self.head_len >= self.max_head {
                self.stage = Stage::Stopped(Exceeded::RequestHead);
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
        self.ends_message = false;
        if !control {
            self.message_len = self.message_len.saturating_add(payload);
            if self.message_len > self.max_message {
                return Stage::Stopped(Exceeded::Message);
            }
            self.ends_message = fin;
        }
        if payload == 0 {
            return self.after_frame();
        }
        Stage::Payload { left: payload }
    }

    fn after_frame(&mut self) -> Stage {
        if self.ends_message {
            Stage::Done
        } else {
            Stage::Header
        }
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
        // Split at every awkward place: one byte at a time.
        for b in bytes {
            m.feed(&[b]).unwrap();
        }
        assert!(m.done());
    }

    #[test]
    fn fragments_count_together_and_control_frames_do_not() {
        let mut m = meter();
        m.feed(HEAD).unwrap();
        m.feed(&header(0x01, 40_000)).unwrap(); // text, not final
        m.feed(&vec![0; 40_000]).unwrap();
        m.feed(&header(0x89, 4)).unwrap(); // a ping in between
        m.feed(b"ping").unwrap();
        assert!(!m.done());
        assert_eq!(m.feed(&header(0x80, 30_000)), Err(Exceeded::Message));
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
        assert!(m.done());
    }
}

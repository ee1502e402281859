//! Server frames on the wire (RFC 6455 §5.2), written straight from the shared encoded
//! bytes with vectored writes.
//!
//! The WebSocket library formats every frame it sends into a per-socket buffer, and that
//! buffer keeps the capacity of the largest frame for the life of the socket; it also makes
//! one copy and (unbuffered) one system call per frame. Outgoing messages therefore bypass
//! it: a frame is its header (built here, on the stack) plus slices of bytes that already
//! exist — an event encoded once for every subscriber, a response's own text — and one
//! `writev` carries every frame queued since the last wake-up. The library still reads, and
//! still answers pings and closes; those few control frames come back to the writer as
//! bytes it sends between messages ([`crate::ws::limit::LimitedStream`]).

use std::io::{self, IoSlice};

use bytes::Bytes;

/// Opcode of a text frame with FIN set (server frames are never masked).
const FIN_TEXT: u8 = 0x81;
const FIN_CLOSE: u8 = 0x88;

/// Frames per system call (a few hundred slices; far below `IOV_MAX`).
pub const FRAMES_PER_WRITE: usize = 64;

/// The header of an unmasked frame carrying `len` payload bytes.
fn header(first: u8, len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = first;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A close frame (code, then a reason of at most 123 bytes: the caller cuts it).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut head = [0u8; 10];
    let n = header(FIN_CLOSE, 2 + reason.len(), &mut head);
    let mut frame = Vec::with_capacity(n + 2 + reason.len());
    frame.extend_from_slice(&head[..n]);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason.as_bytes());
    Bytes::from(frame)
}

/// One message to write: a text frame around `body` + `tail`, or bytes that are already a
/// whole frame (a control frame the WebSocket library formatted).
pub enum Wire<'a> {
    Text { body: &'a [u8], tail: &'a [u8] },
    Frame(&'a [u8]),
}

/// The scratch a frame's header lives in while it is written.
#[derive(Clone, Copy, Default)]
pub struct Scratch {
    header: [u8; 10],
    header_len: usize,
}

impl<'a> Wire<'a> {
    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            Wire::Text { body, tail } => {
                let payload = body.len() + tail.len();
                let header = if payload < 126 {
                    2
                } else if payload <= u16::MAX as usize {
                    4
                } else {
                    10
                };
                header + payload
            }
            Wire::Frame(frame) => frame.len(),
        }
    }

    /// Appends this message's slices, skipping its first `skip` bytes (written already).
    fn slices<'s>(&'s self, scratch: &'s mut Scratch, skip: usize, out: &mut Vec<IoSlice<'s>>)
    where
        'a: 's,
    {
        let mut push = |part: &'s [u8], skip: &mut usize| {
            if *skip >= part.len() {
                *skip -= part.len();
            } else {
                out.push(IoSlice::new(&part[*skip..]));
                *skip = 0;
            }
        };
        let mut skip = skip;
        match self {
            Wire::Text { body, tail } => {
                scratch.header_len = header(FIN_TEXT, body.len() + tail.len(), &mut scratch.header);
                let scratch: &'s Scratch = scratch;
                push(&scratch.header[..scratch.header_len], &mut skip);
                push(body, &mut skip);
                push(tail, &mut skip);
            }
            Wire::Frame(frame) => push(frame, &mut skip),
        }
    }
}

/// Writes as much of `messages` as the socket takes now, the first one from byte `skip`:
/// the bytes written (`WouldBlock` when it takes nothing).
pub fn write_some(
    write: impl FnOnce(&[IoSlice<'_>]) -> io::Result<usize>,
    messages: &[Wire<'_>],
    skip: usize,
) -> io::Result<usize> {
    let messages = &messages[..messages.len().min(FRAMES_PER_WRITE)];
    let mut scratch = [Scratch::default(); FRAMES_PER_WRITE];
    let mut slices = Vec::with_capacity(messages.len() * 3);
    let mut skip = skip;
    for (message, scratch) in messages.iter().zip(scratch.iter_mut()) {
        message.slices(scratch, skip, &mut slices);
        skip = 0;
    }
    write(&slices)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `write_some` would send, written by a socket taking `per_call` bytes per
    /// call.
    fn drain(messages: &[Wire<'_>], per_call: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut index, mut skip) = (0, 0);
        while index < messages.len() {
            let n = write_some(
                |slices| {
                    let mut taken = 0;
                    for s in slices {
                        let take = (per_call - taken).min(s.len());
                        out.extend_from_slice(&s[..take]);
                        taken += take;
                    }
                    Ok(taken)
                },
                &messages[index..],
                skip,
            )
            .unwrap();
            let mut n = n + skip;
            while index < messages.len() && n >= messages[index].wire_len() {
                n -= messages[index].wire_len();
                index += 1;
            }
            skip = n;
        }
        out
    }

    /// Parses unmasked frames back: (opcode byte, payload).
    fn parse(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let (len, at) = match bytes[1] {
                126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            frames.push((bytes[0], bytes[at..at + len].to_vec()));
            bytes = &bytes[at + len..];
        }
        frames
    }

    #[test]
    fn frames_of_every_length_class_survive_partial_writes() {
        let short = b"{\"a\":1".to_vec();
        let medium = vec![b'x'; 300];
        let long = vec![b'y'; 70_000];
        let close = close_frame(1008, "slow consumer");
        let messages = [
            Wire::Text {
                body: &short,
                tail: b"}",
            },
            Wire::Text {
                body: &medium,
                tail: b"",
            },
            Wire::Frame(&close),
            Wire::Text {
                body: &long,
                tail: b",\"seq\":7}",
            },
        ];
        for per_call in [1, 3, 1000, usize::MAX / 2] {
            let frames = parse(&drain(&messages, per_call));
            assert_eq!(frames.len(), 4, "{per_call}");
            assert_eq!(frames[0], (0x81, b"{\"a\":1}".to_vec()));
            assert_eq!(frames[1].1, medium);
            assert_eq!(frames[2].0, 0x88);
            assert_eq!(&frames[2].1[..2], &1008u16.to_be_bytes());
            assert_eq!(&frames[2].1[2..], b"slow consumer");
            let mut expected = long.clone();
            expected.extend_from_slice(b",\"seq\":7}");
            assert_eq!(frames[3].1, expected);
        }
    }

    #[test]
    fn lengths_match_what_is_written() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let body = vec![b'z'; len];
            let message = Wire::Text {
                body: &body,
                tail: b"",
            };
            assert_eq!(
                drain(&[message], usize::MAX / 2).len(),
                Wire::Text {
                    body: &body,
                    tail: b""
                }
                .wire_len()
            );
        }
    }
}

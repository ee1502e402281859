//! Caps what an unauthenticated peer can make the gateway read (PROTOCOL.md §1.7 [EXT]).
//!
//! The WebSocket library takes one frame-size limit for the whole life of a socket, and ours
//! must grow from 64 KiB before the handshake to 10 MiB after it. So the raw socket is
//! wrapped: until the handshake succeeds, reads are cut off once the peer has sent more than
//! the upgrade request plus one 64 KiB frame; afterwards the wrapper is transparent.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use argent_proto::limits::MAX_PREAUTH_PAYLOAD;

/// Room for the HTTP upgrade request in front of the first frame.
const UPGRADE_ALLOWANCE: usize = 16 * 1024;

/// Shared between the socket wrapper and the connection task.
#[derive(Debug)]
pub struct PreauthGate {
    lifted: AtomicBool,
    remaining: AtomicUsize,
    exceeded: AtomicBool,
}

impl PreauthGate {
    pub fn new() -> Arc<Self> {
        Arc::new(PreauthGate {
            lifted: AtomicBool::new(false),
            remaining: AtomicUsize::new(MAX_PREAUTH_PAYLOAD + UPGRADE_ALLOWANCE),
            exceeded: AtomicBool::new(false),
        })
    }

    /// The handshake succeeded: no more pre-auth cap.
    pub fn lift(&self) {
        self.lifted.store(true, Ordering::Relaxed);
    }

    /// Whether the peer hit the cap (the socket then answers 1009).
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
}

pub struct LimitedStream {
    inner: TcpStream,
    gate: Arc<PreauthGate>,
}

impl LimitedStream {
    pub fn new(inner: TcpStream, gate: Arc<PreauthGate>) -> Self {
        LimitedStream { inner, gate }
    }

    /// Whether reads were cut off by the pre-handshake cap.
    pub fn gate_exceeded(&self) -> bool {
        self.gate.exceeded()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.gate.lifted.load(Ordering::Relaxed) {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let remaining = this.gate.remaining.load(Ordering::Relaxed);
        if remaining == 0 {
            this.gate.exceeded.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "pre-handshake input limit exceeded",
            )));
        }
        let mut chunk = [0u8; 2048];
        let want = remaining.min(buf.remaining()).min(chunk.len());
        let mut limited = ReadBuf::new(&mut chunk[..want]);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let got = limited.filled();
        this.gate.remaining.fetch_sub(got.len(), Ordering::Relaxed);
        buf.put_slice(got);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

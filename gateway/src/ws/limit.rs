//! Caps what an unauthenticated peer can make the gateway read (PROTOCOL.md §1.7 [EXT]).
//!
//! The WebSocket library takes one frame-size limit for the whole life of a socket, and ours
//! must grow from 64 KiB before the handshake to 10 MiB after it. So the raw socket is
//! wrapped: every byte read goes through a [`FrameMeter`], which cuts reads off at a frame
//! header of the first message (the `connect` request) declaring too much, and afterwards
//! tells when the library's read buffer holds nothing unread (so a connection can give it a
//! fresh, small one after a large message).
//!
//! Once the connection is established, the connection's writer writes frames to the socket
//! itself ([`crate::ws::wire`]); the wrapper then hands whatever the WebSocket library
//! still writes (pongs, the reply to a client's close) to that writer's queue, so frames
//! never interleave. Before that, the upgrade's HTTP response is held back until the
//! challenge frame joins it (one system call instead of two per handshake).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use argent_proto::limits::MAX_PREAUTH_PAYLOAD;

use crate::ws::frame_meter::FrameMeter;
use crate::ws::outbox::Outbox;

/// The longest HTTP upgrade request head read before the first frame.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Shared between the socket wrapper and the connection task.
pub struct PreauthGate {
    exceeded: AtomicBool,
    /// Set when the connection's writer owns the socket's output.
    writer: OnceLock<Arc<Outbox>>,
    /// What the WebSocket library wrote before [`PreauthGate::uncork`]: the upgrade's HTTP
    /// response goes out in one write with the `connect.challenge` frame.
    cork: Mutex<Option<Vec<u8>>>,
}

impl PreauthGate {
    pub fn new() -> Arc<Self> {
        Arc::new(PreauthGate {
            exceeded: AtomicBool::new(false),
            writer: OnceLock::new(),
            cork: Mutex::new(Some(Vec::new())),
        })
    }

    /// From now on the library's writes go to `outbox` (whose writer owns the socket).
    pub fn divert_writes(&self, outbox: Arc<Outbox>) {
        let _ = self.writer.set(outbox);
    }

    /// Writes what was held back (the upgrade response, then the challenge, or an HTTP
    /// error response) in one system call; later writes go straight out.
    pub async fn uncork(&self, tcp: &TcpStream) -> io::Result<()> {
        let Some(held) = self.cork.lock().take() else {
            return Ok(());
        };
        let mut written = 0;
        while written < held.len() {
            tcp.writable().await?;
            match tcp.try_write(&held[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Whether the peer hit the cap (the socket then answers 1009).
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
}

/// The socket as the WebSocket library sees it. Shared with the connection's writer, which
/// writes through `&TcpStream`.
pub struct LimitedStream {
    inner: Arc<TcpStream>,
    gate: Arc<PreauthGate>,
    /// Boxed: idle connections keep this stream for their whole life.
    meter: Box<FrameMeter>,
    /// Data messages the library has returned (counted by the connection).
    returned: u64,
}

impl LimitedStream {
    pub fn new(inner: TcpStream, gate: Arc<PreauthGate>) -> Self {
        LimitedStream {
            inner: Arc::new(inner),
            gate,
            meter: Box::new(FrameMeter::new(MAX_REQUEST_HEAD, MAX_PREAUTH_PAYLOAD)),
            returned: 0,
        }
    }

    /// From now on the library's writes go to `outbox`, whose writer owns the output.
    pub fn divert_writes(&self, outbox: Arc<Outbox>) {
        self.gate.divert_writes(outbox);
    }

    /// The socket, for the connection's writer.
    pub fn tcp(&self) -> Arc<TcpStream> {
        self.inner.clone()
    }

    /// Reads into `buf` what the socket has (through `&TcpStream`: the writer shares it).
    fn poll_read_inner(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.inner.poll_read_ready(cx))?;
            match self.inner.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }

    /// To be called for every data (text or binary) message the library returns. Whether
    /// the library should get a fresh read buffer now: it has read a message longer than
    /// `above` bytes since the last renewal (its buffer kept that capacity), and everything
    /// handed to it ends exactly where the message it just returned ends (so it holds
    /// nothing unread). Counts as the renewal.
    pub fn message_returned(&mut self, above: u64) -> bool {
        self.returned += 1;
        let renew = self.meter.at_message_end()
            && self.meter.messages() == self.returned
            && self.meter.longest() > above;
        if renew {
            self.meter.take_longest();
        }
        renew
    }

    /// After the gateway's close frame: our FIN, then the peer's input discarded until its
    /// own close frame (seen here, whether the library read it already or not), its FIN, or
    /// the bounds of [`crate::ws::linger::drain`].
    pub async fn linger(&mut self) {
        if self.meter.peer_closed() {
            let _ = socket2::SockRef::from(&*self.inner).shutdown(std::net::Shutdown::Write);
            return;
        }
        let meter = &mut self.meter;
        crate::ws::linger::drain(&self.inner, |bytes| {
            let _ = meter.feed(bytes);
            meter.peer_closed()
        })
        .await;
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
        let before = buf.filled().len();
        ready!(this.poll_read_inner(cx, buf))?;
        if this.meter.feed(&buf.filled()[before..]).is_err() {
            // Nothing of this read reaches the library: it sees the error at once.
            buf.set_filled(before);
            this.gate.exceeded.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "pre-handshake input limit exceeded",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // The library writes whole frames per call (it formats into its own buffer first).
        if let Some(writer) = self.gate.writer.get() {
            writer.push_control(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        if let Some(held) = self.gate.cork.lock().as_mut() {
            held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            match self.inner.try_write(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.gate.writer.get().is_some() {
            // The writer sends the close frame and shuts the socket down itself.
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(socket2::SockRef::from(&*self.inner).shutdown(std::net::Shutdown::Write))
    }
}

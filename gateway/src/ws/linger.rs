//! Closing first without losing the close frame.
//!
//! When the gateway closes a connection while the peer is still sending (the rest of an
//! oversized frame, requests of a client that stopped reading), closing the socket with
//! unread input makes the kernel answer with a TCP reset — and a reset can destroy the close
//! frame in the peer's receive queue before the peer reads it. So after the close frame and
//! our FIN, the input is read and discarded until the peer is done: it closed the TCP
//! connection, sent its own close frame (a WebSocket peer sends nothing after it), or stayed
//! quiet for a while — within bounds (RFC 6455 §7.1.1 has the server close the TCP
//! connection first; this is the "lingering close" HTTP servers do for the same reason).

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use argent_proto::limits::MAX_PAYLOAD;

/// The longest the input is drained.
const LINGER_FOR: Duration = Duration::from_secs(5);
/// A peer quiet this long has sent what it was going to send.
const QUIET_FOR: Duration = Duration::from_secs(1);
/// At most this much is read: the rest of one oversized message and then some.
const LINGER_BYTES: usize = 2 * MAX_PAYLOAD;

/// Sends our FIN (if not sent yet) and discards the peer's input until `done` (given each
/// chunk read) says the peer has finished, or within the bounds above.
pub async fn drain(tcp: &TcpStream, mut done: impl FnMut(&[u8]) -> bool) {
    let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + LINGER_FOR;
    let mut scratch = vec![0u8; 16 * 1024];
    let mut left = LINGER_BYTES;
    loop {
        let quiet = (Instant::now() + QUIET_FOR).min(until);
        if tokio::time::timeout_at(quiet, tcp.readable())
            .await
            .is_err()
        {
            return;
        }
        match tcp.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(n) if n >= left || done(&scratch[..n]) => return,
            Ok(n) => left -= n,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
}

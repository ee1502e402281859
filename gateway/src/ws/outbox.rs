//! A connection's bounded outbound queue and its writer (PROTOCOL.md §1.5, §1.7).
//!
//! Producers (the event fan-out, request handlers) push without waiting; the connection's
//! writer task drains the queue into the socket. The queue is bounded in **bytes**
//! (`maxBufferedBytes`, counting frames until the socket accepted them): past the bound a
//! drop-if-slow event is skipped for this client only, anything else closes this client with
//! 1008 `slow consumer`. Nobody else ever waits for a slow client.
//!
//! The per-connection `seq` is assigned here, in queue order, so it is +1 for every
//! broadcast event written, and a skipped event still consumes a number: the client sees
//! the gap.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Write as _};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use argent_proto::frames::EncodedEvent;
use argent_proto::limits::CLOSE_REASON_MAX;

use crate::chat_stream::V4Delta;
use crate::metrics::Metrics;
use crate::ws::wire::{self, Wire};

/// How long a close frame may take to go out before the socket is just dropped.
const CLOSE_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What follows an event's shared bytes for one connection: `,"seq":N}` or `}`.
#[derive(Clone, Copy)]
struct Tail {
    bytes: [u8; 28],
    len: u8,
}

impl Tail {
    fn new(seq: Option<u64>) -> Self {
        let mut bytes = [0u8; 28];
        let mut cursor = io::Cursor::new(&mut bytes[..]);
        if let Some(seq) = seq {
            write!(cursor, r#","seq":{seq}"#).expect("fits: 7 + 20 digits");
        }
        cursor.write_all(b"}").expect("fits");
        let len = cursor.position() as u8;
        Tail { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

enum Outgoing {
    /// A response's text.
    Text(Bytes),
    /// An event encoded once for every connection, and this connection's `seq`.
    Event {
        event: Arc<EncodedEvent>,
        tail: Tail,
    },
    /// A control frame the WebSocket library formatted (a pong).
    Control(Bytes),
}

impl Outgoing {
    /// Bytes counted against `maxBufferedBytes`. A pong is not: at most one waits (the
    /// next replaces it).
    fn len(&self) -> usize {
        match self {
            Outgoing::Text(t) => t.len(),
            Outgoing::Event { event, .. } => event.len(),
            Outgoing::Control(_) => 0,
        }
    }

    fn wire(&self) -> Wire<'_> {
        match self {
            Outgoing::Text(text) => Wire::Text {
                body: text,
                tail: b"",
            },
            Outgoing::Event { event, tail } => Wire::Text {
                body: event.head(),
                tail: tail.as_bytes(),
            },
            Outgoing::Control(frame) => Wire::Frame(frame),
        }
    }
}

/// Heap a queue holds for its slots.
fn slot_bytes(queue: &VecDeque<Outgoing>) -> usize {
    queue.capacity() * std::mem::size_of::<Outgoing>()
}

#[derive(Default)]
struct State {
    queue: VecDeque<Outgoing>,
    bytes: usize,
    /// Slot bytes of `queue` counted in the buffer gauge.
    slots_counted: usize,
    seq: u64,
    /// Close frame to send once the queue is written (graceful) …
    close_after: Option<Bytes>,
    /// … or right now, dropping the queue (slow consumer).
    close_now: Option<Bytes>,
    /// The pong to send with the next batch: only the latest ping needs an answer (RFC 6455
    /// §5.5.3), so a client sending pings without reading holds one pong, not a queue.
    pong: Option<Bytes>,
    /// The writer stopped (closed, failed, or dropped): nothing more is queued.
    closed: bool,
    /// v4 only: runs whose every `chat` delta so far reached this connection, so a suffix
    /// (`deltaText` without `replace`) is enough for it (PROTOCOL-v4.md §8.2).
    in_step: HashSet<Arc<str>>,
}

/// Runs a connection tracks as in step at once (ended runs are forgotten); past it the
/// set starts over, which costs one `replace` delta per live run.
const MAX_IN_STEP_RUNS: usize = 1024;

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Skipped: drop-if-slow event over the limit.
    Dropped,
    /// The connection is closing (now, or was already).
    Closing,
}

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    /// Signalled with `close_now`, to interrupt a write stuck on a full socket.
    abort: Notify,
    limit: usize,
    metrics: Arc<Metrics>,
}

/// Cuts a close reason to the protocol's 120 bytes, on a character boundary.
pub fn truncate_reason(reason: &str) -> String {
    if reason.len() <= CLOSE_REASON_MAX {
        return reason.to_string();
    }
    let mut end = CLOSE_REASON_MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

impl Outbox {
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            abort: Notify::new(),
            limit,
            metrics,
        }
    }

    fn is_closing(state: &State) -> bool {
        state.closed || state.close_now.is_some() || state.close_after.is_some()
    }

    /// Queues a response (never droppable).
    pub fn push_text(&self, text: String) -> Pushed {
        let mut state = self.state.lock();
        if Self::is_closing(&state) {
            return Pushed::Closing;
        }
        if state.bytes + text.len() > self.limit {
            self.slow_consumer(&mut state);
            return Pushed::Closing;
        }
        self.enqueue(&mut state, Outgoing::Text(Bytes::from(text)));
        Pushed::Queued
    }

    /// Takes a frame the WebSocket library wrote (it answers pings and closes itself): a
    /// pong goes out between messages; a close (the reply to the client's) is the last
    /// frame written.
    pub fn push_control(&self, frame: &[u8]) {
        let mut state = self.state.lock();
        if Self::is_closing(&state) {
            return;
        }
        let frame = Bytes::copy_from_slice(frame);
        if frame.first().is_some_and(|b| b & 0x0f == 0x8) {
            state.close_after = Some(frame);
        } else {
            state.pong = Some(frame);
        }
        self.notify.notify_one();
    }

    /// Queues an event. `broadcast` events take the next `seq`; targeted ones carry none.
    pub fn push_event(&self, event: &Arc<EncodedEvent>, broadcast: bool) -> Pushed {
        let mut state = self.state.lock();
        self.push_event_locked(&mut state, event, broadcast)
    }

    /// Queues a v4 `chat` delta: the suffix when this connection is in step with the run,
    /// else the whole text with `replace:true`. A dropped delta puts it out of step.
    pub fn push_v4_delta(&self, delta: &V4Delta) -> Pushed {
        let mut state = self.state.lock();
        let in_step = state.in_step.contains(&delta.run_id);
        let Some(frame) = delta.frame_for(in_step) else {
            return Pushed::Queued;
        };
        let pushed = self.push_event_locked(&mut state, &frame, true);
        match (pushed, in_step) {
            (Pushed::Queued, false) => {
                if state.in_step.len() >= MAX_IN_STEP_RUNS {
                    state.in_step.clear();
                }
                state.in_step.insert(delta.run_id.clone());
            }
            (Pushed::Queued, true) => {}
            (_, true) => {
                state.in_step.remove(&delta.run_id);
            }
            (_, false) => {}
        }
        pushed
    }

    /// A run ended: it needs no tracking any more.
    pub fn forget_run(&self, run_id: &str) {
        self.state.lock().in_step.remove(run_id);
    }

    fn push_event_locked(
        &self,
        state: &mut State,
        event: &Arc<EncodedEvent>,
        broadcast: bool,
    ) -> Pushed {
        if Self::is_closing(state) {
            return Pushed::Closing;
        }
        let seq = if broadcast {
            state.seq += 1;
            Some(state.seq)
        } else {
            None
        };
        if state.bytes + event.len() > self.limit {
            if event.droppable {
                self.metrics.events_dropped.inc();
                return Pushed::Dropped;
            }
            self.slow_consumer(state);
            return Pushed::Closing;
        }
        self.enqueue(
            state,
            Outgoing::Event {
                event: event.clone(),
                tail: Tail::new(seq),
            },
        );
        Pushed::Queued
    }

    /// Consumes `n` sequence numbers for events this connection will never get.
    pub fn skip_seq(&self, n: u64) {
        self.state.lock().seq += n;
    }

    fn enqueue(&self, state: &mut State, item: Outgoing) {
        let len = item.len();
        state.bytes += len;
        state.queue.push_back(item);
        self.count_slots(state);
        self.metrics.outbound_queue_bytes.inc_by(len as i64);
        self.notify.notify_one();
    }

    /// Brings the buffer gauge in line with the queue's slots.
    fn count_slots(&self, state: &mut State) {
        let now = slot_bytes(&state.queue);
        self.metrics
            .outbound_buffer_bytes
            .inc_by(now as i64 - state.slots_counted as i64);
        state.slots_counted = now;
    }

    fn slow_consumer(&self, state: &mut State) {
        self.metrics.slow_consumers.inc();
        state.close_now = Some(wire::close_frame(1008, "slow consumer"));
        self.notify.notify_one();
        self.abort.notify_one();
    }

    /// Writes what is queued, then closes with `code`/`reason`.
    pub fn close(&self, code: u16, reason: &str) {
        let mut state = self.state.lock();
        if !Self::is_closing(&state) {
            state.close_after = Some(wire::close_frame(code, &truncate_reason(reason)));
        }
        self.notify.notify_one();
    }

    /// Closes at once, dropping whatever is queued.
    pub fn close_now(&self, code: u16, reason: &str) {
        let mut state = self.state.lock();
        if state.close_now.is_none() {
            state.close_now = Some(wire::close_frame(code, &truncate_reason(reason)));
        }
        self.notify.notify_one();
        self.abort.notify_one();
    }

    /// The connection is closing or closed: nothing more will reach the client.
    pub fn is_closed(&self) -> bool {
        Self::is_closing(&self.state.lock())
    }

    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }

    /// Drains the queue into the socket until a close was written or the socket failed.
    /// Each wake-up takes everything queued and writes it with as few system calls as the
    /// socket allows (one, usually), straight from the shared bytes. Bytes stay counted
    /// against the limit until the socket accepted them.
    pub async fn run_writer(&self, tcp: &TcpStream) {
        // A message the socket took only part of when the connection had to close at once:
        // its rest goes out before the close frame, or the client would read the close
        // frame as part of that message.
        let mut unfinished: Option<(Outgoing, usize)> = None;
        // However the writer stops (even dropped mid-write with the connection's task), the
        // outbox refuses further frames and gives back what it counted.
        let _finished = Finished(self);
        loop {
            let (mut batch, close) = {
                let mut state = self.state.lock();
                if let Some(close) = state.close_now.take() {
                    self.discard(&mut state);
                    (VecDeque::new(), Some(close))
                } else if state.queue.is_empty() && state.pong.is_none() {
                    (VecDeque::new(), state.close_after.take())
                } else {
                    // The queue's storage leaves with the batch and is freed after the
                    // write: a burst does not leave its capacity behind.
                    let mut batch = std::mem::take(&mut state.queue);
                    self.count_slots(&mut state);
                    if let Some(pong) = state.pong.take() {
                        batch.push_back(Outgoing::Control(pong));
                    }
                    (batch, None)
                }
            };
            if let Some(frame) = close {
                let mut progress = Progress::default();
                let rest = unfinished.take().map(|(message, written)| {
                    progress.skip = written;
                    message
                });
                let mut messages: Vec<Wire<'_>> = rest.iter().map(Outgoing::wire).collect();
                messages.push(Wire::Frame(&frame));
                // A client that stopped reading may never take the close frame: bounded.
                // Boxed: a rare path should not grow every connection's state.
                let _ = Box::pin(tokio::time::timeout(
                    CLOSE_WRITE_TIMEOUT,
                    write_all(tcp, &messages, &mut progress),
                ))
                .await;
                // FIN after the close frame (RFC 6455 §7.1.1: the server closes first).
                let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write);
                return;
            }
            if batch.is_empty() {
                self.notify.notified().await;
                continue;
            }
            let in_flight = InFlight::new(self, &batch);
            let mut progress = Progress::default();
            let outcome = {
                let wires: Vec<Wire<'_>> = batch.iter().map(Outgoing::wire).collect();
                tokio::select! {
                    result = write_all(tcp, &wires, &mut progress) => Some(result),
                    _ = self.abort.notified() => None,
                }
            };
            if outcome.is_none() && progress.skip > 0 {
                unfinished = batch
                    .drain(progress.index..)
                    .next()
                    .map(|message| (message, progress.skip));
            }
            drop(batch);
            drop(in_flight);
            match outcome {
                Some(Ok(())) => {}
                Some(Err(_)) => return,
                // Closing now: the next turn sends the close frame.
                None => self.notify.notify_one(),
            }
        }
    }

    fn release(&self, bytes: usize) {
        self.metrics.outbound_queue_bytes.dec_by(bytes as i64);
    }

    /// Empties the queue and gives back what it counted (`closed`: and refuse more).
    fn discard(&self, state: &mut State) {
        let dropped = state.bytes;
        state.queue = VecDeque::new();
        state.pong = None;
        state.bytes = 0;
        self.count_slots(state);
        self.release(dropped);
    }
}

/// An outbox whose writer never ran (the connection ended before) still gives back what
/// it counted.
impl Drop for Outbox {
    fn drop(&mut self) {
        let state = &mut *self.state.lock();
        let dropped = state.bytes;
        self.metrics.outbound_queue_bytes.dec_by(dropped as i64);
        self.metrics
            .outbound_buffer_bytes
            .dec_by(state.slots_counted as i64);
    }
}

/// Set while the writer runs; dropped, it closes the outbox.
struct Finished<'a>(&'a Outbox);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.closed = true;
        self.0.discard(&mut state);
    }
}

/// A batch being written: its bytes stay counted (queue limit, gauges) until it is done
/// with, however that ends.
struct InFlight<'a> {
    outbox: &'a Outbox,
    held: usize,
    written: usize,
}

impl<'a> InFlight<'a> {
    fn new(outbox: &'a Outbox, batch: &VecDeque<Outgoing>) -> Self {
        let held = slot_bytes(batch);
        outbox.metrics.outbound_buffer_bytes.inc_by(held as i64);
        InFlight {
            outbox,
            held,
            written: batch.iter().map(Outgoing::len).sum(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let outbox = self.outbox;
        outbox
            .metrics
            .outbound_buffer_bytes
            .dec_by(self.held as i64);
        {
            let mut state = outbox.state.lock();
            state.bytes = state.bytes.saturating_sub(self.written);
        }
        outbox.release(self.written);
    }
}

/// How far a write got: messages done, and bytes of the next one.
#[derive(Default)]
struct Progress {
    index: usize,
    skip: usize,
}

/// Writes every message from `progress` on, waiting while the socket is full; `progress`
/// says how far it got if the write is abandoned.
async fn write_all(
    tcp: &TcpStream,
    messages: &[Wire<'_>],
    progress: &mut Progress,
) -> io::Result<()> {
    while progress.index < messages.len() {
        tcp.writable().await?;
        let from = &messages[progress.index..];
        let n = match wire::write_some(|s| tcp.try_write_vectored(s), from, progress.skip) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(err),
        };
        let mut n = n + progress.skip;
        while progress.index < messages.len() && n >= messages[progress.index].wire_len() {
            n -= messages[progress.index].wire_len();
            progress.index += 1;
        }
        progress.skip = n;
    }
    Ok(())
}

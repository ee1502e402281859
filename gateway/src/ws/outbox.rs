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
use std::sync::Arc;

use futures_util::{Sink, SinkExt};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use argent_proto::frames::EncodedEvent;
use argent_proto::limits::CLOSE_REASON_MAX;

use crate::chat_stream::V4Delta;
use crate::metrics::Metrics;

/// How long a close frame may take to go out before the socket is just dropped.
const CLOSE_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Messages longer than this are written as fragments of this size. The WebSocket layer
/// formats each frame into the socket's write buffer and keeps that buffer's capacity for
/// the life of the socket: written whole, one 49 KB `hello-ok` (a full presence snapshot)
/// or a long history would leave every idle connection holding that much. Fragmented, the
/// buffer never grows past one fragment. (RFC 6455 §5.4; every client reassembles.)
const FRAGMENT_BYTES: usize = 4096;

/// The frames that carry one long text message: a text frame and continuation frames of
/// [`FRAGMENT_BYTES`] (cut anywhere: only the whole message must be valid UTF-8), slices of
/// one buffer.
fn fragments(text: String) -> impl Iterator<Item = Message> {
    let bytes = bytes::Bytes::from(text);
    let len = bytes.len();
    (0..len).step_by(FRAGMENT_BYTES).map(move |start| {
        let end = (start + FRAGMENT_BYTES).min(len);
        let opcode = if start == 0 {
            Data::Text
        } else {
            Data::Continue
        };
        Message::Frame(Frame::message(
            bytes.slice(start..end),
            OpCode::Data(opcode),
            end == len,
        ))
    })
}

enum Outgoing {
    Text(String),
    Event {
        event: Arc<EncodedEvent>,
        seq: Option<u64>,
    },
}

impl Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Text(t) => t.len(),
            Outgoing::Event { event, .. } => event.len(),
        }
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Outgoing>,
    bytes: usize,
    seq: u64,
    /// Close to send once the queue is written (graceful) …
    close_after: Option<(u16, String)>,
    /// … or right now, dropping the queue (slow consumer).
    close_now: Option<(u16, String)>,
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
        state.close_now.is_some() || state.close_after.is_some()
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
        self.enqueue(&mut state, Outgoing::Text(text));
        Pushed::Queued
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
                seq,
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
        self.metrics.outbound_queue_bytes.inc_by(len as i64);
        self.notify.notify_one();
    }

    fn slow_consumer(&self, state: &mut State) {
        self.metrics.slow_consumers.inc();
        state.close_now = Some((1008, "slow consumer".to_string()));
        self.notify.notify_one();
        self.abort.notify_one();
    }

    /// Writes what is queued, then closes with `code`/`reason`.
    pub fn close(&self, code: u16, reason: &str) {
        let mut state = self.state.lock();
        if !Self::is_closing(&state) {
            state.close_after = Some((code, truncate_reason(reason)));
        }
        self.notify.notify_one();
    }

    /// Closes at once, dropping whatever is queued.
    pub fn close_now(&self, code: u16, reason: &str) {
        let mut state = self.state.lock();
        if state.close_now.is_none() {
            state.close_now = Some((code, truncate_reason(reason)));
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

    /// Drains the queue into `sink` until a close was written or the socket failed.
    /// Bytes stay counted against the limit until the socket accepted them.
    pub async fn run_writer<S>(&self, mut sink: S)
    where
        S: Sink<Message, Error = WsError> + Unpin,
    {
        let mut batch = Vec::new();
        loop {
            let close = {
                let mut state = self.state.lock();
                if let Some(close) = state.close_now.take() {
                    let dropped = state.bytes;
                    state.queue.clear();
                    state.bytes = 0;
                    self.release(dropped);
                    Some(close)
                } else if state.queue.is_empty() {
                    state.close_after.take()
                } else {
                    batch.extend(state.queue.drain(..));
                    None
                }
            };
            if let Some((code, reason)) = close {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                // A client that stopped reading may never take the close frame: bounded.
                // Boxed: a rare path should not grow every connection's state.
                let _ = Box::pin(tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    let _ = sink.close().await;
                }))
                .await;
                return;
            }
            if batch.is_empty() {
                self.notify.notified().await;
                continue;
            }
            let written: usize = batch.iter().map(Outgoing::len).sum();
            let write = async {
                for item in batch.drain(..) {
                    let text = match item {
                        Outgoing::Text(text) => text,
                        Outgoing::Event { event, seq } => event.frame(seq),
                    };
                    // Short messages (nearly all) go out as they are, with no allocation.
                    if text.len() <= FRAGMENT_BYTES {
                        sink.feed(Message::text(text)).await?;
                    } else {
                        for frame in fragments(text) {
                            sink.feed(frame).await?;
                        }
                    }
                }
                sink.flush().await
            };
            let outcome = tokio::select! {
                result = write => Some(result),
                _ = self.abort.notified() => None,
            };
            batch.clear();
            {
                let mut state = self.state.lock();
                state.bytes = state.bytes.saturating_sub(written);
            }
            self.release(written);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_go_out_as_fragments_that_reassemble() {
        // Multi-byte characters cut across fragments: only the whole must be UTF-8.
        let text: String = "héllo wörld ".repeat(1_000);
        let frames: Vec<Message> = fragments(text.clone()).collect();
        assert_eq!(frames.len(), text.len().div_ceil(FRAGMENT_BYTES));
        let mut whole = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            let Message::Frame(frame) = frame else {
                panic!("not a frame")
            };
            let header = frame.header();
            let expected = if i == 0 { Data::Text } else { Data::Continue };
            assert_eq!(header.opcode, OpCode::Data(expected));
            assert_eq!(header.is_final, i == frames.len() - 1);
            assert!(frame.payload().len() <= FRAGMENT_BYTES);
            whole.extend_from_slice(frame.payload());
        }
        assert_eq!(String::from_utf8(whole).unwrap(), text);
    }
}

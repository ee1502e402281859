//! The process's own recent log lines, kept in memory for `logs.tail` (bounded ring).

use std::collections::VecDeque;
use std::io;
use std::sync::{LazyLock, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// Lines kept; older ones are forgotten (a reader past them gets `reset`).
const CAPACITY: usize = 2000;

/// A ring of formatted log lines, numbered from 1 in the order they were written.
pub struct RecentLogs {
    inner: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<String>,
    /// Number of the newest line (0: none yet).
    last: u64,
    bytes: u64,
}

/// What a reader gets after its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub lines: Vec<String>,
    /// Pass back as the next cursor.
    pub cursor: u64,
    /// Bytes logged since the start (the size of the log "file").
    pub size: u64,
    /// Lines were left out (the limit or byte cap hit before the newest line).
    pub truncated: bool,
    /// The cursor was older than the ring: the reader missed lines.
    pub reset: bool,
}

static RECENT: LazyLock<RecentLogs> = LazyLock::new(|| RecentLogs {
    inner: Mutex::new(Ring::default()),
});

/// The process-wide ring the log subscriber writes to.
pub fn recent_logs() -> &'static RecentLogs {
    &RECENT
}

impl RecentLogs {
    fn push(&self, line: &str) {
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if ring.lines.len() == CAPACITY {
            ring.lines.pop_front();
        }
        ring.lines.push_back(line.to_string());
        ring.last += 1;
        ring.bytes += line.len() as u64 + 1;
    }

    /// Lines after `cursor` (all kept lines when `None`, limited to the newest `limit`),
    /// at most `limit` lines and `max_bytes` bytes.
    pub fn tail(&self, cursor: Option<u64>, limit: usize, max_bytes: usize) -> Tail {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let first = ring.last + 1 - ring.lines.len() as u64;
        let (start, reset) = match cursor {
            None => (ring.last.saturating_sub(limit as u64) + 1, false),
            Some(c) if c.saturating_add(1) < first || c > ring.last => (first, true),
            Some(c) => (c + 1, false),
        };
        let start = start.max(first);
        let mut lines = Vec::new();
        let mut bytes = 0;
        let mut next = start;
        for line in ring.lines.iter().skip((start - first) as usize) {
            if lines.len() == limit || (!lines.is_empty() && bytes + line.len() > max_bytes) {
                break;
            }
            // A line longer than the byte cap still moves the reader on, cut to the cap.
            let mut end = line.len().min(max_bytes);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            bytes += end;
            lines.push(line[..end].to_string());
            next += 1;
        }
        Tail {
            lines,
            cursor: next - 1,
            size: ring.bytes,
            truncated: next <= ring.last,
            reset,
        }
    }
}

/// An `io::Write` that hands complete lines to the ring.
pub struct LineWriter {
    pending: Vec<u8>,
}

impl io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        // One event is one write burst; the writer is dropped after it.
        let text = String::from_utf8_lossy(&self.pending);
        for line in text.lines().filter(|l| !l.is_empty()) {
            RECENT.push(line);
        }
    }
}

/// `MakeWriter` for the subscriber's in-memory layer.
pub struct RingWriter;

impl<'a> MakeWriter<'a> for RingWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            pending: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_limits_and_resets() {
        let logs = RecentLogs {
            inner: Mutex::new(Ring::default()),
        };
        for i in 1..=5 {
            logs.push(&format!("line {i}"));
        }
        let t = logs.tail(None, 2, 1 << 20);
        assert_eq!(t.lines, vec!["line 4", "line 5"]);
        assert_eq!((t.cursor, t.truncated, t.reset), (5, false, false));
        let t = logs.tail(Some(2), 10, 1 << 20);
        assert_eq!(t.lines, vec!["line 3", "line 4", "line 5"]);
        let t = logs.tail(Some(0), 2, 1 << 20);
        assert_eq!((t.lines.len(), t.cursor, t.truncated), (2, 2, true));
        logs.push("line 6");
        assert_eq!(logs.tail(Some(5), 10, 1 << 20).lines, vec!["line 6"]);
        assert!(logs.tail(Some(99), 10, 1 << 20).reset);
        assert_eq!(logs.tail(Some(6), 10, 1 << 20).lines.len(), 0);
        assert!(logs.tail(Some(u64::MAX), 10, 1 << 20).reset);
        let cut = logs.tail(Some(5), 10, 3);
        assert_eq!((cut.lines, cut.cursor), (vec!["lin".to_string()], 6));
    }
}

//! The knowledge library's file reading (`knowledge::extract`) and chunking
//! (`knowledge::chunk`) on arbitrary files: the first byte picks the format (text,
//! Markdown, HTML, DOCX, XLSX), the rest is the file, sent as a client sends it (UTF-8 for
//! text formats, base64 otherwise); a second byte picks the chunk windows.
//!
//! Why: `knowledge.ingest` reads files any operator (and the agent) uploads, on a
//! node-agent that serves the whole cluster's library; a file that panics a reader, grows
//! without bound, or chunks into overlapping or lost text hurts everyone. PDF is not
//! fuzzed here: `pdf-extract` panics on malformed input by design (`unwrap`s), which the
//! node catches on its blocking thread and reports as that file's error — libFuzzer's
//! panic hook would stop at the first. Checked, beyond "no panic":
//! * a refused file has a reason; a read one has text that is not blank, has no `\r`, no
//!   trailing spaces, no run of more than one blank line, and no leading or trailing blank;
//! * what a compressed format inflates to stays within its budget (4 × the file limit);
//! * chunks cover the text in order: each within the window size, starting after the
//!   previous one started, its text exactly the text between its offsets (trailing
//!   blanks aside), and every word shorter than a fifth of the window whole in some chunk.

#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;

use argent_node_agent::knowledge::chunk::{chunks_with_offsets, Windows};
use argent_node_agent::knowledge::extract::{extract, Limits};

const LIMITS: Limits = Limits {
    max_files: 1,
    max_file_bytes: 64 * 1024,
    pdf_max_pages: 8,
};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (&shape, file) = rest.split_first().unwrap_or((&0, &[]));
    let (name, content) = match pick % 5 {
        0 => ("notes.txt", String::from_utf8_lossy(file).into_owned()),
        1 => ("notes.md", String::from_utf8_lossy(file).into_owned()),
        2 => ("page.html", String::from_utf8_lossy(file).into_owned()),
        3 => (
            "report.docx",
            base64::engine::general_purpose::STANDARD.encode(file),
        ),
        _ => (
            "budget.xlsx",
            base64::engine::general_purpose::STANDARD.encode(file),
        ),
    };
    let read = match extract(name, None, &content, &LIMITS) {
        Ok(read) => read,
        Err(reason) => {
            assert!(!reason.trim().is_empty(), "a refusal without a reason");
            return;
        }
    };
    let text = &read.text;
    assert!(!text.trim().is_empty(), "read, but blank");
    assert!(!text.contains('\r'), "{text:?}");
    assert!(!text.contains("\n\n\n"), "{text:?}");
    assert_eq!(text.trim(), text, "{text:?}");
    assert!(text.lines().all(|line| line.trim_end() == line), "{text:?}");
    if pick % 5 >= 3 {
        assert!(
            text.len() <= 4 * LIMITS.max_file_bytes + 64,
            "{} bytes",
            text.len()
        );
    }

    let windows = Windows::new(Some(u64::from(shape) * 50), Some(u64::from(shape % 7) * 40));
    let chars: Vec<char> = text.chars().collect();
    let chunks = chunks_with_offsets(text, windows);
    assert!(!chunks.is_empty());
    let mut previous_start = None;
    for (start, end, chunk) in &chunks {
        assert!(
            start < end && *end <= chars.len(),
            "{start}..{end} of {}",
            chars.len()
        );
        assert!(
            end - start <= windows.size,
            "{} > {}",
            end - start,
            windows.size
        );
        assert!(
            previous_start.is_none_or(|p| p < *start),
            "chunks out of order"
        );
        previous_start = Some(*start);
        let between: String = chars[*start..*end].iter().collect();
        assert_eq!(
            between.trim_end(),
            chunk,
            "chunk text is not the text at its offsets"
        );
    }
    // A word shorter than a fifth of the window is never cut (a window ends at a space in
    // its last fifth when there is one); longer tokens may be.
    let short = |w: &&str| w.chars().count() < windows.size / 5;
    for word in text.split_whitespace().filter(short).take(200) {
        assert!(
            chunks.iter().any(|(_, _, c)| c.contains(word)),
            "{word:?} is in no chunk"
        );
    }
});

//! Chunking as upstream: windows of `size` characters (300..12,000, default 1,800), each
//! starting `overlap` characters (default 200) before the previous one ended. A window
//! ends at the last paragraph break, line break, sentence end or space in its final fifth
//! when there is one, so words and sentences are rarely cut; a window starts at a word.

/// Chunk sizes the library accepts (characters).
pub const MIN_SIZE: usize = 300;
pub const MAX_SIZE: usize = 12_000;
pub const DEFAULT_SIZE: usize = 1_800;
pub const DEFAULT_OVERLAP: usize = 200;

/// The window settings of one ingest, clamped as upstream clamps them: size into
/// 300..=12,000; overlap below half the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub size: usize,
    pub overlap: usize,
}

impl Windows {
    pub fn new(size: Option<u64>, overlap: Option<u64>) -> Self {
        let size = size
            .map_or(DEFAULT_SIZE, |s| s.min(MAX_SIZE as u64) as usize)
            .clamp(MIN_SIZE, MAX_SIZE);
        let overlap = overlap
            .map_or(DEFAULT_OVERLAP, |o| o.min(size as u64) as usize)
            .min(size / 2);
        Windows { size, overlap }
    }
}

impl Default for Windows {
    fn default() -> Self {
        Windows::new(None, None)
    }
}

/// The chunks of `text`, in order. Empty text has none.
#[cfg(test)]
fn chunks(text: &str, windows: Windows) -> Vec<String> {
    chunks_with_offsets(text, windows)
        .into_iter()
        .map(|(_, _, chunk)| chunk)
        .collect()
}

/// The chunks of `text` with their character offsets `(start, end, text)`.
pub fn chunks_with_offsets(text: &str, windows: Windows) -> Vec<(usize, usize, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = skip_space(&chars, 0);
    while start < chars.len() {
        let hard_end = (start + windows.size).min(chars.len());
        let end = if hard_end == chars.len() {
            hard_end
        } else {
            soft_end(&chars, start, hard_end, windows.size)
        };
        let chunk: String = chars[start..end].iter().collect();
        let chunk = chunk.trim_end();
        if !chunk.is_empty() {
            out.push((start, start + chunk.chars().count(), chunk.to_string()));
        }
        if end >= chars.len() {
            break;
        }
        // The next window starts `overlap` before this end, at a word, and always later
        // than this one started.
        let mut next = end.saturating_sub(windows.overlap).max(start + 1);
        if windows.overlap > 0 {
            next = word_start(&chars, next, end);
        }
        start = skip_space(&chars, next);
    }
    out
}

/// The best place to end a window in its final fifth: after a paragraph break, a line
/// break, a sentence end, a space — in that order of preference; else the hard end.
fn soft_end(chars: &[char], start: usize, hard_end: usize, size: usize) -> usize {
    let floor = (hard_end - size / 5).max(start + 1);
    let window = &chars[floor..hard_end];
    let find_last = |pred: &dyn Fn(usize) -> bool| {
        (0..window.len())
            .rev()
            .find(|&i| pred(i))
            .map(|i| floor + i + 1)
    };
    find_last(&|i| window[i] == '\n' && i > 0 && window[i - 1] == '\n')
        .or_else(|| find_last(&|i| window[i] == '\n'))
        .or_else(|| {
            find_last(&|i| {
                // A sentence ends where a space (or the text) follows, also when that
                // space is past the window: "v1.2" at the window's edge is not an end.
                matches!(window[i], '.' | '!' | '?' | '。')
                    && chars.get(floor + i + 1).is_none_or(|c| c.is_whitespace())
            })
        })
        .or_else(|| find_last(&|i| window[i].is_whitespace()))
        .unwrap_or(hard_end)
}

/// `at`, moved forward to the start of the next word when it falls inside one (not past
/// `limit`).
fn word_start(chars: &[char], at: usize, limit: usize) -> usize {
    if at == 0 || chars[at - 1].is_whitespace() {
        return at;
    }
    (at..limit)
        .find(|&i| chars[i].is_whitespace())
        .map_or(at, |i| i + 1)
}

fn skip_space(chars: &[char], mut at: usize) -> usize {
    while at < chars.len() && chars[at].is_whitespace() {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_clamped_as_upstream() {
        assert_eq!(
            Windows::new(None, None),
            Windows {
                size: 1800,
                overlap: 200
            }
        );
        assert_eq!(Windows::new(Some(10), None).size, 300);
        assert_eq!(Windows::new(Some(99_999), None).size, 12_000);
        assert_eq!(Windows::new(Some(400), Some(1000)).overlap, 200);
    }

    #[test]
    fn windows_overlap_and_cover_everything() {
        let words: Vec<String> = (0..2000).map(|i| format!("w{i}")).collect();
        let text = words.join(" ");
        let chunks = chunks(&text, Windows::new(Some(300), Some(50)));
        assert!(chunks.len() > 10);
        for chunk in &chunks {
            assert!(chunk.chars().count() <= 300);
            // No word is cut: every token is a whole word of the text.
            for token in chunk.split_whitespace() {
                assert!(words.iter().any(|w| w == token), "cut word {token}");
            }
        }
        for word in &words {
            assert!(
                chunks
                    .iter()
                    .any(|c| c.split_whitespace().any(|t| t == word)),
                "lost {word}"
            );
        }
        // Consecutive chunks share text.
        let last_of_first = chunks[0].split_whitespace().last().unwrap();
        assert!(chunks[1].split_whitespace().any(|t| t == last_of_first));
    }

    #[test]
    fn unbroken_text_and_multibyte_characters() {
        let text = "ä".repeat(1000);
        let chunks = chunks(&text, Windows::new(Some(300), Some(0)));
        assert_eq!(chunks.len(), 4);
        assert_eq!(
            chunks.iter().map(|c| c.chars().count()).sum::<usize>(),
            1000
        );
        assert!(super::chunks("", Windows::default()).is_empty());
        assert_eq!(super::chunks("short", Windows::default()), vec!["short"]);
    }

    #[test]
    fn a_dot_at_the_window_edge_inside_a_word_is_not_a_sentence_end() {
        // The window of 300 ends right after the dot of "v1.2": cutting there would split
        // the word; the space before it is the end.
        let text = format!("{} v1.2x tail", "a".repeat(296));
        let chunks = chunks(&text, Windows::new(Some(300), Some(0)));
        assert!(chunks.iter().any(|c| c.contains("v1.2x")), "{chunks:?}");
    }

    #[test]
    fn paragraph_breaks_are_preferred() {
        let text = format!("{}\n\n{}", "a ".repeat(140).trim(), "b ".repeat(200));
        let chunks = chunks(&text, Windows::new(Some(300), Some(0)));
        assert!(
            chunks[0].chars().all(|c| c == 'a' || c == ' '),
            "{:?}",
            chunks[0]
        );
    }
}

//! `FrameMeter` — the gateway's reading of raw socket bytes before the WebSocket library
//! sees them (gateway/src/ws/limit.rs): the pre-handshake 64 KiB cap, and the "nothing
//! unread" signal that lets a connection renew the library's read buffer.
//!
//! Why: it parses untrusted bytes on every connection, and a wrong "nothing unread" would
//! make the gateway drop a message the library had not returned yet. Checked, beyond "no
//! panic":
//! * the verdict does not depend on how the bytes are split into reads (the input's first
//!   byte picks a chunk size; the whole input fed at once must agree, state for state);
//! * once refused, always refused; the cap is only ever hit by a message whose declared
//!   length is over it;
//! * `at_message_end` holds only right after a complete data message, and the message count
//!   never goes down.

#![no_main]

use libfuzzer_sys::fuzz_target;

use argent_gateway::ws::frame_meter::FrameMeter;

const MAX_HEAD: usize = 1024;
const MAX_MESSAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);

    let mut whole = FrameMeter::new(MAX_HEAD, MAX_MESSAGE);
    let whole_verdict = whole.feed(bytes);

    let mut pieces = FrameMeter::new(MAX_HEAD, MAX_MESSAGE);
    let mut verdict = Ok(());
    let mut messages = 0;
    for piece in bytes.chunks(chunk) {
        let was_refused = verdict.is_err();
        verdict = pieces.feed(piece);
        assert!(!was_refused || verdict.is_err(), "a refusal was taken back");
        assert!(pieces.messages() >= messages, "the message count went down");
        if pieces.messages() == messages && verdict.is_ok() {
            // No message completed in this piece: it cannot end at a message end.
            assert!(!pieces.at_message_end() || piece.is_empty());
        }
        messages = pieces.messages();
    }
    assert_eq!(
        whole_verdict, verdict,
        "the verdict depends on the split ({chunk})"
    );
    if verdict.is_ok() {
        assert_eq!(whole.messages(), pieces.messages());
        assert_eq!(whole.at_message_end(), pieces.at_message_end());
        assert_eq!(whole.first_passed(), pieces.first_passed());
        assert_eq!(whole.longest(), pieces.longest());
        assert_eq!(whole.first_passed(), whole.messages() > 0);
    }
});

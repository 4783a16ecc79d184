//! Fuzzes the WebSocket client-message decoder (v2: one message per frame; v3: several back to
//! back): any bytes give messages or a typed error, never a panic or a huge allocation; and a
//! v2 decode succeeds exactly when a v3 decode yields a single message.
//!
//! Run: `cargo +nightly fuzz run ws_message` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lightcone_host::server::protocol::decode_client_messages;

fuzz_target!(|data: &[u8]| {
    let one = decode_client_messages(data, false);
    let many = decode_client_messages(data, true);
    match (&one, &many) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "v2 and v3 disagree on a single message"),
        (Ok(_), Err(e)) => panic!("v2 decoded what v3 refused: {e}"),
        (Err(_), Ok(b)) => assert!(b.len() > 1, "v3 decoded one message that v2 refused"),
        (Err(_), Err(_)) => {}
    }
});

//! Fuzzes the commit-log record decoder: framing, durability marks, seals and payload decoding must return a typed
//! error, never panic or allocate wildly, on any bytes; whatever decodes must re-encode to a
//! payload that decodes to the same delta.
//!
//! Run: `cargo +nightly fuzz run wal_record` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lightcone_wal::codec::{decode_delta, encode_delta};
use lightcone_wal::frame::{decode_frame, decode_mark, decode_seal, write_mark, write_seal, MARK_BYTES, SEAL_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_frame(data) {
        let _ = decode_delta(frame.payload, frame.tx_offset);
    }
    if let Ok(durable) = decode_mark(data) {
        let mut again = [0u8; MARK_BYTES];
        write_mark(&mut again, durable);
        assert_eq!(&again[..], &data[..MARK_BYTES]);
    }
    if let Ok(next) = decode_seal(data) {
        let mut again = [0u8; SEAL_BYTES];
        write_seal(&mut again, next);
        assert_eq!(&again[..], &data[..SEAL_BYTES]);
    }
    if let Ok(delta) = decode_delta(data, 7) {
        let mut again = Vec::new();
        encode_delta(&mut again, &delta);
        assert_eq!(decode_delta(&again, 7).as_ref(), Ok(&delta));
    }
});

//! Record framing: `[len u32][crc32c u32][tx offset u64][timestamp µs i64][payload]`.
//!
//! `len` is the payload length; the checksum covers the offset, the timestamp and the payload,
//! so a record is accepted only if every byte after the checksum is intact.
//!
//! **Durability marks** (format version 2 segments): `[u32::MAX][crc32c u32][tx offset u64]`,
//! written at the start of every batch. A mark says "every transaction up to this offset was
//! already durable when this batch was written". After a power cut the page cache may have
//! written back a later page of the unsynced tail but not an earlier one, leaving a hole
//! followed by whole records; recovery tells such a hole (no later mark covers it: nobody was
//! answered for it) from damage to acknowledged data (a later mark covers it). The `len`
//! sentinel is above [`MAX_PAYLOAD_BYTES`], so a mark is never mistaken for a record.
//!
//! **Seals** (format version 3 segments): `[u32::MAX - 1][crc32c u32][next tx offset u64]`, the
//! last bytes of a segment, written once the segment after it (whose first record is that
//! offset) is durable. A sealed segment with no segment after it means the next one was
//! lost: recovery refuses it instead of silently ending the log early. Segments written
//! before seals existed have none; that is accepted.

/// Bytes before the payload.
pub const FRAME_HEADER_BYTES: usize = 24;
/// Largest payload one record may carry.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 30;

/// Bytes of a durability mark.
pub const MARK_BYTES: usize = 16;
const MARK_SENTINEL: u32 = u32::MAX;
const _: () = assert!(MARK_SENTINEL as usize > MAX_PAYLOAD_BYTES, "a mark must not read as a record");

/// Bytes of a seal.
pub const SEAL_BYTES: usize = 16;
const SEAL_SENTINEL: u32 = u32::MAX - 1;
const _: () = assert!(SEAL_SENTINEL as usize > MAX_PAYLOAD_BYTES, "a seal must not read as a record");
const _: () = assert!(SEAL_SENTINEL != MARK_SENTINEL, "a seal must not read as a mark");

/// One decoded record, borrowing its payload from the segment bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub tx_offset: u64,
    pub timestamp_us: i64,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the record takes on disk.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.payload.len()
    }
}

/// Why no record could be read at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than the header or the declared payload needs (a torn write, or the
    /// end of the log).
    Incomplete,
    /// The bytes are all there but the checksum or the length is wrong.
    Corrupt,
}

/// Appends one record.
pub fn encode_frame(out: &mut Vec<u8>, tx_offset: u64, timestamp_us: i64, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD_BYTES, "payload over the record limit");
    let written = encode_frame_with(out, tx_offset, timestamp_us, |out| out.extend_from_slice(payload));
    debug_assert!(written.is_ok());
}

/// Appends one record whose payload `encode` appends to `out` in place. A payload over
/// [`MAX_PAYLOAD_BYTES`] is taken back out again and its length returned as the error.
pub fn encode_frame_with(
    out: &mut Vec<u8>,
    tx_offset: u64,
    timestamp_us: i64,
    encode: impl FnOnce(&mut Vec<u8>),
) -> Result<(), usize> {
    encode_frame_within(out, tx_offset, timestamp_us, MAX_PAYLOAD_BYTES, encode)
}

fn encode_frame_within(
    out: &mut Vec<u8>,
    tx_offset: u64,
    timestamp_us: i64,
    max_payload: usize,
    encode: impl FnOnce(&mut Vec<u8>),
) -> Result<(), usize> {
    let start = out.len();
    out.extend_from_slice(&[0; 8]); // length and checksum, filled in below
    out.extend_from_slice(&tx_offset.to_le_bytes());
    out.extend_from_slice(&timestamp_us.to_le_bytes());
    encode(out);
    let len = out.len() - start - FRAME_HEADER_BYTES;
    if len > max_payload {
        out.truncate(start);
        return Err(len);
    }
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    // Pair assertion: what we wrote must read back.
    debug_assert_eq!(decode_frame(&out[start..]).map(|f| f.tx_offset), Ok(tx_offset));
    Ok(())
}

/// Reads the record at the start of `bytes`.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Incomplete);
    }
    let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let len = word(0) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Err(FrameError::Corrupt);
    }
    if bytes.len() - FRAME_HEADER_BYTES < len {
        return Err(FrameError::Incomplete);
    }
    let body = &bytes[8..FRAME_HEADER_BYTES + len];
    if crc32c::crc32c(body) != word(4) {
        return Err(FrameError::Corrupt);
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&bytes[8..16]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&bytes[16..24]);
    Ok(Frame {
        tx_offset: u64::from_le_bytes(offset),
        timestamp_us: i64::from_le_bytes(ts),
        payload: &bytes[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len],
    })
}

/// Writes a durability mark saying every transaction up to `durable` is durable into the
/// first [`MARK_BYTES`] of `out`.
pub fn write_mark(out: &mut [u8], durable: u64) {
    write_trailer(out, MARK_SENTINEL, durable);
}

/// Whether the bytes at the start of `bytes` begin a durability mark (whole or not).
pub fn starts_mark(bytes: &[u8]) -> bool {
    starts_with_sentinel(bytes, MARK_SENTINEL)
}

/// Reads the durability mark at the start of `bytes`: the offset it says was durable.
pub fn decode_mark(bytes: &[u8]) -> Result<u64, FrameError> {
    decode_trailer(bytes, MARK_SENTINEL)
}

/// Writes a seal naming `next_first`, the first transaction of the next segment, into the
/// first [`SEAL_BYTES`] of `out`.
pub fn write_seal(out: &mut [u8], next_first: u64) {
    write_trailer(out, SEAL_SENTINEL, next_first);
}

/// Whether the bytes at the start of `bytes` begin a seal (whole or not).
pub fn starts_seal(bytes: &[u8]) -> bool {
    starts_with_sentinel(bytes, SEAL_SENTINEL)
}

/// Reads the seal at the start of `bytes`: the first transaction of the next segment.
pub fn decode_seal(bytes: &[u8]) -> Result<u64, FrameError> {
    decode_trailer(bytes, SEAL_SENTINEL)
}

/// Marks and seals share one shape: `[sentinel u32][crc32c of the offset u32][offset u64]`.
fn write_trailer(out: &mut [u8], sentinel: u32, offset: u64) {
    const _: () = assert!(MARK_BYTES == 16 && SEAL_BYTES == 16);
    let offset = offset.to_le_bytes();
    out[..4].copy_from_slice(&sentinel.to_le_bytes());
    out[4..8].copy_from_slice(&crc32c::crc32c(&offset).to_le_bytes());
    out[8..16].copy_from_slice(&offset);
}

fn starts_with_sentinel(bytes: &[u8], sentinel: u32) -> bool {
    bytes.len() >= 4 && bytes[..4] == sentinel.to_le_bytes()
}

fn decode_trailer(bytes: &[u8], sentinel: u32) -> Result<u64, FrameError> {
    if !starts_with_sentinel(bytes, sentinel) {
        return Err(FrameError::Corrupt);
    }
    if bytes.len() < 16 {
        return Err(FrameError::Incomplete);
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&bytes[8..16]);
    if crc32c::crc32c(&offset).to_le_bytes() != bytes[4..8] {
        return Err(FrameError::Corrupt);
    }
    Ok(u64::from_le_bytes(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves an oversized payload encoded in place is refused and leaves the buffer as it was,
    // so a refused append cannot leave half a record in the queue.
    #[test]
    fn an_oversized_payload_is_taken_back_out() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1, 0, b"ok");
        let before = buf.clone();
        let refused = encode_frame_within(&mut buf, 2, 0, 4, |out| out.extend_from_slice(b"too long"));
        assert_eq!(refused, Err(8));
        assert_eq!(buf, before);
        encode_frame_within(&mut buf, 2, 0, 8, |out| out.extend_from_slice(b"fits now")).unwrap();
        assert_eq!(decode_frame(&buf[before.len()..]).unwrap().payload, b"fits now");
    }

    // Proves a frame round-trips, and every truncation or single-bit flip is detected.
    #[test]
    fn damage_is_detected() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 42, -7, b"hello payload");
        let f = decode_frame(&buf).unwrap();
        assert_eq!((f.tx_offset, f.timestamp_us, f.payload), (42, -7, &b"hello payload"[..]));
        assert_eq!(f.encoded_len(), buf.len());
        for cut in 0..buf.len() {
            assert_eq!(decode_frame(&buf[..cut]), Err(FrameError::Incomplete), "cut at {cut}");
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode_frame(&bad).is_err(), "flip {byte}:{bit} went unnoticed");
            }
        }
    }

    // Proves a mark round-trips, is never read as a record (nor a record as a mark), and every
    // truncation or single-bit flip of it is detected.
    #[test]
    fn marks_are_told_from_records_and_damage_is_detected() {
        let mut mark = [0u8; MARK_BYTES];
        write_mark(&mut mark, 0x0102_0304_0506_0708);
        assert_eq!(decode_mark(&mark), Ok(0x0102_0304_0506_0708));
        let mut followed = mark.to_vec();
        followed.extend_from_slice(&[0; 64]);
        assert_eq!(decode_frame(&followed), Err(FrameError::Corrupt), "the sentinel is no length");
        let mut record = Vec::new();
        encode_frame(&mut record, 9, 0, b"payload");
        assert_eq!(decode_mark(&record), Err(FrameError::Corrupt));
        for cut in 4..MARK_BYTES {
            assert_eq!(decode_mark(&mark[..cut]), Err(FrameError::Incomplete), "cut at {cut}");
        }
        for byte in 0..MARK_BYTES {
            for bit in 0..8 {
                let mut bad = mark;
                bad[byte] ^= 1 << bit;
                assert!(decode_mark(&bad).is_err(), "flip {byte}:{bit} went unnoticed");
            }
        }
    }

    // Proves a seal round-trips, is told from a mark and a record both ways, and every
    // truncation or single-bit flip of it is detected.
    #[test]
    fn seals_are_told_from_marks_and_records() {
        let mut seal = [0u8; SEAL_BYTES];
        write_seal(&mut seal, 77);
        assert_eq!(decode_seal(&seal), Ok(77));
        assert!(starts_seal(&seal) && !starts_mark(&seal));
        assert_eq!(decode_mark(&seal), Err(FrameError::Corrupt));
        assert_eq!(decode_frame(&[&seal[..], &[0; 64]].concat()), Err(FrameError::Corrupt));
        let mut mark = [0u8; MARK_BYTES];
        write_mark(&mut mark, 77);
        assert_eq!(decode_seal(&mark), Err(FrameError::Corrupt));
        for cut in 4..SEAL_BYTES {
            assert_eq!(decode_seal(&seal[..cut]), Err(FrameError::Incomplete), "cut at {cut}");
        }
        for byte in 0..SEAL_BYTES {
            for bit in 0..8 {
                let mut bad = seal;
                bad[byte] ^= 1 << bit;
                assert!(decode_seal(&bad).is_err(), "flip {byte}:{bit} went unnoticed");
            }
        }
    }
}

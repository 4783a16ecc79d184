//! Reading the log: verify every segment and record, find a torn tail, replay into a database.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lightcone_mvcc::{Database, ReadTx, TxDelta};

use crate::codec::decode_delta;
use crate::frame::{
    decode_frame, decode_mark, decode_seal, starts_mark, write_seal, Frame, FrameError, FRAME_HEADER_BYTES,
    MARK_BYTES, SEAL_BYTES,
};
use crate::segment::{list_segments, parse_header, segment_file_name, segment_header, SEGMENT_HEADER_BYTES};
use crate::WalError;

/// Where the readable log ends early: the last write was cut short, or (after a power cut) a
/// part of the unsynced tail never reached the disk while a later part did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    /// Bytes of the segment that hold whole, valid records (the header included). Below
    /// [`SEGMENT_HEADER_BYTES`], the segment's creation was cut short: it holds no record
    /// and recovery removes it.
    pub valid_bytes: u64,
    pub file_bytes: u64,
    /// Whole records found after the damage. They were never durable — no later durability
    /// mark covers the damaged record, and durability is a prefix — so nobody was answered
    /// for them; recovery drops them with the damage.
    pub records_after: u64,
}

/// What a full pass over the log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub segments: usize,
    pub records: u64,
    pub first_offset: Option<u64>,
    pub last_offset: Option<u64>,
    pub bytes: u64,
    pub torn_tail: Option<TornTail>,
    /// Bytes of the last segment holding its header and whole records: where appending
    /// resumes. Zeros after it are preallocated space (see `log.rs`), not damage.
    pub last_segment_data_bytes: u64,
}

/// Reads every record of the log in `dir` in order, handing each to `visit`, which may stop
/// the pass early. A torn or corrupt tail of the *last* segment ends the log (reported in
/// [`ScanReport::torn_tail`], nothing is changed on disk); anything wrong before it — a bad
/// header, a corrupt record, a gap in the offsets — is an error naming file and byte offset.
///
/// Where the tail starts: in a format-2 segment, after the last record a later durability
/// mark proves durable (see [`crate::frame`]) — a damaged record no mark covers was never
/// acknowledged, even if whole records follow it (a power cut can keep a later unsynced page
/// and lose an earlier one). In a format-1 segment, which has no marks, only damage with no
/// valid record after it is a tail.
///
/// A last segment whose header is cut short (a crash while it was being created, before any
/// record could go in) is a torn tail too; a sealed last segment is an error (see
/// [`crate::frame`]: the segment after it is missing).
pub fn scan(
    dir: &Path,
    mut visit: impl FnMut(&Path, u64, Frame<'_>) -> Result<ControlFlow<()>, WalError>,
) -> Result<ScanReport, WalError> {
    let segments = list_segments(dir)?;
    let mut report = ScanReport { segments: segments.len(), ..ScanReport::default() };
    let mut expected: Option<u64> = None;
    // Whether the segment before ended in a seal (whole or torn): then this one's header was
    // durable before the seal was written.
    let mut previous_sealed = false;
    for (i, (named_first, path)) in segments.iter().enumerate() {
        let last_segment = i + 1 == segments.len();
        let bytes = std::fs::read(path).map_err(|e| WalError::io(path, e))?;
        report.bytes += bytes.len() as u64;
        if let Some(expected) = expected {
            if *named_first != expected {
                return Err(WalError::MissingRecords {
                    segment: path.clone(),
                    expected,
                    found: *named_first,
                });
            }
        }
        let header = match parse_header(path, &bytes) {
            Ok(header) => header,
            Err(WalError::BadSegmentHeader { .. }) if last_segment && previous_sealed => {
                return Err(WalError::Corrupt {
                    segment: path.clone(),
                    offset: 0,
                    reason: "damaged segment header, written whole before the segment before it was sealed"
                        .into(),
                });
            }
            Err(WalError::BadSegmentHeader { .. })
                if last_segment && creation_cut_short(&bytes, *named_first) =>
            {
                // `last_segment_data_bytes` stays the previous segment's: appending resumes there.
                report.torn_tail = Some(TornTail {
                    segment: path.clone(),
                    valid_bytes: 0,
                    file_bytes: bytes.len() as u64,
                    records_after: 0,
                });
                break;
            }
            Err(e) => return Err(e),
        };
        let first = header.first_offset;
        if first != *named_first {
            return Err(WalError::Corrupt {
                segment: path.clone(),
                offset: 8,
                reason: format!("header says the first record is {first}, the file name says {named_first}"),
            });
        }
        let mut next = first;
        let mut pos = SEGMENT_HEADER_BYTES;
        let mut sealed = false;
        while pos < bytes.len() {
            if bytes[pos..].iter().all(|&b| b == 0) {
                // Preallocated space the writer had not reached yet: the segment's data ends here.
                break;
            }
            if header.has_seals
                && last_segment
                && decode_seal(&bytes[pos..]) == Ok(next)
                && pos + SEAL_BYTES == bytes.len()
            {
                // Only a whole seal counts here: a record cut off after its first bytes can
                // read like a torn one, and that is a torn tail.
                return Err(WalError::MissingSegment {
                    segment: path.clone(),
                    offset: pos as u64,
                    expected: next,
                    next_segment: segment_file_name(next),
                });
            }
            if header.has_seals && !last_segment && is_seal(&bytes[pos..], next) {
                sealed = true;
                pos = bytes.len();
                break;
            }
            let decoded = if starts_mark(&bytes[pos..]) {
                // A real mark names a transaction before the next record; one that does not is
                // damage (or bytes that only look like a mark).
                decode_mark(&bytes[pos..]).and_then(|durable| {
                    if durable < next {
                        Ok(None)
                    } else {
                        Err(FrameError::Corrupt)
                    }
                })
            } else {
                decode_frame(&bytes[pos..]).map(Some)
            };
            let frame = match decoded {
                Ok(None) => {
                    pos += MARK_BYTES;
                    continue;
                }
                Ok(Some(frame)) if frame.tx_offset == next => frame,
                Ok(Some(frame)) => {
                    return Err(WalError::Corrupt {
                        segment: path.clone(),
                        offset: pos as u64,
                        reason: format!("record for tx {} where tx {next} was expected", frame.tx_offset),
                    });
                }
                Err(_) => {
                    let proof = if !last_segment {
                        // Segments are synced whole before the next one is created.
                        Some("it is not in the last segment".to_string())
                    } else if header.has_marks {
                        mark_covering(&bytes, pos + 1, next).map(|(at, durable)| {
                            format!("the mark at byte {at} says tx {durable} was durable")
                        })
                    } else {
                        valid_record_after(&bytes, pos + 1, next)
                            .then(|| "valid records follow it".to_string())
                    };
                    if let Some(proof) = proof {
                        return Err(WalError::Corrupt {
                            segment: path.clone(),
                            offset: pos as u64,
                            reason: format!(
                                "damaged bytes where tx {next} (or the durability mark before it) \
                                 should start, and {proof}"
                            ),
                        });
                    }
                    report.torn_tail = Some(TornTail {
                        segment: path.clone(),
                        valid_bytes: pos as u64,
                        file_bytes: bytes.len() as u64,
                        records_after: records_in(&bytes[pos + 1..]),
                    });
                    break;
                }
            };
            // A checksummed record can still claim the last offset there is (crafted input).
            let after = next.checked_add(1).ok_or_else(|| WalError::Corrupt {
                segment: path.clone(),
                offset: pos as u64,
                reason: format!("tx {next} is the last offset there is; no record may have it"),
            })?;
            report.records += 1;
            report.first_offset.get_or_insert(frame.tx_offset);
            report.last_offset = Some(frame.tx_offset);
            if visit(path, pos as u64, frame)?.is_break() {
                return Ok(report);
            }
            pos += frame.encoded_len();
            next = after;
        }
        report.last_segment_data_bytes = pos as u64;
        previous_sealed = sealed;
        expected = Some(next);
    }
    Ok(report)
}

/// Whether `rest`, the bytes after a segment's last record, are its seal naming `next`: whole,
/// or torn by a power cut during its write (each byte the seal's or not yet written). Either
/// way the next segment was durable before the seal was begun (see `disk.rs`). For segments
/// with a successor only: at the end of the log, a cut-off record can look like a torn seal.
fn is_seal(rest: &[u8], next: u64) -> bool {
    let mut seal = [0u8; SEAL_BYTES];
    write_seal(&mut seal, next);
    partly_written(rest, &seal) && rest.iter().any(|&b| b != 0)
}

/// Whether `bytes` are what writing `whole` leaves when the write is cut short: no longer than
/// it, each byte either its byte or not yet written (zero).
fn partly_written(bytes: &[u8], whole: &[u8]) -> bool {
    bytes.len() <= whole.len() && bytes.iter().zip(whole).all(|(&b, &w)| b == w || b == 0)
}

/// Whether a segment's bytes are what creating it leaves when cut short: no more than its
/// header, each byte either the header's or not yet written (zero). The header is synced
/// before any record goes in (see `disk.rs`), so such a segment never held a record.
fn creation_cut_short(bytes: &[u8], named_first: u64) -> bool {
    partly_written(bytes, &segment_header(named_first))
}

/// Whether a record for tx `at_least` or later starts anywhere at or after `from`: in a
/// format-1 segment, a bad record before it is then corruption in the middle of the log.
fn valid_record_after(bytes: &[u8], from: usize, at_least: u64) -> bool {
    (from..bytes.len().saturating_sub(FRAME_HEADER_BYTES - 1))
        .any(|p| decode_frame(&bytes[p..]).is_ok_and(|f| f.tx_offset >= at_least))
}

/// The first durability mark at or after `from` saying tx `damaged` was durable: its byte
/// position and the offset it names. Such a mark makes damage to that record corruption of
/// acknowledged data, not a lost unsynced write.
///
/// Only a mark followed by what the writer puts after one — a record for a later
/// transaction, another mark, or the end of the data (the mark a clean close leaves) —
/// counts, which makes bytes inside a record's payload that happen to read as a mark count
/// even less. (A payload crafted to hold both a mark and a record could still pass: a salt
/// per segment in the mark's checksum would close that; not done.)
fn mark_covering(bytes: &[u8], from: usize, damaged: u64) -> Option<(usize, u64)> {
    (from..bytes.len().saturating_sub(MARK_BYTES - 1)).find_map(|p| match decode_mark(&bytes[p..]) {
        Ok(durable) if durable >= damaged => {
            let after = &bytes[p + MARK_BYTES..];
            let placed = after.iter().all(|&b| b == 0)
                || decode_mark(after).is_ok()
                || decode_frame(after).is_ok_and(|f| f.tx_offset > durable);
            placed.then_some((p, durable))
        }
        _ => None,
    })
}

/// Whole records in `bytes`, found by trying every position that does not fall inside one
/// already found (for the report of what a damaged tail drops).
fn records_in(bytes: &[u8]) -> u64 {
    let (mut count, mut p) = (0, 0);
    while p + FRAME_HEADER_BYTES <= bytes.len() {
        match decode_frame(&bytes[p..]) {
            Ok(frame) => {
                count += 1;
                p += frame.encoded_len();
            }
            Err(_) => p += 1,
        }
    }
    count
}

/// Decoded transactions waiting to be applied during a replay.
const REPLAY_QUEUE_DEPTH: usize = 16;

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayStats {
    pub scan: ScanReport,
    /// Transactions applied (records at or below the database's offset are skipped).
    pub applied: u64,
    pub rows_inserted: u64,
    pub rows_deleted: u64,
    pub elapsed: Duration,
}

impl ReplayStats {
    pub fn rows_per_second(&self) -> f64 {
        (self.rows_inserted + self.rows_deleted) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Progress of a long replay, reported after each record.
#[derive(Debug, Clone, Copy)]
pub struct ReplayProgress {
    pub tx_offset: u64,
    pub applied: u64,
}

/// Replays the log in `dir` into `db`, skipping records the database already holds (at or
/// below its offset) and stopping after `until` if given. The database's offsets must line up
/// with the log's: the first record applied must be the database's next offset.
pub fn replay_into(
    dir: &Path,
    db: &Database,
    until: Option<u64>,
    mut progress: impl FnMut(ReplayProgress),
) -> Result<ReplayStats, WalError> {
    let start = Instant::now();
    let mut stats = ReplayStats::default();
    let base = db.snapshot().tx_offset();
    // Two stages on two threads: reading, checking and decoding records overlaps applying
    // them. The channel is bounded, so memory stays at a few transactions in flight.
    let (send, receive) = std::sync::mpsc::sync_channel::<TxDelta>(REPLAY_QUEUE_DEPTH);
    // Applied deltas go back to the reader to be freed on the thread that allocated their
    // rows: freeing them on the applier's thread (another malloc arena) took ~25% of its time
    // (10M rows: apply 1.76 s -> 1.31-1.52 s, replay 4.6 -> 5.8-7.2 M rows/s).
    let (give_back, given_back) = std::sync::mpsc::channel::<TxDelta>();
    let (scan_result, apply_result) = std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut expected = base.saturating_add(1);
            scan(dir, |segment, offset, frame| {
                if until.is_some_and(|u| frame.tx_offset > u) {
                    return Ok(ControlFlow::Break(()));
                }
                if frame.tx_offset < expected {
                    return Ok(ControlFlow::Continue(())); // already in the database
                }
                if frame.tx_offset != expected {
                    return Err(WalError::MissingRecords {
                        segment: segment.to_path_buf(),
                        expected,
                        found: frame.tx_offset,
                    });
                }
                let delta = decode_delta(frame.payload, frame.tx_offset)
                    .map_err(|source| WalError::Decode { segment: segment.to_path_buf(), offset, source })?;
                expected += 1;
                given_back.try_iter().for_each(drop);
                // A closed channel means the applier failed; it reports why.
                Ok(if send.send(delta).is_ok() { ControlFlow::Continue(()) } else { ControlFlow::Break(()) })
            })
        });
        let mut apply = || -> Result<(), WalError> {
            for delta in receive.iter() {
                let mut tx = db.begin();
                let replay_error = |source| WalError::Replay { tx_offset: delta.tx_offset, source };
                tx.apply_delta(&delta).map_err(replay_error)?;
                tx.commit_replayed(delta.tx_offset).map_err(replay_error)?;
                stats.applied += 1;
                for t in &delta.tables {
                    stats.rows_inserted += t.inserts.len() as u64;
                    stats.rows_deleted += t.deletes.len() as u64;
                }
                progress(ReplayProgress { tx_offset: delta.tx_offset, applied: stats.applied });
                // The reader may be done already; then this delta is freed here.
                let _ = give_back.send(delta);
            }
            Ok(())
        };
        let applied = apply();
        drop(receive);
        // Invariant: the reader thread does not panic (it returns errors), so join succeeds.
        (reader.join().expect("log reader thread panicked"), applied)
    });
    apply_result?;
    stats.scan = scan_result?;
    stats.elapsed = start.elapsed();
    Ok(stats)
}

//! Module logs: every `console_log` record of one database (plus the host's own lines about
//! it), with level, timestamp and source location, kept in a bounded ring for `logs`.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records kept per database; older ones are dropped first.
pub const MAX_LOG_RECORDS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
    Panic,
}

impl LogLevel {
    /// The ABI's level numbers (`console_log`): 0 error … 4 trace, 101 panic.
    pub fn from_abi(level: u32) -> LogLevel {
        match level {
            0 => LogLevel::Error,
            1 => LogLevel::Warn,
            2 => LogLevel::Info,
            3 => LogLevel::Debug,
            101 => LogLevel::Panic,
            _ => LogLevel::Trace,
        }
    }

    /// The spelling of SpacetimeDB's JSON log records.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "Error",
            LogLevel::Warn => "Warn",
            LogLevel::Info => "Info",
            LogLevel::Debug => "Debug",
            LogLevel::Trace => "Trace",
            LogLevel::Panic => "Panic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Microseconds since the Unix epoch.
    pub ts_micros: i64,
    pub level: LogLevel,
    pub target: Option<String>,
    pub filename: Option<String>,
    pub line_number: Option<u32>,
    pub message: String,
    /// Sequence number of the record within this database's log (for `follow`).
    pub seq: u64,
}

struct Ring {
    records: VecDeque<LogRecord>,
    next_seq: u64,
}

/// The log of one database. Shared between the module's thread and readers.
pub struct ModuleLogs {
    ring: Mutex<Ring>,
    appended: Condvar,
}

impl Default for ModuleLogs {
    fn default() -> Self {
        ModuleLogs::new()
    }
}

pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

impl ModuleLogs {
    pub fn new() -> ModuleLogs {
        ModuleLogs {
            ring: Mutex::new(Ring { records: VecDeque::new(), next_seq: 0 }),
            appended: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // Records are plain data appended whole: a poisoned lock holds nothing half-written.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(
        &self,
        level: LogLevel,
        target: Option<String>,
        filename: Option<String>,
        line_number: Option<u32>,
        message: String,
    ) {
        let mut ring = self.lock();
        let seq = ring.next_seq;
        ring.next_seq += 1;
        if ring.records.len() == MAX_LOG_RECORDS {
            ring.records.pop_front();
        }
        ring.records.push_back(LogRecord {
            ts_micros: now_micros(),
            level,
            target,
            filename,
            line_number,
            message,
            seq,
        });
        drop(ring);
        self.appended.notify_all();
    }

    /// A host-side line (publish steps, errors) in the same log.
    pub fn host(&self, level: LogLevel, message: impl Into<String>) {
        self.push(level, Some("lightcone".into()), None, None, message.into());
    }

    /// The last `n` records (all if `None`).
    pub fn tail(&self, n: Option<usize>) -> Vec<LogRecord> {
        let ring = self.lock();
        let skip = n.map_or(0, |n| ring.records.len().saturating_sub(n));
        ring.records.iter().skip(skip).cloned().collect()
    }

    /// Records with `seq >= from`, waiting up to `timeout` for one to arrive.
    pub fn wait_from(&self, from: u64, timeout: Duration) -> Vec<LogRecord> {
        let mut ring = self.lock();
        if ring.next_seq <= from {
            ring = self.appended.wait_timeout(ring, timeout).unwrap_or_else(|p| p.into_inner()).0;
        }
        ring.records.iter().filter(|r| r.seq >= from).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_order_and_tails() {
        let logs = ModuleLogs::new();
        for i in 0..5 {
            logs.push(LogLevel::from_abi(i), None, Some("src/lib.rs".into()), Some(i), format!("m{i}"));
        }
        let tail = logs.tail(Some(2));
        assert_eq!(tail.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), ["m3", "m4"]);
        assert_eq!(tail[1].level, LogLevel::Trace);
        assert_eq!(logs.tail(None).len(), 5);
        assert_eq!(logs.wait_from(4, Duration::from_millis(1)).len(), 1);
        assert!(logs.wait_from(5, Duration::from_millis(1)).is_empty());
    }
}

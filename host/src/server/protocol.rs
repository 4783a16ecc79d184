//! SpacetimeDB's v2/v3 BSATN WebSocket messages (SPEC §6): decoding client messages and
//! encoding server messages. Written from the fact sheet; no upstream code.

use crate::codec::{CodecError, Reader};

/// Largest client message accepted (SPEC §6).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 32 << 20;
/// Most queries in one `Subscribe`.
pub const MAX_QUERIES_PER_SUBSCRIBE: usize = 4096;

/// A decoded client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Subscribe { request_id: u32, query_set_id: u32, queries: Vec<String> },
    Unsubscribe { request_id: u32, query_set_id: u32, send_dropped_rows: bool },
    OneOffQuery { request_id: u32, query: String },
    CallReducer { request_id: u32, reducer: String, args: Vec<u8> },
    CallProcedure { request_id: u32, procedure: String, args: Vec<u8> },
}

fn string(r: &mut Reader<'_>, what: &str) -> Result<String, CodecError> {
    let n = r.u32(what)? as usize;
    let at = r.pos;
    let b = r.take(n, what)?;
    String::from_utf8(b.to_vec()).map_err(|e| CodecError::Invalid { at, reason: format!("{what}: {e}") })
}

fn bytes(r: &mut Reader<'_>, what: &str) -> Result<Vec<u8>, CodecError> {
    let n = r.u32(what)? as usize;
    Ok(r.take(n, what)?.to_vec())
}

/// Decodes every message in `buf` (v3 may concatenate several; v2 sends exactly one).
pub fn decode_client_messages(buf: &[u8], allow_many: bool) -> Result<Vec<ClientMessage>, CodecError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    loop {
        out.push(decode_one(&mut r)?);
        if r.remaining() == 0 {
            return Ok(out);
        }
        if !allow_many {
            return Err(CodecError::Trailing { extra: r.remaining(), what: "client message".into() });
        }
    }
}

fn decode_one(r: &mut Reader<'_>) -> Result<ClientMessage, CodecError> {
    let at = r.pos;
    Ok(match r.u8("message tag")? {
        0 => {
            let request_id = r.u32("request_id")?;
            let query_set_id = r.u32("query_set_id")?;
            let n = r.u32("query count")? as usize;
            if n > MAX_QUERIES_PER_SUBSCRIBE {
                return Err(CodecError::Invalid { at, reason: format!("{n} queries in one Subscribe") });
            }
            let queries = (0..n).map(|_| string(r, "query")).collect::<Result<_, _>>()?;
            ClientMessage::Subscribe { request_id, query_set_id, queries }
        }
        1 => {
            let request_id = r.u32("request_id")?;
            let query_set_id = r.u32("query_set_id")?;
            let flags_at = r.pos;
            let send_dropped_rows = match r.u8("unsubscribe flags")? {
                0 => false,
                1 => true,
                f => {
                    return Err(CodecError::Invalid {
                        at: flags_at,
                        reason: format!("unsubscribe flags {f}"),
                    })
                }
            };
            ClientMessage::Unsubscribe { request_id, query_set_id, send_dropped_rows }
        }
        2 => ClientMessage::OneOffQuery { request_id: r.u32("request_id")?, query: string(r, "query")? },
        3 => {
            let request_id = r.u32("request_id")?;
            let _flags = r.u8("call flags")?;
            let reducer = string(r, "reducer")?;
            let args = bytes(r, "args")?;
            ClientMessage::CallReducer { request_id, reducer, args }
        }
        4 => {
            let request_id = r.u32("request_id")?;
            let _flags = r.u8("call flags")?;
            let procedure = string(r, "procedure")?;
            let args = bytes(r, "args")?;
            ClientMessage::CallProcedure { request_id, procedure, args }
        }
        t => return Err(CodecError::Invalid { at, reason: format!("unknown client message tag {t}") }),
    })
}

/// A BSATN writer.
#[derive(Default)]
pub struct W(pub Vec<u8>);

impl W {
    pub fn new() -> W {
        W(Vec::new())
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// Length-prefixed bytes (also `String`).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.raw(b)
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
}

/// `BsatnRowList` of rows already encoded back to back, with each row's end offset.
pub fn row_list(w: &mut W, data: &[u8], ends: &[usize]) {
    let mut fixed = None;
    let mut start = 0;
    for &e in ends {
        let len = e - start;
        match fixed {
            None => fixed = Some(len),
            Some(f) if f == len => {}
            Some(_) => {
                fixed = Some(usize::MAX);
            }
        }
        start = e;
    }
    match fixed {
        Some(len) if len != usize::MAX && len <= u16::MAX as usize && len > 0 => {
            w.u8(0).u16(len as u16);
        }
        _ => {
            w.u8(1).u32(ends.len() as u32);
            let mut start = 0;
            for &e in ends {
                w.u64(start as u64);
                start = e;
            }
        }
    }
    w.bytes(data);
}

/// A server→client frame: the compression byte (0 = none) and the message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(message.len() + 1);
    f.push(0);
    f.extend_from_slice(message);
    f
}

pub fn initial_connection(identity_le: &[u8; 32], connection_id_le: &[u8; 16], token: &str) -> Vec<u8> {
    let mut w = W::new();
    w.u8(0).raw(identity_le).raw(connection_id_le).str(token);
    w.0
}

/// One table's rows for `QueryRows`: table name, rows encoded back to back, each row's end.
pub type EncodedTable = (String, Vec<u8>, Vec<usize>);

/// `QueryRows` from `(table name, encoded rows, row ends)`.
pub fn query_rows(w: &mut W, tables: &[EncodedTable]) {
    w.u32(tables.len() as u32);
    for (name, data, ends) in tables {
        w.str(name);
        row_list(w, data, ends);
    }
}

pub fn subscribe_applied(request_id: u32, query_set_id: u32, tables: &[EncodedTable]) -> Vec<u8> {
    let mut w = W::new();
    w.u8(1).u32(request_id).u32(query_set_id);
    query_rows(&mut w, tables);
    w.0
}

pub fn unsubscribe_applied(request_id: u32, query_set_id: u32, rows: Option<&[EncodedTable]>) -> Vec<u8> {
    let mut w = W::new();
    w.u8(2).u32(request_id).u32(query_set_id);
    match rows {
        Some(t) => {
            w.u8(0);
            query_rows(&mut w, t);
        }
        None => {
            w.u8(1);
        }
    }
    w.0
}

pub fn subscription_error(request_id: Option<u32>, query_set_id: u32, error: &str) -> Vec<u8> {
    let mut w = W::new();
    w.u8(3);
    match request_id {
        Some(r) => w.u8(0).u32(r),
        None => w.u8(1),
    };
    w.u32(query_set_id).str(error);
    w.0
}

pub fn one_off_result(request_id: u32, result: Result<&[EncodedTable], &str>) -> Vec<u8> {
    let mut w = W::new();
    w.u8(5).u32(request_id);
    match result {
        Ok(t) => {
            w.u8(0);
            query_rows(&mut w, t);
        }
        Err(e) => {
            w.u8(1).str(e);
        }
    }
    w.0
}

/// How a reducer call ended, for `ReducerResult`.
pub enum ReducerResultKind<'a> {
    /// Committed, with the caller's encoded `TransactionUpdate` struct.
    Ok(&'a [u8]),
    OkEmpty,
    /// The reducer's `Err` text (sent as a BSATN string).
    Err(&'a str),
    InternalError(&'a str),
}

pub fn reducer_result(request_id: u32, timestamp_micros: i64, result: ReducerResultKind<'_>) -> Vec<u8> {
    let mut w = W::new();
    w.u8(6).u32(request_id).i64(timestamp_micros);
    match result {
        ReducerResultKind::Ok(update) => {
            w.u8(0).bytes(&[]).raw(update);
        }
        ReducerResultKind::OkEmpty => {
            w.u8(1);
        }
        ReducerResultKind::Err(m) => {
            let mut s = W::new();
            s.str(m);
            w.u8(2).bytes(&s.0);
        }
        ReducerResultKind::InternalError(m) => {
            w.u8(3).str(m);
        }
    }
    w.0
}

/// `ProcedureResult{status, timestamp, total_host_execution_duration, request_id}`; status is
/// `Returned(BSATN of the value)` or `InternalError(message)`.
pub fn procedure_result(
    request_id: u32,
    timestamp_micros: i64,
    duration_micros: i64,
    result: Result<&[u8], &str>,
) -> Vec<u8> {
    let mut w = W::new();
    w.u8(7);
    match result {
        Ok(value) => w.u8(0).bytes(value),
        Err(message) => w.u8(1).str(message),
    };
    w.i64(timestamp_micros).i64(duration_micros).u32(request_id);
    w.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_decode_and_garbage_is_refused() {
        let mut w = W::new();
        w.u8(0).u32(7).u32(1).u32(2).str("SELECT * FROM a").str("SELECT * FROM b");
        w.u8(3).u32(8).u8(0).str("send").bytes(&[1, 2]);
        let msgs = decode_client_messages(&w.0, true).unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[0],
            ClientMessage::Subscribe {
                request_id: 7,
                query_set_id: 1,
                queries: vec!["SELECT * FROM a".into(), "SELECT * FROM b".into()]
            }
        );
        assert!(decode_client_messages(&w.0, false).is_err(), "v2 frames hold one message");
        assert!(decode_client_messages(&[9], true).is_err());
        assert!(decode_client_messages(&[0, 1, 0], true).is_err());
        assert!(decode_client_messages(&[], true).is_err());
    }

    #[test]
    fn row_lists_pick_fixed_size_or_offsets() {
        let mut w = W::new();
        row_list(&mut w, &[1, 2, 3, 4], &[2, 4]);
        assert_eq!(w.0, [0, 2, 0, 4, 0, 0, 0, 1, 2, 3, 4]);
        let mut w = W::new();
        row_list(&mut w, &[1, 2, 3], &[1, 3]);
        assert_eq!(&w.0[..5], &[1, 2, 0, 0, 0]);
        let mut w = W::new();
        row_list(&mut w, &[], &[]);
        assert_eq!(w.0, [1, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}

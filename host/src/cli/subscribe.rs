//! `lightcone subscribe`: a WebSocket client speaking SpacetimeDB's v2 BSATN protocol
//! (`v2.bsatn.spacetimedb`, no compression), printing each update as one JSON line
//! `{"<table>": {"deletes": [row…], "inserts": [row…]}}` with rows keyed by column name.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use spacetimedb_sats::de::DeserializeSeed;
use spacetimedb_sats::{bsatn, AlgebraicType, ProductValue};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

use super::client::{encode_segment, Client};
use super::error::CliError;
use super::schema::SchemaInfo;

/// The subprotocol offered.
pub const SUBPROTOCOL: &str = "v2.bsatn.spacetimedb";

/// A BSATN cursor for the few server messages the CLI reads.
pub struct Reader<'a> {
    buf: &'a [u8],
}

fn short() -> CliError {
    CliError::WebSocket("a server message ended early".into())
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CliError> {
        if self.buf.len() < n {
            return Err(short());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, CliError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, CliError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| short())?))
    }
    pub fn u32(&mut self) -> Result<u32, CliError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| short())?))
    }
    pub fn u64(&mut self) -> Result<u64, CliError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| short())?))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], CliError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn string(&mut self) -> Result<String, CliError> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
    fn len(&mut self) -> Result<usize, CliError> {
        let n = self.u32()? as usize;
        // Every element takes at least one byte: a count past the data is corrupt.
        if n > self.buf.len() {
            return Err(short());
        }
        Ok(n)
    }
}

/// A `BsatnRowList` split into rows.
pub fn read_row_list<'a>(r: &mut Reader<'a>) -> Result<Vec<&'a [u8]>, CliError> {
    enum Hint {
        Fixed(u16),
        Offsets(Vec<u64>),
    }
    let hint = match r.u8()? {
        0 => Hint::Fixed(r.u16()?),
        1 => {
            let n = r.u32()? as usize;
            if n.saturating_mul(8) > r.buf.len() {
                return Err(short());
            }
            Hint::Offsets((0..n).map(|_| r.u64()).collect::<Result<_, _>>()?)
        }
        t => return Err(CliError::WebSocket(format!("unknown row size hint tag {t}"))),
    };
    let data = r.bytes()?;
    let bad = || CliError::WebSocket("a row list's offsets do not fit its data".into());
    match hint {
        Hint::Fixed(0) if data.is_empty() => Ok(Vec::new()),
        Hint::Fixed(0) => Err(bad()),
        Hint::Fixed(size) => {
            if data.len() % size as usize != 0 {
                return Err(bad());
            }
            Ok(data.chunks(size as usize).collect())
        }
        Hint::Offsets(offsets) => {
            let mut rows = Vec::with_capacity(offsets.len());
            for (i, &start) in offsets.iter().enumerate() {
                let end = offsets.get(i + 1).copied().unwrap_or(data.len() as u64);
                if start > end || end > data.len() as u64 {
                    return Err(bad());
                }
                rows.push(&data[start as usize..end as usize]);
            }
            Ok(rows)
        }
    }
}

/// One table's rows in an update.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableRows {
    pub table: String,
    pub inserts: Vec<Vec<u8>>,
    pub deletes: Vec<Vec<u8>>,
}

/// The server messages the CLI acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    InitialConnection {
        identity_hex: String,
    },
    SubscribeApplied {
        query_set_id: u32,
        tables: Vec<TableRows>,
    },
    SubscriptionError {
        query_set_id: u32,
        error: String,
    },
    TransactionUpdate {
        query_sets: Vec<(u32, Vec<TableRows>)>,
    },
    /// Any other message (unsubscribe, one-off query, reducer or procedure results).
    Other(u8),
}

fn read_query_rows(r: &mut Reader<'_>) -> Result<Vec<TableRows>, CliError> {
    let n = r.len()?;
    let mut tables = Vec::with_capacity(n);
    for _ in 0..n {
        let table = r.string()?;
        let inserts = read_row_list(r)?.into_iter().map(<[u8]>::to_vec).collect();
        tables.push(TableRows { table, inserts, deletes: Vec::new() });
    }
    Ok(tables)
}

/// Decodes one v2 `ServerMessage` (the frame's payload after the compression byte).
pub fn decode_server_message(payload: &[u8]) -> Result<ServerMessage, CliError> {
    let mut r = Reader::new(payload);
    let tag = r.u8()?;
    Ok(match tag {
        0 => {
            let mut id = r.take(32)?.to_vec();
            id.reverse();
            ServerMessage::InitialConnection { identity_hex: hex::encode(id) }
        }
        1 => {
            let _request_id = r.u32()?;
            let query_set_id = r.u32()?;
            ServerMessage::SubscribeApplied { query_set_id, tables: read_query_rows(&mut r)? }
        }
        3 => {
            let _request_id = match r.u8()? {
                0 => Some(r.u32()?),
                _ => None,
            };
            let query_set_id = r.u32()?;
            ServerMessage::SubscriptionError { query_set_id, error: r.string()? }
        }
        4 => {
            let n = r.len()?;
            let mut query_sets = Vec::with_capacity(n);
            for _ in 0..n {
                let query_set_id = r.u32()?;
                let ntables = r.len()?;
                let mut tables = Vec::with_capacity(ntables);
                for _ in 0..ntables {
                    let mut t = TableRows { table: r.string()?, ..TableRows::default() };
                    let nrows = r.len()?;
                    for _ in 0..nrows {
                        match r.u8()? {
                            0 => {
                                t.inserts.extend(read_row_list(&mut r)?.into_iter().map(<[u8]>::to_vec));
                                t.deletes.extend(read_row_list(&mut r)?.into_iter().map(<[u8]>::to_vec));
                            }
                            1 => t.inserts.extend(read_row_list(&mut r)?.into_iter().map(<[u8]>::to_vec)),
                            t => return Err(CliError::WebSocket(format!("unknown table update tag {t}"))),
                        }
                    }
                    tables.push(t);
                }
                query_sets.push((query_set_id, tables));
            }
            ServerMessage::TransactionUpdate { query_sets }
        }
        other => ServerMessage::Other(other),
    })
}

/// BSATN of `ClientMessage::Subscribe{request_id, query_set_id, query_strings}`.
pub fn encode_subscribe(request_id: u32, query_set_id: u32, queries: &[String]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&query_set_id.to_le_bytes());
    out.extend_from_slice(&(queries.len() as u32).to_le_bytes());
    for q in queries {
        out.extend_from_slice(&(q.len() as u32).to_le_bytes());
        out.extend_from_slice(q.as_bytes());
    }
    out
}

/// Decodes one row of `table` and renders it as a JSON object keyed by column name (values in
/// SATS-JSON).
pub fn row_to_json(schema: &SchemaInfo, table: &str, row: &[u8]) -> Result<Value, CliError> {
    let t = schema.table(table).ok_or_else(|| {
        CliError::BadResponse(format!("rows for table `{table}`, which the schema does not have"))
    })?;
    let ts = &schema.typespace;
    let mut bytes = row;
    let value: ProductValue = ts
        .with_type(&t.columns)
        .deserialize(bsatn::Deserializer::new(&mut bytes))
        .map_err(|e| CliError::BadResponse(format!("a `{table}` row does not decode: {e}")))?;
    let mut obj = Map::new();
    for (i, (e, v)) in t.columns.elements.iter().zip(value.elements.iter()).enumerate() {
        let name = e.name.as_deref().map(str::to_owned).unwrap_or_else(|| format!("{i}"));
        let typed = ts.with_type::<AlgebraicType>(&e.algebraic_type).with_value(v);
        let json = serde_json::to_value(spacetimedb_sats::serde::SerdeWrapper(typed))
            .map_err(|e| CliError::BadResponse(format!("rendering a `{table}` row: {e}")))?;
        obj.insert(name, json);
    }
    Ok(Value::Object(obj))
}

/// One update as the JSON line the CLI prints.
pub fn update_to_json(schema: &SchemaInfo, tables: &[TableRows]) -> Result<Value, CliError> {
    let mut out = Map::new();
    for t in tables {
        let rows = |rs: &[Vec<u8>]| -> Result<Vec<Value>, CliError> {
            rs.iter().map(|r| row_to_json(schema, &t.table, r)).collect()
        };
        let entry = out.entry(t.table.clone()).or_insert_with(|| {
            let mut m = Map::new();
            m.insert("deletes".into(), Value::Array(Vec::new()));
            m.insert("inserts".into(), Value::Array(Vec::new()));
            Value::Object(m)
        });
        if let Value::Object(m) = entry {
            if let Some(Value::Array(d)) = m.get_mut("deletes") {
                d.extend(rows(&t.deletes)?);
            }
            if let Some(Value::Array(i)) = m.get_mut("inserts") {
                i.extend(rows(&t.inserts)?);
            }
        }
    }
    Ok(Value::Object(out))
}

/// What `subscribe` was asked for.
pub struct SubscribeOptions {
    pub queries: Vec<String>,
    pub num_updates: Option<u32>,
    pub timeout: Option<Duration>,
    pub print_initial_update: bool,
}

/// Subscribes and prints updates until `num_updates` were printed or `timeout` passes.
pub fn run_subscribe(
    client: &Client,
    db: &str,
    schema: &SchemaInfo,
    options: &SubscribeOptions,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let started = Instant::now();
    let deadline = options.timeout.map(|t| started + t);
    let http_url = client.url(&format!("/database/{}/subscribe?compression=None", encode_segment(db)));
    let ws_url = if let Some(rest) = http_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Err(CliError::WebSocket("only http:// servers are supported by this build".into()));
    };
    let mut request = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| CliError::WebSocket(format!("bad URL {ws_url}: {e}")))?;
    let authority = request.uri().authority().map(|a| a.to_string()).unwrap_or_default();
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        SUBPROTOCOL.parse().map_err(|_| CliError::WebSocket("bad header".into()))?,
    );
    if let Some(token) = client.token() {
        headers.insert(
            "Authorization",
            format!("Bearer {token}").parse().map_err(|_| {
                CliError::InvalidArgument("the stored token is not a valid header value".into())
            })?,
        );
    }
    let unreachable = |reason: String| CliError::Unreachable { server: client.server().to_owned(), reason };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("host not found".into()))?;
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| unreachable(e.to_string()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let (mut socket, _response) = tungstenite::client(request, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body =
                resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            CliError::Http { status, body }
        }
        other => CliError::WebSocket(format!("handshake: {other}")),
    })?;
    socket
        .send(Message::binary(encode_subscribe(1, 1, &options.queries)))
        .map_err(|e| CliError::WebSocket(format!("sending the subscription: {e}")))?;

    let mut printed = 0u32;
    let mut applied = false;
    let result = loop {
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(w) if !w.is_zero() => Some(w),
                _ => break Ok(()),
            },
            None => None,
        };
        socket.get_mut().set_read_timeout(wait).ok();
        let msg = match socket.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                continue;
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                break Err(CliError::WebSocket("the server closed the connection".into()));
            }
            Err(e) => break Err(CliError::WebSocket(e.to_string())),
        };
        let data = match msg {
            Message::Binary(b) => b,
            Message::Close(frame) => {
                let why = frame.map(|f| format!(": {}", f.reason)).unwrap_or_default();
                break Err(CliError::WebSocket(format!("the server closed the connection{why}")));
            }
            Message::Text(_) => break Err(CliError::WebSocket("unexpected text frame".into())),
            _ => continue,
        };
        let Some((&compression, payload)) = data.split_first() else {
            break Err(CliError::WebSocket("an empty frame".into()));
        };
        if compression != 0 {
            break Err(CliError::WebSocket(format!("the server compressed a message (tag {compression})")));
        }
        let message = match decode_server_message(payload) {
            Ok(m) => m,
            Err(e) => break Err(e),
        };
        let print = |out: &mut dyn Write, tables: &[TableRows]| -> Result<(), CliError> {
            let json = update_to_json(schema, tables)?;
            writeln!(out, "{json}").and_then(|_| out.flush()).map_err(|e| CliError::Aborted(e.to_string()))
        };
        match message {
            ServerMessage::SubscribeApplied { query_set_id: 1, tables } => {
                applied = true;
                if options.print_initial_update {
                    if let Err(e) = print(out, &tables) {
                        break Err(e);
                    }
                }
                if options.num_updates == Some(0) {
                    break Ok(());
                }
            }
            ServerMessage::SubscriptionError { error, .. } => break Err(CliError::Subscription(error)),
            ServerMessage::TransactionUpdate { query_sets } if applied => {
                let tables: Vec<TableRows> =
                    query_sets.into_iter().filter(|(id, _)| *id == 1).flat_map(|(_, t)| t).collect();
                if tables.is_empty() {
                    continue;
                }
                if let Err(e) = print(out, &tables) {
                    break Err(e);
                }
                printed += 1;
                if options.num_updates.is_some_and(|n| printed >= n) {
                    break Ok(());
                }
            }
            _ => {}
        }
    };
    let _ = socket.close(None);
    let _ = socket.flush();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_list_offsets(rows: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![1u8];
        out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
        let mut off = 0u64;
        for r in rows {
            out.extend_from_slice(&off.to_le_bytes());
            off += r.len() as u64;
        }
        let data: Vec<u8> = rows.concat();
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn decodes_subscribe_applied_and_transaction_update() {
        let mut m = vec![1u8];
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&3u32.to_le_bytes());
        m.extend_from_slice(b"msg");
        m.extend_from_slice(&row_list_offsets(&[b"ab", b"c"]));
        let ServerMessage::SubscribeApplied { query_set_id: 1, tables } = decode_server_message(&m).unwrap()
        else {
            panic!()
        };
        assert_eq!(tables[0].table, "msg");
        assert_eq!(tables[0].inserts, vec![b"ab".to_vec(), b"c".to_vec()]);

        let mut m = vec![4u8];
        m.extend_from_slice(&1u32.to_le_bytes()); // one query set
        m.extend_from_slice(&7u32.to_le_bytes());
        m.extend_from_slice(&1u32.to_le_bytes()); // one table
        m.extend_from_slice(&3u32.to_le_bytes());
        m.extend_from_slice(b"msg");
        m.extend_from_slice(&1u32.to_le_bytes()); // one TableUpdateRows
        m.push(0);
        m.extend_from_slice(&[0, 2, 0, 4, 0, 0, 0, 1, 2, 3, 4]); // inserts: fixed size 2
        m.extend_from_slice(&row_list_offsets(&[])); // deletes
        let ServerMessage::TransactionUpdate { query_sets } = decode_server_message(&m).unwrap() else {
            panic!()
        };
        assert_eq!(query_sets[0].0, 7);
        assert_eq!(query_sets[0].1[0].inserts, vec![vec![1, 2], vec![3, 4]]);
        assert!(query_sets[0].1[0].deletes.is_empty());

        assert!(decode_server_message(&m[..m.len() - 3]).is_err());
        assert!(decode_server_message(&[]).is_err());
    }

    #[test]
    fn subscribe_message_encoding() {
        let b = encode_subscribe(1, 2, &["SELECT 1".to_owned()]);
        assert_eq!(b[0], 0);
        assert_eq!(&b[1..5], &1u32.to_le_bytes());
        assert_eq!(&b[5..9], &2u32.to_le_bytes());
        assert_eq!(&b[9..13], &1u32.to_le_bytes());
        assert_eq!(&b[13..17], &8u32.to_le_bytes());
        assert_eq!(&b[17..], b"SELECT 1");
    }
}

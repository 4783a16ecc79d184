//! The binary encoding of a [`TxDelta`] inside a log record.
//!
//! Self-describing (every value carries its type tag) so a record decodes without the catalog,
//! little-endian, versioned by a leading byte. Decoding never panics and never allocates more
//! than the input could describe: every count is checked against the bytes that remain.

use lightcone_mvcc::{
    ColumnDef, ColumnType, IndexAlgorithm, IndexDef, Row, SequenceDef, SequenceUpdate, TableDef, TableDelta,
    TableSchema, TxDelta, Value, I256, U256,
};

/// Version byte at the start of every payload without dropped tables (the layout every
/// earlier log was written in, kept byte for byte).
const FORMAT_VERSION: u8 = 1;
/// Version byte of a payload that drops tables: version 1 preceded by the dropped table ids.
const FORMAT_VERSION_WITH_DROPS: u8 = 2;

/// Why a payload could not be decoded. Positions are byte offsets within the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload ends early at byte {at} (needed {needed} more)")]
    UnexpectedEnd { at: usize, needed: usize },
    #[error("unknown payload format version {0}")]
    UnknownVersion(u8),
    #[error("unknown {what} tag {tag} at byte {at}")]
    BadTag { what: &'static str, tag: u8, at: usize },
    #[error("invalid UTF-8 in a string at byte {at}")]
    BadUtf8 { at: usize },
    #[error("count {count} at byte {at} exceeds what the remaining {remaining} bytes can hold")]
    BadCount { count: usize, at: usize, remaining: usize },
    #[error("{0} trailing bytes after the payload")]
    TrailingBytes(usize),
}

/// Appends the encoding of `delta` (without its `tx_offset`, which the record frame carries).
pub fn encode_delta(out: &mut Vec<u8>, delta: &TxDelta) {
    if delta.dropped_tables.is_empty() {
        out.push(FORMAT_VERSION);
    } else {
        out.push(FORMAT_VERSION_WITH_DROPS);
        put_u32(out, delta.dropped_tables.len() as u32);
        for &id in &delta.dropped_tables {
            put_u32(out, id);
        }
    }
    put_u32(out, delta.created_tables.len() as u32);
    for schema in &delta.created_tables {
        encode_schema(out, schema);
    }
    put_u32(out, delta.tables.len() as u32);
    for t in &delta.tables {
        put_u32(out, t.table_id);
        encode_rows(out, &t.deletes);
        encode_rows(out, &t.inserts);
    }
    put_u32(out, delta.sequences.len() as u32);
    for s in &delta.sequences {
        put_u32(out, s.table_id);
        put_u32(out, s.sequence as u32);
        encode_opt_i128(out, s.next);
    }
}

/// Decodes a payload written by [`encode_delta`]; `tx_offset` comes from the frame.
pub fn decode_delta(bytes: &[u8], tx_offset: u64) -> Result<TxDelta, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let version = r.u8()?;
    let mut delta = TxDelta { tx_offset, ..TxDelta::default() };
    match version {
        FORMAT_VERSION => {}
        FORMAT_VERSION_WITH_DROPS => {
            for _ in 0..r.count(4)? {
                delta.dropped_tables.push(r.u32()?);
            }
        }
        _ => return Err(DecodeError::UnknownVersion(version)),
    }
    for _ in 0..r.count(1)? {
        delta.created_tables.push(decode_schema(&mut r)?);
    }
    for _ in 0..r.count(12)? {
        let table_id = r.u32()?;
        let deletes = decode_rows(&mut r)?;
        let inserts = decode_rows(&mut r)?;
        delta.tables.push(TableDelta { table_id, inserts, deletes });
    }
    for _ in 0..r.count(9)? {
        let table_id = r.u32()?;
        let sequence = r.u32()? as usize;
        let next = decode_opt_i128(&mut r)?;
        delta.sequences.push(SequenceUpdate { table_id, sequence, next });
    }
    if r.pos != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - r.pos));
    }
    Ok(delta)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn type_tag(ty: ColumnType) -> u8 {
    ty as u8
}

fn tag_type(tag: u8) -> Option<ColumnType> {
    ColumnType::ALL.get(tag as usize).copied()
}

fn encode_rows(out: &mut Vec<u8>, rows: &[Row]) {
    put_u32(out, rows.len() as u32);
    for row in rows {
        encode_row(out, row);
    }
}

/// Appends sequence counters (`None` = exhausted), as snapshots store them.
pub fn encode_sequence_counters(out: &mut Vec<u8>, counters: &[Option<i128>]) {
    put_u16(out, counters.len() as u16);
    for c in counters {
        encode_opt_i128(out, *c);
    }
}

/// Decodes counters written by [`encode_sequence_counters`]; returns them and the bytes taken.
pub fn decode_sequence_counters_prefix(bytes: &[u8]) -> Result<(Vec<Option<i128>>, usize), DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let n = r.u16()? as usize;
    r.check_count(n, 1)?;
    let mut counters = Vec::with_capacity(n);
    for _ in 0..n {
        counters.push(decode_opt_i128(&mut r)?);
    }
    Ok((counters, r.pos))
}

fn encode_opt_i128(out: &mut Vec<u8>, v: Option<i128>) {
    match v {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        None => out.push(0),
    }
}

fn decode_opt_i128(r: &mut Reader<'_>) -> Result<Option<i128>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.i128()?)),
        tag => Err(DecodeError::BadTag { what: "optional integer", tag, at: r.pos - 1 }),
    }
}

/// Appends one self-describing row.
pub fn encode_row(out: &mut Vec<u8>, row: &[Value]) {
    put_u16(out, row.len() as u16);
    for v in row {
        out.push(type_tag(v.column_type()));
        match v {
            Value::Bool(b) => out.push(*b as u8),
            Value::U8(x) => out.push(*x),
            Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::U128(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::U256(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I128(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I256(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::String(s) => put_bytes(out, s.as_bytes()),
            Value::Bytes(b) | Value::Bsatn(b) => put_bytes(out, b),
        }
    }
}

fn decode_rows(r: &mut Reader<'_>) -> Result<Vec<Row>, DecodeError> {
    // A row takes at least its 2-byte length.
    let n = r.count(2)?;
    let mut rows = Vec::with_capacity(n);
    for _ in 0..n {
        rows.push(decode_row(r)?);
    }
    Ok(rows)
}

fn decode_value(r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    let at = r.pos;
    let tag = r.u8()?;
    let ty = tag_type(tag).ok_or(DecodeError::BadTag { what: "value type", tag, at })?;
    Ok(match ty {
        ColumnType::Bool => match r.u8()? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            tag => return Err(DecodeError::BadTag { what: "bool", tag, at: r.pos - 1 }),
        },
        ColumnType::U8 => Value::U8(r.u8()?),
        ColumnType::U16 => Value::U16(r.u16()?),
        ColumnType::U32 => Value::U32(r.u32()?),
        ColumnType::U64 => Value::U64(u64::from_le_bytes(r.array()?)),
        ColumnType::U128 => Value::U128(u128::from_le_bytes(r.array()?)),
        ColumnType::U256 => Value::U256(U256::from_le_bytes(r.array()?)),
        ColumnType::I8 => Value::I8(i8::from_le_bytes(r.array()?)),
        ColumnType::I16 => Value::I16(i16::from_le_bytes(r.array()?)),
        ColumnType::I32 => Value::I32(i32::from_le_bytes(r.array()?)),
        ColumnType::I64 => Value::I64(i64::from_le_bytes(r.array()?)),
        ColumnType::I128 => Value::I128(r.i128()?),
        ColumnType::I256 => Value::I256(I256::from_le_bytes(r.array()?)),
        ColumnType::F32 => Value::F32(f32::from_le_bytes(r.array()?)),
        ColumnType::F64 => Value::F64(f64::from_le_bytes(r.array()?)),
        ColumnType::String => Value::String(r.string()?.into()),
        ColumnType::Bytes => Value::Bytes(r.bytes()?.into()),
        ColumnType::Bsatn => Value::Bsatn(r.bytes()?.into()),
    })
}

/// Appends a table schema (with its ids).
pub fn encode_schema(out: &mut Vec<u8>, schema: &TableSchema) {
    let def = &schema.def;
    put_u32(out, schema.id);
    put_bytes(out, def.name.as_bytes());
    out.push(def.public as u8);
    put_u16(out, def.columns.len() as u16);
    for c in &def.columns {
        put_bytes(out, c.name.as_bytes());
        out.push(type_tag(c.ty));
    }
    put_u16(out, def.indexes.len() as u16);
    for (idx, &id) in def.indexes.iter().zip(&schema.index_ids) {
        put_bytes(out, idx.name.as_bytes());
        put_u16(out, idx.columns.len() as u16);
        for &c in &idx.columns {
            put_u16(out, c);
        }
        out.push(idx.unique as u8);
        out.push(match idx.algorithm {
            IndexAlgorithm::BTree => 0,
            IndexAlgorithm::Hash => 1,
            IndexAlgorithm::Direct => 2,
        });
        put_u32(out, id);
    }
    match def.primary_key {
        Some(pk) => {
            out.push(1);
            put_u16(out, pk);
        }
        None => out.push(0),
    }
    put_u16(out, def.sequences.len() as u16);
    for s in &def.sequences {
        put_u16(out, s.column);
        for v in [s.start, s.increment, s.min, s.max] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Decodes one schema from the start of `bytes`; returns it and the bytes it took.
pub fn decode_schema_prefix(bytes: &[u8]) -> Result<(TableSchema, usize), DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let schema = decode_schema(&mut r)?;
    Ok((schema, r.pos))
}

/// Decodes one row from the start of `bytes`; returns it and the bytes it took.
pub fn decode_row_prefix(bytes: &[u8]) -> Result<(Row, usize), DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let row = decode_row(&mut r)?;
    Ok((row, r.pos))
}

fn decode_row(r: &mut Reader<'_>) -> Result<Row, DecodeError> {
    let len = r.u16()? as usize;
    // A value takes at least its tag and one byte.
    r.check_count(len, 2)?;
    let mut row = Vec::with_capacity(len);
    for _ in 0..len {
        row.push(decode_value(r)?);
    }
    Ok(row)
}

fn decode_schema(r: &mut Reader<'_>) -> Result<TableSchema, DecodeError> {
    let id = r.u32()?;
    let name = r.string()?.to_string();
    let public = r.flag("public")?;
    let ncols = r.u16()? as usize;
    r.check_count(ncols, 5)?;
    let mut columns = Vec::with_capacity(ncols);
    for _ in 0..ncols {
        let name = r.string()?.to_string();
        let at = r.pos;
        let tag = r.u8()?;
        let ty = tag_type(tag).ok_or(DecodeError::BadTag { what: "column type", tag, at })?;
        columns.push(ColumnDef { name, ty });
    }
    let nidx = r.u16()? as usize;
    r.check_count(nidx, 12)?;
    let mut indexes = Vec::with_capacity(nidx);
    let mut index_ids = Vec::with_capacity(nidx);
    for _ in 0..nidx {
        let name = r.string()?.to_string();
        let n = r.u16()? as usize;
        r.check_count(n, 2)?;
        let mut cols = Vec::with_capacity(n);
        for _ in 0..n {
            cols.push(r.u16()?);
        }
        let unique = r.flag("unique")?;
        let at = r.pos;
        let algorithm = match r.u8()? {
            0 => IndexAlgorithm::BTree,
            1 => IndexAlgorithm::Hash,
            2 => IndexAlgorithm::Direct,
            tag => return Err(DecodeError::BadTag { what: "index algorithm", tag, at }),
        };
        indexes.push(IndexDef { name, columns: cols, unique, algorithm });
        index_ids.push(r.u32()?);
    }
    let primary_key = if r.flag("primary key")? { Some(r.u16()?) } else { None };
    let nseq = r.u16()? as usize;
    r.check_count(nseq, 66)?;
    let mut sequences = Vec::with_capacity(nseq);
    for _ in 0..nseq {
        let column = r.u16()?;
        let (start, increment, min, max) = (r.i128()?, r.i128()?, r.i128()?, r.i128()?);
        sequences.push(SequenceDef { column, start, increment, min, max });
    }
    let def = TableDef { name, columns, indexes, primary_key, sequences, public };
    Ok(TableSchema { id, def, index_ids })
}

/// A bounds-checked cursor over a payload.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.bytes.len() - self.pos;
        if n > remaining {
            return Err(DecodeError::UnexpectedEnd { at: self.pos, needed: n - remaining });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i128(&mut self) -> Result<i128, DecodeError> {
        Ok(i128::from_le_bytes(self.array()?))
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::BadTag { what, tag, at: self.pos - 1 }),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError::BadUtf8 { at })
    }

    /// Checks that `count` items of at least `min_bytes` each can fit in what remains, so a
    /// corrupt count cannot make the decoder allocate wildly.
    fn check_count(&self, count: usize, min_bytes: usize) -> Result<(), DecodeError> {
        let remaining = self.bytes.len() - self.pos;
        if count.saturating_mul(min_bytes) > remaining {
            return Err(DecodeError::BadCount { count, at: self.pos, remaining });
        }
        Ok(())
    }

    /// Reads a u32 count of items taking at least `min_bytes` each.
    fn count(&mut self, min_bytes: usize) -> Result<usize, DecodeError> {
        let count = self.u32()? as usize;
        self.check_count(count, min_bytes)?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<u8>().prop_map(Value::U8),
            any::<u16>().prop_map(Value::U16),
            any::<u32>().prop_map(Value::U32),
            any::<u64>().prop_map(Value::U64),
            any::<u128>().prop_map(Value::U128),
            (any::<u128>(), any::<u128>()).prop_map(|(lo, hi)| Value::U256(U256 { lo, hi })),
            any::<i8>().prop_map(Value::I8),
            any::<i16>().prop_map(Value::I16),
            any::<i32>().prop_map(Value::I32),
            any::<i64>().prop_map(Value::I64),
            any::<i128>().prop_map(Value::I128),
            (any::<u128>(), any::<i128>()).prop_map(|(lo, hi)| Value::I256(I256 { lo, hi })),
            any::<u32>().prop_map(|b| Value::F32(f32::from_bits(b))),
            any::<u64>().prop_map(|b| Value::F64(f64::from_bits(b))),
            ".{0,12}".prop_map(|s| Value::String(s.into())),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| Value::Bytes(b.into())),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| Value::Bsatn(b.into())),
        ]
    }

    fn rows() -> impl Strategy<Value = Vec<Row>> {
        proptest::collection::vec(proptest::collection::vec(value(), 0..5), 0..4)
    }

    fn schema() -> impl Strategy<Value = TableSchema> {
        (
            any::<u32>(),
            "[a-z]{1,8}",
            any::<bool>(),
            proptest::collection::vec(("[a-z]{1,6}", 0usize..18), 1..5),
            any::<u32>(),
        )
            .prop_map(|(id, name, public, cols, index_id)| {
                let columns: Vec<ColumnDef> =
                    cols.into_iter().map(|(n, t)| ColumnDef::new(n, ColumnType::ALL[t])).collect();
                let mut def = TableDef::new(name, columns).with_index(IndexDef {
                    name: "ix".into(),
                    columns: vec![0],
                    unique: true,
                    algorithm: IndexAlgorithm::Hash,
                });
                def.public = public;
                def.primary_key = Some(0);
                def.sequences.push(SequenceDef {
                    column: 0,
                    start: -5,
                    increment: 3,
                    min: i128::MIN,
                    max: 77,
                });
                TableSchema { id, def, index_ids: vec![index_id] }
            })
    }

    fn delta() -> impl Strategy<Value = TxDelta> {
        (
            proptest::collection::vec(schema(), 0..2),
            proptest::collection::vec((any::<u32>(), rows(), rows()), 0..3),
            proptest::collection::vec((any::<u32>(), 0usize..4, proptest::option::of(any::<i128>())), 0..3),
            any::<u64>(),
            proptest::collection::vec(any::<u32>(), 0..3),
        )
            .prop_map(|(created_tables, tables, seqs, tx_offset, dropped_tables)| TxDelta {
                tx_offset,
                dropped_tables,
                created_tables,
                tables: tables
                    .into_iter()
                    .map(|(table_id, inserts, deletes)| TableDelta { table_id, inserts, deletes })
                    .collect(),
                sequences: seqs
                    .into_iter()
                    .map(|(table_id, sequence, next)| SequenceUpdate { table_id, sequence, next })
                    .collect(),
            })
    }

    proptest! {
        // Proves every delta (all value types, schemas, sequences) survives encode → decode.
        #[test]
        fn round_trip(d in delta()) {
            let mut buf = Vec::new();
            encode_delta(&mut buf, &d);
            prop_assert_eq!(decode_delta(&buf, d.tx_offset), Ok(d));
        }

        // Proves the decoder returns an error, never panics, on truncated or altered payloads.
        #[test]
        fn damaged_payloads_are_errors(d in delta(), cut in any::<usize>(), flip in any::<(usize, u8)>()) {
            let mut buf = Vec::new();
            encode_delta(&mut buf, &d);
            let cut = cut % buf.len();
            prop_assert!(decode_delta(&buf[..cut], 0).is_err());
            let (i, x) = flip;
            let at = i % buf.len();
            buf[at] ^= x | 1;
            let _ = decode_delta(&buf, 0);
        }
    }

    // Proves a huge corrupt count is refused before allocating.
    #[test]
    fn absurd_counts_are_refused() {
        let bytes = [FORMAT_VERSION, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(decode_delta(&bytes, 0), Err(DecodeError::BadCount { .. })));
        assert_eq!(decode_delta(&[9], 0), Err(DecodeError::UnknownVersion(9)));
        assert!(matches!(decode_delta(&[], 0), Err(DecodeError::UnexpectedEnd { .. })));
        let bytes = [FORMAT_VERSION_WITH_DROPS, 0xFF, 0xFF, 0xFF, 0x0F];
        assert!(matches!(decode_delta(&bytes, 0), Err(DecodeError::BadCount { .. })));
    }

    // Proves a delta without drops is written in the version-1 layout, byte for byte, so logs
    // written before drops existed and logs written now read the same.
    #[test]
    fn deltas_without_drops_keep_version_1() {
        let mut d = TxDelta {
            tables: vec![TableDelta { table_id: 3, inserts: vec![vec![Value::U32(7)]], deletes: vec![] }],
            ..TxDelta::default()
        };
        let mut buf = Vec::new();
        encode_delta(&mut buf, &d);
        assert_eq!(buf[0], FORMAT_VERSION);
        // version, created count, table count, table id, deletes, inserts, one row (arity,
        // tag, u32), sequence count.
        assert_eq!(buf.len(), 1 + 4 + 4 + 4 + 4 + 4 + (2 + 1 + 4) + 4);
        d.dropped_tables = vec![1, 2];
        let mut with_drops = Vec::new();
        encode_delta(&mut with_drops, &d);
        assert_eq!(with_drops[0], FORMAT_VERSION_WITH_DROPS);
        assert_eq!(&with_drops[1 + 4 + 8..], &buf[1..], "version 2 = version 1 after the drop list");
        assert_eq!(decode_delta(&with_drops, 0).unwrap().dropped_tables, vec![1, 2]);
    }
}

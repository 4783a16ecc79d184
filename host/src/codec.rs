//! Rows across the module boundary: what a module's column types become in the engine, and
//! BSATN bytes ⇄ engine rows.
//!
//! Primitive columns (and the single-field "special" products Identity, ConnectionId,
//! Timestamp, TimeDuration, Uuid, whose BSATN is exactly their one primitive field) map to
//! engine primitives; `String` and `Vec<u8>` to engine strings/bytes; every other type (options,
//! enums, nested structs, arrays) is stored as an opaque BSATN value, validated at the
//! boundary so the engine never holds bytes that do not decode at the column's type.

use std::sync::Arc;

use lightcone_mvcc::{ColumnType, Row, Value, I256, U256};
use spacetimedb_sats::{AlgebraicType, Typespace};

/// Nesting deeper than this in one value is refused (it also bounds recursion on recursive
/// types).
pub const MAX_VALUE_NESTING: usize = 128;

/// Why bytes did not decode at the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("BSATN ended early: needed {needed} more bytes at offset {at} ({what})")]
    Truncated { at: usize, needed: usize, what: String },
    #[error("invalid BSATN at offset {at}: {reason}")]
    Invalid { at: usize, reason: String },
    #[error("{extra} trailing bytes after the value ({what})")]
    Trailing { extra: usize, what: String },
    #[error("type nesting deeper than {MAX_VALUE_NESTING}")]
    TooDeep,
    #[error("unresolvable type reference {0}")]
    BadRef(u32),
}

/// How one column is encoded.
#[derive(Debug, Clone)]
pub enum ColumnCodec {
    /// A fixed-width little-endian primitive (incl. bool and the special products).
    Fixed(ColumnType),
    String,
    Bytes,
    /// Any other type, kept as its BSATN bytes.
    Opaque(AlgebraicType),
}

impl ColumnCodec {
    pub fn engine_type(&self) -> ColumnType {
        match self {
            ColumnCodec::Fixed(t) => *t,
            ColumnCodec::String => ColumnType::String,
            ColumnCodec::Bytes => ColumnType::Bytes,
            ColumnCodec::Opaque(_) => ColumnType::Bsatn,
        }
    }
}

fn primitive(ty: &AlgebraicType) -> Option<ColumnType> {
    Some(match ty {
        AlgebraicType::Bool => ColumnType::Bool,
        AlgebraicType::U8 => ColumnType::U8,
        AlgebraicType::U16 => ColumnType::U16,
        AlgebraicType::U32 => ColumnType::U32,
        AlgebraicType::U64 => ColumnType::U64,
        AlgebraicType::U128 => ColumnType::U128,
        AlgebraicType::U256 => ColumnType::U256,
        AlgebraicType::I8 => ColumnType::I8,
        AlgebraicType::I16 => ColumnType::I16,
        AlgebraicType::I32 => ColumnType::I32,
        AlgebraicType::I64 => ColumnType::I64,
        AlgebraicType::I128 => ColumnType::I128,
        AlgebraicType::I256 => ColumnType::I256,
        AlgebraicType::F32 => ColumnType::F32,
        AlgebraicType::F64 => ColumnType::F64,
        _ => return None,
    })
}

/// Follows `Ref`s to a non-reference type.
pub fn resolve<'t>(mut ty: &'t AlgebraicType, ts: &'t Typespace) -> Result<&'t AlgebraicType, CodecError> {
    for _ in 0..MAX_VALUE_NESTING {
        match ty {
            AlgebraicType::Ref(r) => ty = ts.types.get(r.0 as usize).ok_or(CodecError::BadRef(r.0))?,
            other => return Ok(other),
        }
    }
    Err(CodecError::TooDeep)
}

/// The codec for a column of type `ty`.
pub fn column_codec(ty: &AlgebraicType, ts: &Typespace) -> Result<ColumnCodec, CodecError> {
    let ty = resolve(ty, ts)?;
    if let Some(p) = primitive(ty) {
        return Ok(ColumnCodec::Fixed(p));
    }
    match ty {
        AlgebraicType::String => return Ok(ColumnCodec::String),
        AlgebraicType::Array(a) if matches!(resolve(&a.elem_ty, ts)?, AlgebraicType::U8) => {
            return Ok(ColumnCodec::Bytes)
        }
        AlgebraicType::Product(p) if p.elements.len() == 1 => {
            // Identity, ConnectionId, Timestamp, TimeDuration, Uuid: `{__name__: primitive}`,
            // encoded exactly as the primitive.
            let e = &p.elements[0];
            let special =
                e.name.as_deref().is_some_and(|n| n.len() > 4 && n.starts_with("__") && n.ends_with("__"));
            if special {
                if let Some(p) = primitive(resolve(&e.algebraic_type, ts)?) {
                    return Ok(ColumnCodec::Fixed(p));
                }
            }
        }
        _ => {}
    }
    Ok(ColumnCodec::Opaque(ty.clone()))
}

/// A cursor over BSATN bytes.
pub struct Reader<'b> {
    pub buf: &'b [u8],
    pub pos: usize,
}

impl<'b> Reader<'b> {
    pub fn new(buf: &'b [u8]) -> Reader<'b> {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'b [u8], CodecError> {
        if self.remaining() < n {
            return Err(CodecError::Truncated {
                at: self.pos,
                needed: n - self.remaining(),
                what: what.into(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, CodecError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &str) -> Result<u16, CodecError> {
        // Invariant: take(2) returns exactly 2 bytes.
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, CodecError> {
        // Invariant: take(4) returns exactly 4 bytes.
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn len_prefixed(&mut self, what: &str) -> Result<&'b [u8], CodecError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    pub fn finish(&self, what: &str) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(CodecError::Trailing { extra, what: what.into() }),
        }
    }
}

fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    // Invariant: callers pass slices of exactly N bytes (from `take(N)`).
    s.try_into().expect("exact width")
}

/// Decodes one primitive of engine type `ty`.
pub fn decode_fixed(ty: ColumnType, r: &mut Reader<'_>, what: &str) -> Result<Value, CodecError> {
    let at = r.pos;
    Ok(match ty {
        ColumnType::Bool => match r.u8(what)? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => return Err(CodecError::Invalid { at, reason: format!("bool byte {b} ({what})") }),
        },
        ColumnType::U8 => Value::U8(r.u8(what)?),
        ColumnType::U16 => Value::U16(r.u16(what)?),
        ColumnType::U32 => Value::U32(r.u32(what)?),
        ColumnType::U64 => Value::U64(u64::from_le_bytes(arr(r.take(8, what)?))),
        ColumnType::U128 => Value::U128(u128::from_le_bytes(arr(r.take(16, what)?))),
        ColumnType::U256 => Value::U256(U256::from_le_bytes(arr(r.take(32, what)?))),
        ColumnType::I8 => Value::I8(r.u8(what)? as i8),
        ColumnType::I16 => Value::I16(r.u16(what)? as i16),
        ColumnType::I32 => Value::I32(r.u32(what)? as i32),
        ColumnType::I64 => Value::I64(i64::from_le_bytes(arr(r.take(8, what)?))),
        ColumnType::I128 => Value::I128(i128::from_le_bytes(arr(r.take(16, what)?))),
        ColumnType::I256 => Value::I256(I256::from_le_bytes(arr(r.take(32, what)?))),
        ColumnType::F32 => Value::F32(f32::from_le_bytes(arr(r.take(4, what)?))),
        ColumnType::F64 => Value::F64(f64::from_le_bytes(arr(r.take(8, what)?))),
        ColumnType::String | ColumnType::Bytes | ColumnType::Bsatn => {
            return Err(CodecError::Invalid { at, reason: format!("{ty} is not a fixed-width type") })
        }
    })
}

/// Skips (and validates) one value of type `ty`.
pub fn skip_value(
    ty: &AlgebraicType,
    ts: &Typespace,
    r: &mut Reader<'_>,
    depth: usize,
) -> Result<(), CodecError> {
    if depth > MAX_VALUE_NESTING {
        return Err(CodecError::TooDeep);
    }
    let ty = resolve(ty, ts)?;
    if let Some(p) = primitive(ty) {
        decode_fixed(p, r, "value")?;
        return Ok(());
    }
    match ty {
        AlgebraicType::String => {
            let at = r.pos;
            let s = r.len_prefixed("string")?;
            std::str::from_utf8(s).map_err(|e| CodecError::Invalid { at, reason: format!("string: {e}") })?;
        }
        AlgebraicType::Array(a) => {
            let n = r.u32("array length")? as usize;
            let elem = resolve(&a.elem_ty, ts)?;
            if let Some(w) = primitive(elem).map(|p| p.fixed_width()) {
                if !matches!(elem, AlgebraicType::Bool) {
                    r.take(n.saturating_mul(w), "array elements")?;
                    return Ok(());
                }
            }
            for _ in 0..n {
                skip_value(elem, ts, r, depth + 1)?;
            }
        }
        AlgebraicType::Product(p) => {
            for e in p.elements.iter() {
                skip_value(&e.algebraic_type, ts, r, depth + 1)?;
            }
        }
        AlgebraicType::Sum(s) => {
            let at = r.pos;
            let tag = r.u8("sum tag")? as usize;
            let v = s.variants.get(tag).ok_or_else(|| CodecError::Invalid {
                at,
                reason: format!("sum tag {tag} out of range (the type has {} variants)", s.variants.len()),
            })?;
            skip_value(&v.algebraic_type, ts, r, depth + 1)?;
        }
        // Invariant: primitives returned above, Ref was resolved.
        _ => unreachable!("resolved non-primitive type"),
    }
    Ok(())
}

/// Decodes one column value.
pub fn decode_column(c: &ColumnCodec, ts: &Typespace, r: &mut Reader<'_>) -> Result<Value, CodecError> {
    match c {
        ColumnCodec::Fixed(t) => decode_fixed(*t, r, "column"),
        ColumnCodec::String => {
            let at = r.pos;
            let s = r.len_prefixed("string")?;
            let s = std::str::from_utf8(s)
                .map_err(|e| CodecError::Invalid { at, reason: format!("string: {e}") })?;
            Ok(Value::String(s.into()))
        }
        ColumnCodec::Bytes => Ok(Value::Bytes(r.len_prefixed("bytes")?.into())),
        ColumnCodec::Opaque(ty) => {
            let start = r.pos;
            skip_value(ty, ts, r, 0)?;
            Ok(Value::Bsatn(r.buf[start..r.pos].into()))
        }
    }
}

/// Appends the BSATN encoding of `v`.
pub fn encode_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Bool(b) => out.push(*b as u8),
        Value::U8(x) => out.push(*x),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U128(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U256(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I8(x) => out.push(*x as u8),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I128(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I256(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::String(s) => {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        Value::Bsatn(b) => out.extend_from_slice(b),
    }
}

/// Encoding of one table's rows.
#[derive(Debug, Clone)]
pub struct RowCodec {
    pub table: String,
    /// The columns clients and the guest see.
    pub columns: Vec<(String, ColumnCodec)>,
    pub typespace: Arc<Typespace>,
    /// The engine row starts with a hidden sender column (a sender-bound view's table) that is
    /// not part of the encoded row: `encode_row` skips it, `decode_row` does not produce it.
    pub hidden_sender: bool,
}

impl RowCodec {
    /// Decodes one row that must span `buf` exactly.
    pub fn decode_row(&self, buf: &[u8]) -> Result<Row, CodecError> {
        let mut r = Reader::new(buf);
        let row = self.decode_row_from(&mut r)?;
        r.finish(&format!("row of `{}`", self.table))?;
        Ok(row)
    }

    /// Decodes one row from the cursor (rows in a `Vec<Row>` are back to back).
    pub fn decode_row_from(&self, r: &mut Reader<'_>) -> Result<Row, CodecError> {
        let mut row = Vec::with_capacity(self.columns.len());
        for (_, c) in &self.columns {
            row.push(decode_column(c, &self.typespace, r)?);
        }
        Ok(row)
    }

    pub fn encode_row(&self, row: &Row, out: &mut Vec<u8>) {
        let skip = usize::from(self.hidden_sender);
        debug_assert_eq!(row.len(), self.columns.len() + skip);
        for v in &row[skip.min(row.len())..] {
            encode_value(v, out);
        }
    }

    /// Decodes the values of `cols` encoded back to back (an index key or key prefix).
    pub fn decode_values(&self, cols: &[u16], r: &mut Reader<'_>) -> Result<Vec<Value>, CodecError> {
        cols.iter()
            .map(|&c| {
                let (_, codec) = &self.columns[c as usize];
                decode_column(codec, &self.typespace, r)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spacetimedb_sats::{ProductType, ProductTypeElement, SumType, SumTypeVariant};

    fn special(name: &str, inner: AlgebraicType) -> AlgebraicType {
        AlgebraicType::Product(ProductType {
            elements: vec![ProductTypeElement { name: Some(name.to_string().into()), algebraic_type: inner }]
                .into(),
        })
    }

    fn option(inner: AlgebraicType) -> AlgebraicType {
        AlgebraicType::Sum(SumType {
            variants: vec![
                SumTypeVariant { name: Some("some".into()), algebraic_type: inner },
                SumTypeVariant { name: Some("none".into()), algebraic_type: AlgebraicType::unit() },
            ]
            .into(),
        })
    }

    #[test]
    fn special_products_are_primitives() {
        let ts = Typespace::default();
        let id = special("__identity__", AlgebraicType::U256);
        assert!(matches!(column_codec(&id, &ts).unwrap(), ColumnCodec::Fixed(ColumnType::U256)));
        let ts_col = special("__timestamp_micros_since_unix_epoch__", AlgebraicType::I64);
        assert!(matches!(column_codec(&ts_col, &ts).unwrap(), ColumnCodec::Fixed(ColumnType::I64)));
        let bytes = AlgebraicType::array(AlgebraicType::U8);
        assert!(matches!(column_codec(&bytes, &ts).unwrap(), ColumnCodec::Bytes));
        let opt = option(AlgebraicType::I32);
        assert!(matches!(column_codec(&opt, &ts).unwrap(), ColumnCodec::Opaque(_)));
    }

    #[test]
    fn row_round_trip_and_errors() {
        let ts = Arc::new(Typespace::default());
        let codec = RowCodec {
            table: "t".into(),
            columns: vec![
                ("a".into(), ColumnCodec::Fixed(ColumnType::U32)),
                ("b".into(), ColumnCodec::String),
                ("c".into(), column_codec(&option(AlgebraicType::I32), &ts).unwrap()),
                ("d".into(), ColumnCodec::Fixed(ColumnType::Bool)),
            ],
            typespace: ts,
            hidden_sender: false,
        };
        let mut buf = vec![];
        buf.extend_from_slice(&7u32.to_le_bytes());
        buf.extend_from_slice(&2u32.to_le_bytes());
        buf.extend_from_slice(b"hi");
        buf.push(0);
        buf.extend_from_slice(&(-5i32).to_le_bytes());
        buf.push(1);
        let row = codec.decode_row(&buf).unwrap();
        assert_eq!(row[0], Value::U32(7));
        assert_eq!(row[1], Value::String("hi".into()));
        assert_eq!(row[2], Value::Bsatn(vec![0, 0xfb, 0xff, 0xff, 0xff].into()));
        let mut out = vec![];
        codec.encode_row(&row, &mut out);
        assert_eq!(out, buf);
        // Truncated, trailing, bad bool, bad sum tag, bad UTF-8.
        assert!(matches!(codec.decode_row(&buf[..buf.len() - 1]), Err(CodecError::Truncated { .. })));
        let mut long = buf.clone();
        long.push(0);
        assert!(matches!(codec.decode_row(&long), Err(CodecError::Trailing { extra: 1, .. })));
        let mut bad_bool = buf.clone();
        *bad_bool.last_mut().unwrap() = 2;
        assert!(matches!(codec.decode_row(&bad_bool), Err(CodecError::Invalid { .. })));
        let mut bad_tag = buf.clone();
        bad_tag[10] = 7;
        assert!(matches!(codec.decode_row(&bad_tag), Err(CodecError::Invalid { .. })));
        let mut bad_utf8 = buf.clone();
        bad_utf8[8] = 0xff;
        assert!(matches!(codec.decode_row(&bad_utf8), Err(CodecError::Invalid { .. })));
        // A sender-bound view's rows carry a hidden sender the encoding leaves out.
        let hidden = RowCodec { hidden_sender: true, ..codec };
        let mut with_sender = vec![Value::U256(U256::from_le_bytes([9u8; 32]))];
        with_sender.extend(row);
        let mut out = vec![];
        hidden.encode_row(&with_sender, &mut out);
        assert_eq!(out, buf);
    }

    #[test]
    fn recursive_types_are_bounded() {
        // type T = Option<Box<T>> expressed through a Ref to itself.
        let ts = Typespace { types: vec![option(AlgebraicType::Ref(spacetimedb_sats::AlgebraicTypeRef(0)))] };
        let ty = AlgebraicType::Ref(spacetimedb_sats::AlgebraicTypeRef(0));
        let mut deep = vec![0u8; 1000];
        deep.push(1);
        assert_eq!(skip_value(&ty, &ts, &mut Reader::new(&deep), 0), Err(CodecError::TooDeep));
        let shallow = [0u8, 0, 1];
        let mut r = Reader::new(&shallow);
        skip_value(&ty, &ts, &mut r, 0).unwrap();
        assert_eq!(r.pos, 3);
    }
}

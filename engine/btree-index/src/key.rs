//! Order-preserving key encoding: typed values → byte strings whose `memcmp` order equals
//! the values' [`Ord`] order, column by column.
//!
//! - integers: big-endian, signed ones with the sign bit flipped;
//! - floats: IEEE total order (negative values bit-inverted, positive ones sign-flipped);
//! - strings, bytes, BSATN: each `0x00` escaped as `0x00 0xFF`, terminated by `0x00 0x00`, so an
//!   encoded value is never a prefix of another and multi-column keys compare column by column.
//!
//! Fixed-width columns encode to a fixed number of bytes, so an index over only fixed-width
//! columns has fixed-width keys (see [`fixed_key_width`]), which the tree stores without offsets.

use lightcone_page::{ColumnType, Value};

/// Appends the encoding of `value` to `out`.
pub fn encode_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(v) => out.push(*v as u8),
        Value::U8(v) => out.push(*v),
        Value::U16(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::U128(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::U256(v) => {
            out.extend_from_slice(&v.hi.to_be_bytes());
            out.extend_from_slice(&v.lo.to_be_bytes());
        }
        Value::I8(v) => out.push((*v as u8) ^ 0x80),
        Value::I16(v) => out.extend_from_slice(&((*v as u16) ^ (1 << 15)).to_be_bytes()),
        Value::I32(v) => out.extend_from_slice(&((*v as u32) ^ (1 << 31)).to_be_bytes()),
        Value::I64(v) => out.extend_from_slice(&((*v as u64) ^ (1 << 63)).to_be_bytes()),
        Value::I128(v) => out.extend_from_slice(&((*v as u128) ^ (1 << 127)).to_be_bytes()),
        Value::I256(v) => {
            out.extend_from_slice(&((v.hi as u128) ^ (1 << 127)).to_be_bytes());
            out.extend_from_slice(&v.lo.to_be_bytes());
        }
        Value::F32(v) => {
            let bits = v.to_bits();
            let key = if bits >> 31 == 1 { !bits } else { bits ^ (1 << 31) };
            out.extend_from_slice(&key.to_be_bytes());
        }
        Value::F64(v) => {
            let bits = v.to_bits();
            let key = if bits >> 63 == 1 { !bits } else { bits ^ (1 << 63) };
            out.extend_from_slice(&key.to_be_bytes());
        }
        Value::String(s) => encode_var(out, s.as_bytes()),
        Value::Bytes(b) | Value::Bsatn(b) => encode_var(out, b),
    }
}

fn encode_var(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// The encoding of a tuple of values (a multi-column key), column after column.
pub fn encode_key(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 8);
    for v in values {
        encode_value(&mut out, v);
    }
    out
}

/// Encoded width of one column type, or `None` for variable-length types.
pub fn fixed_width_of(ty: ColumnType) -> Option<usize> {
    if ty.is_var_len() {
        None
    } else {
        Some(ty.fixed_width())
    }
}

/// The key width of an index over these column types, if all are fixed-width.
pub fn fixed_key_width(types: &[ColumnType]) -> Option<usize> {
    types.iter().map(|&t| fixed_width_of(t)).sum()
}

/// The smallest byte string greater than every string that starts with `prefix`, or `None`
/// if there is none (the prefix is empty or all `0xFF`). Turns "starts with" into a range end.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last != 0xFF {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightcone_page::{I256, U256};
    use proptest::prelude::*;

    fn value_of(ty: ColumnType) -> BoxedStrategy<Value> {
        match ty {
            ColumnType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            ColumnType::U8 => any::<u8>().prop_map(Value::U8).boxed(),
            ColumnType::U16 => any::<u16>().prop_map(Value::U16).boxed(),
            ColumnType::U32 => any::<u32>().prop_map(Value::U32).boxed(),
            ColumnType::U64 => any::<u64>().prop_map(Value::U64).boxed(),
            ColumnType::U128 => any::<u128>().prop_map(Value::U128).boxed(),
            ColumnType::U256 => {
                (any::<u128>(), any::<u128>()).prop_map(|(lo, hi)| Value::U256(U256 { lo, hi })).boxed()
            }
            ColumnType::I8 => any::<i8>().prop_map(Value::I8).boxed(),
            ColumnType::I16 => any::<i16>().prop_map(Value::I16).boxed(),
            ColumnType::I32 => any::<i32>().prop_map(Value::I32).boxed(),
            ColumnType::I64 => any::<i64>().prop_map(Value::I64).boxed(),
            ColumnType::I128 => any::<i128>().prop_map(Value::I128).boxed(),
            ColumnType::I256 => {
                (any::<u128>(), any::<i128>()).prop_map(|(lo, hi)| Value::I256(I256 { lo, hi })).boxed()
            }
            ColumnType::F32 => any::<u32>().prop_map(|b| Value::F32(f32::from_bits(b))).boxed(),
            ColumnType::F64 => any::<u64>().prop_map(|b| Value::F64(f64::from_bits(b))).boxed(),
            ColumnType::String => ".{0,6}".prop_map(|s| Value::String(s.into())).boxed(),
            ColumnType::Bytes => {
                proptest::collection::vec(prop_oneof![Just(0u8), Just(0xFF), any::<u8>()], 0..6)
                    .prop_map(|b| Value::Bytes(b.into()))
                    .boxed()
            }
            ColumnType::Bsatn => {
                proptest::collection::vec(any::<u8>(), 0..6).prop_map(|b| Value::Bsatn(b.into())).boxed()
            }
        }
    }

    fn tuple_pair() -> impl Strategy<Value = (Vec<Value>, Vec<Value>)> {
        proptest::collection::vec(proptest::sample::select(ColumnType::ALL.to_vec()), 1..4).prop_flat_map(
            |types| {
                let a: Vec<_> = types.iter().map(|&t| value_of(t)).collect();
                let b: Vec<_> = types.iter().map(|&t| value_of(t)).collect();
                (a, b)
            },
        )
    }

    proptest! {
        // Proves memcmp order of encoded multi-column keys equals the tuples' value order,
        // for every column type, and that fixed-width types encode to their stated width.
        #[test]
        fn encoding_preserves_order((a, b) in tuple_pair()) {
            let (ka, kb) = (encode_key(&a), encode_key(&b));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b), "{:?} vs {:?}", a, b);
            let types: Vec<ColumnType> = a.iter().map(|v| v.column_type()).collect();
            if let Some(w) = fixed_key_width(&types) {
                prop_assert_eq!(ka.len(), w);
            }
        }

        // Proves a prefix's successor bounds exactly the strings that start with the prefix.
        #[test]
        fn prefix_successor_bounds_prefix(prefix in proptest::collection::vec(any::<u8>(), 0..4),
                                          other in proptest::collection::vec(any::<u8>(), 0..6)) {
            let starts = other.starts_with(&prefix);
            let below_end = prefix_successor(&prefix).is_none_or(|end| other < end);
            prop_assert_eq!(starts, other >= prefix && below_end);
        }
    }

    // Proves the edge floats and integers land in the right order.
    #[test]
    fn edge_values_order() {
        let f = |v: f64| encode_key(&[Value::F64(v)]);
        assert!(f(f64::NEG_INFINITY) < f(-1.0));
        assert!(f(-0.0) < f(0.0));
        assert!(f(f64::INFINITY) < f(f64::NAN));
        let i = |v: i64| encode_key(&[Value::I64(v)]);
        assert!(i(i64::MIN) < i(-1) && i(-1) < i(0) && i(0) < i(i64::MAX));
        let s = |v: &str| encode_key(&[Value::String(v.into()), Value::U8(0)]);
        assert!(s("a") < s("a\0") && s("a\0") < s("ab"));
    }
}

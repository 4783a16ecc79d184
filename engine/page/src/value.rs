//! Column types and the engine's own compact values.
//!
//! The engine never sees BSATN product/sum structure: nested types arrive as [`Value::Bsatn`]
//! bytes and are compared bytewise. Everything else is a plain scalar or a byte string.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use bytemuck::{Pod, Zeroable};

/// The type of one table column, as the engine stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ColumnType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    U128,
    U256,
    I8,
    I16,
    I32,
    I64,
    I128,
    I256,
    F32,
    F64,
    /// UTF-8 text.
    String,
    /// Raw bytes (`Vec<u8>` in a module).
    Bytes,
    /// An opaque BSATN-encoded value (nested product, sum or array types); ordered bytewise.
    Bsatn,
}

/// Bytes a variable-length column occupies in the page's fixed area (a heap reference).
pub const VAR_REF_BYTES: usize = 8;

impl ColumnType {
    /// Every column type, in declaration order (useful for exhaustive tests).
    pub const ALL: [ColumnType; 18] = [
        ColumnType::Bool,
        ColumnType::U8,
        ColumnType::U16,
        ColumnType::U32,
        ColumnType::U64,
        ColumnType::U128,
        ColumnType::U256,
        ColumnType::I8,
        ColumnType::I16,
        ColumnType::I32,
        ColumnType::I64,
        ColumnType::I128,
        ColumnType::I256,
        ColumnType::F32,
        ColumnType::F64,
        ColumnType::String,
        ColumnType::Bytes,
        ColumnType::Bsatn,
    ];

    /// True for columns whose values live in the page heap (or overflow), not inline.
    pub fn is_var_len(self) -> bool {
        matches!(self, ColumnType::String | ColumnType::Bytes | ColumnType::Bsatn)
    }

    /// True for integer types (the only ones a sequence may fill).
    pub fn is_integer(self) -> bool {
        !self.is_var_len() && !matches!(self, ColumnType::Bool | ColumnType::F32 | ColumnType::F64)
    }

    /// Bytes one value takes in the column array of a page.
    pub fn fixed_width(self) -> usize {
        match self {
            ColumnType::Bool | ColumnType::U8 | ColumnType::I8 => 1,
            ColumnType::U16 | ColumnType::I16 => 2,
            ColumnType::U32 | ColumnType::I32 | ColumnType::F32 => 4,
            ColumnType::U64 | ColumnType::I64 | ColumnType::F64 => 8,
            ColumnType::U128 | ColumnType::I128 => 16,
            ColumnType::U256 | ColumnType::I256 => 32,
            ColumnType::String | ColumnType::Bytes | ColumnType::Bsatn => VAR_REF_BYTES,
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ColumnType::Bool => "bool",
            ColumnType::U8 => "u8",
            ColumnType::U16 => "u16",
            ColumnType::U32 => "u32",
            ColumnType::U64 => "u64",
            ColumnType::U128 => "u128",
            ColumnType::U256 => "u256",
            ColumnType::I8 => "i8",
            ColumnType::I16 => "i16",
            ColumnType::I32 => "i32",
            ColumnType::I64 => "i64",
            ColumnType::I128 => "i128",
            ColumnType::I256 => "i256",
            ColumnType::F32 => "f32",
            ColumnType::F64 => "f64",
            ColumnType::String => "string",
            ColumnType::Bytes => "bytes",
            ColumnType::Bsatn => "bsatn",
        };
        f.write_str(name)
    }
}

/// An unsigned 256-bit integer (Identity is one). Stored in pages as `lo` then `hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Pod, Zeroable)]
#[repr(C)]
pub struct U256 {
    pub lo: u128,
    pub hi: u128,
}

impl U256 {
    pub const ZERO: U256 = U256 { lo: 0, hi: 0 };
    pub const MAX: U256 = U256 { lo: u128::MAX, hi: u128::MAX };

    pub fn from_u128(v: u128) -> U256 {
        U256 { lo: v, hi: 0 }
    }

    /// Little-endian bytes (the BSATN and Identity byte order).
    pub fn to_le_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&self.lo.to_le_bytes());
        out[16..].copy_from_slice(&self.hi.to_le_bytes());
        out
    }

    pub fn from_le_bytes(bytes: [u8; 32]) -> U256 {
        let mut lo = [0u8; 16];
        let mut hi = [0u8; 16];
        lo.copy_from_slice(&bytes[..16]);
        hi.copy_from_slice(&bytes[16..]);
        U256 { lo: u128::from_le_bytes(lo), hi: u128::from_le_bytes(hi) }
    }
}

impl Ord for U256 {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.hi, self.lo).cmp(&(other.hi, other.lo))
    }
}

impl PartialOrd for U256 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A signed 256-bit integer, two's complement. Stored in pages as `lo` then `hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Pod, Zeroable)]
#[repr(C)]
pub struct I256 {
    pub lo: u128,
    pub hi: i128,
}

impl I256 {
    pub const ZERO: I256 = I256 { lo: 0, hi: 0 };
    pub const MIN: I256 = I256 { lo: 0, hi: i128::MIN };
    pub const MAX: I256 = I256 { lo: u128::MAX, hi: i128::MAX };

    pub fn from_i128(v: i128) -> I256 {
        I256 { lo: v as u128, hi: if v < 0 { -1 } else { 0 } }
    }

    pub fn to_le_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&self.lo.to_le_bytes());
        out[16..].copy_from_slice(&self.hi.to_le_bytes());
        out
    }

    pub fn from_le_bytes(bytes: [u8; 32]) -> I256 {
        let mut lo = [0u8; 16];
        let mut hi = [0u8; 16];
        lo.copy_from_slice(&bytes[..16]);
        hi.copy_from_slice(&bytes[16..]);
        I256 { lo: u128::from_le_bytes(lo), hi: i128::from_le_bytes(hi) }
    }
}

impl Ord for I256 {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.hi, self.lo).cmp(&(other.hi, other.lo))
    }
}

impl PartialOrd for I256 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One column value. Floats compare by IEEE total order (so `Value` is `Eq + Ord + Hash`
/// and can be an index key); values of different types order by type.
#[derive(Debug, Clone)]
pub enum Value {
    Bool(bool),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    U128(u128),
    U256(U256),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    I128(i128),
    I256(I256),
    F32(f32),
    F64(f64),
    String(Box<str>),
    Bytes(Box<[u8]>),
    Bsatn(Box<[u8]>),
}

/// A row: one value per column, in column order.
pub type Row = Vec<Value>;

impl Value {
    pub fn column_type(&self) -> ColumnType {
        match self {
            Value::Bool(_) => ColumnType::Bool,
            Value::U8(_) => ColumnType::U8,
            Value::U16(_) => ColumnType::U16,
            Value::U32(_) => ColumnType::U32,
            Value::U64(_) => ColumnType::U64,
            Value::U128(_) => ColumnType::U128,
            Value::U256(_) => ColumnType::U256,
            Value::I8(_) => ColumnType::I8,
            Value::I16(_) => ColumnType::I16,
            Value::I32(_) => ColumnType::I32,
            Value::I64(_) => ColumnType::I64,
            Value::I128(_) => ColumnType::I128,
            Value::I256(_) => ColumnType::I256,
            Value::F32(_) => ColumnType::F32,
            Value::F64(_) => ColumnType::F64,
            Value::String(_) => ColumnType::String,
            Value::Bytes(_) => ColumnType::Bytes,
            Value::Bsatn(_) => ColumnType::Bsatn,
        }
    }

    /// The bytes of a variable-length value; `None` for fixed-width values.
    pub fn var_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::String(s) => Some(s.as_bytes()),
            Value::Bytes(b) | Value::Bsatn(b) => Some(b),
            _ => None,
        }
    }

    /// True if this is an integer equal to zero: the value that asks a sequence for a number.
    pub fn is_integer_zero(&self) -> bool {
        match self {
            Value::U8(v) => *v == 0,
            Value::U16(v) => *v == 0,
            Value::U32(v) => *v == 0,
            Value::U64(v) => *v == 0,
            Value::U128(v) => *v == 0,
            Value::U256(v) => *v == U256::ZERO,
            Value::I8(v) => *v == 0,
            Value::I16(v) => *v == 0,
            Value::I32(v) => *v == 0,
            Value::I64(v) => *v == 0,
            Value::I128(v) => *v == 0,
            Value::I256(v) => *v == I256::ZERO,
            _ => false,
        }
    }

    /// The integer as i128 if it fits (sequences count in i128).
    pub fn as_i128(&self) -> Option<i128> {
        Some(match self {
            Value::U8(v) => *v as i128,
            Value::U16(v) => *v as i128,
            Value::U32(v) => *v as i128,
            Value::U64(v) => *v as i128,
            Value::U128(v) => i128::try_from(*v).ok()?,
            Value::U256(v) if v.hi == 0 => i128::try_from(v.lo).ok()?,
            Value::I8(v) => *v as i128,
            Value::I16(v) => *v as i128,
            Value::I32(v) => *v as i128,
            Value::I64(v) => *v as i128,
            Value::I128(v) => *v,
            Value::I256(v) => {
                let fits =
                    (v.hi == 0 && v.lo <= i128::MAX as u128) || (v.hi == -1 && v.lo >= i128::MIN as u128);
                if !fits {
                    return None;
                }
                v.lo as i128
            }
            _ => return None,
        })
    }

    /// Builds an integer value of type `ty` from `v`, or `None` if it does not fit.
    pub fn integer_of_type(ty: ColumnType, v: i128) -> Option<Value> {
        Some(match ty {
            ColumnType::U8 => Value::U8(u8::try_from(v).ok()?),
            ColumnType::U16 => Value::U16(u16::try_from(v).ok()?),
            ColumnType::U32 => Value::U32(u32::try_from(v).ok()?),
            ColumnType::U64 => Value::U64(u64::try_from(v).ok()?),
            ColumnType::U128 => Value::U128(u128::try_from(v).ok()?),
            ColumnType::U256 => Value::U256(U256::from_u128(u128::try_from(v).ok()?)),
            ColumnType::I8 => Value::I8(i8::try_from(v).ok()?),
            ColumnType::I16 => Value::I16(i16::try_from(v).ok()?),
            ColumnType::I32 => Value::I32(i32::try_from(v).ok()?),
            ColumnType::I64 => Value::I64(i64::try_from(v).ok()?),
            ColumnType::I128 => Value::I128(v),
            ColumnType::I256 => Value::I256(I256::from_i128(v)),
            _ => return None,
        })
    }

    fn type_rank(&self) -> u8 {
        self.column_type() as u8
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        use Value::*;
        match (self, other) {
            (Bool(a), Bool(b)) => a.cmp(b),
            (U8(a), U8(b)) => a.cmp(b),
            (U16(a), U16(b)) => a.cmp(b),
            (U32(a), U32(b)) => a.cmp(b),
            (U64(a), U64(b)) => a.cmp(b),
            (U128(a), U128(b)) => a.cmp(b),
            (U256(a), U256(b)) => a.cmp(b),
            (I8(a), I8(b)) => a.cmp(b),
            (I16(a), I16(b)) => a.cmp(b),
            (I32(a), I32(b)) => a.cmp(b),
            (I64(a), I64(b)) => a.cmp(b),
            (I128(a), I128(b)) => a.cmp(b),
            (I256(a), I256(b)) => a.cmp(b),
            (F32(a), F32(b)) => a.total_cmp(b),
            (F64(a), F64(b)) => a.total_cmp(b),
            (String(a), String(b)) => a.cmp(b),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            (Bsatn(a), Bsatn(b)) => a.cmp(b),
            _ => self.type_rank().cmp(&other.type_rank()),
        }
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.type_rank());
        match self {
            Value::Bool(v) => v.hash(state),
            Value::U8(v) => v.hash(state),
            Value::U16(v) => v.hash(state),
            Value::U32(v) => v.hash(state),
            Value::U64(v) => v.hash(state),
            Value::U128(v) => v.hash(state),
            Value::U256(v) => v.hash(state),
            Value::I8(v) => v.hash(state),
            Value::I16(v) => v.hash(state),
            Value::I32(v) => v.hash(state),
            Value::I64(v) => v.hash(state),
            Value::I128(v) => v.hash(state),
            Value::I256(v) => v.hash(state),
            // Hash the bits: equality is total-order equality, which is bit equality.
            Value::F32(v) => v.to_bits().hash(state),
            Value::F64(v) => v.to_bits().hash(state),
            Value::String(v) => v.hash(state),
            Value::Bytes(v) | Value::Bsatn(v) => v.hash(state),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(v) => write!(f, "{v}"),
            Value::U8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::U128(v) => write!(f, "{v}"),
            Value::U256(v) => write!(f, "0x{:032x}{:032x}", v.hi, v.lo),
            Value::I8(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::I128(v) => write!(f, "{v}"),
            Value::I256(v) => write!(f, "i256(0x{:032x}{:032x})", v.hi as u128, v.lo),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::String(v) => write!(f, "{v:?}"),
            Value::Bytes(v) | Value::Bsatn(v) => {
                f.write_str("0x")?;
                for b in v.iter() {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves 256-bit integers order numerically, including across the 128-bit halves.
    #[test]
    fn wide_integers_order_numerically() {
        assert!(U256 { lo: 0, hi: 1 } > U256 { lo: u128::MAX, hi: 0 });
        assert!(I256::from_i128(-1) < I256::ZERO);
        assert!(I256::MIN < I256::from_i128(i128::MIN));
        assert!(I256::from_i128(i128::MAX) < I256::MAX);
        assert_eq!(I256::from_le_bytes(I256::from_i128(-5).to_le_bytes()), I256::from_i128(-5));
    }

    // Proves floats use total order so NaN is a well-behaved key and -0 < +0.
    #[test]
    fn floats_are_totally_ordered() {
        assert_eq!(Value::F64(f64::NAN), Value::F64(f64::NAN));
        assert!(Value::F64(-0.0) < Value::F64(0.0));
        assert!(Value::F32(f32::NEG_INFINITY) < Value::F32(-1.0));
    }

    // Proves integer conversion for sequences refuses values that do not fit the column.
    #[test]
    fn integer_of_type_checks_range() {
        assert_eq!(Value::integer_of_type(ColumnType::U8, 255), Some(Value::U8(255)));
        assert_eq!(Value::integer_of_type(ColumnType::U8, 256), None);
        assert_eq!(Value::integer_of_type(ColumnType::I8, -129), None);
        assert_eq!(Value::integer_of_type(ColumnType::String, 1), None);
        assert_eq!(Value::I256(I256::from_i128(-7)).as_i128(), Some(-7));
    }
}

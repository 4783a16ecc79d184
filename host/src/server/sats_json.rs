//! SATS-JSON (the serde form of SATS values and types, as SpacetimeDB's HTTP API speaks it) for
//! engine rows, through the Apache-2.0 `spacetimedb-sats` serializers.

use lightcone_mvcc::{ColumnType, Row};
use spacetimedb_sats::ser::serde::SerializeWrapper;
use spacetimedb_sats::{AlgebraicType, ProductType, ProductTypeElement, Typespace};

use crate::codec::encode_value;

/// Replaces `Ref`s by what they point to (recursive types keep a `Ref` past `depth` 32).
pub fn resolve_deep(ty: &AlgebraicType, ts: &Typespace, depth: usize) -> AlgebraicType {
    if depth > 32 {
        return ty.clone();
    }
    match ty {
        AlgebraicType::Ref(r) => match ts.types.get(r.0 as usize) {
            Some(t) => resolve_deep(t, ts, depth + 1),
            None => ty.clone(),
        },
        AlgebraicType::Product(p) => AlgebraicType::Product(ProductType {
            elements: p
                .elements
                .iter()
                .map(|e| ProductTypeElement {
                    name: e.name.clone(),
                    algebraic_type: resolve_deep(&e.algebraic_type, ts, depth + 1),
                })
                .collect(),
        }),
        AlgebraicType::Sum(s) => {
            let mut s = s.clone();
            for v in s.variants.iter_mut() {
                v.algebraic_type = resolve_deep(&v.algebraic_type, ts, depth + 1);
            }
            AlgebraicType::Sum(s)
        }
        AlgebraicType::Array(a) => AlgebraicType::array(resolve_deep(&a.elem_ty, ts, depth + 1)),
        other => other.clone(),
    }
}

/// The SATS type of an engine column type with no better information.
pub fn primitive_type(ty: ColumnType) -> AlgebraicType {
    match ty {
        ColumnType::Bool => AlgebraicType::Bool,
        ColumnType::U8 => AlgebraicType::U8,
        ColumnType::U16 => AlgebraicType::U16,
        ColumnType::U32 => AlgebraicType::U32,
        ColumnType::U64 => AlgebraicType::U64,
        ColumnType::U128 => AlgebraicType::U128,
        ColumnType::U256 => AlgebraicType::U256,
        ColumnType::I8 => AlgebraicType::I8,
        ColumnType::I16 => AlgebraicType::I16,
        ColumnType::I32 => AlgebraicType::I32,
        ColumnType::I64 => AlgebraicType::I64,
        ColumnType::I128 => AlgebraicType::I128,
        ColumnType::I256 => AlgebraicType::I256,
        ColumnType::F32 => AlgebraicType::F32,
        ColumnType::F64 => AlgebraicType::F64,
        ColumnType::String => AlgebraicType::String,
        ColumnType::Bytes | ColumnType::Bsatn => AlgebraicType::array(AlgebraicType::U8),
    }
}

/// A product type from named columns.
pub fn product_of(columns: &[(String, AlgebraicType)]) -> ProductType {
    ProductType {
        elements: columns
            .iter()
            .map(|(n, t)| ProductTypeElement { name: Some(n.clone().into()), algebraic_type: t.clone() })
            .collect(),
    }
}

/// The SATS-JSON of a product type (`{"elements": [...]}`).
pub fn type_json(ty: &ProductType) -> serde_json::Value {
    serde_json::to_value(SerializeWrapper::from_ref(ty)).unwrap_or(serde_json::Value::Null)
}

/// The SATS-JSON array of one row of type `ty`, as JSON text (u128/u256 numbers do not fit
/// `serde_json::Value`).
pub fn row_json(row: &Row, ty: &ProductType) -> Result<Box<serde_json::value::RawValue>, String> {
    let mut bytes = Vec::new();
    for v in row {
        encode_value(v, &mut bytes);
    }
    let value = spacetimedb_sats::bsatn::decode(ty, &mut bytes.as_slice()).map_err(|e| e.to_string())?;
    serde_json::value::to_raw_value(&SerializeWrapper::from_ref(&value)).map_err(|e| e.to_string())
}

/// The SATS-JSON of a BSATN value of type `ty`.
pub fn bsatn_json(bytes: &[u8], ty: &AlgebraicType) -> Result<serde_json::Value, String> {
    let value = spacetimedb_sats::bsatn::decode(ty, &mut &*bytes).map_err(|e| e.to_string())?;
    serde_json::to_value(SerializeWrapper::from_ref(&value)).map_err(|e| e.to_string())
}

/// [`bsatn_json`] as JSON text: keeps u128/u256 numbers exact.
pub fn bsatn_json_text(bytes: &[u8], ty: &AlgebraicType) -> Result<String, String> {
    let value = spacetimedb_sats::bsatn::decode(ty, &mut &*bytes).map_err(|e| e.to_string())?;
    serde_json::to_string(&SerializeWrapper::from_ref(&value)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightcone_mvcc::Value;

    #[test]
    fn rows_render_as_sats_json_arrays() {
        let ty = product_of(&[("id".into(), AlgebraicType::U32), ("name".into(), AlgebraicType::String)]);
        let j = row_json(&vec![Value::U32(7), Value::String("ann".into())], &ty).unwrap();
        assert_eq!(j.get(), r#"[7,"ann"]"#);
        let big = product_of(&[("x".into(), AlgebraicType::U128)]);
        assert_eq!(row_json(&vec![Value::U128(u128::MAX)], &big).unwrap().get(), format!("[{}]", u128::MAX));
        let wide = spacetimedb_sats::bsatn::to_vec(&u128::MAX).unwrap();
        assert_eq!(bsatn_json_text(&wide, &AlgebraicType::U128).unwrap(), u128::MAX.to_string());
        assert!(bsatn_json_text(&wide[..3], &AlgebraicType::U128).is_err());
        let t = type_json(&ty);
        assert_eq!(t["elements"][0]["name"]["some"], "id");
    }
}

//! SATS-JSON reducer arguments (what the HTTP API and the CLI send) to BSATN, through the
//! Apache-2.0 `spacetimedb-sats` serde bridge so the accepted forms match SpacetimeDB's.

use serde::de::DeserializeSeed;
use spacetimedb_sats::de::serde::SeedWrapper;
use spacetimedb_sats::{bsatn, ProductType, Typespace, WithTypespace};

/// Largest JSON argument text accepted.
pub const MAX_JSON_ARGS_BYTES: usize = 32 << 20;

/// Decodes `json` (an array of positional arguments, or an object keyed by parameter name)
/// at type `params`, and encodes it as BSATN.
pub fn json_to_bsatn(json: &str, params: &ProductType, ts: &Typespace) -> Result<Vec<u8>, String> {
    if json.len() > MAX_JSON_ARGS_BYTES {
        return Err(format!("arguments are {} bytes; the limit is {MAX_JSON_ARGS_BYTES}", json.len()));
    }
    let seed = SeedWrapper(WithTypespace::new(ts, params));
    let mut de = serde_json::Deserializer::from_str(json);
    let value = seed.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    bsatn::to_vec(&value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spacetimedb_sats::{AlgebraicType, ProductTypeElement};

    fn params() -> ProductType {
        ProductType {
            elements: vec![
                ProductTypeElement { name: Some("text".into()), algebraic_type: AlgebraicType::String },
                ProductTypeElement { name: Some("n".into()), algebraic_type: AlgebraicType::U32 },
            ]
            .into(),
        }
    }

    #[test]
    fn positional_json_becomes_bsatn() {
        let b = json_to_bsatn(r#"["hi", 7]"#, &params(), &Typespace::default()).unwrap();
        assert_eq!(b, [2, 0, 0, 0, b'h', b'i', 7, 0, 0, 0]);
    }

    #[test]
    fn bad_json_is_an_error() {
        let ts = Typespace::default();
        assert!(json_to_bsatn(r#"["hi"]"#, &params(), &ts).is_err());
        assert!(json_to_bsatn(r#"["hi", "x"]"#, &params(), &ts).is_err());
        assert!(json_to_bsatn(r#"["hi", 7] x"#, &params(), &ts).is_err());
        assert!(json_to_bsatn("not json", &params(), &ts).is_err());
        assert!(json_to_bsatn(r#"["hi", -1]"#, &params(), &ts).is_err());
    }
}

//! `lightcone call`'s arguments: command-line words to the JSON array the server takes.

use serde_json::Value;
use spacetimedb_sats::{AlgebraicType, ProductType, Typespace};

/// What the CLI needs to know of a reducer parameter to read its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamShape {
    /// A `String`: an argument that is not a JSON string is taken as the text itself.
    String,
    /// A `Vec<T>`: a JSON array argument is this parameter's value.
    Array,
    Other,
}

/// The shapes of a reducer's parameters (refs resolved through `ts`).
pub fn param_shapes(params: &ProductType, ts: &Typespace) -> Vec<ParamShape> {
    params
        .elements
        .iter()
        .map(|e| {
            let mut ty = &e.algebraic_type;
            for _ in 0..16 {
                match ty {
                    AlgebraicType::Ref(r) => match ts.types.get(r.0 as usize) {
                        Some(t) => ty = t,
                        None => break,
                    },
                    _ => break,
                }
            }
            match ty {
                AlgebraicType::String => ParamShape::String,
                AlgebraicType::Array(_) => ParamShape::Array,
                _ => ParamShape::Other,
            }
        })
        .collect()
}

/// Builds the JSON array of arguments from the command line's words.
///
/// Each word is one JSON value; a word that is not valid JSON is a string. When the parameter
/// list is known, a word for a `String` parameter that is not a JSON string is the string itself
/// (`call chat send_message 42` sends `"42"`). A single word that is a JSON array is the whole
/// argument list (the older `'["Hello, World!"]'` form) — unless the reducer takes exactly one
/// array parameter, in which case it is that parameter's value (and `'[[…]]'` is the whole list).
pub fn build_call_args(words: &[String], params: Option<&[ParamShape]>) -> String {
    if let [word] = words {
        if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(word) {
            let is_whole_list = match params {
                Some([ParamShape::Array]) => items.len() == 1 && items[0].is_array(),
                _ => true,
            };
            if is_whole_list {
                return Value::Array(items).to_string();
            }
        }
    }
    let values: Vec<Value> = words
        .iter()
        .enumerate()
        .map(|(i, word)| {
            let parsed = serde_json::from_str::<Value>(word).ok();
            let shape = params.and_then(|p| p.get(i)).copied();
            match (parsed, shape) {
                (Some(v @ Value::String(_)), _) => v,
                (Some(_), Some(ParamShape::String)) | (None, _) => Value::String(word.clone()),
                (Some(v), _) => v,
            }
        })
        .collect();
    Value::Array(values).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn single_array_is_the_whole_list() {
        assert_eq!(build_call_args(&w(&[r#"["Hello, World!"]"#]), None), r#"["Hello, World!"]"#);
        assert_eq!(
            build_call_args(&w(&[r#"["Hello, World!"]"#]), Some(&[ParamShape::String])),
            r#"["Hello, World!"]"#
        );
        assert_eq!(build_call_args(&w(&["[1, 2]"]), None), "[1,2]");
    }

    #[test]
    fn words_become_values() {
        assert_eq!(build_call_args(&w(&["Hello, World!"]), None), r#"["Hello, World!"]"#);
        assert_eq!(build_call_args(&w(&["\"quoted\"", "3", "true"]), None), r#"["quoted",3,true]"#);
        assert_eq!(build_call_args(&w(&[]), None), "[]");
        assert_eq!(
            build_call_args(&w(&["42", "42"]), Some(&[ParamShape::String, ParamShape::Other])),
            r#"["42",42]"#
        );
        assert_eq!(build_call_args(&w(&["{\"a\": 1}"]), None), r#"[{"a":1}]"#);
    }

    #[test]
    fn single_array_parameter_takes_the_array() {
        assert_eq!(build_call_args(&w(&[r#"["a","b"]"#]), Some(&[ParamShape::Array])), r#"[["a","b"]]"#);
        assert_eq!(build_call_args(&w(&[r#"[["a","b"]]"#]), Some(&[ParamShape::Array])), r#"[["a","b"]]"#);
    }
}

//! Fuzzes the BSATN row decoder at the module boundary: a row of a table whose columns cover
//! every kind of column codec (primitives, the special single-field products, strings, bytes,
//! and opaque options, arrays, enums, nested and recursive products). Any bytes give a row or
//! a typed error, never a panic, unbounded recursion or a huge allocation; a row that decodes
//! encodes back to exactly the same bytes (BSATN is canonical).
//!
//! Run: `cargo +nightly fuzz run bsatn_row` from `fuzz/`.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use lightcone_host::codec::{column_codec, RowCodec};
use spacetimedb_sats::{AlgebraicType, AlgebraicTypeRef, Typespace};

fn codec() -> &'static RowCodec {
    static CODEC: OnceLock<RowCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        // Type 0: `List { head: u32, tail: Option<List> }` (recursive, through a reference).
        let list = AlgebraicType::product([
            ("head", AlgebraicType::U32),
            ("tail", AlgebraicType::option(AlgebraicType::Ref(AlgebraicTypeRef(0)))),
        ]);
        let typespace = Arc::new(Typespace::new(vec![list]));
        let columns = [
            ("flag", AlgebraicType::Bool),
            ("small", AlgebraicType::I8),
            ("id", AlgebraicType::U64),
            ("wide", AlgebraicType::I128),
            ("real", AlgebraicType::F64),
            ("who", AlgebraicType::identity()),
            ("when", AlgebraicType::timestamp()),
            ("name", AlgebraicType::String),
            ("blob", AlgebraicType::bytes()),
            ("nick", AlgebraicType::option(AlgebraicType::String)),
            ("scores", AlgebraicType::array(AlgebraicType::I32)),
            ("shape", AlgebraicType::sum([("circle", AlgebraicType::F32), ("square", AlgebraicType::unit())])),
            ("list", AlgebraicType::Ref(AlgebraicTypeRef(0))),
        ];
        let columns = columns
            .into_iter()
            .map(|(name, ty)| (name.to_string(), column_codec(&ty, &typespace).expect("valid column type")))
            .collect();
        RowCodec { table: "fuzzed".into(), columns, typespace, hidden_sender: false }
    })
}

fuzz_target!(|data: &[u8]| {
    let codec = codec();
    if let Ok(row) = codec.decode_row(data) {
        let mut again = Vec::new();
        codec.encode_row(&row, &mut again);
        assert_eq!(again, data, "a decoded row re-encodes differently");
    }
});

//! `lightcone sql`: the server's JSON answer rendered as psql-style tables, the way the
//! `spacetime` CLI prints them (cells formatted by `spacetimedb-sats`' own psql formatter).

use serde::de::DeserializeSeed;
use spacetimedb_sats::de::serde::SeedWrapper;
use spacetimedb_sats::satn::{PsqlClient, PsqlType, PsqlWrapper};
use spacetimedb_sats::{AlgebraicValue, ProductType, ProductValue, Typespace};

use super::error::CliError;

/// One statement's result, as the server sends it.
#[derive(Debug, Clone)]
pub struct StmtResult {
    pub schema: ProductType,
    pub rows: Vec<ProductValue>,
}

/// Parses `POST /v1/database/:db/sql`'s answer: a JSON array of `{schema, rows, …}`.
pub fn parse_sql_response(json: &str) -> Result<Vec<StmtResult>, CliError> {
    let bad = |e: String| CliError::BadResponse(format!("sql answer: {e}"));
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let stmts = match value {
        serde_json::Value::Array(a) => a,
        other => return Err(bad(format!("expected a JSON array, got {}", short(&other)))),
    };
    let mut out = Vec::with_capacity(stmts.len());
    for stmt in stmts {
        let serde_json::Value::Object(mut obj) = stmt else {
            return Err(bad("a statement result is not an object".into()));
        };
        let schema_json = obj.remove("schema").ok_or_else(|| bad("missing `schema`".into()))?;
        let schema: ProductType = spacetimedb_sats::de::serde::deserialize_from(schema_json)
            .map_err(|e: serde_json::Error| bad(format!("schema: {e}")))?;
        let rows_json = match obj.remove("rows") {
            Some(serde_json::Value::Array(r)) => r,
            Some(_) => return Err(bad("`rows` is not an array".into())),
            None => Vec::new(),
        };
        let ty = Typespace::EMPTY.with_type(&schema);
        let mut rows = Vec::with_capacity(rows_json.len());
        for row in rows_json {
            let value = SeedWrapper(ty).deserialize(row).map_err(|e| bad(format!("row: {e}")))?;
            rows.push(value);
        }
        out.push(StmtResult { schema, rows });
    }
    Ok(out)
}

fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}…", &s[..s.floor_char_boundary(80)])
    } else {
        s
    }
}

/// Formats one cell like the `spacetime` CLI: strings quoted, identities as `0x…` hex,
/// timestamps RFC 3339, nested products `(a = 1, b = "x")`.
pub fn format_cell(schema: &ProductType, idx: usize, value: &AlgebraicValue) -> String {
    let field = &schema.elements[idx];
    let ty = PsqlType { client: PsqlClient::SpacetimeDB, tuple: schema, field, idx };
    let typed = Typespace::EMPTY.with_type(&field.algebraic_type).with_value(value);
    // The sats formatter unwraps on timestamps outside chrono's range: never let that kill us.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| PsqlWrapper { ty, value: typed }.to_string()))
        .unwrap_or_else(|_| format!("{value:?}"))
}

/// The column titles: names, or `column N` for unnamed ones.
pub fn header(schema: &ProductType) -> Vec<String> {
    schema
        .elements
        .iter()
        .enumerate()
        .map(|(i, e)| e.name.as_deref().map(str::to_owned).unwrap_or_else(|| format!("column {i}")))
        .collect()
}

/// One statement's result as a psql-style table (header, `---+---` rule, rows; no outer border).
pub fn render_table(stmt: &StmtResult) -> String {
    let rows: Vec<Vec<String>> = stmt
        .rows
        .iter()
        .map(|row| {
            (0..stmt.schema.elements.len())
                .map(|i| row.elements.get(i).map(|v| format_cell(&stmt.schema, i, v)).unwrap_or_default())
                .collect()
        })
        .collect();
    psql_table(&header(&stmt.schema), &rows)
}

/// Lays out cells like `tabled`'s `Style::psql()`: one space of padding each side, columns
/// separated by `|`, a `-`/`+` rule under the header. Lines end without a newline character
/// except between lines.
pub fn psql_table(header: &[String], rows: &[Vec<String>]) -> String {
    let ncols = header.len().max(rows.iter().map(Vec::len).max().unwrap_or(0));
    let width = |s: &str| s.chars().count();
    let mut widths = vec![0usize; ncols];
    for line in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        for (i, cell) in line.iter().enumerate() {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let render_line = |cells: &[String]| -> String {
        (0..ncols)
            .map(|i| {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                format!(" {cell}{} ", " ".repeat(widths[i] - width(cell)))
            })
            .collect::<Vec<_>>()
            .join("|")
    };
    let mut lines = Vec::with_capacity(rows.len() + 2);
    lines.push(render_line(header));
    lines.push(widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"));
    for row in rows {
        lines.push(render_line(row));
    }
    lines.join("\n")
}

/// The whole answer as the CLI prints it: tables separated by blank lines, or `OK` when no
/// statement returned a table.
pub fn render_sql_response(stmts: &[StmtResult]) -> String {
    if stmts.is_empty() {
        return "OK".to_owned();
    }
    stmts.iter().map(render_table).collect::<Vec<_>>().join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use spacetimedb_sats::{AlgebraicType, ProductTypeElement};

    fn col(name: &'static str, ty: AlgebraicType) -> ProductTypeElement {
        ProductTypeElement { name: Some(name.into()), algebraic_type: ty }
    }

    #[test]
    fn strings_are_quoted_and_columns_padded() {
        let schema = ProductType::from([col("id", AlgebraicType::U64), col("text", AlgebraicType::String)]);
        let stmt = StmtResult {
            schema,
            rows: vec![
                ProductValue::from_iter([
                    AlgebraicValue::U64(1),
                    AlgebraicValue::String("Hello, World!".into()),
                ]),
                ProductValue::from_iter([AlgebraicValue::U64(22), AlgebraicValue::String("x".into())]),
            ],
        };
        let out = render_table(&stmt);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], " id | text            ");
        assert_eq!(lines[1], "----+-----------------");
        assert_eq!(lines[2], " 1  | \"Hello, World!\" ");
        assert_eq!(lines[3], " 22 | \"x\"             ");
    }

    #[test]
    fn identities_are_hex_and_options_and_products_are_satn() {
        let inner = ProductType::from([col("a", AlgebraicType::U8), col("b", AlgebraicType::String)]);
        let schema = ProductType::from([
            col("sender", AlgebraicType::identity()),
            col("name", AlgebraicType::option(AlgebraicType::String)),
            col("pair", AlgebraicType::Product(inner)),
        ]);
        let mut id = [0u8; 32];
        id[31] = 0xc2; // little-endian: the most significant byte last
        let identity = AlgebraicValue::product([AlgebraicValue::U256(Box::new(
            spacetimedb_sats::u256::from_le_bytes(id),
        ))]);
        let row = ProductValue::from_iter([
            identity,
            AlgebraicValue::OptionSome(AlgebraicValue::String("bob".into())),
            AlgebraicValue::product([AlgebraicValue::U8(3), AlgebraicValue::String("x".into())]),
        ]);
        let none_row = ProductValue::from_iter([
            row.elements[0].clone(),
            AlgebraicValue::OptionNone(),
            row.elements[2].clone(),
        ]);
        let stmt = StmtResult { schema, rows: vec![row, none_row] };
        let out = render_table(&stmt);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[2].contains(&format!("0xc2{}", "0".repeat(62))), "{out}");
        assert!(lines[2].contains("(some = \"bob\")"), "{out}");
        assert!(lines[2].contains("(a = 3, b = \"x\")"), "{out}");
        assert!(lines[3].contains("(none = ())"), "{out}");
    }

    #[test]
    fn parses_the_servers_json_and_renders_ok_for_no_tables() {
        let json = r#"[{"schema":{"elements":[{"name":{"some":"n"},"algebraic_type":{"U32":[]}},
            {"name":{"some":"s"},"algebraic_type":{"String":[]}}]},
            "rows":[[7,"seven"]],"total_duration_micros":5,
            "stats":{"rows_inserted":0,"rows_deleted":0,"rows_updated":0}}]"#;
        let stmts = parse_sql_response(json).unwrap();
        assert_eq!(render_sql_response(&stmts), " n | s       \n---+---------\n 7 | \"seven\" ");
        assert_eq!(render_sql_response(&parse_sql_response("[]").unwrap()), "OK");
        assert!(parse_sql_response("{}").is_err());
        assert!(parse_sql_response(r#"[{"schema":{"elements":[]},"rows":[[1]]}]"#).is_err());
    }

    #[test]
    fn empty_result_has_header_only() {
        let stmt = StmtResult { schema: ProductType::from([col("id", AlgebraicType::U32)]), rows: vec![] };
        assert_eq!(render_table(&stmt), " id \n----");
    }
}

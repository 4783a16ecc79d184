//! `lightcone logs`: module log records (newline-delimited JSON) printed as text lines like
//! `2026-11-23T00:43:52.821527Z  INFO: src/lib.rs:12: message`.

use serde_json::Value;

/// `µs since the Unix epoch` as RFC 3339 UTC with microseconds (`…T00:43:52.821527Z`).
pub fn format_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z", sod / 3600, (sod / 60) % 60, sod % 60)
}

/// Howard Hinnant's days → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// One JSON record as text; a line that is not a JSON object is returned as it is.
pub fn format_record(line: &str) -> String {
    let Ok(Value::Object(rec)) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let ts = match rec.get("ts") {
        Some(Value::Number(n)) => n.as_i64().map(format_micros).unwrap_or_else(|| n.to_string()),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let level = rec.get("level").and_then(Value::as_str).unwrap_or("").to_ascii_uppercase();
    let mut out = format!("{ts} {level:>5}: ");
    let filename = rec.get("filename").and_then(Value::as_str).filter(|s| !s.is_empty());
    let target = rec.get("target").and_then(Value::as_str).filter(|s| !s.is_empty());
    match (filename, target) {
        (Some(f), _) => {
            out.push_str(f);
            if let Some(l) = rec.get("line_number").and_then(Value::as_u64) {
                out.push_str(&format!(":{l}"));
            }
            out.push_str(": ");
        }
        (None, Some(t)) => {
            out.push_str(t);
            out.push_str(": ");
        }
        (None, None) => {}
    }
    out.push_str(rec.get("message").and_then(Value::as_str).unwrap_or(""));
    if let Some(Value::Array(frames)) = rec.get("trace") {
        for frame in frames {
            let name = frame
                .get("func_name")
                .and_then(Value::as_str)
                .or_else(|| frame.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| frame.to_string());
            out.push_str(&format!("\n    in {name}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_micros(1_795_394_632_821_527), "2026-11-23T00:43:52.821527Z");
    }

    #[test]
    fn formats_records() {
        let line = r#"{"ts":1795394632821527,"level":"Info","target":"quickstart_chat","filename":"src/lib.rs","line_number":12,"message":"Hello, World!"}"#;
        assert_eq!(format_record(line), "2026-11-23T00:43:52.821527Z  INFO: src/lib.rs:12: Hello, World!");
        let line = r#"{"ts":0,"level":"Panic","target":"spacetimedb","filename":null,"line_number":null,"message":"boom","trace":[{"func_name":"send"}]}"#;
        assert_eq!(format_record(line), "1970-01-01T00:00:00.000000Z PANIC: spacetimedb: boom\n    in send");
        assert_eq!(format_record("not json"), "not json");
    }
}

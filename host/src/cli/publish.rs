//! `lightcone publish`: build the module with cargo (or take a `.wasm`) and upload it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::error::CliError;

/// The wasm target modules are built for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Builds the crate in `project_dir` for wasm (`cargo build --release --target …`, cargo's own
/// progress on stderr) and returns the produced `.wasm`.
pub fn build_module(project_dir: &Path, build_options: &[String]) -> Result<PathBuf, CliError> {
    let manifest = project_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(CliError::Build(format!(
            "{} has no Cargo.toml: give the module's directory with -p, or a built module with -b FILE.wasm",
            project_dir.display()
        )));
    }
    let (target_dir, lib_name) = locate_artifact(&manifest)?;
    eprintln!("Building the module in {} …", project_dir.display());
    let status = Command::new(cargo())
        .args(["build", "--release", "--target", WASM_TARGET, "--manifest-path"])
        .arg(&manifest)
        .args(build_options)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| CliError::Build(format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(CliError::Build(format!(
            "cargo build failed ({status}); is the target installed? (`rustup target add {WASM_TARGET}`)"
        )));
    }
    let wasm = target_dir.join(WASM_TARGET).join("release").join(format!("{lib_name}.wasm"));
    if !wasm.is_file() {
        return Err(CliError::Build(format!(
            "cargo succeeded but {} is missing; is the crate a `cdylib`?",
            wasm.display()
        )));
    }
    Ok(wasm)
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The target directory and the file stem of the package's cdylib, from `cargo metadata`.
fn locate_artifact(manifest: &Path) -> Result<(PathBuf, String), CliError> {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(manifest)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| CliError::Build(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        return Err(CliError::Build("`cargo metadata` failed".into()));
    }
    let meta: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| CliError::Build(format!("cannot read `cargo metadata`: {e}")))?;
    let target_dir = meta
        .get("target_directory")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| CliError::Build("`cargo metadata` has no target_directory".into()))?;
    let manifest_abs = std::fs::canonicalize(manifest).unwrap_or_else(|_| manifest.to_owned());
    let packages = meta.get("packages").and_then(Value::as_array).cloned().unwrap_or_default();
    let package = packages
        .iter()
        .find(|p| {
            p.get("manifest_path")
                .and_then(Value::as_str)
                .map(|m| std::fs::canonicalize(m).unwrap_or_else(|_| PathBuf::from(m)) == manifest_abs)
                .unwrap_or(false)
        })
        .or_else(|| packages.first())
        .ok_or_else(|| CliError::Build("no package in this directory (a workspace root?); use -p".into()))?;
    let targets = package.get("targets").and_then(Value::as_array).cloned().unwrap_or_default();
    let cdylib = targets.iter().find(|t| {
        t.get("crate_types").and_then(Value::as_array).is_some_and(|k| k.iter().any(|k| k == "cdylib"))
    });
    let name = cdylib.and_then(|t| t.get("name")).and_then(Value::as_str).ok_or_else(|| {
        CliError::Build("the package has no cdylib target: add `[lib] crate-type = [\"cdylib\"]`".into())
    })?;
    Ok((target_dir, name.replace('-', "_")))
}

/// The line printed for `PUT/POST /v1/database…`'s JSON answer.
pub fn publish_message(answer: &Value, name: Option<&str>) -> Result<String, CliError> {
    if let Some(success) = answer.get("Success") {
        let identity = success.get("database_identity").and_then(Value::as_str).unwrap_or("?");
        let domain = success.get("domain").and_then(Value::as_str).or(name);
        let op = success.get("op").and_then(Value::as_str).unwrap_or("created");
        let verb = if op.eq_ignore_ascii_case("updated") { "Updated" } else { "Created new" };
        return Ok(match domain {
            Some(d) => format!("{verb} database with name: {d}, identity: {identity}"),
            None => format!("{verb} database with identity: {identity}"),
        });
    }
    if let Some(denied) = answer.get("PermissionDenied") {
        let n = denied.get("name").and_then(Value::as_str).or(name).unwrap_or("?");
        return Err(CliError::Http {
            status: 403,
            body: format!("permission denied: the database `{n}` belongs to another identity"),
        });
    }
    Err(CliError::BadResponse(format!("unexpected publish answer: {answer}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_messages() {
        let created: Value = serde_json::from_str(
            r#"{"Success":{"domain":"quickstart-chat","database_identity":"c200aa","op":"created"}}"#,
        )
        .unwrap();
        assert_eq!(
            publish_message(&created, Some("quickstart-chat")).unwrap(),
            "Created new database with name: quickstart-chat, identity: c200aa"
        );
        let updated: Value = serde_json::from_str(
            r#"{"Success":{"domain":null,"database_identity":"c200aa","op":"updated"}}"#,
        )
        .unwrap();
        assert_eq!(publish_message(&updated, None).unwrap(), "Updated database with identity: c200aa");
        let denied: Value = serde_json::from_str(r#"{"PermissionDenied":{"name":"x"}}"#).unwrap();
        assert!(publish_message(&denied, None).is_err());
    }
}

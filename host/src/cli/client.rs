//! Reusable client code: which server a command talks to, the HTTP requests with the stored
//! token, and failures mapped to messages a user can act on.

use std::io::Read;
use std::time::Duration;

use ureq::http::{Request, Response};
use ureq::Body;

use super::config::Config;
use super::error::CliError;

/// Where `lightcone start` listens by default.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:3000";

/// Largest response body read into memory (SQL results, schemas).
const MAX_BODY_BYTES: u64 = 1 << 30;

/// Resolves `-s/--server`: a nickname from the config, `local`, a URL, or a bare `host:port`.
/// Without `-s`, the config's default server, else [`DEFAULT_SERVER_URL`].
pub fn resolve_server(arg: Option<&str>, config: &Config) -> Result<String, CliError> {
    let name = match arg.map(str::trim) {
        Some(a) => a.to_owned(),
        None => match &config.default_server {
            Some(d) => d.clone(),
            None => return Ok(DEFAULT_SERVER_URL.to_owned()),
        },
    };
    if let Some(url) = config.server_by_nickname(&name) {
        return normalize_url(url);
    }
    if name == "local" {
        return Ok(DEFAULT_SERVER_URL.to_owned());
    }
    normalize_url(&name)
}

/// `http://h:p` / `https://h:p` as given (no trailing slash); `h:p`, `h.example` or
/// `localhost[:p]` get `http://`.
pub fn normalize_url(s: &str) -> Result<String, CliError> {
    let s = s.trim().trim_end_matches('/');
    let lower = s.to_ascii_lowercase();
    let (scheme, rest) = if let Some(rest) = lower.strip_prefix("http://") {
        ("http://", &s[s.len() - rest.len()..])
    } else if let Some(rest) = lower.strip_prefix("https://") {
        ("https://", &s[s.len() - rest.len()..])
    } else {
        ("", s)
    };
    let host = rest.split('/').next().unwrap_or("");
    let valid_host = !host.is_empty()
        && !host.contains(char::is_whitespace)
        && match host.rsplit_once(':') {
            Some((h, port)) => !h.is_empty() && port.parse::<u16>().is_ok(),
            None => true,
        };
    if !valid_host {
        return Err(CliError::UnknownServer(s.to_owned()));
    }
    if !scheme.is_empty() {
        return Ok(format!("{scheme}{rest}"));
    }
    let looks_like_host = host.contains(':') || host.contains('.') || host.eq_ignore_ascii_case("localhost");
    if looks_like_host {
        Ok(format!("http://{rest}"))
    } else {
        Err(CliError::UnknownServer(s.to_owned()))
    }
}

/// Percent-encodes one path segment (database or reducer name).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads the `hex_identity` claim out of a JWT (without checking its signature).
pub fn identity_of_token(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(payload.trim_end_matches('=')))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("hex_identity")?.as_str().map(str::to_owned)
}

/// A request body and its content type.
pub struct Payload {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Payload {
    pub fn json(text: String) -> Payload {
        Payload { content_type: "application/json", bytes: text.into_bytes() }
    }
    pub fn text(text: String) -> Payload {
        Payload { content_type: "text/plain; charset=utf-8", bytes: text.into_bytes() }
    }
    pub fn wasm(bytes: Vec<u8>) -> Payload {
        Payload { content_type: "application/wasm", bytes }
    }
}

/// A connection to one server, with or without a token.
pub struct Client {
    agent: ureq::Agent,
    server: String,
    token: Option<String>,
}

impl Client {
    pub fn new(server: String, token: Option<String>) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .user_agent(concat!("lightcone-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Client { agent, server, token }
    }

    /// The server's base URL (no `/v1`).
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// `path` is under `/v1` and starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.server)
    }

    /// Sends a request and returns the response whatever its status.
    pub fn send(&self, method: &str, path: &str, body: Option<Payload>) -> Result<Response<Body>, CliError> {
        let url = self.url(path);
        let mut builder = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            builder = builder.header("Authorization", format!("Bearer {token}"));
        }
        let result = match body {
            Some(p) => {
                let req = builder
                    .header("Content-Type", p.content_type)
                    .body(p.bytes)
                    .map_err(|e| CliError::Transport { url: url.clone(), reason: e.to_string() })?;
                self.agent.run(req)
            }
            None => {
                let req = builder
                    .body(())
                    .map_err(|e| CliError::Transport { url: url.clone(), reason: e.to_string() })?;
                self.agent.run(req)
            }
        };
        result.map_err(|e| self.map_error(&url, e))
    }

    /// Sends a request; a non-2xx answer becomes [`CliError::Http`] with the body's text.
    pub fn send_ok(
        &self,
        method: &str,
        path: &str,
        body: Option<Payload>,
    ) -> Result<Response<Body>, CliError> {
        let mut resp = self.send(method, path, body)?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            Ok(resp)
        } else {
            let body = read_text(&mut resp).unwrap_or_default();
            Err(CliError::Http { status, body })
        }
    }

    /// [`Client::send_ok`] and the whole body as text.
    pub fn text(&self, method: &str, path: &str, body: Option<Payload>) -> Result<String, CliError> {
        let mut resp = self.send_ok(method, path, body)?;
        read_text(&mut resp)
    }

    /// [`Client::text`] parsed as JSON.
    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<Payload>,
    ) -> Result<serde_json::Value, CliError> {
        let text = self.text(method, path, body)?;
        serde_json::from_str(&text)
            .map_err(|e| CliError::BadResponse(format!("{path}: {e}: {}", clip(&text))))
    }

    pub fn map_error(&self, url: &str, e: ureq::Error) -> CliError {
        map_ureq_error(&self.server, url, e)
    }
}

/// Maps a transport failure; "nobody listening" gets the `lightcone start` hint.
pub fn map_ureq_error(server: &str, url: &str, e: ureq::Error) -> CliError {
    let unreachable = |reason: String| CliError::Unreachable { server: server.to_owned(), reason };
    match e {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::AddrNotAvailable
            | std::io::ErrorKind::TimedOut => unreachable(io.to_string()),
            _ => CliError::Transport { url: url.to_owned(), reason: io.to_string() },
        },
        ureq::Error::ConnectionFailed => unreachable("connection failed".into()),
        ureq::Error::HostNotFound => unreachable("host not found".into()),
        ureq::Error::Timeout(t) => unreachable(format!("timed out ({t})")),
        ureq::Error::TlsRequired | ureq::Error::Tls(_) => CliError::Transport {
            url: url.to_owned(),
            reason: "https is not supported by this build of the CLI; use http://".into(),
        },
        other => CliError::Transport { url: url.to_owned(), reason: other.to_string() },
    }
}

/// Reads a whole response body as (lossy) UTF-8 text.
pub fn read_text(resp: &mut Response<Body>) -> Result<String, CliError> {
    let mut bytes = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(MAX_BODY_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::BadResponse(format!("reading the body: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The first 200 characters of `s`, for error messages.
pub fn clip(s: &str) -> String {
    let s = s.trim();
    if s.len() > 200 {
        format!("{}…", &s[..s.floor_char_boundary(200)])
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_resolution() {
        let mut config = Config::default();
        assert_eq!(resolve_server(None, &config).unwrap(), DEFAULT_SERVER_URL);
        assert_eq!(resolve_server(Some("local"), &config).unwrap(), DEFAULT_SERVER_URL);
        assert_eq!(resolve_server(Some("127.0.0.1:4000"), &config).unwrap(), "http://127.0.0.1:4000");
        assert_eq!(resolve_server(Some("localhost"), &config).unwrap(), "http://localhost");
        assert_eq!(resolve_server(Some("http://h:1/"), &config).unwrap(), "http://h:1");
        assert_eq!(
            resolve_server(Some("HTTPS://db.example.com"), &config).unwrap(),
            "https://db.example.com"
        );
        assert!(resolve_server(Some("nosuchnick"), &config).is_err());
        assert!(resolve_server(Some("h:notaport"), &config).is_err());
        assert!(resolve_server(Some(""), &config).is_err());
        config.servers.push(super::super::config::ServerEntry {
            nickname: "prod".into(),
            url: "http://10.0.0.1:3000".into(),
        });
        assert_eq!(resolve_server(Some("prod"), &config).unwrap(), "http://10.0.0.1:3000");
        config.default_server = Some("prod".into());
        assert_eq!(resolve_server(None, &config).unwrap(), "http://10.0.0.1:3000");
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("quickstart-chat"), "quickstart-chat");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn identity_from_jwt_payload() {
        use base64::Engine;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"hex_identity":"c200ab"}"#);
        assert_eq!(identity_of_token(&format!("x.{payload}.y")).as_deref(), Some("c200ab"));
        assert_eq!(identity_of_token("garbage"), None);
    }
}

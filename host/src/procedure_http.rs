//! HTTP requests made by procedures (`procedure_http_request`): the guest's BSATN
//! `spacetimedb_lib::http::Request` in, a `Response` plus body (or an error message) out.
//!
//! A database runs its procedures one at a time, on a thread beside its reducers, so a
//! request holds up the procedures behind it: its timeout is capped at [`MAX_PROCEDURE_BLOCKING`], and the response body at
//! [`MAX_HTTP_RESPONSE_BYTES`]. `https://` goes through rustls with the webpki roots.

use std::sync::OnceLock;
use std::time::Duration;

use spacetimedb_lib::http::{Headers, Method, Request, Response, Version};

/// Longest a procedure may block in one HTTP request or sleep.
pub const MAX_PROCEDURE_BLOCKING: Duration = Duration::from_secs(10);
/// Largest response body handed back to a procedure.
pub const MAX_HTTP_RESPONSE_BYTES: u64 = 16 << 20;

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            // Every status is a response for the procedure to look at, not an error.
            .http_status_as_error(false)
            .user_agent(concat!("lightcone/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent()
    })
}

fn method_name(m: &Method) -> &str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Extension(s) => s,
    }
}

fn version_of(v: ureq::http::Version) -> Version {
    match v {
        ureq::http::Version::HTTP_09 => Version::Http09,
        ureq::http::Version::HTTP_10 => Version::Http10,
        ureq::http::Version::HTTP_2 => Version::Http2,
        ureq::http::Version::HTTP_3 => Version::Http3,
        _ => Version::Http11,
    }
}

/// Performs `request` with `body`. `Err` is the failure message the guest receives (any
/// HTTP status, 404 or 500 included, is a successful response).
pub fn perform(request: Request, body: &[u8]) -> Result<(Response, Vec<u8>), String> {
    let uri = request.uri.clone();
    let timeout = request
        .timeout
        .map(|t| t.to_duration_saturating())
        .unwrap_or(MAX_PROCEDURE_BLOCKING)
        .min(MAX_PROCEDURE_BLOCKING);
    let mut builder = ureq::http::Request::builder().method(method_name(&request.method)).uri(&uri);
    for (name, value) in request.headers.into_iter() {
        builder = builder.header(&*name, &*value);
    }
    let req = builder.body(body.to_vec()).map_err(|e| format!("{uri}: invalid request: {e}"))?;
    let config = agent().configure_request(req).timeout_global(Some(timeout)).build();
    let mut resp = agent().run(config).map_err(|e| format!("{uri}: {e}"))?;
    let data = resp
        .body_mut()
        .with_config()
        .limit(MAX_HTTP_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|e| format!("{uri}: reading the response body: {e}"))?;
    let headers: Headers = resp
        .headers()
        .iter()
        .map(|(name, value)| (Some(Box::<str>::from(name.as_str())), Box::<[u8]>::from(value.as_bytes())))
        .collect();
    let response = Response { headers, version: version_of(resp.version()), code: resp.status().as_u16() };
    Ok((response, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn request(uri: String, method: Method, timeout: Option<Duration>) -> Request {
        Request {
            method,
            headers: [(Some(Box::<str>::from("x-test")), Box::<[u8]>::from(&b"yes"[..]))]
                .into_iter()
                .collect(),
            timeout: timeout.map(|t| spacetimedb_lib::TimeDuration::from_micros(t.as_micros() as i64)),
            uri,
            version: Version::Http11,
        }
    }

    #[test]
    fn a_request_reaches_a_server_and_its_answer_comes_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("ping") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the request ended early: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 418 I'm a teapot\r\ncontent-length: 4\r\nx-reply: 1\r\n\r\npong").unwrap();
            String::from_utf8(got).unwrap()
        });
        let (resp, body) = perform(request(format!("http://{addr}/path?q=1"), Method::Post, None), b"ping")
            .expect("a 418 is a response");
        let seen = server.join().unwrap();
        assert!(seen.starts_with("POST /path?q=1 HTTP/1.1"), "{seen}");
        assert!(seen.to_ascii_lowercase().contains("x-test: yes"), "{seen}");
        assert_eq!(resp.code, 418);
        assert_eq!(body, b"pong");
        assert!(resp.headers.into_iter().any(|(n, v)| &*n == "x-reply" && &*v == b"1"));
    }

    fn failure(result: Result<(Response, Vec<u8>), String>) -> String {
        match result {
            Ok((resp, _)) => panic!("expected a failure, got status {}", resp.code),
            Err(e) => e,
        }
    }

    #[test]
    fn failures_are_messages_naming_the_uri() {
        // Nothing listens on a port that was just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let uri = format!("http://127.0.0.1:{port}/");
        let err = failure(perform(request(uri.clone(), Method::Get, None), b""));
        assert!(err.contains(&uri), "{err}");
        // https is spoken (rustls): a server answering plain text fails the TLS handshake.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let plain = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        });
        let uri = format!("https://{addr}/");
        let err = failure(perform(request(uri.clone(), Method::Get, None), b""));
        plain.join().unwrap();
        assert!(err.contains(&uri), "{err}");
        assert!(!err.contains("not supported"), "{err}");
        let err = failure(perform(request("not a uri".into(), Method::Get, None), b""));
        assert!(err.contains("not a uri"), "{err}");
    }

    #[test]
    fn the_requested_timeout_is_kept() {
        // A server that accepts and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _hold = std::thread::spawn(move || {
            let conn = listener.accept();
            std::thread::sleep(Duration::from_secs(3));
            drop(conn);
        });
        let start = std::time::Instant::now();
        let err = failure(perform(
            request(format!("http://{addr}/"), Method::Get, Some(Duration::from_millis(200))),
            b"",
        ));
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
        assert!(err.to_ascii_lowercase().contains("timeout") || err.contains("timed out"), "{err}");
    }
}

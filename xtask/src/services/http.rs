//! A minimal HTTP/1.1 client on the loopback interface, for the API's own endpoints (`/health`,
//! `/auth/*` before a load run) and the Docker engine's socket ([`super::engine`]). Kept by hand on purpose: it talks only to our own server on
//! 127.0.0.1, with `Connection: close`, no TLS, no redirects and no proxy, which is ~60 lines;
//! a client crate (ureq without TLS) would add more to the xtask's build than it saves. The
//! answer is read to the end and a chunked body is decoded (hyper chunks a streamed body).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result};

/// Whether `GET path` on a loopback port answers 200.
pub fn http_ok(port: u16, path: &str) -> bool {
    http_get(port, path).is_ok_and(|(status, _)| status == 200)
}

/// A minimal HTTP/1.1 GET on the loopback interface.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    http_request(port, "GET", path, None, Duration::from_secs(3))
}

/// A minimal HTTP/1.1 request on loopback, with a JSON body when `body` is given; the status
/// and the body of the answer.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    read_timeout: Duration,
) -> Result<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(read_timeout))?;
    let (status, body) = exchange(stream, method, path, body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One HTTP/1.1 request with `Connection: close` on a connected stream (TCP, or the Docker
/// engine's Unix socket), a JSON body when `body` is given; the status and the whole body of
/// the answer. The caller sets the stream's timeouts.
pub(super) fn exchange(
    mut stream: impl Read + Write,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, Vec<u8>)> {
    let content = match body {
        Some(body) => format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        None => "\r\n".to_owned(),
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{content}"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    parse_response(&response)
}

/// The status and the body of a whole HTTP/1.1 answer, a chunked body decoded.
fn parse_response(response: &[u8]) -> Result<(u16, Vec<u8>)> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("not an HTTP response (no end of headers)")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("not an HTTP response")?;
    let chunked = head.lines().skip(1).any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// A chunked body (RFC 9112, section 7.1) as its bytes; trailers are ignored.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size without its line end")?;
        let line = std::str::from_utf8(&rest[..end]).context("a chunk size that is not text")?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16)
            .with_context(|| format!("{hex:?} is not a chunk size"))?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).context("the answer ends inside a chunk")?;
        body.extend_from_slice(chunk);
        rest = rest
            .get(size + 2..)
            .context("a chunk without its line end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_with_or_without_chunks() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(parse_response(plain).unwrap(), (200, b"ok".to_vec()));
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n\
            4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (503, b"{\"a\":1}".to_vec())
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
                .is_err()
        );
        assert!(parse_response(b"garbage").is_err());
    }
}

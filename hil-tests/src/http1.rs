//! A minimal HTTP/1.1 client for `openclaw-bench`'s load generator: one keep-alive
//! connection per bench client, one request in flight on it, the response read into a
//! buffer. The parser is plain code over bytes (`parse_head`, `parse_chunked`, tested below
//! without a server); `Connection` is the thin tokio shell around it.
//!
//! Why not reqwest (still used by the harness and the failover timing): on the bench's
//! machine the load generator shares the cores with the servers, and reqwest's pool, URL
//! parsing and header maps cost about twice the CPU per request of the minimal NATS client
//! the JetStream runs use (`nats.rs`); that CPU came out of the servers' share, and more
//! so for the faster system. With this client, each system's requests cost the load
//! generator about the same.
//!
//! Deliberately not here: TLS, redirects, `Expect: 100-continue`, pipelining, trailers
//! (read and dropped), compression.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest response head (status line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest response body accepted; bounds the buffer before the body is read.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Bytes reserved for each socket read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Why a request failed; the connection is closed after any of them and opened again by
/// the next request.
#[derive(Debug)]
pub enum Http1Error {
    Io(std::io::Error),
    /// No whole response within the connection's timeout.
    Timeout(Duration),
    /// The server closed the connection before a whole response.
    Closed,
    /// The response is not HTTP/1.1 this client reads.
    Protocol(String),
}

impl fmt::Display for Http1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Http1Error::Io(e) => write!(f, "HTTP connection: {e}"),
            Http1Error::Timeout(t) => write!(f, "no HTTP response within {t:?}"),
            Http1Error::Closed => write!(f, "the server closed the HTTP connection"),
            Http1Error::Protocol(m) => write!(f, "bad HTTP response: {m}"),
        }
    }
}

impl std::error::Error for Http1Error {}

impl From<std::io::Error> for Http1Error {
    fn from(e: std::io::Error) -> Self {
        Http1Error::Io(e)
    }
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    Exact(usize),
    Chunked,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub body: BodyLength,
    /// `Connection: close`: the connection ends after this response.
    pub close: bool,
}

/// A whole response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn protocol(message: impl Into<String>) -> Http1Error {
    Http1Error::Protocol(message.into())
}

/// The head at the start of `buf` and its length, `None` if it is not complete yet.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Http1Error> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD_BYTES {
            return Err(protocol(format!("head over {MAX_HEAD_BYTES} bytes")));
        }
        return Ok(None);
    };
    if end > MAX_HEAD_BYTES {
        return Err(protocol(format!("head over {MAX_HEAD_BYTES} bytes")));
    }
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| protocol("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if parts.next() != Some("HTTP/1.1") {
        return Err(protocol(format!("status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (200..600).contains(s))
        .ok_or_else(|| protocol(format!("status line {status_line:?}")))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| protocol(format!("header line {line:?}")))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| protocol(format!("Content-Length {value:?}")))?;
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
            if !chunked {
                return Err(protocol(format!("Transfer-Encoding {value:?}")));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body = match (chunked, length) {
        (true, _) => BodyLength::Chunked,
        (false, Some(n)) if n <= MAX_BODY_BYTES => BodyLength::Exact(n),
        (false, Some(n)) => return Err(protocol(format!("body of {n} bytes"))),
        // 204 and 304 have no body; anything else must say how long it is (this client
        // does not read to the end of the connection).
        (false, None) if status == 204 || status == 304 => BodyLength::Exact(0),
        (false, None) => return Err(protocol("a body without Content-Length")),
    };
    Ok(Some((
        Head {
            status,
            body,
            close,
        },
        end + 4,
    )))
}

/// The chunked body at the start of `buf` (after the head) and its encoded length, `None`
/// if it is not complete yet.
pub fn parse_chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, Http1Error> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = find_crlf(&buf[at..]) else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[at..at + line_end])
            .map_err(|_| protocol("chunk size line is not UTF-8"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| protocol(format!("chunk size {size_text:?}")))?;
        at += line_end + 2;
        if size == 0 {
            // Trailers, each a line, then an empty line.
            loop {
                let Some(end) = find_crlf(&buf[at..]) else {
                    return Ok(None);
                };
                at += end + 2;
                if end == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if body.len() + size > MAX_BODY_BYTES {
            return Err(protocol(format!(
                "chunked body over {MAX_BODY_BYTES} bytes"
            )));
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(protocol("chunk not followed by CRLF"));
        }
        at += size + 2;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// The whole response at the start of `buf` and its length, `None` if not complete yet.
pub fn parse_response(buf: &[u8]) -> Result<Option<(Response, Head, usize)>, Http1Error> {
    let Some((head, head_len)) = parse_head(buf)? else {
        return Ok(None);
    };
    let rest = &buf[head_len..];
    let (body, body_len) = match head.body {
        BodyLength::Exact(n) if rest.len() >= n => (rest[..n].to_vec(), n),
        BodyLength::Exact(_) => return Ok(None),
        BodyLength::Chunked => match parse_chunked(rest)? {
            Some(parsed) => parsed,
            None => return Ok(None),
        },
    };
    let response = Response {
        status: head.status,
        body,
    };
    Ok(Some((response, head, head_len + body_len)))
}

/// One keep-alive connection to one server, opened on first use and again after a failure.
pub struct Connection {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<TcpStream>,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Connection {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Connection {
            addr,
            timeout,
            stream: None,
            request: Vec::with_capacity(1024),
            buf: Vec::with_capacity(READ_CHUNK_BYTES),
        }
    }

    /// Sends one request (`path` with its query, `headers` as given, `body`) and reads its
    /// response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Http1Error> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange(method, path, headers, body)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(Http1Error::Timeout(timeout))
            }
        }
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Http1Error> {
        use std::io::Write as _;
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        let request = &mut self.request;
        request.clear();
        write!(
            request,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.addr
        )?;
        if !body.is_empty() || method != "GET" {
            write!(request, "Content-Length: {}\r\n", body.len())?;
        }
        for (name, value) in headers {
            write!(request, "{name}: {value}\r\n")?;
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        let stream = self.stream.as_mut().ok_or(Http1Error::Closed)?;
        stream.write_all(request).await?;
        loop {
            if let Some((response, head, used)) = parse_response(&self.buf)? {
                self.buf.drain(..used);
                if head.close {
                    self.stream = None;
                }
                return Ok(response);
            }
            self.buf.reserve(READ_CHUNK_BYTES);
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Err(Http1Error::Closed);
            }
        }
    }
}

/// The address of an `http://host:port` URL (the lab's and etcd's endpoints).
pub fn url_addr(url: &str) -> Result<SocketAddr, Http1Error> {
    url.strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .and_then(|host_port| host_port.parse().ok())
        .ok_or_else(|| protocol(format!("{url:?} is not http://ip:port")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(buf: &[u8]) -> (Response, usize) {
        let (response, _, used) = parse_response(buf)
            .expect("valid response")
            .expect("complete response");
        (response, used)
    }

    #[test]
    fn reads_a_response_with_content_length_and_leaves_what_follows() {
        let buf = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: x\r\n\r\nhelloHTTP/1.1";
        let (response, used) = whole(buf);
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"hello");
        assert_eq!(&buf[used..], b"HTTP/1.1");
    }

    #[test]
    fn waits_for_the_whole_head_and_body() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..buf.len() {
            assert!(
                parse_response(&buf[..cut])
                    .expect("a prefix is no error")
                    .is_none(),
                "a prefix of {cut} bytes is not a response"
            );
        }
        assert_eq!(whole(buf).1, buf.len());
    }

    #[test]
    fn reads_a_chunked_body_with_extensions_and_trailers() {
        let buf =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\n";
        let (response, used) = whole(buf);
        assert_eq!(response.body, b"hello!");
        assert_eq!(used, buf.len());
        for cut in 0..buf.len() {
            assert!(parse_response(&buf[..cut]).expect("prefix").is_none());
        }
    }

    #[test]
    fn connection_close_is_reported() {
        let buf =
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let (_, head, _) = parse_response(buf).expect("valid").expect("complete");
        assert!(head.close);
        assert_eq!(head.status, 503);
    }

    #[test]
    fn refuses_what_it_cannot_delimit_or_bound() {
        for bad in [
            &b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless = vec![b'a'; MAX_HEAD_BYTES + 1];
        assert!(parse_head(&endless).is_err());
        let huge_chunk = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            MAX_BODY_BYTES + 1
        );
        assert!(parse_response(huge_chunk.as_bytes()).is_err());
    }

    #[test]
    fn bodiless_statuses_need_no_length() {
        let (response, _) = whole(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert!(response.body.is_empty());
    }

    #[test]
    fn urls_name_an_address() {
        assert_eq!(
            url_addr("http://127.0.0.1:8080").expect("url"),
            "127.0.0.1:8080".parse().expect("addr")
        );
        assert!(url_addr("https://127.0.0.1:8080").is_err());
        assert!(url_addr("http://localhost:8080").is_err());
    }

    /// Against a real server: keep-alive, a response split over reads, reconnect after close.
    #[tokio::test]
    async fn keeps_the_connection_and_reconnects_after_a_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            for close_after in [2, 1] {
                let (mut socket, _) = listener.accept().await.expect("accept");
                accepted += 1;
                for i in 0..close_after {
                    let mut request = Vec::new();
                    while !request.ends_with(b"\r\n\r\nxy") {
                        let mut chunk = [0u8; 256];
                        let n = socket.read(&mut chunk).await.expect("read");
                        assert!(n > 0, "client closed early");
                        request.extend_from_slice(&chunk[..n]);
                    }
                    let close = i + 1 == close_after;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n{}\r\n",
                        if close { "Connection: close\r\n" } else { "" }
                    );
                    socket.write_all(head.as_bytes()).await.expect("head");
                    socket.flush().await.expect("flush");
                    socket.write_all(b"abc").await.expect("body");
                }
            }
            accepted
        });
        let mut connection = Connection::new(addr, Duration::from_secs(10));
        for _ in 0..3 {
            let response = connection
                .request("PUT", "/v1/kv/k", &[], b"xy")
                .await
                .expect("response");
            assert_eq!(response.body, b"abc");
        }
        assert_eq!(
            server.await.expect("server"),
            2,
            "one reconnect after the close"
        );
    }
}

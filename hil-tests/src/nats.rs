//! A minimal NATS client, just enough for `openclaw-bench --compare` to publish to a JetStream
//! stream and wait for each acknowledgement: CONNECT, SUB to an inbox, PUB with a reply
//! subject, and the server's INFO / MSG / PING / PONG / +OK / -ERR. The parser is plain code
//! over a byte buffer (`parse`, tested below without a server); `Connection` is the thin tokio
//! shell around it, one request in flight at a time.
//!
//! Deliberately not here: headers (CONNECT says `headers: false`, so the server never sends
//! HMSG), TLS, authentication, reconnection, queue groups, more than one outstanding request.
//!
//! Why not `async-nats`: it would bring TLS (rustls/tokio-rustls with its own feature set),
//! nkeys/ed25519, base64/url/time/serde_nanos and a background task with its own buffering
//! and flushing policy between the bench and the socket, for a workload that needs five
//! protocol verbs. A request/reply loop over one TCP socket per bench client measures
//! what the server does, not a client library's batching, and this file is its whole
//! dependency tree (tokio and serde_json, both already used by the crate).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest protocol line (everything before `\r\n`) accepted from the server: nats-server's
/// own default `max_control_line`, so a longer line can only be garbage.
pub const MAX_CONTROL_LINE_BYTES: usize = 4096;
/// Largest MSG payload accepted from the server: nats-server's default `max_payload` (1 MiB).
/// Bounds the read buffer before the payload is allocated.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Bytes reserved for each socket read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// The one subscription id this client uses (its reply inbox).
const INBOX_SID: u64 = 1;

/// Inbox prefixes are unique within the process (pid + counter), so replies never cross
/// connections even if two bench runs share a server.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(0);

/// One operation sent by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO {json}`: the server's description, sent first and on cluster changes.
    Info(String),
    /// `MSG subject sid [reply-to] bytes` and its payload.
    Msg(Msg),
    Ping,
    Pong,
    /// `+OK` (only in verbose mode, which this client turns off).
    Ok,
    /// `-ERR 'message'`; the quotes are removed.
    Err(String),
}

/// A delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub subject: String,
    pub sid: u64,
    pub reply_to: Option<String>,
    pub payload: Vec<u8>,
}

/// The server sent something this client cannot accept; the connection is unusable after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// No `\r\n` within `MAX_CONTROL_LINE_BYTES`.
    LineTooLong,
    /// A MSG announced more than `MAX_PAYLOAD_BYTES`.
    PayloadTooLarge { bytes: usize },
    /// A line of a known operation with the wrong arguments, or a payload not followed by
    /// `\r\n`.
    Malformed { line: String },
    /// An operation this client does not speak (HMSG included: it publishes headers but
    /// subscribes only to JetStream's acknowledgements, which carry none).
    Unknown { line: String },
    /// A subject this client was asked to use contains whitespace or is empty.
    BadSubject { subject: String },
    /// A message id this client was asked to send is empty or not visible ASCII.
    BadMessageId { id: String },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::LineTooLong => {
                write!(
                    f,
                    "protocol line longer than {MAX_CONTROL_LINE_BYTES} bytes"
                )
            }
            ProtocolError::PayloadTooLarge { bytes } => {
                write!(
                    f,
                    "MSG payload of {bytes} bytes (limit {MAX_PAYLOAD_BYTES})"
                )
            }
            ProtocolError::Malformed { line } => write!(f, "malformed protocol line {line:?}"),
            ProtocolError::Unknown { line } => write!(f, "unknown protocol operation {line:?}"),
            ProtocolError::BadSubject { subject } => write!(f, "invalid subject {subject:?}"),
            ProtocolError::BadMessageId { id } => write!(f, "invalid Nats-Msg-Id {id:?}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Why a connection or request failed.
#[derive(Debug)]
pub enum NatsError {
    Io(std::io::Error),
    Protocol(ProtocolError),
    /// The server answered `-ERR`.
    Server(String),
    /// The server closed the connection.
    Closed,
    /// Nothing (or not the awaited reply) arrived in time.
    Timeout {
        waiting_for: &'static str,
        after: Duration,
    },
}

impl fmt::Display for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsError::Io(e) => write!(f, "NATS connection: {e}"),
            NatsError::Protocol(e) => write!(f, "NATS protocol: {e}"),
            NatsError::Server(message) => write!(f, "NATS server error: {message}"),
            NatsError::Closed => write!(f, "NATS server closed the connection"),
            NatsError::Timeout { waiting_for, after } => {
                write!(f, "no {waiting_for} from the NATS server within {after:?}")
            }
        }
    }
}

impl std::error::Error for NatsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NatsError::Io(e) => Some(e),
            NatsError::Protocol(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for NatsError {
    fn from(e: std::io::Error) -> Self {
        NatsError::Io(e)
    }
}

impl From<ProtocolError> for NatsError {
    fn from(e: ProtocolError) -> Self {
        NatsError::Protocol(e)
    }
}

/// Parses one server operation from the front of `buf`: `Ok(Some((op, consumed)))`, or
/// `Ok(None)` when more bytes are needed. Never reads past the bounds above, so a caller
/// that appends reads to `buf` until this returns something holds at most
/// `MAX_CONTROL_LINE_BYTES + MAX_PAYLOAD_BYTES` plus one read.
pub fn parse(buf: &[u8]) -> Result<Option<(ServerOp, usize)>, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_CONTROL_LINE_BYTES + 2)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_CONTROL_LINE_BYTES + 1 {
            return Err(ProtocolError::LineTooLong);
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProtocolError::Malformed {
        line: String::from_utf8_lossy(&buf[..end]).into_owned(),
    })?;
    let after_line = end + 2;
    let (verb, rest) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    };
    let malformed = || ProtocolError::Malformed {
        line: line.to_owned(),
    };
    let op = match verb.to_ascii_uppercase().as_str() {
        "PING" => ServerOp::Ping,
        "PONG" => ServerOp::Pong,
        "+OK" => ServerOp::Ok,
        "-ERR" => ServerOp::Err(rest.trim_matches('\'').to_owned()),
        "INFO" => ServerOp::Info(rest.to_owned()),
        "MSG" => {
            let args: Vec<&str> = rest.split_whitespace().collect();
            let (subject, sid, reply_to, size) = match args.as_slice() {
                [subject, sid, size] => (*subject, *sid, None, *size),
                [subject, sid, reply, size] => (*subject, *sid, Some(*reply), *size),
                _ => return Err(malformed()),
            };
            let sid: u64 = sid.parse().map_err(|_| malformed())?;
            let bytes: usize = size.parse().map_err(|_| malformed())?;
            if bytes > MAX_PAYLOAD_BYTES {
                return Err(ProtocolError::PayloadTooLarge { bytes });
            }
            let total = after_line + bytes + 2;
            if buf.len() < total {
                return Ok(None);
            }
            if &buf[after_line + bytes..total] != b"\r\n" {
                return Err(malformed());
            }
            let msg = Msg {
                subject: subject.to_owned(),
                sid,
                reply_to: reply_to.map(str::to_owned),
                payload: buf[after_line..after_line + bytes].to_vec(),
            };
            return Ok(Some((ServerOp::Msg(msg), total)));
        }
        _ => {
            return Err(ProtocolError::Unknown {
                line: line.to_owned(),
            })
        }
    };
    Ok(Some((op, after_line)))
}

fn check_subject(subject: &str) -> Result<(), ProtocolError> {
    if subject.is_empty() || subject.contains(|c: char| c.is_whitespace()) {
        return Err(ProtocolError::BadSubject {
            subject: subject.to_owned(),
        });
    }
    Ok(())
}

/// The CONNECT line: no echo, no +OK per message; headers on (for `Nats-Msg-Id`).
pub fn connect_frame() -> Vec<u8> {
    let options = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "headers": true,
        "echo": false,
        "lang": "rust",
        "name": "openclaw-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": 1,
    });
    format!("CONNECT {options}\r\n").into_bytes()
}

/// `SUB subject sid`.
pub fn sub_frame(subject: &str, sid: u64) -> Result<Vec<u8>, ProtocolError> {
    check_subject(subject)?;
    Ok(format!("SUB {subject} {sid}\r\n").into_bytes())
}

/// `PUB subject [reply-to] bytes` and the payload; with `msg_id`, `HPUB` with a
/// `Nats-Msg-Id` header, which JetStream deduplicates by (its Idempotency-Key).
pub fn pub_frame(
    subject: &str,
    reply_to: Option<&str>,
    msg_id: Option<&str>,
    payload: &[u8],
) -> Result<Vec<u8>, ProtocolError> {
    check_subject(subject)?;
    if let Some(reply) = reply_to {
        check_subject(reply)?;
    }
    let target = match reply_to {
        Some(reply) => format!("{subject} {reply}"),
        None => subject.to_owned(),
    };
    let mut frame = match msg_id {
        Some(id) => {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ProtocolError::BadMessageId { id: id.to_owned() });
            }
            let headers = format!("NATS/1.0\r\nNats-Msg-Id: {id}\r\n\r\n");
            let total = headers.len() + payload.len();
            format!("HPUB {target} {} {total}\r\n{headers}", headers.len())
        }
        None => format!("PUB {target} {}\r\n", payload.len()),
    }
    .into_bytes();
    frame.extend_from_slice(payload);
    frame.extend_from_slice(b"\r\n");
    Ok(frame)
}

/// What JetStream answered to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubAck {
    /// `{"stream": .., "seq": N}`: stored (and, for R3, on a quorum).
    Stored { stream: String, seq: u64 },
    /// `{"error": {"code": .., "description": ..}}`.
    Refused { code: u64, description: String },
}

/// Parses a JetStream publish acknowledgement (the reply to a PUB on a stream's subject).
pub fn parse_pub_ack(payload: &[u8]) -> Result<PubAck, ProtocolError> {
    let malformed = || ProtocolError::Malformed {
        line: String::from_utf8_lossy(payload).into_owned(),
    };
    let value: Value = serde_json::from_slice(payload).map_err(|_| malformed())?;
    if let Some(error) = value.get("error") {
        return Ok(PubAck::Refused {
            code: error["code"].as_u64().unwrap_or(0),
            description: error["description"].as_str().unwrap_or("").to_owned(),
        });
    }
    match (value["stream"].as_str(), value["seq"].as_u64()) {
        (Some(stream), Some(seq)) => Ok(PubAck::Stored {
            stream: stream.to_owned(),
            seq,
        }),
        _ => Err(malformed()),
    }
}

/// One client connection: a reply inbox subscribed at connect, one request at a time.
pub struct Connection {
    socket: TcpStream,
    buf: Vec<u8>,
    inbox_prefix: String,
    next_request: u64,
}

impl Connection {
    /// Connects, reads INFO, sends CONNECT and the inbox SUB, and waits for the PONG that
    /// proves the server accepted both; all within `timeout`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, NatsError> {
        tokio::time::timeout(timeout, Self::handshake(addr))
            .await
            .map_err(|_| NatsError::Timeout {
                waiting_for: "connection handshake",
                after: timeout,
            })?
    }

    async fn handshake(addr: SocketAddr) -> Result<Self, NatsError> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
        let mut connection = Connection {
            socket,
            buf: Vec::with_capacity(READ_CHUNK_BYTES),
            inbox_prefix: format!("_INBOX.{}.{id}", std::process::id()),
            next_request: 0,
        };
        match connection.read_op().await? {
            ServerOp::Info(_) => {}
            ServerOp::Err(message) => return Err(NatsError::Server(message)),
            other => {
                return Err(ProtocolError::Malformed {
                    line: format!("expected INFO first, got {other:?}"),
                }
                .into())
            }
        }
        let mut hello = connect_frame();
        hello.extend(sub_frame(
            &format!("{}.*", connection.inbox_prefix),
            INBOX_SID,
        )?);
        hello.extend_from_slice(b"PING\r\n");
        connection.socket.write_all(&hello).await?;
        loop {
            match connection.read_op().await? {
                ServerOp::Pong => return Ok(connection),
                ServerOp::Err(message) => return Err(NatsError::Server(message)),
                ServerOp::Ping => connection.socket.write_all(b"PONG\r\n").await?,
                _ => {}
            }
        }
    }

    /// Publishes `payload` to `subject` (with `msg_id` as its `Nats-Msg-Id`, if any) with a
    /// fresh reply subject and returns the first reply's payload. Replies to earlier
    /// requests that timed out are skipped. Answers the server's PINGs meanwhile.
    pub async fn request(
        &mut self,
        subject: &str,
        msg_id: Option<&str>,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, NatsError> {
        self.next_request += 1;
        let reply = format!("{}.{}", self.inbox_prefix, self.next_request);
        let frame = pub_frame(subject, Some(&reply), msg_id, payload)?;
        let exchange = async {
            self.socket.write_all(&frame).await?;
            loop {
                match self.read_op().await? {
                    ServerOp::Msg(msg) if msg.subject == reply => return Ok(msg.payload),
                    ServerOp::Ping => self.socket.write_all(b"PONG\r\n").await?,
                    ServerOp::Err(message) => return Err(NatsError::Server(message)),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| NatsError::Timeout {
                waiting_for: "reply",
                after: timeout,
            })?
    }

    /// The next server operation (callers bound it with a timeout).
    async fn read_op(&mut self) -> Result<ServerOp, NatsError> {
        loop {
            if let Some((op, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(op);
            }
            self.buf.reserve(READ_CHUNK_BYTES);
            if self.socket.read_buf(&mut self.buf).await? == 0 {
                return Err(NatsError::Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> (ServerOp, usize) {
        parse(buf).expect("parses").expect("complete")
    }

    #[test]
    fn control_lines() {
        assert_eq!(one(b"PING\r\n"), (ServerOp::Ping, 6));
        assert_eq!(one(b"pong\r\nPING\r\n"), (ServerOp::Pong, 6));
        assert_eq!(one(b"+OK\r\n"), (ServerOp::Ok, 5));
        assert_eq!(
            one(b"-ERR 'Authorization Violation'\r\n").0,
            ServerOp::Err("Authorization Violation".into())
        );
        assert_eq!(
            one(b"INFO {\"server_id\":\"x\"}\r\n").0,
            ServerOp::Info("{\"server_id\":\"x\"}".into())
        );
    }

    #[test]
    fn msg_with_and_without_reply() {
        let (op, used) = one(b"MSG a.b 1 _INBOX.1 5\r\nhello\r\nPING\r\n");
        assert_eq!(used, 29);
        assert_eq!(
            op,
            ServerOp::Msg(Msg {
                subject: "a.b".into(),
                sid: 1,
                reply_to: Some("_INBOX.1".into()),
                payload: b"hello".to_vec(),
            })
        );
        let (op, _) = one(b"MSG a 7 0\r\n\r\n");
        assert_eq!(
            op,
            ServerOp::Msg(Msg {
                subject: "a".into(),
                sid: 7,
                reply_to: None,
                payload: Vec::new(),
            })
        );
        // The payload may contain \r\n.
        let (op, _) = one(b"MSG a 1 4\r\n\r\n\r\n\r\n");
        assert!(matches!(op, ServerOp::Msg(m) if m.payload == b"\r\n\r\n"));
    }

    #[test]
    fn incomplete_input_asks_for_more_at_every_cut() {
        let full = b"MSG x.y 3 _INBOX.9.2 11\r\n{\"seq\":42}\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(one(full).1, full.len());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            parse(b"HMSG a 1 10 12\r\n"),
            Err(ProtocolError::Unknown { .. })
        ));
        assert!(matches!(
            parse(b"MSG a 1\r\n"),
            Err(ProtocolError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"MSG a x 1\r\nz\r\n"),
            Err(ProtocolError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"MSG a 1 2\r\nabcd"),
            Err(ProtocolError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"MSG a 1 99999999999\r\n"),
            Err(ProtocolError::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            parse(b"\xff\xfe\r\n"),
            Err(ProtocolError::Malformed { .. })
        ));
    }

    #[test]
    fn a_line_without_end_is_bounded() {
        let long = vec![b'A'; MAX_CONTROL_LINE_BYTES + 1];
        assert_eq!(parse(&long), Ok(None));
        let longer = vec![b'A'; MAX_CONTROL_LINE_BYTES + 2];
        assert_eq!(parse(&longer), Err(ProtocolError::LineTooLong));
        let mut exact = vec![b'A'; MAX_CONTROL_LINE_BYTES];
        exact.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&exact), Err(ProtocolError::Unknown { .. })));
    }

    #[test]
    fn frames() {
        assert_eq!(
            pub_frame("s.1", Some("_INBOX.a.1"), None, b"xy").expect("valid subjects"),
            b"PUB s.1 _INBOX.a.1 2\r\nxy\r\n"
        );
        assert_eq!(
            pub_frame("s", None, None, b"").expect("valid subjects"),
            b"PUB s 0\r\n\r\n"
        );
        assert_eq!(
            sub_frame("_INBOX.a.*", 1).expect("valid subjects"),
            b"SUB _INBOX.a.* 1\r\n"
        );
        assert!(pub_frame("a b", None, None, b"").is_err());
        assert_eq!(
            pub_frame("s", Some("r"), Some("m-1"), b"xy").expect("valid"),
            b"HPUB s r 30 32\r\nNATS/1.0\r\nNats-Msg-Id: m-1\r\n\r\nxy\r\n"
        );
        assert!(pub_frame("s", None, Some("a b"), b"").is_err());
        assert!(pub_frame("s", None, Some(""), b"").is_err());
        assert!(sub_frame("", 1).is_err());
        let connect = connect_frame();
        assert!(connect.starts_with(b"CONNECT {") && connect.ends_with(b"}\r\n"));
    }

    #[test]
    fn pub_acks() {
        assert_eq!(
            parse_pub_ack(br#"{"stream":"BENCH","seq":17}"#),
            Ok(PubAck::Stored {
                stream: "BENCH".into(),
                seq: 17
            })
        );
        assert_eq!(
            parse_pub_ack(
                br#"{"error":{"code":503,"err_code":10077,"description":"resource limits exceeded"}}"#
            ),
            Ok(PubAck::Refused {
                code: 503,
                description: "resource limits exceeded".into()
            })
        );
        assert!(parse_pub_ack(b"{\"stream\":\"x\"}").is_err());
        assert!(parse_pub_ack(b"not json").is_err());
    }

    /// The tokio shell against a scripted peer on loopback (no nats-server): handshake,
    /// a PING answered mid-request, a stale reply skipped, the awaited reply returned.
    #[tokio::test]
    async fn request_against_a_scripted_peer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let peer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("client connects");
            socket.write_all(b"INFO {}\r\n").await.expect("peer writes");
            let mut seen = Vec::new();
            let mut chunk = [0u8; 1024];
            while !seen.ends_with(b"PING\r\n") {
                let n = socket.read(&mut chunk).await.expect("peer reads");
                seen.extend_from_slice(&chunk[..n]);
            }
            let text = String::from_utf8(seen).expect("client sends text");
            let inbox = text
                .lines()
                .find_map(|l| l.strip_prefix("SUB "))
                .and_then(|l| l.split(' ').next())
                .expect("client subscribes to its inbox")
                .trim_end_matches(".*")
                .to_owned();
            socket.write_all(b"PONG\r\n").await.expect("peer writes");
            let mut seen = Vec::new();
            while !seen.ends_with(b"hi\r\n") {
                let n = socket.read(&mut chunk).await.expect("peer reads");
                seen.extend_from_slice(&chunk[..n]);
            }
            assert!(seen.starts_with(format!("PUB s.1 {inbox}.1 2\r\n").as_bytes()));
            let replies = format!(
                "PING\r\nMSG {inbox}.0 1 3\r\nold\r\nMSG {inbox}.1 1 {}\r\n{}\r\n",
                24, r#"{"stream":"S","seq":1}  "#
            );
            socket
                .write_all(replies.as_bytes())
                .await
                .expect("peer writes");
            let mut pong = [0u8; 6];
            socket
                .read_exact(&mut pong)
                .await
                .expect("client answers the PING");
            assert_eq!(&pong, b"PONG\r\n");
        });
        let timeout = Duration::from_secs(5);
        let mut connection = Connection::connect(addr, timeout).await.expect("handshake");
        let reply = connection
            .request("s.1", None, b"hi", timeout)
            .await
            .expect("reply");
        assert_eq!(
            parse_pub_ack(&reply),
            Ok(PubAck::Stored {
                stream: "S".into(),
                seq: 1
            })
        );
        peer.await.expect("scripted peer saw what it expected");
    }
}

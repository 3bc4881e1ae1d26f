//! The parts of the client HTTP API (DESIGN.md §4.1) both daemons serve: the error type,
//! input validation, KV and stream reads over a `StateReader` (the edge's own state, or
//! one site's namespace at the hub), and the group routes — status basics, members,
//! maintenance, health — the operator commands use.
//!
//! Every input is validated here, before it becomes a command: sizes against the named
//! limits, names against their alphabets. Errors are JSON `{"error":{"code","message"}}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use http_body_util::BodyExt;
use openraft::ServerState;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::group::{GroupNode, OpError};
use crate::limits::{
    DEFAULT_PAGE_ITEMS, MAX_HTTP_BODY_BYTES, MAX_IDEMPOTENCY_KEY_BYTES, MAX_KEY_BYTES,
    MAX_PAGE_ITEMS, MAX_STREAM_NAME_BYTES, MAX_VALUE_BYTES,
};
use crate::metrics::Counter;
use crate::ship::EventKind;
use crate::store::StateReader;
use crate::types::{CommandResponse, Hlc, NodeAddr, NodeId, Op, SiteOwner};
use crate::wire::AdminOp;

type AppState = Arc<GroupNode>;

/// Client API requests served, by either daemon.
pub static HTTP_REQUESTS: Counter =
    Counter::new("openclaw_http_requests_total", "Client API requests");

/// An API error: one HTTP status, a stable code, and a message naming the bad input.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("revision mismatch: the key's revision is {current:?}")]
    PreconditionFailed { current: Option<u64> },
    #[error("uplink backlog full: {bytes} unshipped bytes, limit {limit}; writes resume as the hub catches up (reads still work)")]
    BacklogFull { bytes: u64, limit: u64 },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotWritableNow(String),
    #[error("this edge group was fenced by the hub at epoch {epoch}: the site is owned elsewhere; writes are refused (reads still work)")]
    Fenced { epoch: u64 },
    #[error("{0}")]
    Unavailable(#[from] OpError),
    #[error("storage: {0}")]
    Storage(#[from] crate::store::StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::PreconditionFailed { .. } => {
                (StatusCode::PRECONDITION_FAILED, "revision_mismatch")
            }
            ApiError::BacklogFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "backlog_full"),
            ApiError::Fenced { .. } => (StatusCode::SERVICE_UNAVAILABLE, "fenced"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "not_owner"),
            ApiError::NotWritableNow(_) => (StatusCode::SERVICE_UNAVAILABLE, "handing_back"),
            ApiError::Unavailable(OpError::Rejected(_)) => (StatusCode::CONFLICT, "rejected"),
            ApiError::Unavailable(OpError::NoLeader) => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_leader")
            }
            ApiError::Unavailable(OpError::WriteTimeout(_) | OpError::ReadTimeout(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "timeout")
            }
            ApiError::Unavailable(OpError::OutcomeUnknown(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown")
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        let body = json!({"error": {"code": code, "message": self.to_string()}});
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE && !matches!(self, ApiError::Fenced { .. }) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Routes every group member serves the same way, edge or hub: members, maintenance,
/// health. The daemon merges them with its own and wraps the whole in `finish`.
pub fn group_routes(node: Arc<GroupNode>) -> Router {
    Router::new()
        .route("/v1/members", get(members).post(add_member))
        .route("/v1/members/{id}", axum::routing::delete(remove_member))
        .route("/v1/members/{id}/promote", post(promote_member))
        .route("/v1/admin/snapshot", post(snapshot))
        .route("/v1/admin/transfer-leader", post(transfer_leader))
        .route("/v1/admin/backup", get(backup))
        .route("/v1/admin/digest", get(digest))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .with_state(node)
}

/// The JSON 404 for unknown routes, the request counter and the request-body memory bound,
/// around a daemon's whole API.
pub fn finish(router: Router, api: &crate::config::ApiSection) -> Router {
    let budget = BodyBudget::new(api.max_buffered_request_bytes.0);
    router
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(
            budget,
            hold_body_budget,
        ))
        .layer(axum::middleware::from_fn(count_requests))
}

/// The request body bytes that may be buffered at once, over all requests.
#[derive(Clone)]
struct BodyBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    total: u32,
}

impl BodyBudget {
    fn new(total: u64) -> Self {
        // Validated in config: at least one largest body, under 4 GiB.
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        BodyBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(total as usize)),
            total,
        }
    }
}

/// Takes a request's body size (its Content-Length, or the largest body if it does not say)
/// from the budget before the body is read, and gives it back once answered: requests over
/// the budget wait, so memory for bodies stays bounded however many clients write.
async fn hold_body_budget(
    State(budget): State<BodyBudget>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let has_body = declared.is_some_and(|n| n > 0)
        || request
            .headers()
            .contains_key(axum::http::header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(request).await;
    }
    let wanted = declared
        .unwrap_or(MAX_HTTP_BODY_BYTES as u64)
        .min(MAX_HTTP_BODY_BYTES as u64)
        .min(u64::from(budget.total));
    // `wanted` ≤ total ≤ u32::MAX; the semaphore is never closed.
    let Ok(_permit) = budget.bytes.acquire_many(wanted as u32).await else {
        return ApiError::Unavailable(OpError::ShuttingDown).into_response();
    };
    next.run(request).await
}

async fn count_requests(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    HTTP_REQUESTS.inc();
    next.run(request).await
}

/// Reads a request body, refusing more than `limit` bytes before buffering them.
pub async fn read_body(body: Body, limit: usize, what: &str) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::TooLarge(format!(
                "{what} exceeds the limit of {limit} bytes"
            )))
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "cannot read request body: {e}"
        ))),
    }
}

pub fn validate_key(key: &str) -> Result<Vec<u8>, ApiError> {
    if key.is_empty() {
        return Err(ApiError::BadRequest("empty key".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::TooLarge(format!(
            "key of {} bytes exceeds the limit of {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(key.as_bytes().to_vec())
}

pub fn validate_stream(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_STREAM_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "stream name `{name}` must be 1..={MAX_STREAM_NAME_BYTES} characters of [A-Za-z0-9._-]"
        )))
    }
}

pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
    if text.is_empty() || text.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1..={MAX_IDEMPOTENCY_KEY_BYTES} bytes"
        )));
    }
    Ok(Some(text.to_owned()))
}

pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim().trim_matches('"');
    text.parse().map(Some).map_err(|_| {
        ApiError::BadRequest(format!(
            "If-Match must be a revision number (0 = key must not exist), got `{text}`"
        ))
    })
}

pub fn parse_number<T: std::str::FromStr>(
    query: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    query
        .get(name)
        .map(|v| {
            v.parse().map_err(|_| {
                ApiError::BadRequest(format!("query parameter `{name}`: `{v}` is not a number"))
            })
        })
        .transpose()
}

pub fn page_limit(query: &HashMap<String, String>) -> Result<usize, ApiError> {
    let limit = parse_number::<usize>(query, "limit")?.unwrap_or(DEFAULT_PAGE_ITEMS);
    if limit == 0 || limit > MAX_PAGE_ITEMS {
        return Err(ApiError::BadRequest(format!(
            "query parameter `limit` must be 1..={MAX_PAGE_ITEMS}"
        )));
    }
    Ok(limit)
}

pub fn reject_unknown(query: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::BadRequest(format!(
            "unknown query parameter `{k}` (expected one of: {})",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// `PUT …/kv/{key}`: the op and Idempotency-Key, validated.
pub async fn parse_put(
    key: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Op, Option<String>), ApiError> {
    let key = validate_key(key)?;
    let value = read_body(body, MAX_VALUE_BYTES, "value").await?;
    let op = Op::Put {
        key,
        value: value.to_vec(),
        if_revision: if_match(headers)?,
    };
    Ok((op, idempotency_key(headers)?))
}

/// `DELETE …/kv/{key}`: the op and Idempotency-Key, validated.
pub fn parse_delete(key: &str, headers: &HeaderMap) -> Result<(Op, Option<String>), ApiError> {
    let op = Op::Delete {
        key: validate_key(key)?,
        if_revision: if_match(headers)?,
    };
    Ok((op, idempotency_key(headers)?))
}

/// `POST …/streams/{stream}`: the op and Idempotency-Key, validated.
pub async fn parse_append(
    stream: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Op, Option<String>), ApiError> {
    validate_stream(stream)?;
    let data = read_body(body, MAX_VALUE_BYTES, "event").await?;
    let op = Op::Append {
        stream: stream.to_owned(),
        data: data.to_vec(),
    };
    Ok((op, idempotency_key(headers)?))
}

/// One event as JSON: `{"seq","hlc","op":"put|delete|append","key"|"stream",
/// "value_b64"|"data_b64"}` (the hub's feed and the edge's unshipped export).
pub fn event_json(seq: u64, hlc: u64, kind: &EventKind) -> serde_json::Map<String, Value> {
    let engine = base64::engine::general_purpose::STANDARD;
    let fields = match kind {
        EventKind::Put { key, value } => json!({
            "op": "put",
            "key": String::from_utf8_lossy(key),
            "value_b64": engine.encode(value),
        }),
        EventKind::Delete { key } => json!({"op": "delete", "key": String::from_utf8_lossy(key)}),
        EventKind::Append { stream, data } => json!({
            "op": "append",
            "stream": stream,
            "data_b64": engine.encode(data),
        }),
    };
    let mut event = serde_json::Map::new();
    event.insert("seq".into(), json!(seq));
    event.insert("hlc".into(), json!(Hlc(hlc).to_string()));
    if let Value::Object(fields) = fields {
        event.extend(fields);
    }
    event
}

/// Waits for a linearizable read unless the client asked for a stale one.
pub async fn read_barrier(
    node: &GroupNode,
    query: &HashMap<String, String>,
) -> Result<(), ApiError> {
    match query.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Ok(node.linearize().await?),
        Some("stale") => Ok(()),
        Some(other) => Err(ApiError::BadRequest(format!(
            "query parameter `consistency`: `{other}` is neither `linearizable` nor `stale`"
        ))),
    }
}

pub fn write_result(response: CommandResponse) -> Result<Json<Value>, ApiError> {
    match response {
        CommandResponse::Put { seq, revision } => {
            Ok(Json(json!({"seq": seq, "revision": revision})))
        }
        CommandResponse::Deleted { seq } => Ok(Json(json!({"seq": seq}))),
        CommandResponse::Appended { seq, .. } => Ok(Json(json!({"seq": seq}))),
        CommandResponse::RevisionMismatch { current } => {
            Err(ApiError::PreconditionFailed { current })
        }
        CommandResponse::NotFound => Err(ApiError::NotFound("no such key".into())),
        CommandResponse::BacklogFull { bytes, limit } => {
            Err(ApiError::BacklogFull { bytes, limit })
        }
        CommandResponse::Fenced { epoch } => Err(ApiError::Fenced { epoch }),
        CommandResponse::NotOwner {
            owner: SiteOwner::HandingBack,
        } => Err(ApiError::NotWritableNow(
            "the site is being handed back to its edge group: writes resume there".into(),
        )),
        CommandResponse::NotOwner { owner } => Err(ApiError::Conflict(format!(
            "the site's writer is its {}: promote it at the hub first",
            owner.label()
        ))),
        CommandResponse::AwaitingHandback => Err(ApiError::NotWritableNow(
            "this reseeded group waits for the hub to hand the site back (openclaw-hub failback)"
                .into(),
        )),
        CommandResponse::Empty
        | CommandResponse::Ship(_)
        | CommandResponse::Site { .. }
        | CommandResponse::Batch(_) => Err(ApiError::Unavailable(OpError::Unavailable(
            "unexpected result for a client write".into(),
        ))),
    }
}

/// `GET …/kv/{key}` over `reader` (`X-Seq` is `seq`, the applied seq of what was read).
pub async fn get_kv(
    node: &GroupNode,
    reader: &StateReader,
    seq: impl Fn() -> u64,
    key: &str,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    reject_unknown(query, &["consistency"])?;
    let key = validate_key(key)?;
    read_barrier(node, query).await?;
    let applied_seq = seq();
    let item = reader
        .get(&key)?
        .ok_or_else(|| ApiError::NotFound("no such key".into()))?;
    let mut response = Bytes::copy_from_slice(item.value()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("x-revision", HeaderValue::from(item.revision));
    headers.insert("x-seq", HeaderValue::from(applied_seq));
    Ok(response)
}

/// `GET …/kv?prefix=&limit=&after=` over `reader`.
pub async fn list_kv(
    node: &GroupNode,
    reader: &StateReader,
    query: &HashMap<String, String>,
) -> Result<Json<Value>, ApiError> {
    reject_unknown(query, &["prefix", "limit", "after", "consistency"])?;
    let limit = page_limit(query)?;
    let prefix = query.get("prefix").map(String::as_str).unwrap_or("");
    read_barrier(node, query).await?;
    let after = query.get("after").map(|a| a.as_bytes());
    let (items, more) = reader.list(prefix.as_bytes(), after, limit)?;
    let engine = base64::engine::general_purpose::STANDARD;
    let next = if more {
        items
            .last()
            .map(|i| Value::String(String::from_utf8_lossy(&i.key).into_owned()))
    } else {
        None
    };
    let items: Vec<Value> = items
        .iter()
        .map(|i| {
            json!({
                "key": String::from_utf8_lossy(&i.key),
                "revision": i.revision,
                "value_b64": engine.encode(i.value()),
            })
        })
        .collect();
    Ok(Json(json!({"items": items, "next": next})))
}

/// `GET …/streams/{stream}?from=&limit=` over `reader`.
pub async fn read_stream(
    node: &GroupNode,
    reader: &StateReader,
    stream: &str,
    query: &HashMap<String, String>,
) -> Result<Json<Value>, ApiError> {
    reject_unknown(query, &["from", "limit", "consistency"])?;
    validate_stream(stream)?;
    let from = parse_number::<u64>(query, "from")?.unwrap_or(1).max(1);
    let limit = page_limit(query)?;
    read_barrier(node, query).await?;
    let events = reader.stream(stream, from, limit)?;
    let engine = base64::engine::general_purpose::STANDARD;
    let next = events.last().map_or(from, |e| e.seq + 1);
    let events: Vec<Value> = events
        .iter()
        .map(|e| json!({"seq": e.seq, "hlc": e.hlc.to_string(), "data_b64": engine.encode(e.data())}))
        .collect();
    Ok(Json(json!({"events": events, "next": next})))
}

pub fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Follower => "follower",
        ServerState::Shutdown => "shutdown",
    }
}

/// The status fields every group member reports (DESIGN.md §4.1); daemons add theirs.
pub fn status_fields(node: &GroupNode) -> serde_json::Map<String, Value> {
    let m = node.raft_metrics();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let learners: Vec<NodeId> = membership.learner_ids().collect();
    let status = json!({
        "node_id": node.id,
        "site": node.site(),
        "role": role(m.state),
        "leader_id": m.current_leader,
        "term": m.current_term,
        "applied_seq": node.reader.applied_seq(),
        "applied_index": m.last_applied.as_ref().map(|l| l.index),
        "last_log_index": m.last_log_index,
        "snapshot_index": m.snapshot.as_ref().map(|l| l.index),
        "purged_index": m.purged.as_ref().map(|l| l.index),
        "members": voters,
        "learners": learners,
    });
    match status {
        Value::Object(fields) => fields,
        _ => serde_json::Map::new(),
    }
}

async fn members(State(node): State<AppState>) -> Json<Value> {
    let m = node.raft_metrics();
    let membership = m.membership_config.membership();
    let nodes: Vec<Value> = membership
        .nodes()
        .map(|(id, addr)| json!({"id": id, "raft": addr.raft, "http": addr.http}))
        .collect();
    Json(json!({
        "voters": membership.voter_ids().collect::<Vec<_>>(),
        "learners": membership.learner_ids().collect::<Vec<_>>(),
        "nodes": nodes,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: NodeId,
    raft: String,
    http: String,
}

pub fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

async fn add_member(State(node): State<AppState>, body: Body) -> Result<Json<Value>, ApiError> {
    let request: AddMember = json_body(&read_body(body, 64 * 1024, "body").await?)?;
    if request.id == 0 {
        return Err(ApiError::BadRequest("member id must be >= 1".into()));
    }
    let op = AdminOp::AddLearner {
        id: request.id,
        addr: NodeAddr {
            raft: request.raft,
            http: request.http,
        },
    };
    let result = node.admin(op).await?;
    Ok(Json(json!({"result": format!("{result:?}")})))
}

async fn promote_member(
    State(node): State<AppState>,
    Path(id): Path<NodeId>,
) -> Result<Json<Value>, ApiError> {
    let result = node.admin(AdminOp::Promote { id }).await?;
    Ok(Json(json!({"result": format!("{result:?}")})))
}

async fn remove_member(
    State(node): State<AppState>,
    Path(id): Path<NodeId>,
) -> Result<Json<Value>, ApiError> {
    let result = node.admin(AdminOp::Remove { id }).await?;
    Ok(Json(json!({"result": format!("{result:?}")})))
}

async fn snapshot(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    node.admin(AdminOp::Snapshot).await?;
    Ok(Json(json!({"result": "snapshot triggered"})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferLeader {
    to: NodeId,
}

async fn transfer_leader(
    State(node): State<AppState>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: TransferLeader = json_body(&read_body(body, 64 * 1024, "body").await?)?;
    node.admin(AdminOp::TransferLeader { to: request.to })
        .await?;
    Ok(Json(
        json!({"result": format!("leadership transfer to {} requested", request.to)}),
    ))
}

/// `GET /v1/admin/backup`: a consistent, checksummed copy of this node's state machine.
async fn backup(State(node): State<AppState>) -> Result<Response, ApiError> {
    let store = node.store.clone();
    let file = tokio::task::spawn_blocking(move || store.backup())
        .await
        .map_err(|e| ApiError::Unavailable(OpError::Unavailable(e.to_string())))??;
    let response = file_response(&file.path, &HeaderMap::new()).await;
    // The open handle keeps the data readable for the response; the name can go now.
    file.remove();
    response
}

/// `GET /v1/admin/digest`: a digest of this node's whole state machine and the log index it
/// was applied through; replicas at the same index must agree (the fault rig checks).
async fn digest(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = node.store.clone();
    let digest = tokio::task::spawn_blocking(move || store.digest())
        .await
        .map_err(|e| ApiError::Unavailable(OpError::Unavailable(e.to_string())))??;
    Ok(Json(json!({
        "applied_index": digest.applied_index,
        "digest": format!("{:016x}", digest.hash),
        "records": digest.records,
    })))
}

/// Serves a file, resumable: honours `Range: bytes=N-` with 206 (416 past the end).
pub async fn file_response(
    path: &std::path::Path,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    use tokio::io::AsyncSeekExt as _;
    let io = |e: std::io::Error| {
        ApiError::Unavailable(OpError::Unavailable(format!("{}: {e}", path.display())))
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let len = file.metadata().await.map_err(io)?.len();
    let from = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let content_range =
        |text: String| HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""));
    if from >= len && from > 0 {
        let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            content_range(format!("bytes */{len}")),
        );
        return Ok(response);
    }
    file.seek(std::io::SeekFrom::Start(from))
        .await
        .map_err(io)?;
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len - from));
    if from > 0 {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            content_range(format!("bytes {from}-{}/{len}", len - 1)),
        );
    }
    Ok(response)
}

async fn readyz(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    let m = node.raft_metrics();
    if m.current_leader.is_some()
        && m.membership_config
            .membership()
            .get_node(&node.id)
            .is_some()
    {
        Ok(Json(json!({"status": "ready"})))
    } else {
        Err(ApiError::Unavailable(OpError::NoLeader))
    }
}

//! The edge's client HTTP API (DESIGN.md §4.1): writes, and the reads, status and routes it
//! shares with the hub through `shared::http`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use shared::http::{
    event_json, finish, group_routes, parse_append, parse_delete, parse_put, status_fields,
    write_result, ApiError,
};

use crate::edge::Edge;
use crate::metrics;

type AppState = Arc<Edge>;

pub fn router(edge: Arc<Edge>) -> Router {
    let own = Router::new()
        .route("/v1/kv", get(list_kv))
        .route("/v1/kv/{*key}", get(get_kv).put(put_kv).delete(delete_kv))
        .route("/v1/streams/{stream}", get(read_stream).post(append_stream))
        .route("/v1/status", get(status))
        .route("/v1/admin/unshipped", get(unshipped))
        .route("/metrics", get(metrics_page))
        .with_state(edge.clone());
    finish(
        own.merge(group_routes(edge.group.clone())),
        &edge.config.api,
    )
}

async fn put_kv(
    State(edge): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (op, idem) = parse_put(&key, &headers, body).await?;
    write_result(edge.write(edge.command(op, idem)).await?)
}

async fn delete_kv(
    State(edge): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (op, idem) = parse_delete(&key, &headers)?;
    write_result(edge.write(edge.command(op, idem)).await?)
}

async fn append_stream(
    State(edge): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (op, idem) = parse_append(&stream, &headers, body).await?;
    write_result(edge.write(edge.command(op, idem)).await?)
}

/// `GET /v1/admin/unshipped`: every event after shipped-through, one JSON object per line,
/// for an operator to inspect or re-apply (a fenced group's unshipped tail).
async fn unshipped(State(edge): State<AppState>) -> Result<Response, ApiError> {
    let reader = edge.group.reader.clone();
    let from = crate::uplink::snapshot(&edge).shipped_through + 1;
    let pages = futures::stream::unfold(Some(from), move |next| {
        let reader = reader.clone();
        async move {
            let from = next?;
            let page = match reader.outbox(from, UNSHIPPED_PAGE_EVENTS, usize::MAX) {
                Ok(page) => page,
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), None)),
            };
            let last = page.last().map(|e| e.seq)?;
            let mut text = String::new();
            for e in &page {
                text.push_str(&Value::Object(event_json(e.seq, e.hlc, &e.kind)).to_string());
                text.push('\n');
            }
            Some((Ok::<_, std::io::Error>(text), Some(last + 1)))
        }
    });
    let mut response = Body::from_stream(pages).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// Events per page of the unshipped export.
const UNSHIPPED_PAGE_EVENTS: usize = 1000;

async fn get_kv(
    State(edge): State<AppState>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let reader = &edge.group.reader;
    shared::http::get_kv(&edge.group, reader, || reader.applied_seq(), &key, &query).await
}

async fn list_kv(
    State(edge): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    shared::http::list_kv(&edge.group, &edge.group.reader, &query).await
}

async fn read_stream(
    State(edge): State<AppState>,
    Path(stream): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    shared::http::read_stream(&edge.group, &edge.group.reader, &stream, &query).await
}

async fn status(State(edge): State<AppState>) -> Json<Value> {
    let mut fields = status_fields(&edge.group);
    fields.insert("uplink".into(), crate::uplink::status_json(&edge));
    Json(Value::Object(fields))
}

async fn metrics_page(State(edge): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&edge),
    )
}

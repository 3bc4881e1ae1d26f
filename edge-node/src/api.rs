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
    finish, group_routes, idempotency_key, if_match, read_body, status_fields, validate_key,
    validate_stream, write_result, ApiError,
};
use shared::limits::MAX_VALUE_BYTES;
use shared::types::Op;

use crate::edge::Edge;
use crate::metrics;

type AppState = Arc<Edge>;

pub fn router(edge: Arc<Edge>) -> Router {
    let own = Router::new()
        .route("/v1/kv", get(list_kv))
        .route("/v1/kv/{*key}", get(get_kv).put(put_kv).delete(delete_kv))
        .route("/v1/streams/{stream}", get(read_stream).post(append_stream))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics_page))
        .with_state(edge.clone());
    finish(own.merge(group_routes(edge.group.clone())))
}

async fn put_kv(
    State(edge): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let key = validate_key(&key)?;
    let value = read_body(body, MAX_VALUE_BYTES, "value").await?;
    let op = Op::Put {
        key,
        value: value.to_vec(),
        if_revision: if_match(&headers)?,
    };
    let command = edge.command(op, idempotency_key(&headers)?);
    write_result(edge.write(command).await?)
}

async fn delete_kv(
    State(edge): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let op = Op::Delete {
        key: validate_key(&key)?,
        if_revision: if_match(&headers)?,
    };
    let command = edge.command(op, idempotency_key(&headers)?);
    write_result(edge.write(command).await?)
}

async fn append_stream(
    State(edge): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    validate_stream(&stream)?;
    let data = read_body(body, MAX_VALUE_BYTES, "event").await?;
    let op = Op::Append {
        stream,
        data: data.to_vec(),
    };
    let command = edge.command(op, idempotency_key(&headers)?);
    write_result(edge.write(command).await?)
}

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

//! The hub's client HTTP API (DESIGN.md §4.1): one site's KV and streams under
//! `/v1/sites/{site}/…`, the per-site shipping status, the merged feed, status and metrics,
//! plus the group routes shared with the edge.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use shared::config::SiteId;
use shared::group::now_ms;
use shared::http::{
    finish, group_routes, page_limit, parse_number, read_barrier, reject_unknown, status_fields,
    ApiError,
};
use shared::ship::EventKind;
use shared::store::{FeedEvent, SiteRecord};
use shared::types::Hlc;

use crate::hub::{Hub, HUB};

type AppState = Arc<Hub>;

pub fn router(hub: Arc<Hub>) -> Router {
    let own = Router::new()
        .route("/v1/sites", get(sites))
        .route("/v1/sites/{site}", get(site))
        .route("/v1/sites/{site}/kv", get(list_kv))
        .route("/v1/sites/{site}/kv/{*key}", get(get_kv))
        .route("/v1/sites/{site}/streams/{stream}", get(read_stream))
        .route("/v1/feed", get(feed))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics_page))
        .with_state(hub.clone());
    finish(own.merge(group_routes(hub.group.clone())))
}

fn parse_site(site: &str) -> Result<SiteId, ApiError> {
    SiteId::parse(site).map_err(ApiError::BadRequest)
}

fn site_json(site: &str, record: &SiteRecord, now_ms: u64) -> Value {
    let lag_events = record.head_seq.saturating_sub(record.shipped_through);
    let lag_seconds = if lag_events == 0 {
        0
    } else {
        now_ms.saturating_sub(record.last_event_ms) / 1000
    };
    json!({
        "site": site,
        "epoch": record.epoch,
        "shipped_through": record.shipped_through,
        "head_seq": record.head_seq,
        "lag_events": lag_events,
        "lag_seconds": lag_seconds,
        "last_contact_ms": record.last_contact_ms,
        "last_contact_seconds_ago": now_ms.saturating_sub(record.last_contact_ms) / 1000,
    })
}

async fn sites(
    State(hub): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    reject_unknown(&query, &["consistency"])?;
    read_barrier(&hub.group, &query).await?;
    let now = now_ms();
    let sites: Vec<Value> = hub
        .group
        .reader
        .sites()?
        .iter()
        .map(|(site, record)| site_json(site, record, now))
        .collect();
    Ok(Json(json!({"group": hub.group.site(), "sites": sites})))
}

async fn site(
    State(hub): State<AppState>,
    Path(site): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    reject_unknown(&query, &["consistency"])?;
    let site = parse_site(&site)?;
    read_barrier(&hub.group, &query).await?;
    let record = hub
        .group
        .reader
        .site(site.as_str())?
        .ok_or_else(|| ApiError::NotFound(format!("site {site} has never shipped here")))?;
    Ok(Json(site_json(site.as_str(), &record, now_ms())))
}

async fn get_kv(
    State(hub): State<AppState>,
    Path((site, key)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let site = parse_site(&site)?;
    let reader = hub.group.reader.for_site(site.as_str());
    let shipped = || {
        hub.group
            .reader
            .site(site.as_str())
            .ok()
            .flatten()
            .map_or(0, |r| r.shipped_through)
    };
    shared::http::get_kv(&hub.group, &reader, shipped, &key, &query).await
}

async fn list_kv(
    State(hub): State<AppState>,
    Path(site): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let site = parse_site(&site)?;
    let reader = hub.group.reader.for_site(site.as_str());
    shared::http::list_kv(&hub.group, &reader, &query).await
}

async fn read_stream(
    State(hub): State<AppState>,
    Path((site, stream)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let site = parse_site(&site)?;
    let reader = hub.group.reader.for_site(site.as_str());
    shared::http::read_stream(&hub.group, &reader, &stream, &query).await
}

fn feed_json(cursor: u64, event: &FeedEvent) -> Value {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut entry = json!({
        "cursor": cursor,
        "site": event.site,
        "epoch": event.epoch,
        "seq": event.seq,
        "hlc": Hlc(event.hlc).to_string(),
    });
    let fields = match &event.kind {
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
    if let (Value::Object(entry), Value::Object(fields)) = (&mut entry, fields) {
        entry.extend(fields);
    }
    entry
}

/// `GET /v1/feed?cursor=C&limit=N`: every site's events in hub commit order, after `C`.
async fn feed(
    State(hub): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    reject_unknown(&query, &["cursor", "limit", "consistency"])?;
    let cursor = parse_number::<u64>(&query, "cursor")?.unwrap_or(0);
    let limit = page_limit(&query)?;
    read_barrier(&hub.group, &query).await?;
    let entries = hub.group.reader.feed(cursor, limit)?;
    let next = entries.last().map_or(cursor, |(c, _)| *c);
    let events: Vec<Value> = entries.iter().map(|(c, e)| feed_json(*c, e)).collect();
    Ok(Json(json!({"events": events, "next": next})))
}

async fn status(State(hub): State<AppState>) -> Json<Value> {
    let mut fields = status_fields(&hub.group);
    fields.insert("group".into(), json!(hub.group.site()));
    let sites = hub.group.reader.sites().map(|s| s.len()).unwrap_or(0);
    fields.insert("sites".into(), json!(sites));
    fields.insert("owned_sites".into(), json!(hub.config.hub.sites));
    Json(Value::Object(fields))
}

async fn metrics_page(State(hub): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    shared::group::render_metrics(&hub.group, &mut out);
    HUB.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

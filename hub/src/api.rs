//! The hub's client HTTP API (DESIGN.md §4.1): one site's KV and streams under
//! `/v1/sites/{site}/…`, the per-site shipping status, the merged feed, status and metrics,
//! plus the group routes shared with the edge.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use shared::config::SiteId;
use shared::group::now_ms;
use shared::group::OpError;
use shared::http::{
    event_json, file_response, finish, group_routes, page_limit, parse_append, parse_delete,
    parse_number, parse_put, read_barrier, reject_unknown, status_fields, write_result, ApiError,
};
use shared::store::{AsOf, FeedEvent, SiteRecord};
use shared::types::{CommandResponse, Op};

use crate::hub::{Hub, HUB};

type AppState = Arc<Hub>;

pub fn router(hub: Arc<Hub>) -> Router {
    let own = Router::new()
        .route("/v1/sites", get(sites))
        .route("/v1/sites/{site}", get(site))
        .route("/v1/sites/{site}/kv", get(list_kv))
        .route(
            "/v1/sites/{site}/kv/{*key}",
            get(get_kv).put(put_kv).delete(delete_kv),
        )
        .route(
            "/v1/sites/{site}/streams/{stream}",
            get(read_stream).post(append_stream),
        )
        .route("/v1/sites/{site}/promote", post(promote))
        .route("/v1/sites/{site}/failback", post(failback))
        .route("/v1/sites/{site}/seed", get(seed))
        .route("/v1/feed", get(feed))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics_page))
        .with_state(hub.clone());
    finish(own.merge(group_routes(hub.group.clone())), &hub.config.api)
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
        "owner": record.owner.label(),
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
    let mut entry = event_json(event.seq, event.hlc, &event.kind);
    entry.insert("cursor".into(), json!(cursor));
    entry.insert("site".into(), json!(event.site));
    entry.insert("epoch".into(), json!(event.epoch));
    Value::Object(entry)
}

async fn put_kv(
    State(hub): State<AppState>,
    Path((site, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let site = parse_site(&site)?;
    let (op, idem) = parse_put(&key, &headers, body).await?;
    write_result(hub.write_site(&site, op, idem).await?)
}

async fn delete_kv(
    State(hub): State<AppState>,
    Path((site, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let site = parse_site(&site)?;
    let (op, idem) = parse_delete(&key, &headers)?;
    write_result(hub.write_site(&site, op, idem).await?)
}

async fn append_stream(
    State(hub): State<AppState>,
    Path((site, stream)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let site = parse_site(&site)?;
    let (op, idem) = parse_append(&stream, &headers, body).await?;
    write_result(hub.write_site(&site, op, idem).await?)
}

/// Answers a DR transition with the site's resulting ownership.
async fn transition(hub: &Hub, site: &SiteId, op: Op) -> Result<Json<Value>, ApiError> {
    if !hub.config.hub.owns(site.as_str()) {
        return Err(ApiError::NotFound(format!(
            "site {site} is not owned by hub group {}",
            hub.group.site()
        )));
    }
    let command = hub.group.command(op, None, None);
    match hub.group.write(command).await? {
        CommandResponse::Site {
            epoch,
            owner,
            shipped_through,
        } => Ok(Json(json!({
            "site": site,
            "epoch": epoch,
            "owner": owner.label(),
            "shipped_through": shipped_through,
        }))),
        other => Err(ApiError::Unavailable(OpError::Unavailable(format!(
            "unexpected result {other:?}"
        )))),
    }
}

/// `POST /v1/sites/{site}/promote`: the hub becomes the site's writer at a new epoch; the old
/// edge group is fenced when it next ships.
async fn promote(
    State(hub): State<AppState>,
    Path(site): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let site = parse_site(&site)?;
    transition(
        &hub,
        &site,
        Op::Promote {
            site: site.to_string(),
        },
    )
    .await
}

/// `POST /v1/sites/{site}/failback`: the hub stops taking the site's writes (handing-back);
/// a group reseeded from `…/seed` takes the site back when it connects.
async fn failback(
    State(hub): State<AppState>,
    Path(site): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let site = parse_site(&site)?;
    transition(
        &hub,
        &site,
        Op::BeginFailback {
            site: site.to_string(),
        },
    )
    .await
}

/// `GET /v1/sites/{site}/seed`: the state a new edge group starts from — while the site is
/// handing back, its frozen state (failback); with `as_of_seq=N` or `as_of_ms=T`, the state
/// rebuilt from the hub's log as of then (point-in-time restore). Resumable (`Range`).
async fn seed(
    State(hub): State<AppState>,
    Path(site): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    reject_unknown(&query, &["as_of_seq", "as_of_ms"])?;
    let site = parse_site(&site)?;
    let as_of = match (
        parse_number::<u64>(&query, "as_of_seq")?,
        parse_number::<u64>(&query, "as_of_ms")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give as_of_seq or as_of_ms, not both".into(),
            ))
        }
        (Some(seq), None) => Some(AsOf::Seq(seq)),
        (None, Some(ms)) => Some(AsOf::TimeMs(ms)),
        (None, None) => None,
    };
    // Our copy must include every write acknowledged before this request.
    read_barrier(&hub.group, &HashMap::new()).await?;
    let store = hub.group.store.clone();
    let name = site.to_string();
    let made = tokio::task::spawn_blocking(move || match as_of {
        Some(as_of) => store.site_seed_as_of(&name, as_of),
        None => store
            .site_seed(&name)
            .map(|seed| seed.map(|(path, record)| (path, record.shipped_through))),
    })
    .await
    .map_err(|e| ApiError::Unavailable(OpError::Unavailable(e.to_string())))??;
    let Some((path, seq)) = made else {
        return Err(match as_of {
            Some(_) => ApiError::NotFound(format!("site {site} has never shipped here")),
            None => ApiError::Conflict(format!(
                "site {site} is not handing back: run `openclaw-hub failback {site}` first \
                 (or ask for a point in time with as_of_seq / as_of_ms)"
            )),
        });
    };
    let mut response = file_response(&path, &headers).await?;
    response
        .headers_mut()
        .insert("x-seed-seq", HeaderValue::from(seq));
    Ok(response)
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

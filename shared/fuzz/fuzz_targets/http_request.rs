//! The client API's request parsers (`shared::http`), called as the handlers call them
//! (no server): `parse_put`, `parse_delete`, `parse_append` (path segment, `If-Match` and
//! `Idempotency-Key` headers, body read under its limit), the query checks `page_limit`,
//! `parse_number` and `reject_unknown`, and `json_body`.
//!
//! Input: structured (`arbitrary`). Checks: no panic, and what a parser accepts is within
//! the limits it enforces (key and value sizes, stream name alphabet, idempotency key size).
#![no_main]

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use shared::http::{
    json_body, page_limit, parse_append, parse_delete, parse_number, parse_put, reject_unknown,
};
use shared::limits::{
    MAX_IDEMPOTENCY_KEY_BYTES, MAX_KEY_BYTES, MAX_PAGE_ITEMS, MAX_STREAM_NAME_BYTES,
    MAX_VALUE_BYTES,
};
use shared::types::Op;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    segment: &'a str,
    if_match: Option<&'a [u8]>,
    idempotency_key: Option<&'a [u8]>,
    query: Vec<(&'a str, &'a str)>,
    /// Bodies past the value limit without a megabyte of input.
    body_repeat: u16,
    body: &'a [u8],
}

fn headers(input: &Input<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("if-match", input.if_match),
        ("idempotency-key", input.idempotency_key),
    ] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.insert(name, value);
        }
    }
    headers
}

fn check_idempotency(key: &Option<String>) {
    if let Some(key) = key {
        assert!(!key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES);
    }
}

fuzz_target!(|input: Input<'_>| {
    let headers = headers(&input);
    let body: Vec<u8> = if input.body_repeat > 1 && !input.body.is_empty() {
        input
            .body
            .repeat(usize::from(input.body_repeat).min(4 * 1024))
    } else {
        input.body.to_vec()
    };

    let put =
        futures::executor::block_on(parse_put(input.segment, &headers, Body::from(body.clone())));
    if let Ok((op, idem)) = put {
        let Op::Put { key, value, .. } = op else {
            panic!("parse_put made {op:?}");
        };
        assert!(!key.is_empty() && key.len() <= MAX_KEY_BYTES);
        assert_eq!(key, input.segment.as_bytes());
        assert!(value.len() <= MAX_VALUE_BYTES);
        assert_eq!(value, body);
        check_idempotency(&idem);
    }

    if let Ok((op, idem)) = parse_delete(input.segment, &headers) {
        let Op::Delete { key, .. } = op else {
            panic!("parse_delete made {op:?}");
        };
        assert!(!key.is_empty() && key.len() <= MAX_KEY_BYTES);
        check_idempotency(&idem);
    }

    let append = futures::executor::block_on(parse_append(
        input.segment,
        &headers,
        Body::from(body.clone()),
    ));
    if let Ok((op, idem)) = append {
        let Op::Append { stream, data } = op else {
            panic!("parse_append made {op:?}");
        };
        assert!(!stream.is_empty() && stream.len() <= MAX_STREAM_NAME_BYTES);
        assert!(stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
        assert!(data.len() <= MAX_VALUE_BYTES);
        check_idempotency(&idem);
    }

    let query: HashMap<String, String> = input
        .query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(limit) = page_limit(&query) {
        assert!((1..=MAX_PAGE_ITEMS).contains(&limit));
    }
    let _ = parse_number::<u64>(&query, "from");
    let _ = parse_number::<u64>(&query, "as_of_ms");
    let _ = reject_unknown(&query, &["limit", "from", "after"]);
    let _ = json_body::<serde_json_value::Value>(&body);
});

/// `json_body` is generic; any `Deserialize` type exercises the same path.
mod serde_json_value {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    pub struct Value {
        id: u64,
        raft: String,
        http: String,
    }
}

//! The rig's workload: KV clients recording every operation for the linearizability
//! checker, and appenders recording every acknowledged stream append.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::checker::{Op, Operation, Outcome};

/// The stream the appenders write.
pub const STREAM: &str = "rig-events";
/// Pause after an unknown outcome, before the next try (or the next append).
const RETRY_DELAY: Duration = Duration::from_millis(50);
/// Concurrent appenders without Idempotency-Key ([`Retry::Never`]).
pub(super) const APPENDERS: usize = 2;
/// Concurrent appenders with one ([`Retry::SameKey`]).
pub(super) const KEYED_APPENDERS: usize = 1;

/// Acknowledged appends (payload → seq) and the count of unknown outcomes.
#[derive(Default)]
pub struct Appends {
    acked: Mutex<BTreeMap<String, u64>>,
    unknown: AtomicUsize,
    retried: AtomicUsize,
}

impl Appends {
    pub fn acked(&self) -> BTreeMap<String, u64> {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    pub fn unknown(&self) -> usize {
        self.unknown.load(Ordering::Relaxed)
    }
    /// Keyed appends acknowledged by a retry after an unknown outcome.
    pub fn retried(&self) -> usize {
        self.retried.load(Ordering::Relaxed)
    }
}

/// Whether an appender sends an Idempotency-Key, and so may retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Each append is sent once: a retry could legitimately apply twice.
    Never,
    /// Each append carries an Idempotency-Key; an unknown outcome is retried with the same
    /// key at a random node until it is answered (or the appender is stopped), and the
    /// stream must hold it once all the same.
    SameKey,
}

/// What became of one attempt at an append.
enum Attempt {
    Acked(u64),
    /// Provably not applied: refused before it was sent, or a definite refusal.
    NotApplied,
    Unknown,
}

/// One appender to [`STREAM`]: unique payloads (`a{id}-{n}`, `k{id}-{n}` when keyed) at random
/// nodes, retried as `retry` says; an append left unanswered is an unknown outcome. Runs
/// until `stop`.
pub async fn appender(
    id: usize,
    urls: Vec<String>,
    seed: u64,
    retry: Retry,
    stop: Arc<AtomicBool>,
    out: Arc<Appends>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut rng = Rng(seed | 1);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (payload, key) = match retry {
            Retry::Never => (format!("a{id}-{n}"), None),
            Retry::SameKey => (format!("k{id}-{n}"), Some(format!("rig-k{id}-{n}"))),
        };
        let mut tries = 0;
        let seq = loop {
            tries += 1;
            let url = format!(
                "{}/v1/streams/{STREAM}",
                urls[rng.next(urls.len() as u64) as usize]
            );
            match append_once(&http, &url, &payload, key.as_deref()).await {
                Attempt::Acked(seq) => break Some(seq),
                // After an unknown outcome even a refusal does not say the first try was
                // not applied: only an answer to the key does.
                Attempt::NotApplied if tries == 1 => break None,
                _ if key.is_none() => {
                    out.unknown.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(RETRY_DELAY).await;
                    break None;
                }
                _ if stop.load(Ordering::Relaxed) => {
                    out.unknown.fetch_add(1, Ordering::Relaxed);
                    break None;
                }
                _ => tokio::time::sleep(RETRY_DELAY).await,
            }
        };
        if let Some(seq) = seq {
            if tries > 1 {
                out.retried.fetch_add(1, Ordering::Relaxed);
            }
            out.acked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(payload, seq);
        }
    }
}

async fn append_once(
    http: &reqwest::Client,
    url: &str,
    payload: &str,
    key: Option<&str>,
) -> Attempt {
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    let answer = crate::request(
        http,
        Method::POST,
        url,
        &headers,
        Some(payload.as_bytes().to_vec()),
    )
    .await;
    match answer {
        Ok(a) if a.status == 200 => match a.json()["seq"].as_u64() {
            Some(seq) => Attempt::Acked(seq),
            None => Attempt::Unknown,
        },
        Err(e)
            if e.downcast_ref::<reqwest::Error>()
                .is_some_and(|e| e.is_connect()) =>
        {
            Attempt::NotApplied
        }
        Ok(a) if a.status == 400 || a.status == 404 || a.status == 413 => Attempt::NotApplied,
        _ => Attempt::Unknown,
    }
}

pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// What the KV clients recorded: every operation, by key, and the keyed puts a retry
/// acknowledged.
#[derive(Default)]
pub(super) struct Recorded {
    pub(super) history: Mutex<BTreeMap<String, Vec<Operation>>>,
    pub(super) puts_retried: AtomicUsize,
}

/// One client's loop: random operations on random keys at random nodes. Half its puts carry
/// an Idempotency-Key and are retried (at random nodes) until answered: each is one
/// operation from its first send to its answer, which must be linearizable whether the
/// first send applied it or a retry did.
pub(super) async fn client(
    id: usize,
    urls: Vec<String>,
    keys: usize,
    seed: u64,
    started: Instant,
    stop: Arc<AtomicBool>,
    recorded: Arc<Recorded>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut rng = Rng(seed | 1);
    let mut counter = 0u64;
    let now = || started.elapsed().as_micros() as u64;
    while !stop.load(Ordering::Relaxed) {
        counter += 1;
        let key = format!("rig/{}", rng.next(keys as u64));
        let url = format!("{}/v1/kv/{key}", urls[rng.next(urls.len() as u64) as usize]);
        let value = format!("c{id}-{counter}");
        let kind = rng.next(10);
        let mut call = now();
        let (op, outcome) = match kind {
            0 | 1 => {
                let r = http.put(&url).body(value.clone()).send().await;
                (
                    Op::Put { value },
                    write_outcome(r, |_| Outcome::Written).await,
                )
            }
            2 | 3 => {
                // One operation from the first send to the answer of the last retry.
                let idempotency_key = format!("rig-c{id}-{counter}");
                let mut url = url;
                let mut tries = 0;
                let outcome = loop {
                    tries += 1;
                    let r = http
                        .put(&url)
                        .header("Idempotency-Key", &idempotency_key)
                        .body(value.clone())
                        .send()
                        .await;
                    match write_outcome(r, |_| Outcome::Written).await {
                        None if tries == 1 => break None,
                        Some(Outcome::Written) => {
                            if tries > 1 {
                                recorded.puts_retried.fetch_add(1, Ordering::Relaxed);
                            }
                            break Some(Outcome::Written);
                        }
                        _ if stop.load(Ordering::Relaxed) => break Some(Outcome::Unknown),
                        _ => {
                            tokio::time::sleep(RETRY_DELAY).await;
                            url = format!(
                                "{}/v1/kv/{key}",
                                urls[rng.next(urls.len() as u64) as usize]
                            );
                        }
                    }
                };
                (Op::Put { value }, outcome)
            }
            4 => {
                let r = http.delete(&url).send().await;
                (
                    Op::Delete,
                    write_outcome(r, |s| Outcome::Flag(s == 200)).await,
                )
            }
            5 | 6 => {
                // Read, then compare-and-set on what was read (values are unique, so the
                // revision read names the value read).
                let Ok(read) = http.get(&url).send().await else {
                    continue;
                };
                let status = read.status().as_u16();
                let revision = read
                    .headers()
                    .get("x-revision")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                let Ok(body) = read.text().await else {
                    continue;
                };
                let (expected, if_match) = match (status, revision) {
                    (200, Some(rev)) => (Some(body), rev),
                    (404, _) => (None, "0".to_string()),
                    _ => continue,
                };
                call = now(); // the CAS itself starts here, after its read
                let r = http
                    .put(&url)
                    .header("If-Match", if_match)
                    .body(value.clone())
                    .send()
                    .await;
                let outcome = write_outcome(r, |s| Outcome::Flag(s == 200)).await;
                (Op::Cas { expected, value }, outcome)
            }
            _ => {
                let r = http.get(&url).send().await;
                let outcome = match r {
                    Ok(resp) if resp.status() == 200 => match resp.text().await {
                        Ok(text) => Outcome::Read(Some(text)),
                        Err(_) => continue,
                    },
                    Ok(resp) if resp.status() == 404 => Outcome::Read(None),
                    _ => continue, // a failed read says nothing
                };
                (Op::Get, Some(outcome))
            }
        };
        if let Some(outcome) = outcome {
            let ret = now();
            record(
                &recorded,
                key,
                Operation {
                    op,
                    outcome,
                    call,
                    ret,
                },
            );
        }
    }
}

/// Maps a write's HTTP result to an outcome; `None` when the request provably never left.
async fn write_outcome(
    result: Result<reqwest::Response, reqwest::Error>,
    ok: impl Fn(u16) -> Outcome,
) -> Option<Outcome> {
    match result {
        Err(e) if e.is_connect() => None,
        Err(_) => Some(Outcome::Unknown),
        Ok(resp) => {
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            match status {
                200 | 404 | 412 => Some(ok(status)),
                _ => Some(Outcome::Unknown), // 503: may or may not have been applied
            }
        }
    }
}

fn record(recorded: &Recorded, key: String, operation: Operation) {
    recorded
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .push(operation);
}

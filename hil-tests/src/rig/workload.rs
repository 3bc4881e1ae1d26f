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
/// Concurrent appenders.
pub(super) const APPENDERS: usize = 2;

/// Acknowledged appends (payload → seq) and the count of unknown outcomes.
#[derive(Default)]
pub struct Appends {
    acked: Mutex<BTreeMap<String, u64>>,
    unknown: AtomicUsize,
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
}

/// One appender to [`STREAM`]: unique payloads (`a{id}-{n}`) at random nodes, each sent
/// once without an idempotency key (a retry could legitimately apply twice); a failure is
/// an unknown outcome. Runs until `stop`.
pub async fn appender(
    id: usize,
    urls: Vec<String>,
    seed: u64,
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
        let payload = format!("a{id}-{n}");
        let url = format!(
            "{}/v1/streams/{STREAM}",
            urls[rng.next(urls.len() as u64) as usize]
        );
        let answer = crate::request(
            &http,
            Method::POST,
            &url,
            &[],
            Some(payload.clone().into_bytes()),
        )
        .await;
        match answer {
            Ok(a) if a.status == 200 => match a.json()["seq"].as_u64() {
                Some(seq) => {
                    out.acked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(payload, seq);
                }
                None => {
                    out.unknown.fetch_add(1, Ordering::Relaxed);
                }
            },
            // Refused before it was sent, or answered with a definite refusal: not applied.
            Err(e)
                if e.downcast_ref::<reqwest::Error>()
                    .is_some_and(|e| e.is_connect()) => {}
            Ok(a) if a.status == 400 || a.status == 404 || a.status == 413 => {}
            _ => {
                out.unknown.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
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

pub(super) type History = Arc<Mutex<BTreeMap<String, Vec<Operation>>>>;

/// One client's loop: random operations on random keys at random nodes.
pub(super) async fn client(
    id: usize,
    urls: Vec<String>,
    keys: usize,
    seed: u64,
    started: Instant,
    stop: Arc<AtomicBool>,
    history: History,
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
            0..=3 => {
                let r = http.put(&url).body(value.clone()).send().await;
                (
                    Op::Put { value },
                    write_outcome(r, |_| Outcome::Written).await,
                )
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
                &history,
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

fn record(history: &History, key: String, operation: Operation) {
    history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .push(operation);
}

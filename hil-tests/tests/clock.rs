//! A gateway's wall clock jumps (no RTC, NTP after boot, a bad sync): the nodes run under
//! libfaketime with their wall clock moved a day forward and then back, while the monotonic
//! clock runs true. Events stay in HLC order, and idempotency records are kept for their
//! window of real time: neither expired by the forward jump nor revived by the backward one.
//! Needs libfaketime (package faketime, installed by the test command).

use openclaw_hil_tests::{request, GroupOptions, LabGroup};
use reqwest::Method;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// (ms, logical) of an HLC as the API prints it ("ms.logical").
fn hlc(v: &serde_json::Value) -> (u64, u64) {
    let text = v.as_str().expect("hlc string");
    let (ms, logical) = text.split_once('.').expect("ms.logical");
    (
        ms.parse().expect("hlc ms"),
        logical.parse().expect("hlc logical"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wall_clock_jumps_keep_event_order_and_idempotency_windows() {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing (apt-get install faketime)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let offset = dir.path().join("clock-offset");
    std::fs::write(&offset, "+0\n").expect("offset");
    let env = vec![
        ("LD_PRELOAD".to_owned(), LIBFAKETIME.to_owned()),
        (
            "FAKETIME_TIMESTAMP_FILE".to_owned(),
            offset.display().to_string(),
        ),
        ("FAKETIME_NO_CACHE".to_owned(), "1".to_owned()),
        // The monotonic clock of a real device does not jump.
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
    ];
    let g = LabGroup::start_ready(
        &dir.path().join("site"),
        3,
        GroupOptions {
            ip_base: 16 * 13,
            env,
            ..GroupOptions::fast()
        },
    )
    .await
    .expect("group");
    g.leader(&g.ids()).await.expect("leader");
    let base = g.url(1);
    let put = |value: &'static str| {
        let (http, url) = (g.http.clone(), format!("{base}/v1/kv/setpoint"));
        async move {
            request(
                &http,
                Method::PUT,
                &url,
                &[("Idempotency-Key", "change-42")],
                Some(value.into()),
            )
            .await
            .expect("put")
        }
    };
    let append = |data: &'static str| {
        let (http, url) = (g.http.clone(), format!("{base}/v1/streams/events"));
        async move {
            let a = request(&http, Method::POST, &url, &[], Some(data.into()))
                .await
                .expect("append");
            assert_eq!(a.status, 200, "{}", a.text());
        }
    };

    let first = put("21.0").await;
    assert_eq!(first.status, 200, "{}", first.text());
    append("before").await;

    // NTP steps the clock a day forward: the retry of the same change is still recognised.
    std::fs::write(&offset, "+1d\n").expect("offset");
    let retry = put("99.9").await;
    assert_eq!(retry.json(), first.json(), "the retry was applied again");
    append("after a forward jump").await;

    // A bad sync steps it back 26 hours: events keep their order, the key is still known.
    std::fs::write(&offset, "-2h\n").expect("offset");
    append("after a backward jump").await;
    let retry = put("99.9").await;
    assert_eq!(retry.json(), first.json(), "the retry was applied again");
    let value = request(
        &g.http,
        Method::GET,
        &format!("{base}/v1/kv/setpoint"),
        &[],
        None,
    )
    .await
    .expect("get");
    assert_eq!(value.text(), "21.0");

    let page = g
        .get_json(1, "/v1/streams/events?from=1&limit=10")
        .await
        .expect("stream");
    let events = page["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 3);
    let stamps: Vec<(u64, u64)> = events.iter().map(|e| hlc(&e["hlc"])).collect();
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "HLC order breaks seq order: {stamps:?}"
    );
    // The forward jump shows in the stamps (HLC follows a clock that moves forward).
    assert!(stamps[1].0 >= stamps[0].0 + 86_000_000, "{stamps:?}");
}

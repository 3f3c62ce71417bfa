//! The monitoring in contrib/ watches what the daemon really exports: every metric that the
//! Prometheus rules (contrib/prometheus) and the Grafana dashboard (contrib/grafana) name is
//! scraped here from a real daemon, taken through what the alerts are about: a running job,
//! S3 SlowDown and KMS throttling, a retried and a failed object, and a job parked because its
//! audit writes fail. Needs the `fault-injection` feature; `./scripts/test.sh` enables it.
#![cfg(feature = "fault-injection")]
// Integration-test crate: a failed expectation is a test failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::proxy::{FaultProxy, Faults};
use common::*;
use dualseal::api::pb;

/// The sample names of an exposition (`dualseal_x_sum` as well as `dualseal_x`).
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The value of the one sample written exactly as `series` (name and labels, as rendered).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Scrapes until `series` has `value`, for up to `within` (gauges are refreshed every 5 s).
fn scrape_until(port: u16, series: &str, value: f64, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let m = scrape(port);
        if sample(&m, series) == Some(value) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{series} did not reach {value} within {within:?}; last scrape:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every `dualseal_*` metric name in a contrib file, with the file it came from.
fn used_metrics() -> BTreeMap<String, &'static str> {
    let files = [
        (
            "contrib/prometheus/dualseal.rules.yml",
            include_str!("../contrib/prometheus/dualseal.rules.yml"),
        ),
        (
            "contrib/grafana/dualseal.json",
            include_str!("../contrib/grafana/dualseal.json"),
        ),
    ];
    let name = regex::Regex::new(r"\bdualseal_[a-z0-9_]+").unwrap();
    let mut used = BTreeMap::new();
    for (path, text) in files {
        for m in name.find_iter(text) {
            used.entry(m.as_str().to_owned()).or_insert(path);
        }
    }
    used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_dashboard_use_is_exported_by_the_daemon() {
    let used = used_metrics();
    // The files name many metrics; a pattern that stopped matching would make this test empty.
    assert!(used.len() >= 15, "{used:?}");

    let moto = Moto::start();
    provision(&moto).await;
    let objects: BTreeMap<String, Vec<u8>> = (0..60)
        .map(|i| {
            (
                format!("{}m/{i:03}", CATEGORY_PREFIXES[i % 4].1),
                vec![b'm'; 40 + i],
            )
        })
        .collect();
    put_all(&moto, &objects).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    // Throttling on both services, heavy at first: the SDK retries each request three times
    // itself, so only a run of throttles reaches the daemon's counters, and a light rate
    // alone may never make one (the counters of events that never happened are not
    // exported). One object denied for good (a failed object); one whose first read is cut
    // short (a retried object).
    let light = Faults {
        kms_throttle: 0.2,
        s3_slowdown: 0.2,
        ..Default::default()
    };
    proxy.set_faults(Faults {
        kms_throttle: 0.4,
        s3_slowdown: 0.4,
        ..Default::default()
    });
    let denied = objects.keys().next().unwrap().clone();
    let cut = objects.keys().nth(1).unwrap().clone();
    proxy.forbid_get(&format!("master-secrets/{denied}"));
    proxy.truncate_next_gets(&format!("master-secrets/{cut}"), 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, port) = with_metrics(config_via(&proxy.endpoint, dir.path(), 4, 8));
    let daemon = Daemon::start(dir.path(), &config);
    let mut client = daemon.client().await;
    let mut scrapes = vec![scrape(port)];
    // Before any object: the counters the failure and throttle alerts take rates of exist at
    // zero, so a burst of failures is an increase Prometheus can see.
    for (name, label) in [
        ("dualseal_objects_total", r#"state="failed""#),
        ("dualseal_throttled_total", r#"service="kms""#),
    ] {
        assert!(
            scrapes[0]
                .lines()
                .any(|l| l.starts_with(name) && l.contains(label) && l.ends_with(" 0")),
            "{name}{{{label}}} is not exported at zero before the first object:\n{}",
            scrapes[0]
        );
    }

    // Slow enough to be seen running by a refresh (every 5 s) and to be mid-job when its audit
    // writes start failing.
    let job = start_throttled(&mut client, 5).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = scrape(port);
        let seen = exported(&m);
        if ["dualseal_throttled_total", "dualseal_object_retries_total"]
            .iter()
            .all(|name| seen.contains(*name))
        {
            scrapes.push(m);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no throttled request or retried object under heavy throttling; last scrape:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    proxy.set_faults(light);
    let running = format!("dualseal_job_running{{job=\"{job}\"}}");
    scrapes.push(scrape_until(port, &running, 1.0, Duration::from_secs(30)));
    wait_until_verified(&mut client, job, 10).await;

    // Audit writes fail: the job parks and the gauge the audit alert watches says so.
    let trigger = dir
        .path()
        .join("journal")
        .join(dualseal::journal::FAIL_AUDIT_TRIGGER);
    std::fs::write(&trigger, b"").unwrap();
    let parked = r#"dualseal_jobs_parked{reason="journal"}"#;
    let m = scrape_until(port, parked, 1.0, Duration::from_secs(60));
    assert_eq!(
        sample(&m, &running),
        Some(0.0),
        "a parked job is not running"
    );
    assert_eq!(
        sample(&m, r#"dualseal_jobs_parked{reason="other"}"#),
        Some(0.0)
    );
    scrapes.push(m);

    // Repaired and resumed, the job ends (one object failed) and the gauges clear.
    std::fs::remove_file(&trigger).unwrap();
    client.resume(job).await.expect("resume");
    let done = wait_job(&mut client, job).await;
    assert_eq!(
        done.state,
        pb::JobState::CompletedWithFailures as i32,
        "{done:?}"
    );
    scrapes.push(scrape_until(port, parked, 0.0, Duration::from_secs(30)));
    let last = scrape_until(port, &running, 0.0, Duration::from_secs(30));
    assert!(
        sample(&last, "dualseal_journal_filesystem_avail_bytes").is_some_and(|v| v > 0.0)
            && sample(&last, "dualseal_journal_filesystem_size_bytes").is_some_and(|v| v > 0.0)
            && sample(&last, "dualseal_resident_memory_bytes").is_some_and(|v| v > 1e6)
            && sample(&last, "dualseal_start_time_seconds").is_some_and(|v| v > 1.6e9),
        "{last}"
    );
    scrapes.push(last);

    let exported: BTreeSet<String> = scrapes.iter().flat_map(|s| exported(s)).collect();
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !exported.contains(*name))
        .map(|(name, file)| format!("{name} (in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "named by contrib/ but not exported by the daemon: {missing:?}\nexported: {exported:?}"
    );
}

//! A randomized history checker, Jepsen style, on this machine.
//!
//! Several `Cache` instances in this process and in two child processes
//! (this test binary again, running `history_worker`) share one namespace
//! on one cache `redis-server`, and a versioned database on a second one.
//! They run a seeded random mix of reads through `#[cache_aside]` functions
//! (plain, `stale`, `fail_safe` + `timeout` + `hard_timeout`,
//! `refresh_ahead`, `cache_none`, and two shapes sharing one entry),
//! write-throughs, key / tag / prefix / namespace invalidations (macros and
//! the explicit API), and loads that fail, are slow, panic or are
//! cancelled, while a fault task kills pub/sub connections, pauses Redis
//! (`CLIENT PAUSE`, `DEBUG SLEEP`), restarts it empty, and makes the
//! database fail for a key now and then. Every operation is recorded with
//! its wall-clock start and end; the checker (`history/check.rs`) then
//! judges the merged history.
//!
//! `TIERCACHE_CHECK_SEED=<n>` replays a seed (the same operations and
//! faults; the interleaving is the machine's), `TIERCACHE_CHECK_SECONDS`
//! sets the length (default 20 s of operations; 600 to soak), and
//! `TIERCACHE_CHECK_DUMP=<file>` writes the merged history there as JSON
//! lines (`TIERCACHE_CHECK_FILE=<file>` judges such a file again, without
//! running anything).

mod support;

#[path = "history/check.rs"]
mod check;
#[path = "history/model.rs"]
mod model;
#[path = "history/workload.rs"]
mod workload;

use std::collections::BTreeMap;
use std::io::{BufRead, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use model::{Kind, Outcome, Rec, now_ns};
use workload::Config;

const WORKER_ENV: &str = "TIERCACHE_HISTORY_WORKER";
/// Child processes, each with [`CHILD_INSTANCES`] instances.
const CHILDREN: u32 = 2;
const PARENT_INSTANCES: u32 = 3;
const CHILD_INSTANCES: u32 = 2;
/// Concurrent operation loops per instance.
const TASKS: u32 = 6;
const DEFAULT_SECONDS: u64 = 20;
/// Examples printed per kind of violation.
const EXAMPLES: usize = 5;

fn seed() -> u64 {
    match std::env::var("TIERCACHE_CHECK_SEED") {
        Ok(seed) => seed
            .trim()
            .parse()
            .expect("TIERCACHE_CHECK_SEED is a number"),
        Err(_) => now_ns() % 1_000_000_007,
    }
}

fn seconds() -> u64 {
    std::env::var("TIERCACHE_CHECK_SECONDS")
        .ok()
        .map_or(DEFAULT_SECONDS, |s| {
            s.trim()
                .parse()
                .expect("TIERCACHE_CHECK_SECONDS is a number")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history() {
    if std::env::var_os(WORKER_ENV).is_some() {
        return; // a child: `history_worker` does the work
    }
    workload::install_panic_hook();
    if let Ok(path) = std::env::var("TIERCACHE_CHECK_FILE") {
        // Judge a history written by TIERCACHE_CHECK_DUMP, without running.
        let history = read_history(&path);
        let t0 = history.iter().map(|r| r.start).min().unwrap_or(0);
        let report = check::check(&history, t0);
        assert!(
            report.count() == 0,
            "{path}: {} violations{}",
            report.count(),
            report.render(EXAMPLES)
        );
        return;
    }
    let seed = seed();
    let seconds = seconds();
    println!(
        "history: seed {seed} (replay: TIERCACHE_CHECK_SEED={seed}), {seconds} s of operations"
    );
    let cache_redis = support::RedisServer::start();
    let db_redis = support::RedisServer::start();
    let dir = std::env::temp_dir().join(format!("tiercache-history-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let started = Instant::now();
    let start_ns = now_ns() + 1_500_000_000; // the children need a moment to start
    let end_ns = start_ns + seconds * 1_000_000_000;
    let (cache_url, db_url) = (cache_redis.url(), db_redis.url());
    let config = |proc: u32, instances: u32| Config {
        proc,
        seed,
        cache_url: cache_url.clone(),
        db_url: db_url.clone(),
        namespace: format!("history-{seed}"),
        instances,
        tasks: TASKS,
        start_ns,
        end_ns,
        out: dir.join(format!("proc-{proc}.jsonl")).display().to_string(),
    };

    let children: Vec<_> = (1..=CHILDREN)
        .map(|proc| {
            let child = config(proc, CHILD_INSTANCES);
            let spawned = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "history_worker",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(WORKER_ENV, serde_json::to_string(&child).unwrap())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("the test binary runs again");
            (child, spawned)
        })
        .collect();

    let faults = tokio::spawn(inject_faults(
        cache_redis,
        db_url.clone(),
        seed,
        start_ns,
        end_ns,
    ));
    let mut history = workload::run(&config(0, PARENT_INSTANCES)).await;
    let (cache_redis, mut faults) = faults.await.expect("the fault task does not panic");
    let mut fault_count: BTreeMap<String, u64> = BTreeMap::new();
    for fault in &faults {
        *fault_count.entry(fault.prefix.clone()).or_default() += 1;
    }
    history.append(&mut faults);

    let mut failures = Vec::new();
    let deadline = Instant::now() + model::HANG + Duration::from_secs(20);
    let mut per_process = vec![history.len()];
    for (child, mut process) in children {
        let status = loop {
            if let Some(status) = process.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = process.kill();
                let _ = process.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match status {
            Some(status) if status.success() => {}
            other => failures.push(format!(
                "child process {} did not finish its history: {other:?}",
                child.proc
            )),
        }
        let mut records = read_history(&child.out);
        per_process.push(records.len());
        history.append(&mut records);
    }
    drop(cache_redis);
    drop(db_redis);
    let _ = std::fs::remove_dir_all(&dir);

    if let Ok(path) = std::env::var("TIERCACHE_CHECK_DUMP") {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for rec in &history {
            serde_json::to_writer(&mut out, rec).unwrap();
            out.write_all(b"\n").unwrap();
        }
        println!("history: written to {path}");
    }
    let report = check::check(&history, start_ns);
    let summary = summary(
        &history,
        &per_process,
        &fault_count,
        &report,
        started.elapsed(),
    );
    println!("{summary}");
    for (how, (lag, example)) in &report.slowest {
        println!(
            "history: longest propagation within the bound ({} ms), {how}:\n{example}",
            lag / 1_000_000
        );
    }
    let found = report.count() + failures.len();
    assert!(
        found == 0,
        "history: seed {seed}: {found} violations (replay: TIERCACHE_CHECK_SEED={seed}){}{}\n{summary}",
        failures
            .iter()
            .map(|f| format!("\n== {f}"))
            .collect::<String>(),
        report.render(EXAMPLES),
    );
}

/// A child process of `history`: runs its share and writes it down.
#[test]
fn history_worker() {
    let Ok(config) = std::env::var(WORKER_ENV) else {
        return; // run alone, it has nothing to do
    };
    let config: Config = serde_json::from_str(&config).expect("the parent's config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let records = runtime.block_on(workload::run(&config));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&config.out).unwrap());
    for rec in &records {
        serde_json::to_writer(&mut out, rec).unwrap();
        out.write_all(b"\n").unwrap();
    }
    out.flush().unwrap();
    // Background tasks of the caches may still run: do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(100));
}

fn read_history(path: &str) -> Vec<Rec> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    std::io::BufReader::new(file)
        .lines()
        .map(|line| serde_json::from_str(&line.unwrap()).expect("a record"))
        .collect()
}

/// The faults on the cache Redis (never the database's), and outages of
/// the database for one key, each recorded with its span.
async fn inject_faults(
    mut server: support::RedisServer,
    db_url: String,
    seed: u64,
    start_ns: u64,
    end_ns: u64,
) -> (support::RedisServer, Vec<Rec>) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xFA17);
    let mut faults = Vec::new();
    let url = server.url();
    tokio::time::sleep(Duration::from_nanos(start_ns.saturating_sub(now_ns()))).await;
    let mut next_outage = now_ns();
    let mut next_fault = now_ns() + 1_000_000_000;
    while now_ns() + 1_000_000_000 < end_ns {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if now_ns() >= next_outage {
            next_outage = now_ns() + rng.u64(2_000..5_000) * 1_000_000;
            let k = rng.u64(0..model::KEYS);
            let ms = rng.u64(300..6_000);
            let mut fault = Rec::new(0, 0, 0, Kind::Fault, &format!("database outage of row {k}"));
            fault.prefix = "database outage of one row".to_owned();
            fault.k = k;
            if let Some(mut db) = admin(&db_url).await {
                let outage = format!("outage:{k}");
                let set = redis::cmd("SET")
                    .arg(outage)
                    .arg(1)
                    .arg("PX")
                    .arg(ms)
                    .clone();
                let _ = query(&mut db, &set).await;
            }
            fault.end = fault.start + ms * 1_000_000;
            faults.push(fault);
        }
        if now_ns() < next_fault {
            continue;
        }
        next_fault = now_ns() + rng.u64(1_000..3_000) * 1_000_000;
        let kind = match rng.u32(0..100) {
            0..30 => "CLIENT KILL TYPE pubsub",
            30..55 => "CLIENT PAUSE ALL",
            55..80 => "DEBUG SLEEP",
            _ => "restart",
        };
        let mut fault = Rec::new(0, 0, 0, Kind::Fault, kind);
        fault.prefix = kind.to_owned();
        let Some(mut redis) = admin(&url).await else {
            fault.func = format!("{kind} (skipped: no admin connection)");
            fault.prefix = "(skipped: no admin connection)".to_owned();
            fault.end = now_ns();
            faults.push(fault);
            continue;
        };
        match kind {
            "CLIENT KILL TYPE pubsub" => {
                let kill = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("pubsub")
                    .clone();
                let _ = query(&mut redis, &kill).await;
                fault.end = now_ns();
            }
            "CLIENT PAUSE ALL" => {
                let ms = rng.u64(100..800);
                let pause = redis::cmd("CLIENT").arg("PAUSE").arg(ms).arg("ALL").clone();
                let _ = query(&mut redis, &pause).await;
                fault.func = format!("CLIENT PAUSE {ms} ALL");
                fault.end = fault.start + ms * 1_000_000;
            }
            "DEBUG SLEEP" => {
                let tenths = rng.u64(2..10);
                fault.func = format!("DEBUG SLEEP 0.{tenths}");
                fault.end = fault.start + tenths * 100_000_000;
                tokio::spawn(async move {
                    let sleep = redis::cmd("DEBUG")
                        .arg("SLEEP")
                        .arg(tenths as f64 / 10.0)
                        .clone();
                    let _ = query(&mut redis, &sleep).await;
                });
            }
            _ => {
                let down = rng.u64(0..1_500);
                tokio::task::block_in_place(|| server.stop());
                tokio::time::sleep(Duration::from_millis(down)).await;
                tokio::task::block_in_place(|| server.restart());
                fault.func = format!("restart (down {down} ms, empty after)");
                fault.end = now_ns();
            }
        }
        faults.push(fault);
    }
    (server, faults)
}

async fn admin(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).ok()?;
    tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()
}

async fn query(
    redis: &mut redis::aio::MultiplexedConnection,
    command: &redis::Cmd,
) -> Option<redis::Value> {
    tokio::time::timeout(Duration::from_secs(3), command.query_async(redis))
        .await
        .ok()?
        .ok()
}

fn summary(
    history: &[Rec],
    per_process: &[usize],
    faults: &BTreeMap<String, u64>,
    report: &check::Report,
    elapsed: Duration,
) -> String {
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for rec in history {
        let outcome = match &rec.outcome {
            Outcome::Value(_) => "value".to_owned(),
            Outcome::Nothing => "none".to_owned(),
            Outcome::Err { what, .. } => format!("err {what}"),
            Outcome::Panic(_) => "panic".to_owned(),
            Outcome::Cancelled => "cancelled".to_owned(),
            Outcome::Hang => "hang".to_owned(),
            Outcome::Done => "done".to_owned(),
        };
        let kind = match rec.kind {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Checkpoint | Kind::Fault => continue,
            Kind::StrayPanic => "stray panic",
        };
        *outcomes.entry(format!("{kind} {outcome}")).or_default() += 1;
    }
    let slowest = history
        .iter()
        .filter(|r| matches!(r.kind, Kind::Read | Kind::Write))
        .max_by_key(|r| r.end.saturating_sub(r.start))
        .map_or_else(String::new, |r| {
            format!(
                "{} ms ({} of row {} on process {})",
                r.end.saturating_sub(r.start) / 1_000_000,
                r.func,
                r.k,
                r.proc
            )
        });
    let ops: usize = history
        .iter()
        .filter(|r| matches!(r.kind, Kind::Read | Kind::Write))
        .count();
    let mut lags = report.lags.clone();
    lags.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    let lag = |p: f64| {
        lags.get(((lags.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .map_or(0.0, ms)
    };
    format!(
        "history summary: 1 history checked ({} processes, {} instances), {ops} operations \
         (records per process: {per_process:?}), {} reads judged, {} writes; \
         outcomes {outcomes:?}; faults {faults:?}; \
         propagation: {} reads on another instance answered from before a confirmed write within the bound, \
         lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (bound {} ms); \
         slowest call {slowest}; violations: {}; wall time {:.1} s",
        per_process.len(),
        PARENT_INSTANCES + CHILDREN * CHILD_INSTANCES,
        report.reads_checked,
        report.writes,
        lags.len(),
        lag(0.5),
        lag(0.99),
        lag(1.0),
        check::PROPAGATION_BOUND.as_millis(),
        report.count(),
        elapsed.as_secs_f64(),
    )
}

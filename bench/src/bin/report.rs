//! Writes `docs/benchmarks.md` and `docs/benchmarks.svg` from one run of the
//! suite: criterion's estimates (median of each benchmark), the scenarios'
//! JSON, and `redis-benchmark`'s output.
//!
//! `report --criterion DIR --scenarios FILE --redis-benchmark FILE --out DIR`
//! (scripts/bench passes them all). `--http FILE`, the `http` bench's
//! interleaved pass, defaults to `http.json` beside the scenarios' file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

struct Args {
    criterion: PathBuf,
    scenarios: PathBuf,
    redis_benchmark: PathBuf,
    out: PathBuf,
    started: Option<String>,
    /// Case 8's stored sizes (`formats.json`), if it ran.
    formats: Option<PathBuf>,
    /// The `http` bench's interleaved pass (`http.json`), if it ran.
    http: PathBuf,
}

fn args() -> Args {
    let mut a = std::env::args().skip(1);
    let mut get = BTreeMap::new();
    while let Some(flag) = a.next() {
        let value = a.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        get.insert(flag, value);
    }
    let path = |flag: &str| {
        PathBuf::from(
            get.get(flag)
                .unwrap_or_else(|| panic!("missing {flag}"))
                .clone(),
        )
    };
    let scenarios = path("--scenarios");
    Args {
        criterion: path("--criterion"),
        http: get
            .get("--http")
            .map_or_else(|| scenarios.with_file_name("http.json"), PathBuf::from),
        scenarios,
        redis_benchmark: path("--redis-benchmark"),
        out: path("--out"),
        started: get.get("--date").cloned(),
        formats: get.get("--formats").map(PathBuf::from),
    }
}

/// Criterion's median estimate (ns) of every benchmark under `dir`, by id.
fn criterion_medians(dir: &Path) -> BTreeMap<String, f64> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                let read = |f: &str| -> Option<Value> {
                    serde_json::from_slice(&std::fs::read(path.join(f)).ok()?).ok()
                };
                if let (Some(bench), Some(est)) = (read("benchmark.json"), read("estimates.json"))
                    && let (Some(id), Some(median)) = (
                        bench["full_id"].as_str(),
                        est["median"]["point_estimate"].as_f64(),
                    )
                {
                    found.insert(id.to_owned(), median);
                }
            } else {
                stack.push(path);
            }
        }
    }
    found
}

/// `GET: 176056.34 requests per second, p50=0.151 msec`
fn redis_benchmark_get(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // redis-benchmark -q rewrites its progress line with \r: take the last.
    let line = text.split(['\n', '\r']).rfind(|l| l.starts_with("GET:"))?;
    line.trim_start_matches("GET:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let kb: f64 = s
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB", kb / (1024.0 * 1024.0)))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn lock_version(name: &str) -> String {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"))
        .unwrap_or_default();
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle)
        .map(|i| {
            let rest = &lock[i + needle.len()..];
            rest[..rest.find('"').unwrap_or(0)].to_owned()
        })
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------
// Formatting

fn time(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn rate(ns_per_op: f64) -> String {
    let per_s = 1e9 / ns_per_op;
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.0} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0}/s")
    }
}

/// How a row is judged.
#[derive(Clone, Copy)]
enum Target {
    /// Context only.
    None,
    /// ratio must be below.
    Below(f64),
    /// ratio must be at most.
    AtMost(f64),
    /// ratio must be at least.
    AtLeast(f64),
}

struct Row {
    case: String,
    measured: String,
    reference: String,
    ratio: Option<f64>,
    /// How the ratio reads, e.g. "time ÷ cached".
    ratio_of: &'static str,
    target: Target,
    target_text: String,
    /// `Some(met)` when the row is judged on something other than `ratio`.
    judged: Option<bool>,
}

impl Row {
    fn met(&self) -> Option<bool> {
        if self.judged.is_some() {
            return self.judged;
        }
        let r = self.ratio?;
        match self.target {
            Target::None => None,
            Target::Below(t) => Some(r < t),
            Target::AtMost(t) => Some(r <= t),
            Target::AtLeast(t) => Some(r >= t),
        }
    }
}

struct Rows {
    rows: Vec<Row>,
    missing: Vec<String>,
}

impl Rows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        case: &str,
        measured: String,
        reference: String,
        ratio: Option<f64>,
        ratio_of: &'static str,
        target: Target,
        target_text: &str,
    ) {
        self.rows.push(Row {
            case: case.to_owned(),
            measured,
            reference,
            ratio,
            ratio_of,
            target,
            target_text: target_text.to_owned(),
            judged: None,
        });
    }

    fn judged(&mut self, met: bool) {
        self.rows.last_mut().unwrap().judged = Some(met);
    }
}

fn main() {
    let args = args();
    let c = criterion_medians(&args.criterion);
    let s: Value = std::fs::read(&args.scenarios)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let ceiling = redis_benchmark_get(&args.redis_benchmark);

    let mut rows = Rows {
        rows: Vec::new(),
        missing: Vec::new(),
    };
    let missing = std::cell::RefCell::new(Vec::new());
    let get = |id: &str| -> Option<f64> {
        let v = c.get(id).copied();
        if v.is_none() {
            missing.borrow_mut().push(id.to_owned());
        }
        v
    };

    let pair = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let t = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), time);
    let r = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), rate);

    // -- Case 1: L1 hit
    for (arg, label) in [("u64", "u64"), ("string", "String")] {
        let tc = get(&format!("l1_hit/{arg}/tiercache"));
        let cached = get(&format!("l1_hit/{arg}/cached"));
        rows.push(
            &format!("1. L1 hit, {label} argument, vs `cached` `#[cached]`"),
            t(tc),
            format!("{} (cached)", t(cached)),
            pair(tc, cached),
            "time ÷ cached",
            Target::Below(1.0),
            "< 1.0",
        );
    }
    let tc = get("l1_hit/u64/tiercache");
    let moka_f = get("l1_hit/u64/moka_future");
    rows.push(
        "1. L1 hit, u64, vs raw `moka::future` get of the same key (the limit)",
        t(tc),
        format!("{} (moka::future)", t(moka_f)),
        pair(tc, moka_f),
        "time ÷ moka",
        Target::None,
        "context",
    );
    let cached = get("l1_hit/u64/cached");
    for (id, what) in [
        (
            "l1_hit/u64/moka_future_fresh_key",
            "raw moka::future, key built per call",
        ),
        ("l1_hit/u64/moka_sync", "raw moka::sync get"),
        ("l1_hit/u64/mutex_hashmap", "Mutex<HashMap> get (the floor)"),
    ] {
        let v = get(id);
        rows.push(
            &format!("1. L1 hit, u64: {what}, vs `cached`"),
            t(v),
            format!("{} (cached)", t(cached)),
            pair(v, cached),
            "time ÷ cached",
            Target::None,
            "context",
        );
    }
    for (keys, label, target) in [
        ("1key", "1 key", Target::None),
        ("1000keys", "1,000 keys", Target::AtLeast(2.0)),
    ] {
        let tc = get(&format!("l1_hit_2threads/{keys}/tiercache"));
        let cached = get(&format!("l1_hit_2threads/{keys}/cached"));
        let moka = get(&format!("l1_hit_2threads/{keys}/moka_future"));
        rows.push(
            &format!("1. L1 hit, 2 threads on {label}: throughput vs `cached`"),
            r(tc),
            format!("{} (cached); moka::future {}", r(cached), r(moka)),
            pair(cached, tc),
            "throughput ÷ cached",
            target,
            if matches!(target, Target::None) {
                "context"
            } else {
                "≥ 2.0"
            },
        );
    }

    // -- Case 2: L2 hit
    let tc = get("l2_hit/latency/tiercache");
    let raw = get("l2_hit/latency/raw_get_json");
    let cached = get("l2_hit/latency/cached");
    rows.push(
        "2. L2 hit latency, 1 task (L1 off), vs raw `GET` + serde_json",
        t(tc),
        format!("{} (raw)", t(raw)),
        pair(tc, raw),
        "time ÷ raw",
        Target::AtMost(1.05),
        "≤ 1.05",
    );
    let mget3 = get("l2_hit/latency/raw_mget3_json");
    rows.push(
        "2. L2 hit latency: raw `MGET` of the entry + 2 version keys + serde_json (the read before client tracking), vs raw `GET`",
        t(mget3),
        format!("{} (raw)", t(raw)),
        pair(mget3, raw),
        "time ÷ raw",
        Target::None,
        "context",
    );
    rows.push(
        "2. L2 hit latency: `cached` `#[concurrent_cached]` + AsyncRedisCache, vs raw",
        t(cached),
        format!("{} (raw)", t(raw)),
        pair(cached, raw),
        "time ÷ raw",
        Target::None,
        "context",
    );
    let tc = get("l2_hit/throughput64/tiercache");
    let raw = get("l2_hit/throughput64/raw_get_json");
    let cached = get("l2_hit/throughput64/cached");
    rows.push(
        "2. L2 hit throughput, 64 tasks, one connection, vs raw redis-rs",
        r(tc),
        format!("{} (raw)", r(raw)),
        pair(raw, tc),
        "throughput ÷ raw",
        Target::AtLeast(0.9),
        "≥ 0.9",
    );
    let mget3 = get("l2_hit/throughput64/raw_mget3_json");
    rows.push(
        "2. L2 hit throughput, 64 tasks: raw `MGET` of 3 (the read before client tracking), vs raw `GET`",
        r(mget3),
        format!("{} (raw)", r(raw)),
        pair(raw, mget3),
        "throughput ÷ raw",
        Target::None,
        "context",
    );
    rows.push(
        "2. L2 hit throughput, 64 tasks: tiercache vs raw `MGET` of 3 (the read before client tracking)",
        r(tc),
        format!("{} (raw MGET)", r(mget3)),
        pair(mget3, tc),
        "throughput ÷ raw MGET",
        Target::None,
        "context",
    );
    rows.push(
        "2. L2 hit throughput, 64 tasks: `cached`, vs raw redis-rs",
        r(cached),
        format!("{} (raw)", r(raw)),
        pair(raw, cached),
        "throughput ÷ raw",
        Target::None,
        "context",
    );
    rows.push(
        "2. raw redis-rs 64 tasks vs `redis-benchmark -t get -c 50` (server ceiling)",
        r(raw),
        ceiling.map_or_else(|| "—".into(), |g| format!("{:.0} k/s", g / 1e3)),
        raw.zip(ceiling).map(|(ns, g)| (1e9 / ns) / g),
        "throughput ÷ ceiling",
        Target::None,
        "context",
    );
    let codec = get("codec/serde_json_roundtrip");
    rows.push(
        "2. serde_json round trip of the ~200-byte value",
        t(codec),
        "—".into(),
        None,
        "",
        Target::None,
        "context",
    );

    // -- Case 3: miss
    let tc = get("miss/tiercache");
    let raw = get("miss/raw_get_set");
    let cached = get("miss/cached");
    rows.push(
        "3. Miss (load + write) latency, vs raw `GET` + `SET EX`",
        t(tc),
        format!("{} (raw); cached {}", t(raw), t(cached)),
        pair(tc, raw),
        "time ÷ raw",
        Target::None,
        "context",
    );
    let rt = |name: &str| s[format!("roundtrips/{name}")]["round_trips"].as_f64();
    let cmds = |name: &str| -> String {
        s[format!("roundtrips/{name}")]["commands"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let n = v.as_f64().unwrap_or(0.0);
                        if (n - 1.0).abs() < 1e-9 {
                            k.to_uppercase()
                        } else {
                            format!("{n}×{}", k.to_uppercase())
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let n = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v}"));
    let tc_miss = rt("miss/tiercache");
    rows.push(
        "3. Miss: round trips (1 read that takes the lock + 1 write that releases it), vs raw `GET` + `SET EX`",
        format!("{} RT ({})", n(tc_miss), cmds("miss/tiercache")),
        format!(
            "{} RT ({}); cached {} RT",
            n(rt("miss/raw_get_set")),
            cmds("miss/raw_get_set"),
            n(rt("miss/cached"))
        ),
        pair(tc_miss, rt("miss/raw_get_set")),
        "round trips ÷ raw",
        Target::AtMost(1.0),
        "2 RT with the lock (issue 15: read-or-lock)",
    );
    rows.judged(tc_miss.is_some_and(|v| v <= 2.0));
    let tc_l2 = rt("l2_hit/tiercache");
    rows.push(
        "3. L2 hit: round trips, tag checks included",
        format!("{} RT ({})", n(tc_l2), cmds("l2_hit/tiercache")),
        format!(
            "{} RT (raw {}); cached {} RT",
            n(rt("l2_hit/raw_get")),
            cmds("l2_hit/raw_get"),
            n(rt("l2_hit/cached"))
        ),
        pair(tc_l2, rt("l2_hit/raw_get")),
        "round trips ÷ raw",
        Target::AtMost(1.0),
        "1 RT",
    );
    rows.judged(tc_l2.is_some_and(|v| v <= 1.0));
    let tc_l1 = rt("l1_hit/tiercache");
    rows.push(
        "3. L1 hit: round trips",
        format!("{} RT", n(tc_l1)),
        "—".into(),
        None,
        "",
        Target::None,
        "0 RT",
    );
    rows.judged(tc_l1.is_some_and(|v| v == 0.0));

    // -- Case 4: invalidation
    let inv = |who: &str, n: u64| s[format!("invalidation/{who}/{n}")]["median_us"].as_f64();
    let mut stale_notes = Vec::new();
    for (count, label) in [
        (1u64, "1 entry"),
        (1_000, "1,000 entries"),
        (100_000, "100,000 entries"),
    ] {
        let tc = inv("tiercache", count).map(|us| us * 1e3);
        let prefix = inv("tiercache_prefix", count).map(|us| us * 1e3);
        let seed = inv("seed", count).map(|us| us * 1e3);
        rows.push(
            &format!(
                "4. Invalidation of a tag carried by {label}: `invalidate_tags`, vs seed-style SMEMBERS + DEL"
            ),
            format!("{} (tag); {} (prefix)", t(tc), t(prefix)),
            format!("{} (seed)", t(seed)),
            pair(tc, seed),
            "tag time ÷ seed",
            Target::None,
            "context",
        );
        if let Some(stale) =
            s[format!("invalidation/tiercache/{count}")]["stale_l1_hits_per_invalidation"].as_f64()
        {
            stale_notes.push(format!("{stale} at {label}"));
        }
    }
    let growth = |who: &str| inv(who, 100_000).zip(inv(who, 1)).map(|(a, b)| a / b);
    rows.push(
        "4. Invalidation time, 100,000 entries ÷ 1 entry (flat = O(1))",
        format!(
            "{} (tag); {} (prefix)",
            growth("tiercache").map_or_else(|| "—".into(), times),
            growth("tiercache_prefix").map_or_else(|| "—".into(), times)
        ),
        growth("seed").map_or_else(|| "—".into(), |g| format!("{g:.0}× (seed)")),
        growth("tiercache"),
        "growth",
        Target::AtMost(2.0),
        "≤ 2 (flat)",
    );

    // -- Case 5: stampede
    let st = |who: &str, f: &str| s[format!("stampede/{who}")][f].as_f64();
    let loader_ms = st("tiercache", "loader_ms").unwrap_or(50.0);
    rows.push(
        "5. Stampede, 1,000 callers of a cold key: loader calls",
        n(st("tiercache", "loader_calls_per_round")),
        format!(
            "{} (SET NX + 100 ms poll)",
            n(st("setnx_poll", "loader_calls_per_round"))
        ),
        None,
        "",
        Target::None,
        "1",
    );
    rows.judged(st("tiercache", "loader_calls_per_round") == Some(1.0));
    let ms = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.1} ms"));
    rows.push(
        "5. Stampede p50 latency, 50 ms loader",
        ms(st("tiercache", "p50_ms")),
        format!("{} (SET NX + poll)", ms(st("setnx_poll", "p50_ms"))),
        pair(st("tiercache", "p50_ms"), st("setnx_poll", "p50_ms")),
        "time ÷ baseline",
        Target::None,
        "context",
    );
    let p99 = st("tiercache", "p99_ms");
    rows.push(
        "5. Stampede p99 latency, 50 ms loader",
        ms(p99),
        format!("{} (SET NX + poll)", ms(st("setnx_poll", "p99_ms"))),
        pair(p99, st("setnx_poll", "p99_ms")),
        "time ÷ baseline",
        Target::None,
        &format!("≤ {:.0} ms (loader + 10)", loader_ms + 10.0),
    );
    rows.judged(p99.is_some_and(|p| p <= loader_ms + 10.0));

    // -- Case 6: memory
    let mem = |who: &str, f: &str| s[format!("memory/{who}")][f].as_f64();
    let entries = mem("tiercache", "entries").unwrap_or(0.0);
    let bytes = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.0} B"));
    rows.push(
        &format!(
            "6. L1 memory per entry ({} entries of a ~200-byte value), vs raw moka",
            thousands(entries as u64)
        ),
        bytes(mem("tiercache", "bytes_per_entry")),
        format!("{} (moka::sync)", bytes(mem("moka", "bytes_per_entry"))),
        pair(
            mem("tiercache", "bytes_per_entry"),
            mem("moka", "bytes_per_entry"),
        ),
        "bytes ÷ moka",
        Target::AtMost(1.5),
        "≤ 1.5",
    );

    // -- Case 6b: L1 under a byte budget
    let budget = mem("tiercache-budget", "budget");
    let grown = mem("tiercache-budget", "rss_after")
        .zip(mem("tiercache-budget", "rss_before"))
        .map(|(after, before)| after - before);
    let mib =
        |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{:.1} MiB", v / 1048576.0));
    rows.push(
        &format!(
            "6b. L1 resident growth after {} entries under `l1_max_bytes`, vs the budget",
            thousands(entries as u64)
        ),
        format!(
            "{} ({} entries kept, {} estimated)",
            mib(grown),
            mem("tiercache-budget", "l1_entries")
                .map_or_else(|| "—".into(), |v| thousands(v as u64)),
            mib(mem("tiercache-budget", "l1_bytes")),
        ),
        format!("{} budget", mib(budget)),
        pair(grown, budget),
        "resident ÷ budget",
        Target::AtMost(1.5),
        "≤ 1.5",
    );

    // -- Case 7: hit ratio beside moka
    for workload in ["zipf 0.7", "zipf 0.9", "zipf 1.1", "zipf 0.9 + scans"] {
        for share in [1, 5, 20] {
            let hr = |who: &str| s[format!("hit_ratio/{workload}/{share}")][who].as_f64();
            let (ours, moka) = (hr("tiercache"), hr("moka"));
            let percent =
                |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{:.1} %", 100.0 * v));
            let points = ours.zip(moka).map_or_else(String::new, |(o, m)| {
                format!(" ({:+.1} points)", 100.0 * (o - m))
            });
            rows.push(
                &format!("7. L1 hit ratio, {workload}, capacity {share} % of the keys, vs moka"),
                format!("{}{points}", percent(ours)),
                format!("{} (moka::sync)", percent(moka)),
                ours.zip(moka).map(|(o, m)| o / m),
                "hit ratio ÷ moka's",
                Target::None,
                "≥ moka − 1 point",
            );
            if let (Some(o), Some(m)) = (ours, moka) {
                rows.judged(o >= m - 0.01);
            }
        }
    }

    rows.missing = missing.into_inner();
    let md = markdown(&args, &rows, &c, &stale_notes);
    std::fs::create_dir_all(&args.out).unwrap();
    std::fs::write(args.out.join("benchmarks.md"), md).unwrap();
    std::fs::write(args.out.join("benchmarks.svg"), svg(&rows.rows)).unwrap();
    let met = rows.rows.iter().filter(|r| r.met() == Some(true)).count();
    let missed = rows.rows.iter().filter(|r| r.met() == Some(false)).count();
    println!(
        "report: {met} targets met, {missed} missed; wrote {}/benchmarks.md and benchmarks.svg",
        args.out.display()
    );
    if !rows.missing.is_empty() {
        println!("report: no result for {}", rows.missing.join(", "));
    }
}

fn markdown(args: &Args, rows: &Rows, c: &BTreeMap<String, f64>, stale: &[String]) -> String {
    let mut md = String::new();
    let date = args
        .started
        .clone()
        .unwrap_or_else(|| sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `scripts/bench` (do not edit by hand): every row compares tiercache with its \
         reference **measured in the same run, on the same machine**; the ratios are what carry \
         over to other machines, the absolute numbers are context only.\n"
    );
    let _ = writeln!(md, "![ratios](benchmarks.svg)\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| date | {date} |");
    let _ = writeln!(
        md,
        "| machine | {cores} cores (`nproc`), {}, {} memory |",
        cpu_model(),
        mem_total()
    );
    let _ = writeln!(md, "| rustc | {} |", sh("rustc", &["--version"]));
    let _ = writeln!(
        md,
        "| redis-server | {} |",
        sh("redis-server", &["--version"])
    );
    let _ = writeln!(
        md,
        "| crates | tiercache {}, cached {}, moka {}, redis {}, tokio {}, criterion {} |",
        lock_version("tiercache"),
        lock_version("cached"),
        lock_version("moka"),
        lock_version("redis"),
        lock_version("tokio"),
        lock_version("criterion"),
    );
    let _ = writeln!(md);
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "| case | tiercache | reference | ratio | target | met? |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for row in &rows.rows {
        let ratio = row.ratio.map_or_else(
            || "—".to_owned(),
            |r| {
                let v = if !(0.01..100.0).contains(&r) {
                    format!("{r:.2e}")
                } else {
                    format!("{r:.2}")
                };
                format!("{v} ({})", row.ratio_of)
            },
        );
        let met = match row.met() {
            Some(true) => "✅ met",
            Some(false) => "❌ missed",
            None => "",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            row.case, row.measured, row.reference, ratio, row.target_text, met
        );
    }
    if !rows.missing.is_empty() {
        let _ = writeln!(
            md,
            "\nNo result in this run for: {}.",
            rows.missing.join(", ")
        );
    }
    let formats: Value = args
        .formats
        .as_ref()
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    md.push_str(&formats_table(c, &formats));
    let http: Value = std::fs::read(&args.http)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    md.push_str(&http_table(c, &http));
    let _ = writeln!(md, "\n## What each case measures\n");
    let notes = [
        "**1. L1 hit.** `#[cache_aside(prefix, ttl = \"10m\")]` on the global in-memory cache vs \
         `cached` 4.x `#[cached(ttl_secs = 600)]` on the same async function returning the same \
         ~200-byte value (both clone it out); raw moka returns an `Arc` of it from a key built \
         once (the limit). The String case passes a `String` argument to both, cloned per call. \
         Two threads: each on its own current-thread runtime; the time of the slower thread over \
         all calls gives the throughput. The two-thread rows are the most sensitive to other load \
         on the machine (`cached`'s lock contends): compare several runs before drawing lines.",
        "**2. L2 hit.** tiercache with `l1_capacity(0)`, so every call is one `GET` of the entry \
         over its tracked connection (the namespace and prefix versions known, see the README's \
         \"How an L2 read stays correct\"), envelope check and serde_json; \
         raw = `GET` + `serde_json::from_slice` of the same payload on one `MultiplexedConnection`; \
         `cached` = `#[concurrent_cached]` with `AsyncRedisCache` (ConnectionManager, MessagePack). \
         raw `MGET` of 3 = what the tag check asked of Redis before client tracking, by hand: one \
         `MGET` of the entry and two version keys, then serde_json, on the raw connection. 64 tasks: each on its own key, so single-flight cannot \
         merge calls.",
        "**3. Miss.** A fresh key per call: tiercache reads and takes the cross-process lock in \
         one pipeline (`MGET` of the versions, and read-or-lock's `EVALSHA`: `GET` of the entry, \
         `SET NX PX`), loads, and writes with one `EVALSHA` \
         (a compare-and-set script: `GET`, `SET PX`, `PEXPIRE GT` of the versions, then the \
         lock's release and `PUBLISH`); \
         round trips are counted by a loopback proxy (a client burst answered by the server, \
         pipelines count once) and commands by `INFO commandstats` deltas (commands run inside \
         a script are counted as well).",
        "**4. Invalidation.** Entries of `#[cache_aside(..., tags = [\"grp:{group}\"])]`, all \
         carrying the tag `grp:1`; samples alternate `Cache::invalidate_tags([\"grp:1\"])` and \
         `Cache::invalidate_prefix` (the same mechanism: in Redis a new version nonce, one \
         `SET` + `PUBLISH` pipeline whatever the number of entries; in this instance's L1 the \
         matching entries are dropped before the call returns), each on N freshly loaded \
         entries (L1 and Redis), timed from the caller once the connections it uses are awake \
         (3 `PING`s, and a message on the invalidation channel that the listener ignores; the \
         baseline's connection gets the same `PING`s): after the 10-second populate of 100,000 \
         entries, the first round trip on a connection left idle meanwhile is slow whatever it \
         is, a `PING` as much as an invalidation (`profile inv 100000`). The baseline is the seed-style tag set \
         written in the bench: `SET` + `SADD` per entry, then `SMEMBERS` + `DEL` of every member \
         (one pipeline).",
        "**5. Stampede.** 1,000 tasks released at once on one cold key, 50 ms loader, 5 rounds; \
         tiercache (with Redis) single-flights in the process, and its one loader takes the \
         cross-process lock (the multi-process case is `tests/resilience.rs`). The \
         baseline is the classic `GET`, `SET lock NX PX`, load, `SET`, `DEL lock`, or sleep \
         100 ms and retry.",
        "**6. Memory.** Resident set growth (`/proc/self/statm`) of a fresh process after filling \
         L1 through a cached function, vs a fresh process filling `moka::sync::Cache<String, \
         Arc<Item>>` (TTL, max capacity) with the same keys and values.",
        "**7. Hit ratio.** The same request streams replayed through a tiercache in-memory cache \
         (`l1_capacity` = the capacity; every call through `Cache::entry(..).get_with`, so the \
         whole path: key, lookup, load, fill; hits = `stats().l1_hits`) and through a \
         `moka::sync::Cache` of the same capacity (`get`, and `insert` on a miss): Zipf over \
         100,000 keys with α 0.7, 0.9, 1.1, 10^6 requests from a fixed seed, and Zipf 0.9 with a \
         scan of 20,000 keys seen once after every 100,000 requests; capacities of 1, 5 and \
         20 % of the keys. The target: no more than one point below moka's hit ratio.",
    ];
    for n in notes {
        let _ = writeln!(md, "- {n}");
    }
    if !stale.is_empty() {
        let _ = writeln!(
            md,
            "\nCheck made during case 4: after an invalidation, calls of the invalidated keys \
             that were still answered from L1 instead of loading (should be 0), per \
             invalidation: {}.",
            stale.join(", ")
        );
    }
    let _ = writeln!(md, "\n## Every criterion benchmark (median)\n");
    let _ = writeln!(md, "| benchmark | median | per second |\n|---|---|---|");
    for (id, ns) in c {
        let _ = writeln!(md, "| `{id}` | {} | {} |", time(*ns), rate(*ns));
    }
    let _ = writeln!(
        md,
        "\nReproduce: `scripts/bench` (starts its own `redis-server` on a free loopback port)."
    );
    md
}

/// Case 8: per value size, each format's stored bytes and write and read
/// times, beside serde_json uncompressed (criterion's
/// `formats/{size}/{format}/{write|read}`, sizes from `formats.json`).
fn formats_table(c: &BTreeMap<String, f64>, sizes: &Value) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## 8. Formats: codec × compression × encryption\n\n\
         What an L2 write (serialize, compress, seal) and read (open, decompress, deserialize) \
         cost through the envelope code, and the bytes Redis holds, for a record of text of \
         about 200 B, 20 KB and 1 MB as JSON; compressed from the first byte (in use, \
         `compress_above`, 1 KiB by default, keeps small values uncompressed). Ratios are to \
         `json` of the same size, in the same run. `sealed`: XChaCha20-Poly1305.\n"
    );
    let _ = writeln!(
        md,
        "| size | format | stored | ÷ json | write | ÷ json | read | ÷ json |\n|---|---|---|---|---|---|---|---|"
    );
    let formats = [
        "json",
        "json+lz4",
        "json+zstd",
        "postcard",
        "postcard+lz4",
        "postcard+zstd",
        "msgpack",
        "msgpack+lz4",
        "msgpack+zstd",
        "json+sealed",
        "postcard+zstd+sealed",
    ];
    for size in ["200B", "20KB", "1MB"] {
        let stored = |f: &str| sizes[format!("{size}/{f}")]["stored"].as_f64();
        let timed = |f: &str, op: &str| c.get(&format!("formats/{size}/{f}/{op}")).copied();
        for f in formats {
            let ratio = |a: Option<f64>, b: Option<f64>| {
                a.zip(b)
                    .map_or_else(|| "—".to_owned(), |(a, b)| format!("{:.2}", a / b))
            };
            let shown = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), time);
            let bytes = stored(f).map_or_else(|| "—".to_owned(), |b| thousands(b as u64));
            let _ = writeln!(
                md,
                "| {size} | `{f}` | {bytes} B | {} | {} | {} | {} | {} |",
                ratio(stored(f), stored("json")),
                shown(timed(f, "write")),
                ratio(timed(f, "write"), timed("json", "write")),
                shown(timed(f, "read")),
                ratio(timed(f, "read"), timed("json", "read")),
            );
        }
    }
    md
}

/// The `http` bench: a cached `GET` through `ResponseCacheLayer` beside
/// the handler alone and hitbox-tower, in requests per second (criterion's
/// `http/{latency,concurrent64}/{tiercache,handler,hitbox}`, and the
/// interleaved pass's medians from `http.json`).
fn http_table(c: &BTreeMap<String, f64>, interleaved: &Value) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## HTTP: a cached GET through the layer\n\n\
         `tiercache::http::ResponseCacheLayer` on an embedded cache (no Redis: every answer is \
         an L1 hit), the same axum {axum} handler alone (no cache), and the same route behind \
         hitbox-tower {hitbox} on hitbox-moka (`GET` only, `200` only, key from the method and \
         the path's `{{id}}`, TTL 60 s), each its own `axum::serve` on a loopback port, asked \
         by hyper-util's legacy client (keep-alive, `TCP_NODELAY`) in the same process; the \
         handler serializes a ~1 KB JSON product with serde_json on every call, no sleep. \
         Every key is checked to be a hit before anything is measured (`cache-status: \
         tiercache; hit`, `x-cache-status: HIT`). One at a time: one request in flight, keys \
         in turn; 64 in flight: 64 requests of 64 keys per iteration. Criterion runs the three \
         variants back to back{rounds}. Ratios are of requests per second: above 1, the layer \
         answers more.\n",
        axum = lock_version("axum"),
        hitbox = lock_version("hitbox-tower"),
        rounds = match (
            interleaved["config"]["rounds"].as_u64(),
            interleaved["config"]["window_ms"].as_u64(),
        ) {
            (Some(rounds), Some(window)) => format!(
                "; the interleaved rows are the medians of {rounds} rounds in which each \
                 variant runs for {window} ms in turn, in a rotating order"
            ),
            _ => String::new(),
        },
    );
    let _ = writeln!(
        md,
        "| requests | tiercache layer | handler alone | hitbox-tower (moka) | ours ÷ handler alone | ours ÷ hitbox |\n|---|---|---|---|---|---|"
    );
    let per_second = |v: Option<f64>| {
        v.map_or_else(
            || "—".to_owned(),
            |rps| {
                if rps >= 1e6 {
                    format!("{:.2} M/s", rps / 1e6)
                } else {
                    format!("{:.1} k/s", rps / 1e3)
                }
            },
        )
    };
    let ratio = |a: Option<f64>, b: Option<f64>| {
        a.zip(b)
            .map_or_else(|| "—".to_owned(), |(a, b)| format!("{:.2}", a / b))
    };
    let variants = ["tiercache", "handler", "hitbox"];
    for (group, per_iteration, label) in [
        ("latency", 1.0, "1 at a time (criterion)"),
        ("concurrent64", 64.0, "64 in flight (criterion)"),
    ] {
        let rps = variants.map(|v| {
            c.get(&format!("http/{group}/{v}"))
                .map(|ns| per_iteration * 1e9 / ns)
        });
        let latency = if group == "latency" {
            rps[0].map_or_else(String::new, |r| format!(" ({})", time(1e9 / r)))
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {label} | {}{latency} | {} | {} | {} | {} |",
            per_second(rps[0]),
            per_second(rps[1]),
            per_second(rps[2]),
            ratio(rps[0], rps[1]),
            ratio(rps[0], rps[2]),
        );
    }
    for (group, label) in [
        ("latency", "1 at a time (interleaved)"),
        ("concurrent64", "64 in flight (interleaved)"),
    ] {
        let rps = variants.map(|v| interleaved[format!("{group}/{v}")]["rps_median"].as_f64());
        if rps.iter().all(Option::is_none) {
            continue;
        }
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} |",
            per_second(rps[0]),
            per_second(rps[1]),
            per_second(rps[2]),
            ratio(rps[0], rps[1]),
            ratio(rps[0], rps[2]),
        );
    }
    md
}

/// A horizontal bar chart of the ratios, log scale, 1× marked.
fn svg(rows: &[Row]) -> String {
    let bars: Vec<&Row> = rows.iter().filter(|r| r.ratio.is_some()).collect();
    let (label_w, plot_w, bar_h, gap, top) = (600.0, 380.0, 18.0, 6.0, 48.0);
    // log10 range: the data's decades, at least 0.1× .. 10×.
    let logs = bars.iter().map(|r| r.ratio.unwrap().max(1e-6).log10());
    let lo = logs.clone().fold(-1.0f64, f64::min).floor();
    let hi = logs.fold(1.0f64, f64::max).ceil();
    let x = |ratio: f64| label_w + (ratio.log10().clamp(lo, hi) - lo) / (hi - lo) * plot_w;
    let height = top + bars.len() as f64 * (bar_h + gap) + 40.0;
    let width = label_w + plot_w + 90.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="10" y="20" font-size="15" font-weight="bold">tiercache ÷ reference, same run (log scale; [what is divided]; green: target met, red: missed, grey: context)</text>"##
    );
    for p in (lo as i32)..=(hi as i32) {
        let px = x(10f64.powi(p));
        let label = if p >= 0 {
            format!("{}×", 10u64.pow(p as u32))
        } else {
            format!("{}×", 10f64.powi(p))
        };
        let stroke = if p == 0 { "#333333" } else { "#dddddd" };
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="{stroke}"/><text x="{px:.1}" y="{:.1}" text-anchor="middle" fill="#555555">{label}</text>"##,
            top - 8.0,
            height - 30.0,
            height - 14.0
        );
    }
    for (i, row) in bars.iter().enumerate() {
        let y = top + i as f64 * (bar_h + gap);
        let ratio = row.ratio.unwrap();
        let color = match row.met() {
            Some(true) => "#2e9d4f",
            Some(false) => "#d0382b",
            None => "#9aa0a6",
        };
        let (x0, x1) = (x(1.0), x(ratio));
        let (bx, bw) = if x1 >= x0 {
            (x0, x1 - x0)
        } else {
            (x1, x0 - x1)
        };
        let label = escape(&shorten(&format!("{} [{}]", row.case, row.ratio_of), 90));
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{bx:.1}" y="{y:.1}" width="{:.1}" height="{bar_h}" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            label_w - 8.0,
            y + 13.0,
            label,
            bw.max(1.0),
            x1.max(x0) + 4.0,
            y + 13.0,
            if !(0.01..100.0).contains(&ratio) {
                format!("{ratio:.1e}")
            } else {
                format!("{ratio:.2}")
            }
        );
    }
    out.push_str("</svg>\n");
    out
}

fn times(g: f64) -> String {
    if g >= 10.0 {
        format!("{g:.0}×")
    } else {
        format!("{g:.2}×")
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('`', "")
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

//! The checker: what must hold over the merged history of every process.
//!
//! 1. No read that began after a write of its entry completed answers a
//!    version older than that write's — on the writer's own instance
//!    always, on any other instance once [`PROPAGATION_BOUND`] has passed
//!    since Redis confirmed the write. A write whose invalidation returned
//!    `Ok` is confirmed when it returns; one that returned `Err`, or whose
//!    macro does not say, once a checkpoint of its instance taken after it
//!    shows `pending_invalidations == 0`.
//! 2. No panic but a body's own, for its own caller; no hang; no `Err`
//!    that the caller's own body did not produce.
//! 3. No answer older than its function's ttl + stale / fail-safe window
//!    (+ [`AGE_SLACK`]).
//!
//! Two write-throughs of one entry that overlap in time may land in either
//! order (the cache cannot know the database's order): each then only
//! requires the older of their versions.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use crate::model::{
    Inval, KEYS, Kind, Mode, Outcome, PANIC_MARK, PREFIXES, Rec, absent, prefix_bit, windows_ms,
};

/// How long after its confirmation another instance may still answer
/// from before a write: pub/sub delivery to its L1, which a fault can hold
/// up until the instance notices its subscription is gone (a silent one
/// within 3 s, the keepalive's bound) and drops its L1. Measured under
/// the checker's faults: at most 1.8 s in a 150 s soak, 0.5 s in 20 s runs.
pub(crate) const PROPAGATION_BOUND: Duration = Duration::from_millis(3500);

/// What an answer's age may exceed its windows by: the write to Redis and
/// L1 after the body returned, scheduling on a busy machine.
pub(crate) const AGE_SLACK: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Violations by kind, each with its examples (the first ones in time).
    pub(crate) violations: BTreeMap<&'static str, Vec<(u64, String)>>,
    /// Reads on another instance that answered from before a confirmed
    /// write, within the bound: how long after the confirmation (ns).
    pub(crate) lags: Vec<u64>,
    /// The longest of those lags, by how the old answer got there, with
    /// the read and the write.
    pub(crate) slowest: BTreeMap<&'static str, (u64, String)>,
    pub(crate) reads_checked: u64,
    pub(crate) writes: u64,
}

impl Report {
    fn violation(&mut self, kind: &'static str, at: u64, text: String) {
        self.violations.entry(kind).or_default().push((at, text));
    }

    pub(crate) fn count(&self) -> usize {
        self.violations.values().map(Vec::len).sum()
    }

    /// The violations, by kind, the first `examples` of each in full.
    pub(crate) fn render(&self, examples: usize) -> String {
        let mut out = String::new();
        for (kind, found) in &self.violations {
            let mut found = found.clone();
            found.sort_by_key(|(at, _)| *at);
            let _ = writeln!(out, "\n== {} x {kind}", found.len());
            for (_, text) in found.iter().take(examples) {
                let _ = writeln!(out, "{text}");
            }
            if found.len() > examples {
                let _ = writeln!(out, "   ... and {} more", found.len() - examples);
            }
        }
        out
    }
}

/// Formats a wall-clock time relative to the start of the run.
struct Clock(u64);

impl Clock {
    fn at(&self, ns: u64) -> String {
        let relative = i128::from(ns) - i128::from(self.0);
        format!("{:+.3}s", relative as f64 / 1e9)
    }

    fn ms_at(&self, ms: u64) -> String {
        self.at(ms * 1_000_000)
    }

    fn span(&self, rec: &Rec) -> String {
        format!(
            "{}..{} ({} ms)",
            self.at(rec.start),
            self.at(rec.end),
            rec.end.saturating_sub(rec.start) / 1_000_000
        )
    }

    fn read(&self, rec: &Rec) -> String {
        let answer = match &rec.outcome {
            Outcome::Value(val) => format!(
                "answered v{} of row {} (loaded by op {:#x}, body done at {})",
                val.ver,
                val.k,
                val.op,
                self.ms_at(val.done_ms)
            ),
            Outcome::Nothing => "answered None".to_owned(),
            other => format!("ended {other:?}"),
        };
        format!(
            "  read  op {:#x} {}(k={}) [{:?} mode, entry {}:{}] on process {} instance {}, {}: {answer}",
            rec.op,
            rec.func,
            rec.k,
            rec.mode.unwrap_or(Mode::Ok),
            rec.prefix,
            rec.k,
            rec.proc,
            rec.inst,
            self.span(rec),
        )
    }

    /// The faults that overlapped `from..to`.
    fn faults(&self, faults: &[&Rec], from: u64, to: u64) -> String {
        let near: Vec<String> = faults
            .iter()
            .filter(|f| f.start < to && f.end >= from)
            .map(|f| format!("{} at {}..{}", f.func, self.at(f.start), self.at(f.end)))
            .collect();
        if near.is_empty() {
            "\n    no fault overlapped the write..read span".to_owned()
        } else {
            format!(
                "\n    faults overlapping the write..read span: {}",
                near.join("; ")
            )
        }
    }

    fn write(&self, rec: &Rec, confirmed: Option<u64>) -> String {
        let target = if rec.prefix.is_empty() {
            String::new()
        } else {
            format!(" {}", rec.prefix)
        };
        let confirmed = match (rec.inval, confirmed) {
            (Inval::Ok, _) => String::new(),
            (_, Some(at)) => format!(", confirmed by a checkpoint at {}", self.at(at)),
            (_, None) => ", never confirmed".to_owned(),
        };
        format!(
            "  write op {:#x} {}{target}(k={}) -> v{} on process {} instance {}, {}, invalidation {:?}{confirmed}",
            rec.op,
            rec.func,
            rec.k,
            rec.ver,
            rec.proc,
            rec.inst,
            self.span(rec),
            rec.inval,
        )
    }
}

/// After a time, a read must answer at least a version, because of a write
/// (its index).
type Threshold = (u64, u64, usize);

/// Writes of one (row, prefix) entry, as thresholds: after `at`, a read
/// must answer at least `ver`. Sorted by `at`, with running maxima.
#[derive(Default)]
struct Thresholds {
    at: Vec<u64>,
    ver: Vec<u64>,
    write: Vec<usize>,
    max: Vec<u64>,
}

impl Thresholds {
    fn build(mut items: Vec<Threshold>) -> Self {
        items.sort_unstable();
        let mut out = Self::default();
        let mut max = 0;
        for (at, ver, write) in items {
            max = max.max(ver);
            out.at.push(at);
            out.ver.push(ver);
            out.write.push(write);
            out.max.push(max);
        }
        out
    }

    /// The first threshold passed before `time` that `answer` misses: its
    /// time and its write.
    fn missed(&self, time: u64, answer: i64) -> Option<(u64, usize)> {
        let passed = self.at.partition_point(|at| *at < time);
        if passed == 0 || i128::from(self.max[passed - 1]) <= i128::from(answer) {
            return None;
        }
        let first =
            self.max[..passed].partition_point(|max| i128::from(*max) <= i128::from(answer));
        Some((self.at[first], self.write[first]))
    }
}

/// A kind of violation, named once (kinds are few; the names live as long
/// as the test).
fn kind(what: &str, how: &str, write: Option<&Rec>) -> &'static str {
    static KINDS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let name = match write {
        Some(w) => {
            let none = if w.func == "write_maybe" && absent(w.ver) {
                " returning None"
            } else {
                ""
            };
            format!(
                "{what}: {how} [missed: {}{none}, invalidation {:?}]",
                w.func, w.inval
            )
        }
        None => format!("{what}: {how}"),
    };
    let mut kinds = KINDS.lock().unwrap();
    if let Some(found) = kinds.iter().find(|k| **k == name) {
        return found;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    kinds.push(leaked);
    leaked
}

pub(crate) fn check(history: &[Rec], t0: u64) -> Report {
    let clock = Clock(t0);
    let bound = u64::try_from(PROPAGATION_BOUND.as_nanos()).unwrap();
    let slack = u64::try_from(AGE_SLACK.as_millis()).unwrap();
    let mut report = Report::default();

    // Checkpoints of each instance, by time.
    let mut checkpoints: HashMap<(u32, u32), Vec<&Rec>> = HashMap::new();
    for rec in history.iter().filter(|r| r.kind == Kind::Checkpoint) {
        checkpoints.entry(rec.instance()).or_default().push(rec);
    }
    for list in checkpoints.values_mut() {
        list.sort_by_key(|r| r.start);
    }

    let writes: Vec<&Rec> = history.iter().filter(|r| r.kind == Kind::Write).collect();
    let faults: Vec<&Rec> = history.iter().filter(|r| r.kind == Kind::Fault).collect();
    report.writes = writes.len() as u64;
    // When Redis confirmed each completed write, for the other instances.
    let confirmed: Vec<Option<u64>> = writes
        .iter()
        .map(|w| match (&w.outcome, w.inval) {
            (Outcome::Done, Inval::Ok) => Some(w.end),
            (Outcome::Done, _) => checkpoints.get(&w.instance()).and_then(|list| {
                list.iter()
                    .find(|c| c.start > w.end && c.pending == 0)
                    .map(|c| c.start)
            }),
            _ => None,
        })
        .collect();
    // What each write requires: its version, or the older one of a
    // write-through of the same entry that overlapped it.
    let mut stored: HashMap<(u64, u8), Vec<usize>> = HashMap::new();
    for (index, w) in writes.iter().enumerate() {
        if w.stores && w.ver > 0 {
            stored.entry((w.k, w.covers)).or_default().push(index);
        }
    }
    let end = |r: &Rec| {
        if r.outcome == Outcome::Done {
            r.end
        } else {
            u64::MAX
        }
    };
    let required: Vec<u64> = writes
        .iter()
        .map(|w| {
            if !w.stores {
                return w.ver;
            }
            stored
                .get(&(w.k, w.covers))
                .into_iter()
                .flatten()
                .map(|&o| writes[o])
                .filter(|o| o.start < end(w) && end(o) > w.start)
                .map(|o| o.ver)
                .fold(w.ver, u64::min)
        })
        .collect();

    // Thresholds per entry: for the writer's instance, and for every other.
    let mut same: HashMap<((u32, u32), u64, u8), Vec<Threshold>> = HashMap::new();
    let mut other: HashMap<(u64, u8), Vec<Threshold>> = HashMap::new();
    for (index, w) in writes.iter().enumerate() {
        if w.outcome != Outcome::Done || w.ver == 0 {
            continue;
        }
        for bit in (0..PREFIXES.len()).map(|i| 1u8 << i) {
            if w.covers & bit == 0 {
                continue;
            }
            same.entry((w.instance(), w.k, bit))
                .or_default()
                .push((w.end, required[index], index));
            if let Some(at) = confirmed[index] {
                other
                    .entry((w.k, bit))
                    .or_default()
                    .push((at, required[index], index));
            }
        }
    }
    let same: HashMap<_, _> = same
        .into_iter()
        .map(|(k, v)| (k, Thresholds::build(v)))
        .collect();
    let other: HashMap<_, _> = other
        .into_iter()
        .map(|(k, v)| (k, Thresholds::build(v)))
        .collect();
    // The newest version of each row a write had begun to make by a time.
    let mut begun: Vec<Vec<(u64, u64)>> = vec![Vec::new(); KEYS as usize];
    for w in &writes {
        if w.ver > 0 {
            begun[w.k as usize].push((w.start, w.ver));
        }
    }
    for list in &mut begun {
        list.sort_unstable();
        let mut max = 0;
        for item in list.iter_mut() {
            max = max.max(item.1);
            item.1 = max;
        }
    }
    let newest_by = |k: u64, time: u64| {
        let list = &begun[k as usize];
        match list.partition_point(|(start, _)| *start < time) {
            0 => 0,
            n => list[n - 1].1,
        }
    };

    // The hook sees every panic; those that reached a caller are judged
    // with the call. The rest happened outside any call.
    let mut reached: HashMap<(u32, &str), usize> = HashMap::new();
    for rec in history.iter().filter(|r| r.kind != Kind::StrayPanic) {
        if let Outcome::Panic(message) = &rec.outcome {
            *reached.entry((rec.proc, message.as_str())).or_default() += 1;
        }
    }
    // The writer's instance as its checkpoints saw it around a write.
    let state = |w: &Rec| {
        let Some(list) = checkpoints.get(&w.instance()) else {
            return String::new();
        };
        let before = list.iter().rev().find(|c| c.start <= w.start);
        let after = list.iter().find(|c| c.start >= w.end);
        let describe = |c: Option<&&Rec>| {
            c.map_or("-".to_owned(), |c| {
                format!(
                    "breaker {}, {} Redis failures, {} subscription losses, {} pending",
                    if c.breaker_open { "open" } else { "closed" },
                    c.redis_failures,
                    c.losses,
                    c.pending
                )
            })
        };
        format!(
            "\n    writer's instance: before the write {}; after it {}",
            describe(before),
            describe(after)
        )
    };
    for rec in history {
        match rec.kind {
            Kind::StrayPanic => {
                if let Outcome::Panic(message) = &rec.outcome {
                    match reached.get_mut(&(rec.proc, message.as_str())) {
                        Some(n) if *n > 0 => *n -= 1,
                        _ => report.violation(
                            "panic outside any call (an engine task)",
                            rec.start,
                            format!("  process {}: {message} {}", rec.proc, rec.func),
                        ),
                    }
                }
                continue;
            }
            Kind::Checkpoint | Kind::Fault => continue,
            Kind::Write => {
                match &rec.outcome {
                    Outcome::Done => {}
                    Outcome::Hang => report.violation("hang", rec.start, clock.write(rec, None)),
                    other => report.violation(
                        "write that did not return",
                        rec.start,
                        format!("{}\n    outcome {other:?}", clock.write(rec, None)),
                    ),
                }
                continue;
            }
            Kind::Read => {}
        }
        let (answer, val) = match &rec.outcome {
            Outcome::Value(val) => (i64::try_from(val.ver).unwrap(), Some(val)),
            Outcome::Nothing => {
                // A None answers "absent": fresh if some absent version
                // at least as new as required existed by the end.
                let newest = newest_by(rec.k, rec.end);
                let absent_version = (0..=newest).rev().find(|v| absent(*v));
                match absent_version {
                    Some(v) => (i64::try_from(v).unwrap(), None),
                    None => {
                        report.violation(
                            "answer no write produced",
                            rec.start,
                            format!(
                                "{}\n    row {} was never absent by then",
                                clock.read(rec),
                                rec.k
                            ),
                        );
                        continue;
                    }
                }
            }
            Outcome::Err { what, by } => {
                let own = match what.as_str() {
                    "timeout" => rec.func == "safe" && rec.body_ran,
                    _ => *by == Some(rec.op),
                };
                if !own {
                    report.violation(
                        "error the caller's own body did not produce",
                        rec.start,
                        format!(
                            "{}\n    Err {what} produced by {}",
                            clock.read(rec),
                            by.map_or("the cache".to_owned(), |op| format!("op {op:#x}"))
                        ),
                    );
                }
                continue;
            }
            Outcome::Panic(message) => {
                let own =
                    rec.mode == Some(Mode::Panic) && *message == format!("{PANIC_MARK} {}", rec.op);
                if !own {
                    report.violation(
                        "panic the caller's own body did not throw",
                        rec.start,
                        format!("{}\n    panic: {message}", clock.read(rec)),
                    );
                }
                continue;
            }
            Outcome::Hang => {
                report.violation("hang", rec.start, clock.read(rec));
                continue;
            }
            Outcome::Cancelled | Outcome::Done => continue,
        };
        report.reads_checked += 1;
        if let Some(val) = val {
            if val.k != rec.k {
                report.violation("answer for another row", rec.start, clock.read(rec));
                continue;
            }
            if val.ver > newest_by(rec.k, rec.end) {
                report.violation("answer no write produced", rec.start, clock.read(rec));
            }
            let (ttl, window) = windows_ms(&rec.prefix);
            let age = (rec.start / 1_000_000).saturating_sub(val.done_ms);
            if age > ttl + window + slack {
                report.violation(
                    "answer older than its windows",
                    rec.start,
                    format!(
                        "{}\n    {age} ms old when the read began; ttl {ttl} ms + window {window} ms + slack {slack} ms",
                        clock.read(rec)
                    ),
                );
            }
        }
        let bit = prefix_bit(&rec.prefix);
        // How the old answer got there: a load that overlapped the write
        // (a raced fill, or a flight the read joined), or an entry that was
        // complete before the write began and outlived it.
        let how = |write: &Rec| match val {
            Some(val) if val.done_ms * 1_000_000 < write.start => {
                "a value loaded before the write began was served after it"
            }
            Some(_) => "a load that overlapped the write was served after it",
            None => "a None from before the write outlived it",
        };
        if let Some((_, index)) = same
            .get(&(rec.instance(), rec.k, bit))
            .and_then(|t| t.missed(rec.start, answer))
        {
            report.violation(
                kind(
                    "stale read on the writer's own instance",
                    how(writes[index]),
                    Some(writes[index]),
                ),
                rec.start,
                format!(
                    "{}\n{}\n    the read began {} ms after the write returned{}{}",
                    clock.read(rec),
                    clock.write(writes[index], confirmed[index]),
                    (rec.start - writes[index].end) / 1_000_000,
                    clock.faults(&faults, writes[index].start, rec.end),
                    state(writes[index]),
                ),
            );
            continue;
        }
        if let Some((at, index)) = other
            .get(&(rec.k, bit))
            .and_then(|t| t.missed(rec.start, answer))
        {
            let lag = rec.start - at;
            let text = format!(
                "{}\n{}\n    the read began {} ms after the write was confirmed (bound {} ms){}{}",
                clock.read(rec),
                clock.write(writes[index], confirmed[index]),
                lag / 1_000_000,
                PROPAGATION_BOUND.as_millis(),
                clock.faults(&faults, writes[index].start, rec.end),
                state(writes[index]),
            );
            if lag > bound {
                report.violation(
                    kind(
                        "stale read on another instance, past the propagation bound",
                        how(writes[index]),
                        Some(writes[index]),
                    ),
                    rec.start,
                    text,
                );
            } else {
                let how = how(writes[index]);
                if report
                    .slowest
                    .get(how)
                    .is_none_or(|(slowest, _)| *slowest < lag)
                {
                    report.slowest.insert(how, (lag, text));
                }
                report.lags.push(lag);
            }
        }
    }
    report
}

//! Spans and warnings (issue 13): a span per call that is not an L1 hit,
//! with its outcome, a child span for its load and one per Redis operation
//! with OpenTelemetry's database attributes; keys only when asked; warnings
//! of what loses freshness rate-limited. Against a real redis-server, with
//! a subscriber that records every span and event.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tiercache::Cache;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// A span as recorded: its name, its fields, its parent's name, whether
/// it closed.
#[derive(Debug, Clone, Default)]
struct Recorded {
    name: String,
    fields: BTreeMap<String, String>,
    parent: Option<String>,
    closed: bool,
}

#[derive(Clone, Default)]
struct Log {
    spans: Arc<Mutex<BTreeMap<u64, Recorded>>>,
    /// Each event's message and fields.
    events: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Log {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut recorded = Recorded {
            name: attrs.metadata().name().to_owned(),
            ..Recorded::default()
        };
        attrs.record(&mut Fields(&mut recorded.fields));
        recorded.parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.name().to_owned());
        self.spans.lock().unwrap().insert(id.into_u64(), recorded);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(span) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        if let Some(span) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            span.closed = true;
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        fields.insert("level".into(), event.metadata().level().to_string());
        self.events.lock().unwrap().push(fields);
    }
}

impl Log {
    /// Records what this thread traces until the guard is dropped (the
    /// tests run on a current-thread runtime: their spawned tasks too).
    fn install(&self) -> support::traced::Routed {
        support::traced::route(self.clone())
    }

    fn spans(&self, name: &str) -> Vec<Recorded> {
        let spans = self.spans.lock().unwrap();
        spans.values().filter(|s| s.name == name).cloned().collect()
    }

    fn clear(&self) {
        self.spans.lock().unwrap().clear();
        self.events.lock().unwrap().clear();
    }

    /// Whether `text` appears in any span field or event.
    fn mentions(&self, text: &str) -> bool {
        let spans = self.spans.lock().unwrap();
        let events = self.events.lock().unwrap();
        spans
            .values()
            .flat_map(|s| s.fields.values())
            .chain(events.iter().flat_map(|e| e.values()))
            .any(|value| value.contains(text))
    }

    fn warnings(&self, message: &str) -> Vec<BTreeMap<String, String>> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e["level"] == "WARN" && e.get("message").is_some_and(|m| m == message))
            .cloned()
            .collect()
    }
}

async fn cache(url: &str, namespace: &str, trace_keys: bool) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis(url)
        .trace_keys(trace_keys)
        .build()
        .await
        .expect("valid settings")
}

#[tokio::test(flavor = "current_thread")]
async fn a_miss_has_a_call_span_a_load_span_and_redis_spans() {
    let server = support::shared();
    let log = Log::default();
    let _guard = log.install();
    let cache = cache(&server.url(), "trace-miss", false).await;
    log.clear();
    let minute = Duration::from_secs(60);
    let key = "secret-key-42";
    let value = cache
        .entry("users", &key)
        .ttl(minute)
        .get_with(|| async {
            tracing::info!("inside the body");
            7u64
        })
        .await;
    assert_eq!(value, 7);

    let calls = log.spans("tiercache.call");
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0].fields;
    assert_eq!(call["prefix"], "users");
    assert_eq!(call["outcome"], "miss");
    assert_eq!(call["cache.hit"], "false");
    assert_eq!(call["tier"], "load");
    let loads = log.spans("tiercache.load");
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0].fields["outcome"], "ok");
    assert_eq!(loads[0].parent.as_deref(), Some("tiercache.call"));

    let redis = log.spans("redis");
    let ops: Vec<&str> = redis
        .iter()
        .map(|s| s.fields["tiercache.operation"].as_str())
        .collect();
    // (The prefix's version key is made on its first read.)
    let ops: Vec<&str> = ops
        .into_iter()
        .filter(|op| *op != "create_versions")
        .collect();
    // A first read takes the lock as it reads (read-or-lock).
    assert_eq!(ops, ["read_or_lock", "write"]);
    for span in &redis {
        let f = &span.fields;
        assert_eq!(f["db.system.name"], "redis");
        assert_eq!(f["server.address"], "127.0.0.1");
        assert_eq!(f["server.port"], server.port().to_string());
        assert_eq!(f["db.namespace"], "0");
        assert_eq!(f["otel.kind"], "client");
        assert_eq!(f["otel.name"], f["db.operation.name"]);
        assert_eq!(span.parent.as_deref(), Some("tiercache.call"));
    }
    assert_eq!(redis[0].fields["db.operation.name"], "PIPELINE");
    assert!(!log.mentions(key), "the key is in no span or log");

    // An L1 hit makes no span at all.
    log.clear();
    cache
        .entry("users", &key)
        .ttl(minute)
        .get_with(|| async { 0u64 })
        .await;
    assert!(log.spans("tiercache.call").is_empty());
    assert!(log.spans("redis").is_empty());

    // An L2 hit, from another instance.
    let other = self::cache(&server.url(), "trace-miss", false).await;
    log.clear();
    other
        .entry("users", &key)
        .ttl(minute)
        .get_with(|| async { 0u64 })
        .await;
    let call = &log.spans("tiercache.call")[0].fields;
    assert_eq!(
        (
            call["outcome"].as_str(),
            call["cache.hit"].as_str(),
            call["tier"].as_str()
        ),
        ("l2_hit", "true", "l2")
    );
    assert!(log.spans("tiercache.load").is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn keys_are_traced_only_when_asked() {
    let server = support::shared();
    let log = Log::default();
    let _guard = log.install();
    let cache = cache(&server.url(), "trace-keys", true).await;
    log.clear();
    cache
        .entry("users", &"visible-key-7")
        .ttl(Duration::from_secs(60))
        .get_with(|| async { 1u8 })
        .await;
    let call = &log.spans("tiercache.call")[0].fields;
    assert_eq!(call["cache.key"], "users:visible-key-7");
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_load_and_a_fail_safe_value_are_recorded() {
    let server = support::shared();
    let log = Log::default();
    let _guard = log.install();
    let cache = cache(&server.url(), "trace-fail", false).await;
    let entry = |fail: bool| {
        cache
            .entry("safe", &1u8)
            .ttl(Duration::from_millis(100))
            .fail_safe(Duration::from_secs(60))
            .try_get_with(move || async move { if fail { Err("down") } else { Ok(1u8) } })
    };
    entry(false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    log.clear();
    assert_eq!(entry(true).await, Ok(1));
    let call = &log.spans("tiercache.call")[0].fields;
    assert_eq!(call["outcome"], "fail_safe");
    assert_eq!(log.spans("tiercache.load")[0].fields["outcome"], "err");
}

#[tokio::test(flavor = "current_thread")]
async fn a_warning_of_lost_freshness_is_said_once_per_period() {
    let server = support::RedisServer::start();
    let log = Log::default();
    let _guard = log.install();
    let cache = cache(&server.url(), "trace-warn", false).await;
    let minute = Duration::from_secs(60);
    // The prefix's version keys exist; then Redis refuses every write (OOM)
    // and still answers reads.
    cache
        .entry("w", &0u64)
        .ttl(minute)
        .get_with(|| async { 0u64 })
        .await;
    support::out_of_memory(&mut support::raw(&server.url()).await).await;
    log.clear();
    for i in 1..=20u64 {
        let v = cache
            .entry("w", &i)
            .ttl(minute)
            .get_with(move || async move { i })
            .await;
        assert_eq!(v, i, "the call is answered");
    }
    let warned = log.warnings("a value did not reach Redis; kept in L1 only");
    assert_eq!(warned.len(), 1, "once in 10 s, not 20 times: {warned:?}");
    assert_eq!(warned[0]["prefix"], "w");
    assert!(!warned[0].contains_key("key"), "no key unless asked");
    let errors = log
        .spans("redis")
        .iter()
        .filter(|s| s.fields.get("error.type").is_some_and(|e| e == "server"))
        .count();
    assert!(
        errors >= 20,
        "each refused write is a Redis span with error.type: {errors}"
    );
}

/// A call answered at once with a stale value from Redis (its leader runs
/// in the background, and refreshes the value) ends its span when it is
/// answered, not when the refresh does.
#[tokio::test(flavor = "current_thread")]
async fn a_stale_answer_from_redis_ends_its_call_span_when_answered() {
    let server = support::shared();
    let closes = Log::default();
    let _guard = closes.install();
    let swr = |cache: Cache, value: u64, pause: Duration| async move {
        cache
            .entry("swr", &1u64)
            .ttl(Duration::from_millis(100))
            .stale(Duration::from_secs(60))
            .get_with(move || async move {
                tokio::time::sleep(pause).await;
                value
            })
            .await
    };
    let a = cache(&server.url(), "trace-stale", false).await;
    let b = cache(&server.url(), "trace-stale", false).await;
    assert_eq!(swr(a.clone(), 1, Duration::ZERO).await, 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    closes.clear();
    // B has nothing in L1: Redis's stale value, offered by its leader.
    assert_eq!(swr(b.clone(), 2, Duration::from_millis(1500)).await, 1);
    let call = &closes.spans("tiercache.call")[0];
    assert!(
        call.closed,
        "closed with the answer, the refresh still running"
    );
    assert_eq!(call.fields["outcome"], "stale");
    let background = closes.spans("tiercache.background");
    assert_eq!(background.len(), 1);
    assert!(!background[0].closed, "the refresh goes on");
}

/// A function whose body runs in the background but whose caller cannot
/// be answered before the load (no stale or fail-safe value: here
/// `refresh_ahead` alone) keeps its load in the call's trace: the
/// background leader's span is a child of the call's.
#[tokio::test(flavor = "current_thread")]
async fn a_background_load_the_caller_waits_for_is_in_its_trace() {
    let server = support::shared();
    let log = Log::default();
    let _guard = log.install();
    let cache = cache(&server.url(), "trace-background", false).await;
    log.clear();
    let value = cache
        .entry("ahead", &1u64)
        .ttl(Duration::from_secs(60))
        .refresh_ahead(1.0)
        .get_with(|| async { 5u64 })
        .await;
    assert_eq!(value, 5);
    let background = log.spans("tiercache.background");
    assert_eq!(background.len(), 1);
    assert_eq!(background[0].parent.as_deref(), Some("tiercache.call"));
    let load = &log.spans("tiercache.load")[0];
    assert_eq!(load.parent.as_deref(), Some("tiercache.background"));
    let call = &log.spans("tiercache.call")[0].fields;
    assert_eq!(call["outcome"], "miss");
}

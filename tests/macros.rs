//! What the attributes accept: ordinary Rust that compiles without them
//! compiles with them and caches what it should (issue 11). Compile-only
//! cases are in `tests/ui/pass`; these run, on an in-memory cache (and
//! Redis, for shared values).

mod support;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use tiercache::{Cache, cache_aside};

trait Entity {
    const TABLE: &'static str;
}

struct User;
struct Order;

impl Entity for User {
    const TABLE: &'static str = "users";
}

impl Entity for Order {
    const TABLE: &'static str = "orders";
}

/// The README's newtype pattern: the type is only in `PhantomData`.
struct Id<T>(u64, PhantomData<T>);

impl<T> Id<T> {
    fn new(id: u64) -> Self {
        Self(id, PhantomData)
    }
}

impl<T> tiercache::KeyPart for Id<T> {
    fn write_key(&self, out: &mut tiercache::KeyWriter) {
        self.0.write_key(out);
    }
}

static LOADS: AtomicUsize = AtomicUsize::new(0);

#[cache_aside(prefix = "label", ttl = "5m", cache = cache, skip(cache))]
async fn label<T: Entity>(cache: &Cache, id: Id<T>) -> String {
    LOADS.fetch_add(1, SeqCst);
    format!("{}#{}", T::TABLE, id.0)
}

#[cache_aside(prefix = "label-template", ttl = "5m", key = "{id}/{T}", cache = cache, skip(cache))]
async fn label_template<T: Entity>(cache: &Cache, id: Id<T>) -> String {
    format!("{}#{}", T::TABLE, id.0)
}

#[cache_aside(prefix = "first", ttl = "5m", cache = cache, skip(cache))]
async fn first<T: Entity>(cache: &Cache, ids: Vec<Id<T>>) -> Option<String> {
    Some(match ids.first() {
        Some(id) => format!("{}#{}", T::TABLE, id.0),
        None => format!("no {}", T::TABLE),
    })
}

#[cache_aside(prefix = "maybe", ttl = "5m", cache = cache, skip(cache))]
async fn maybe<T: Entity>(cache: &Cache, id: Option<Id<T>>) -> String {
    format!("{}:{}", T::TABLE, id.map_or(0, |id| id.0))
}

#[cache_aside(prefix = "parsed", ttl = "5m", cache = cache, skip(cache))]
async fn parsed<T: std::str::FromStr + std::fmt::Debug>(cache: &Cache, text: String) -> String {
    format!("{:?}", text.parse::<T>().ok())
}

#[cache_aside(prefix = "shown", ttl = "5m", cache = cache, skip(cache))]
async fn shown(cache: &Cache, value: impl std::fmt::Debug + tiercache::KeyPart) -> String {
    format!("{value:?}")
}

#[cache_aside(prefix = "repeat", ttl = "5m", cache = cache, skip(cache))]
async fn repeat<const N: usize>(cache: &Cache, text: String) -> String {
    text.repeat(N)
}

#[tokio::test]
async fn type_parameters_are_part_of_the_key() {
    let cache = Cache::in_memory();
    assert_eq!(label(&cache, Id::<User>::new(1)).await, "users#1");
    assert_eq!(label(&cache, Id::<Order>::new(1)).await, "orders#1");
    assert_eq!(label(&cache, Id::<User>::new(1)).await, "users#1");
    assert_eq!(LOADS.load(SeqCst), 2, "one load per type, then a hit");

    assert_eq!(label_template(&cache, Id::<User>::new(1)).await, "users#1");
    assert_eq!(
        label_template(&cache, Id::<Order>::new(1)).await,
        "orders#1"
    );

    assert_eq!(
        first(&cache, Vec::<Id<User>>::new()).await.unwrap(),
        "no users"
    );
    assert_eq!(
        first(&cache, Vec::<Id<Order>>::new()).await.unwrap(),
        "no orders"
    );
    assert_eq!(maybe::<User>(&cache, None).await, "users:0");
    assert_eq!(maybe::<Order>(&cache, None).await, "orders:0");

    assert_eq!(parsed::<u8>(&cache, "300".into()).await, "None");
    assert_eq!(parsed::<u16>(&cache, "300".into()).await, "Some(300)");

    assert_eq!(shown(&cache, 1_u8).await, "1");
    assert_eq!(shown(&cache, "1").await, "\"1\"");

    assert_eq!(repeat::<2>(&cache, "ab".into()).await, "abab");
    assert_eq!(repeat::<3>(&cache, "ab".into()).await, "ababab");
}

/// `#[async_trait]` rewrites the method before `#[cache_aside]` sees it:
/// the attribute takes it back to its `async fn`, inline and detached.
mod with_async_trait {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use tiercache::{Cache, cache_aside};

    #[async_trait::async_trait]
    pub(crate) trait Users {
        async fn name(&self, id: u64) -> Result<String, String>;
        async fn stale_name(&self, id: u64) -> Result<String, String>;
    }

    #[derive(Clone)]
    pub(crate) struct Repo {
        pub(crate) cache: Cache,
        pub(crate) loads: Arc<AtomicUsize>,
        pub(crate) tenant: String,
    }

    #[async_trait::async_trait]
    impl Users for Repo {
        #[cache_aside(prefix = "at-name", ttl = "5m", key = "{self.tenant}:{id}", cache = self.cache)]
        async fn name(&self, id: u64) -> Result<String, String> {
            self.loads.fetch_add(1, SeqCst);
            if id == 0 {
                return Err("no id 0".to_owned());
            }
            Ok(format!("{}/{id}", self.tenant))
        }

        #[cache_aside(
            prefix = "at-stale",
            ttl = "5m",
            key = "{id}",
            stale = "1m",
            timeout = "5s",
            fail_safe = "1h",
            cache = self.cache
        )]
        async fn stale_name(&self, id: u64) -> Result<String, String> {
            self.loads.fetch_add(1, SeqCst);
            Ok(format!("{}/{id}", self.tenant))
        }
    }
}

#[tokio::test]
async fn async_trait_methods_are_cached() {
    use with_async_trait::{Repo, Users};
    let loads = std::sync::Arc::new(AtomicUsize::new(0));
    let repo = std::sync::Arc::new(Repo {
        cache: Cache::in_memory(),
        loads: loads.clone(),
        tenant: "acme".to_owned(),
    });
    assert_eq!(repo.name(1).await.as_deref(), Ok("acme/1"));
    assert_eq!(repo.name(1).await.as_deref(), Ok("acme/1"));
    assert_eq!(repo.name(0).await, Err("no id 0".to_owned()));
    assert_eq!(
        loads.load(SeqCst),
        2,
        "a hit, and an error that is not cached"
    );
    // The futures are `Send`: spawned.
    let spawned = repo.clone();
    let name = tokio::spawn(async move { spawned.stale_name(2).await })
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Ok("acme/2"));
    assert_eq!(repo.stale_name(2).await.as_deref(), Ok("acme/2"));
    assert_eq!(loads.load(SeqCst), 3);
}

/// A background run renames `self` on the syntax tree: `use` trees,
/// `self::` paths and nested items keep theirs, macros' `self` is renamed.
mod receivers {
    use std::sync::Mutex;

    use tiercache::{Cache, cache_aside};

    fn helper() -> &'static str {
        "helper"
    }

    #[derive(Clone, Debug)]
    pub(crate) struct Shop {
        pub(crate) cache: Cache,
        pub(crate) name: String,
        pub(crate) spans: &'static Mutex<Vec<Option<&'static str>>>,
    }

    impl Shop {
        #[cache_aside(prefix = "shop", ttl = "5m", key = "{id}", timeout = "5s", fail_safe = "1h", cache = self.cache)]
        pub(crate) async fn describe(&self, id: u64) -> Result<String, String> {
            use std::fmt::{self, Write};
            struct Local;
            impl Local {
                fn name(&self) -> &'static str {
                    "local"
                }
            }
            let span = tracing::Span::current();
            self.spans
                .lock()
                .unwrap()
                .push(span.metadata().map(|meta| meta.name()));
            let mut out = String::new();
            let written: fmt::Result = write!(out, "{}:{id}:{}", self.name, self::helper());
            written.map_err(|error| error.to_string())?;
            Ok(format!("{out}:{}", Local.name()))
        }

        /// `#[instrument]` expands first: its span records `self`, a field
        /// name the rename keeps.
        #[tracing::instrument]
        #[cache_aside(prefix = "traced", ttl = "5m", key = "{id}", stale = "1m", cache = self.cache)]
        pub(crate) async fn traced(&self, id: u64) -> String {
            tracing::info!(self = ?self.name, "traced");
            format!("{}:{id}", self.name)
        }
    }
}

/// What a subscriber saw of spans: which follows from which, and which
/// closed, in order.
#[derive(Clone, Default)]
struct SpanLog(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl SpanLog {
    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanLog
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let name = |id| ctx.span(id).map(|span| span.name()).unwrap_or("?");
        let event = format!("{} follows {}", name(span), name(follows));
        self.0.lock().unwrap().push(event);
    }

    fn on_new_span(
        &self,
        _: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent().map(|parent| parent.name()).unwrap_or("none");
        let event = format!("{} in {parent}", span.name());
        self.0.lock().unwrap().push(event);
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let name = ctx.span(&id).map(|span| span.name()).unwrap_or("?");
        self.0.lock().unwrap().push(format!("{name} closed"));
    }
}

#[tokio::test]
async fn a_background_load_renames_self_and_runs_in_the_callers_span() {
    use tracing::Instrument;

    static SPANS: std::sync::Mutex<Vec<Option<&'static str>>> = std::sync::Mutex::new(Vec::new());
    let log = SpanLog::default();
    let _routed = support::traced::route(log.clone());
    let shop = receivers::Shop {
        cache: Cache::in_memory(),
        name: "corner".to_owned(),
        spans: &SPANS,
    };
    let described = shop
        .describe(7)
        .instrument(tracing::info_span!("caller"))
        .await;
    assert_eq!(described.as_deref(), Ok("corner:7:helper:local"));
    // `timeout` runs the load in a task of its own: in its load span, in
    // the background leader's span, which follows from the call's span (in
    // the caller's), without being its child (the call may be answered
    // before the load ends).
    assert_eq!(SPANS.lock().unwrap().as_slice(), [Some("tiercache.load")]);
    let events = log.events();
    for expected in [
        "tiercache.call in caller",
        "tiercache.background in none",
        "tiercache.background follows tiercache.call",
        "tiercache.load in tiercache.background",
    ] {
        assert!(
            events.contains(&expected.to_owned()),
            "{expected}: {events:?}"
        );
    }
    assert_eq!(shop.traced(8).await, "corner:8");
}

/// A refresh held open by a gate, counting its loads.
#[derive(Clone)]
struct Gated {
    cache: Cache,
    loads: std::sync::Arc<AtomicUsize>,
    gate: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Gated {
    #[cache_aside(prefix = "gated", ttl = "1s", stale = "1h", cache = self.cache)]
    async fn value(&self, id: u64) -> usize {
        let load = self.loads.fetch_add(1, SeqCst);
        if load > 0 {
            let _pass = self.gate.acquire().await;
        }
        load + usize::try_from(id).unwrap_or_default()
    }
}

#[tokio::test]
async fn a_refresh_does_not_hold_the_callers_span_open() {
    use tracing::Instrument;

    let log = SpanLog::default();
    let _routed = support::traced::route(log.clone());
    let gated = Gated {
        cache: Cache::in_memory(),
        loads: std::sync::Arc::default(),
        gate: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
    };
    assert_eq!(gated.value(0).await, 0);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Stale: answered at once while a refresh runs, held at the gate.
    let answer = gated
        .value(0)
        .instrument(tracing::info_span!("request"))
        .await;
    assert_eq!(answer, 0);
    while gated.loads.load(SeqCst) < 2 {
        tokio::task::yield_now().await; // the refresh starts, and waits at the gate
    }
    assert!(
        log.events().contains(&"request closed".to_owned()),
        "the request's span ends with the request, not with its refresh: {:?}",
        log.events()
    );
    assert!(log.events().contains(&"tiercache.call closed".to_owned()));
    assert!(
        log.events()
            .contains(&"tiercache.refresh follows tiercache.call".to_owned()),
        "linked to the call that started it"
    );
    gated.gate.add_permits(1);
    while gated.value(0).await != 1 {
        tokio::task::yield_now().await;
    }
}

/// An argument under `#[cfg]` is keyed (and copied) only where it exists.
#[cache_aside(prefix = "cfg", ttl = "5m", stale = "1m", cache = cache, skip(cache))]
async fn configured(
    cache: &Cache,
    id: u64,
    #[cfg(any())] missing: u64,
    #[cfg(not(any()))] present: &str,
) -> String {
    format!("{id}:{present}")
}

/// With `stale`, a borrowed `impl Trait` is copied and lent out as itself,
/// and an argument only the key uses warns nothing.
#[cache_aside(prefix = "impl-ref", ttl = "5m", stale = "1m", cache = cache, skip(cache))]
async fn impl_ref(
    cache: &Cache,
    shown: &(impl std::fmt::Display + tiercache::KeyPart + Clone + Send + Sync + 'static),
    key_only: u64,
) -> String {
    format!("<{shown}>")
}

#[tokio::test]
async fn cfg_arguments_and_impl_trait_references_in_a_background_run() {
    let cache = Cache::in_memory();
    assert_eq!(configured(&cache, 1, "a").await, "1:a");
    assert_eq!(configured(&cache, 1, "b").await, "1:b");
    assert_eq!(impl_ref(&cache, &5_u8, 1).await, "<5>");
    assert_eq!(impl_ref(&cache, &"x", 1).await, "<x>");
}

/// A filter with a keyword for a field name.
struct Filter {
    r#type: String,
}

#[cache_aside(prefix = "raw", ttl = "5m", key = "{type}:{filter.type}", cache = cache, skip(cache))]
async fn raw_template(cache: &Cache, r#type: u32, filter: Filter) -> String {
    format!("{type}/{}", filter.r#type, type = r#type)
}

#[cache_aside(prefix = "raw-spelled", ttl = "5m", key = "{r#type}:{filter.r#type}", cache = cache, skip(cache))]
async fn raw_spelled(cache: &Cache, r#type: u32, filter: Filter) -> String {
    format!("{}/{}", r#type, filter.r#type)
}

#[cache_aside(prefix = "raw-default", ttl = "5m", cache = cache, skip(cache))]
async fn raw_default(cache: &Cache, r#type: u32) -> u32 {
    r#type
}

#[tokio::test]
async fn raw_identifiers_are_named_in_templates() {
    let cache = Cache::in_memory();
    let filter = |kind: &str| Filter {
        r#type: kind.to_owned(),
    };
    assert_eq!(raw_template(&cache, 1, filter("a")).await, "1/a");
    assert_eq!(raw_template(&cache, 1, filter("b")).await, "1/b");
    assert_eq!(raw_spelled(&cache, 2, filter("c")).await, "2/c");
    assert_eq!(raw_default(&cache, 3).await, 3);
    assert_eq!(raw_default(&cache, 4).await, 4);
}

static CFG_LOADS: AtomicUsize = AtomicUsize::new(0);

/// A first argument compiled out leaves no empty part in the default key:
/// an invalidation that names the key finds it.
#[cache_aside(prefix = "cfg-first", ttl = "5m", cache = cache, skip(cache))]
async fn cfg_first(cache: &Cache, #[cfg(any())] first: u64, second: u64) -> usize {
    CFG_LOADS.fetch_add(1, SeqCst) + usize::try_from(second).unwrap_or_default()
}

#[tiercache::invalidates(keys = ["cfg-first:{second}"], cache = cache)]
async fn touch_cfg_first(cache: &Cache, second: u64) {
    let _ = second;
}

#[tokio::test]
async fn a_cfg_argument_leaves_the_default_key_as_written() {
    let cache = Cache::in_memory();
    assert_eq!(cfg_first(&cache, 2).await, 2);
    assert_eq!(cfg_first(&cache, 2).await, 2, "a hit");
    touch_cfg_first(&cache, 2).await;
    assert_eq!(cfg_first(&cache, 2).await, 3, "invalidated: loaded again");
}

mod shared_values {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

    use serde::{Deserialize, Serialize};
    use tiercache::{Cache, cache_aside};

    /// Not `Clone`: a hit cannot deep-clone it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Big {
        pub(crate) rows: Vec<u64>,
    }

    #[cache_aside(prefix = "big", ttl = "5m", skip(cache, loads), cache = cache)]
    pub(crate) async fn big(cache: &Cache, loads: &AtomicU64, id: u64) -> Arc<Big> {
        loads.fetch_add(1, SeqCst);
        Arc::new(Big {
            rows: vec![id; 1000],
        })
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Plain {
        pub(crate) rows: Vec<u64>,
    }

    #[cache_aside(prefix = "shared-entry", ttl = "5m", skip(cache), cache = cache)]
    pub(crate) async fn as_arc(cache: &Cache, id: u64) -> Option<Arc<Plain>> {
        Some(Arc::new(Plain { rows: vec![id] }))
    }

    #[cache_aside(prefix = "shared-entry", ttl = "5m", skip(cache), cache = cache)]
    pub(crate) async fn as_value(cache: &Cache, id: u64) -> Option<Plain> {
        Some(Plain { rows: vec![id, id] })
    }
}

/// An `Arc<T>` is cached without serde's `rc` feature; an L1 hit hands out
/// the same allocation (no deep clone), and Redis holds the `T`, so a
/// function returning `T` under the same prefix and key shares its entry.
#[tokio::test]
async fn an_arc_is_shared_on_every_hit_not_cloned() {
    use shared_values::*;
    use std::sync::Arc;
    let cache = support::cache_in("macros-arc").await;
    let loads = std::sync::atomic::AtomicU64::new(0);
    let first = big(&cache, &loads, 1).await;
    let second = big(&cache, &loads, 1).await;
    assert!(Arc::ptr_eq(&first, &second), "an L1 hit shares the value");
    assert_eq!(loads.load(SeqCst), 1);
    // Another instance decodes it from Redis.
    let other = support::cache_in("macros-arc").await;
    let decoded = big(&other, &loads, 1).await;
    assert_eq!(*decoded, *first);
    assert_eq!(loads.load(SeqCst), 1);
    assert!(Arc::ptr_eq(&decoded, &big(&other, &loads, 1).await));

    // `Arc<Plain>` and `Plain` under one prefix and key: one entry.
    let loaded = as_arc(&cache, 2).await.unwrap();
    assert_eq!(as_value(&cache, 2).await.as_ref(), Some(&*loaded));
    assert_eq!(as_value(&other, 2).await.as_ref(), Some(&*loaded));
}

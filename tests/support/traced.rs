//! What one test traces, recorded by a layer of its own, through one
//! global subscriber.
//!
//! A subscriber set per thread (`tracing::subscriber::set_default`) is not
//! enough for tests that assert spans exist: tracing caches each call
//! site's interest across threads, and a test on another thread that
//! drops its own subscriber can have a call site's interest rebuilt as
//! "never" while this test still records. So the subscriber is global,
//! installed once, and hands each span and event to the layer of the test
//! running on the current thread (tests on `#[tokio::test]`'s
//! current-thread runtime run their spawned tasks on that thread too).

use std::cell::RefCell;
use std::sync::{Arc, Once};

use tracing::Event;
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// A test's layer, behind the global subscriber.
pub type TestLayer = Arc<dyn Layer<Registry> + Send + Sync>;

thread_local! {
    static CURRENT: RefCell<Option<TestLayer>> = const { RefCell::new(None) };
}

/// Hands everything to the current thread's [`TestLayer`], if any.
struct Route;

fn with(f: impl FnOnce(&TestLayer)) {
    CURRENT.with(|current| {
        if let Some(layer) = &*current.borrow() {
            f(layer);
        }
    });
}

impl Layer<Registry> for Route {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, Registry>) {
        with(|l| l.on_new_span(attrs, id, ctx));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, Registry>) {
        with(|l| l.on_record(id, values, ctx));
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, Registry>) {
        with(|l| l.on_follows_from(span, follows, ctx));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, Registry>) {
        with(|l| l.on_event(event, ctx));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, Registry>) {
        with(|l| l.on_close(id, ctx));
    }
}

/// Stops routing to the layer when dropped.
pub struct Routed;

impl Drop for Routed {
    fn drop(&mut self) {
        CURRENT.with(|current| current.borrow_mut().take());
    }
}

/// Routes what this thread traces to `layer` until the guard is dropped.
pub fn route(layer: impl Layer<Registry> + Send + Sync + 'static) -> Routed {
    static GLOBAL: Once = Once::new();
    GLOBAL.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(Route);
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
    CURRENT.with(|current| *current.borrow_mut() = Some(Arc::new(layer)));
    Routed
}

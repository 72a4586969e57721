//! Warming (`tiercache::warm`): the tally, the progress callback, the
//! concurrency bound, cancellation, and the `tracing` event, on an
//! in-memory cache and on Redis.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tiercache::warm::{Progress, Warm, Warmed, unless_cached};
use tiercache::{Cache, cache_aside};

#[cache_aside(prefix = "warm", ttl = "5m", key = "{id}", skip(cache), cache = cache)]
async fn value(cache: &Cache, id: u64) -> Result<u64, String> {
    if id.is_multiple_of(10) {
        return Err(format!("{id} fails"));
    }
    Ok(id * 2)
}

#[tokio::test]
async fn a_run_tallies_what_it_loaded_found_and_failed_and_reports_each_item() {
    let cache = Cache::in_memory();
    // 1..=5 cached already.
    for id in 1..=5 {
        value(&cache, id).await.unwrap();
    }
    let seen: Mutex<Vec<Progress>> = Mutex::new(Vec::new());
    let progress = Warm::new(1..=20u64)
        .concurrency(3)
        .on_progress(|p| seen.lock().unwrap().push(p.clone()))
        .run(|id| {
            let cache = &cache;
            unless_cached(value_peek(cache, id), move || value(cache, id))
        })
        .await;
    assert_eq!(progress.total, Some(20));
    assert_eq!(progress.done, 20);
    assert_eq!(
        (progress.cached, progress.loaded, progress.failed),
        (5, 13, 2)
    );
    assert!(!progress.cancelled);
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 20);
    assert!(seen.iter().enumerate().all(|(i, p)| p.done == i + 1));
    // Warm: every id but the failing ones is a hit.
    let loads = cache.stats().loads;
    for id in (1..=20u64).filter(|id| !id.is_multiple_of(10)) {
        value(&cache, id).await.unwrap();
    }
    assert_eq!(cache.stats().loads, loads);
}

#[tokio::test]
async fn no_more_than_the_concurrency_run_at_once() {
    let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let progress = Warm::new(0..40)
        .concurrency(4)
        .run(|_| async {
            let now = running.fetch_add(1, SeqCst) + 1;
            most.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            running.fetch_sub(1, SeqCst);
            Warmed::LOADED
        })
        .await;
    assert_eq!(progress.loaded, 40);
    assert_eq!(most.load(SeqCst), 4);
}

#[tokio::test]
async fn until_stops_the_run_and_drops_the_items_under_way() {
    let (started, finished) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let stop = tokio::sync::Notify::new();
    let run = Warm::new(0..1000)
        .concurrency(2)
        .until(stop.notified())
        .run(|_| async {
            if started.fetch_add(1, SeqCst) >= 5 {
                std::future::pending::<()>().await; // a load that hangs
            }
            finished.fetch_add(1, SeqCst);
            Warmed::LOADED
        });
    let stopper = async {
        while started.load(SeqCst) < 7 {
            tokio::task::yield_now().await;
        }
        stop.notify_one();
    };
    let (progress, ()) = tokio::join!(run, stopper);
    assert!(progress.cancelled);
    assert_eq!(progress.done, 5);
    assert_eq!(finished.load(SeqCst), 5);
    assert_eq!(
        started.load(SeqCst),
        7,
        "nothing starts after the hang fills the two slots"
    );
}

#[tokio::test]
async fn a_batch_warm_tallies_its_keys() {
    let cache = support::cache_in("warm-batch").await;
    let ids: Vec<u64> = (0..250).collect();
    let _ = cache
        .entries("warm", &ids[..50])
        .ttl(Duration::from_secs(60))
        .warm_with(|missing: Vec<u64>| async move {
            Ok::<_, String>(missing.into_iter().map(|id| (id, id * 2)))
        })
        .await;
    let queries = Arc::new(AtomicUsize::new(0));
    let progress = Warm::new(ids.chunks(100))
        .concurrency(2)
        .run(|chunk| {
            let queries = queries.clone();
            cache
                .entries("warm", chunk)
                .ttl(Duration::from_secs(60))
                .warm_with(move |missing: Vec<u64>| async move {
                    queries.fetch_add(1, SeqCst);
                    if missing.contains(&220) {
                        return Err("the last batch fails".to_owned());
                    }
                    Ok(missing.into_iter().map(|id| (id, id * 2)))
                })
        })
        .await;
    assert_eq!(progress.done, 3);
    assert_eq!(
        (progress.cached, progress.loaded, progress.failed),
        (50, 150, 50)
    );
    assert_eq!(queries.load(SeqCst), 3);
}

/// Records the events of one target.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "tiercache::warm" {
            struct Fields(String);
            impl tracing::field::Visit for Fields {
                fn record_debug(
                    &mut self,
                    field: &tracing::field::Field,
                    value: &dyn std::fmt::Debug,
                ) {
                    self.0.push_str(&format!("{}={value:?} ", field.name()));
                }
            }
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

#[test]
fn a_run_ends_with_a_tracing_event() {
    let events = Events::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let routed = support::traced::route(events.clone());
    runtime.block_on(Warm::new([Warmed::CACHED, Warmed::FAILED]).run(|w| async move { w }));
    drop(routed);
    let events = events.0.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains("done=2 loaded=0 cached=1 failed=1 cancelled=false"),
        "{events:?}"
    );
}

/// Keys that render alike are one entry: warming two of them loads it
/// once, and reports one entry loaded, none found cached.
#[tokio::test]
async fn keys_that_render_alike_count_as_one_entry() {
    #[derive(Clone, PartialEq, Eq, Hash, Debug)]
    struct Id {
        id: u64,
        tag: u8,
    }
    impl tiercache::KeyPart for Id {
        fn write_key(&self, out: &mut tiercache::KeyWriter) {
            self.id.write_key(out);
        }
    }
    let cache = tiercache::Cache::in_memory();
    let keys = [Id { id: 1, tag: 0 }, Id { id: 1, tag: 1 }];
    let warmed = cache
        .entries("alias", &keys)
        .ttl(std::time::Duration::from_secs(60))
        .warm_with(|missing: Vec<Id>| async move {
            Ok::<_, ()>(missing.into_iter().map(|k| (k, 1u32)).collect::<Vec<_>>())
        })
        .await;
    assert_eq!(
        (warmed.loaded, warmed.cached, warmed.failed),
        (1, 0, 0),
        "{warmed:?}"
    );
}

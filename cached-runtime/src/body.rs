//! How the body of a cached function is run: in the caller's task
//! ([`Inline`]), or in the background on owned copies of its arguments
//! ([`Detached`]), for `stale`, `refresh_ahead` and `timeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tracing::Instrument;

use crate::codec::answer;
use crate::flight::{self, Landed, Leader, Role};
use crate::lead::{Ctx, Fallback, Mode, lead};
use crate::observe::{Answer, Call, Loading, Outcome};
use crate::shape::{Shape, Split};

/// How the body of a cached function is run.
///
/// `#[cache_aside]` without `stale`, `refresh_ahead` or `timeout` runs the
/// body in the caller's task ([`crate::aside::load`]). With them, the macro
/// builds a [`Detached`] loader from owned copies of the arguments, so that
/// the body can run in the background: a refresh no caller waits for, or a
/// load that goes on after a slow one was answered with a fail-safe value
/// ([`crate::aside::load_detached`]).
///
/// The result type is an associated type, not a parameter: an `Inline`
/// body is generic over its future `F` only, and its result is `F::Output`.
/// A parameter `R` would need `F: Future<Output = R>` to select the impl,
/// and rustc's check that a future is `Send` sees every lifetime inside
/// `R` and `F::Output` apart (in `Box<dyn Error + Send + Sync>`, the
/// object's `'static`): it could not prove them equal, and the cached
/// future was not `Send` ("one type is more general than the other").
pub(crate) trait Body<S>: Sized {
    /// What the function returns.
    type Output;

    /// Whether the body can run in the background.
    const DETACHED: bool;

    /// Starts the body.
    fn start(self) -> impl Future<Output = Self::Output>;

    /// Starts a background refresh of the entry unless one runs already
    /// (or one failed less than `fail_safe_throttle` ago); whether it
    /// started. `expires_at_ms`: the end of the fresh period of the value
    /// it replaces.
    fn refresh(&self, ctx: &Ctx<S, Self::Output>, expires_at_ms: u64) -> bool
    where
        S: Shape<Self::Output>;

    /// Leads the flight for the caller (or, without a leader, loads
    /// alone).
    async fn lead(
        ctx: Ctx<S, Self::Output>,
        leader: Option<Leader>,
        body: Self,
        fallback: Option<Fallback>,
    ) -> Self::Output
    where
        S: Shape<Self::Output>;
}

/// A body run in the caller's task.
pub(crate) struct Inline<F>(pub(crate) F);

impl<S, F: Future> Body<S> for Inline<F> {
    type Output = F::Output;

    const DETACHED: bool = false;

    fn start(self) -> impl Future<Output = F::Output> {
        self.0
    }

    fn refresh(&self, _: &Ctx<S, F::Output>, _: u64) -> bool
    where
        S: Shape<F::Output>,
    {
        false
    }

    async fn lead(
        ctx: Ctx<S, F::Output>,
        leader: Option<Leader>,
        body: Self,
        fallback: Option<Fallback>,
    ) -> F::Output
    where
        S: Shape<F::Output>,
    {
        match lead(&ctx, leader, body, Mode::Call, fallback).await {
            Some(result) => result,
            None => unreachable!("a caller's load answers: only a refresh finds nothing to do"),
        }
    }
}

/// A loader that runs the function's body on owned copies of its arguments,
/// as often as needed; built by the macro.
pub struct Detached<R>(Arc<dyn Fn() -> Pin<Box<dyn Future<Output = R> + Send>> + Send + Sync>);

impl<R> Clone for Detached<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R> Detached<R> {
    /// Wraps a function that starts a run of the body.
    pub fn new<F, Fut>(make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        Self(Arc::new(move || Box::pin(make())))
    }
}

/// A [`Detached`] loader as the cache runs it, with the two paths that
/// spawn tasks as function pointers, made by [`Background::new`] where
/// their bounds (`Send + 'static`) hold.
///
/// Pointers, so that the `Body` impl has no bounds: with `R: 'static` on
/// it, rustc's check that a caller's future is `Send` could not prove the
/// bound for the lifetimes it sees apart inside `R` (as with
/// `F: Future<Output = R>`, see [`Body`]), and a function with `timeout`
/// returning `Result<T, Box<dyn Error + Send + Sync>>` had a future that
/// was not `Send`.
pub(crate) struct Background<S: Shape<R>, R> {
    run: Detached<R>,
    refresh: fn(&Ctx<S, R>, &Self, u64) -> bool,
    lead: Lead<S, R>,
}

/// Starts [`lead_in_background`].
type Lead<S, R> = fn(
    Ctx<S, R>,
    Option<Leader>,
    Background<S, R>,
    Option<Fallback>,
) -> Pin<Box<dyn Future<Output = R> + Send>>;

impl<S: Shape<R>, R> Clone for Background<S, R> {
    fn clone(&self) -> Self {
        Self {
            run: self.run.clone(),
            refresh: self.refresh,
            lead: self.lead,
        }
    }
}

impl<S, R> Background<S, R>
where
    S: Shape<R> + 'static,
    S::Value: Send + Sync + 'static,
    R: Send + 'static,
{
    pub(crate) fn new(run: Detached<R>) -> Self {
        Self {
            run,
            refresh: refresh_in_background::<S, R>,
            lead: |ctx, leader, body, fallback| {
                Box::pin(lead_in_background(ctx, leader, body, fallback))
            },
        }
    }
}

impl<S: Shape<R>, R> Body<S> for Background<S, R> {
    type Output = R;

    const DETACHED: bool = true;

    fn start(self) -> impl Future<Output = R> {
        (self.run.0)()
    }

    fn refresh(&self, ctx: &Ctx<S, R>, expires_at_ms: u64) -> bool {
        (self.refresh)(ctx, self, expires_at_ms)
    }

    async fn lead(
        ctx: Ctx<S, R>,
        leader: Option<Leader>,
        body: Self,
        fallback: Option<Fallback>,
    ) -> R {
        (body.lead)(ctx, leader, body, fallback).await
    }
}

/// [`Body::refresh`] of a [`Background`] body.
fn refresh_in_background<S, R>(ctx: &Ctx<S, R>, body: &Background<S, R>, expires_at_ms: u64) -> bool
where
    S: Shape<R> + 'static,
    S::Value: Send + Sync + 'static,
    R: Send + 'static,
{
    let inner = &ctx.cache.inner;
    if inner.flights.busy(&ctx.key) || inner.flights.backing_off(&ctx.key) {
        return false;
    }
    let Role::Leader(leader) = inner.flights.join(&ctx.key) else {
        return false;
    };
    let span = refresh_span(ctx);
    let (mut ctx, body) = (ctx.clone(), body.clone());
    // Not the caller's span: held by the refresh, it would stay open (and
    // so would its parents) until the refresh ends.
    ctx.call = ctx.call.detached();
    let refresh = async move {
        let mode = Mode::Refresh { expires_at_ms };
        // A body that panics unwinds past the back-off of a failure.
        let inner = &ctx.cache.inner;
        let pause = inner.settings.fail_safe_throttle;
        let mut panicked = BackOffOnDrop(Some((&inner.flights, &ctx.key, pause)));
        lead(&ctx, Some(leader), body, mode, None).await;
        panicked.0 = None;
    };
    tokio::spawn(refresh.instrument(span));
    true
}

/// [`Body::lead`] of a [`Background`] body: the load runs in its own task.
/// It goes on when this caller stops waiting (a fail-safe value offered
/// after `timeout`, a stale value offered at once, or the caller
/// cancelled) and lands its value for the callers after.
async fn lead_in_background<S, R>(
    mut ctx: Ctx<S, R>,
    leader: Option<Leader>,
    body: Background<S, R>,
    fallback: Option<Fallback>,
) -> R
where
    S: Shape<R> + 'static,
    S::Value: Send + Sync + 'static,
    R: Send + 'static,
{
    let slot = leader.as_ref().map(Leader::slot);
    let mut task_ctx = ctx.clone();
    task_ctx.call = ctx.call.in_background();
    let watched = ctx.call.in_background();
    let again = body.run.clone();
    let span = background_span(&ctx, fallback.is_some());
    let task = async move { lead(&task_ctx, leader, body, Mode::Call, fallback).await };
    let task = tokio::spawn(task.instrument(span));
    // If this caller goes away, the load goes on for the others, for
    // `background_load_timeout` at most.
    let bound = ctx.cache.inner.settings.background_timeout;
    let mut load = Bounded {
        task: Some(task),
        bound,
        call: watched,
    };
    let offered = async {
        match &slot {
            Some(slot) => match flight::wait(slot.clone()).await {
                Some(Landed::Value(shared, source)) => {
                    answer::<S, R>(ctx.codec, &shared).map(|answer| (answer, source))
                }
                _ => None,
            },
            None => None,
        }
    };
    let answer = tokio::select! {
        biased;
        finished = load.finished() => match finished {
            Ok(Some(result)) => result,
            Ok(None) => unreachable!("a caller's load answers: only a refresh finds nothing to do"),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Cancelled (the runtime that ran it shuts down): the caller
            // still gets an answer, from a run of its own.
            Err(_) => {
                let loading = Loading::of(&ctx.call, ctx.spec.prefix);
                let result = (again.0)().instrument(loading.span().clone()).await;
                let (outcome, result) = match S::split(result) {
                    Split::Kept(kept) => (Outcome::Ok, kept.rejoin::<S>()),
                    Split::Failed(result) => (Outcome::Err, result),
                };
                loading.finish(outcome);
                ctx.call.answered(Answer::Load);
                result
            }
        },
        // Answered with an offered value (its own leader's stale or
        // fail-safe value, counted by the leader, or a relief's, counted
        // here): the load goes on without this caller, for the bound at
        // most.
        Some((answer, source)) = offered => {
            ctx.call.answered(source.answer());
            answer
        }
    };
    ctx.call.record_answer();
    answer
}

/// The span a background leader runs in: a child of the call's when the
/// caller waits for the load, as a plain miss does, so that the call's
/// trace holds its Redis round trips and its load. When the caller may be
/// answered before the load ends (a stale or fail-safe value at hand, in
/// L1 or in Redis), a span of its own, linked to the call's: as a child
/// it would keep the call's span open until the load ended. (A relief's
/// value, after `lock_wait`, can answer the caller early too: then the
/// child keeps the call's span open until the load ends or is cut off.)
fn background_span<S: Shape<R>, R>(ctx: &Ctx<S, R>, fallback: bool) -> tracing::Span {
    let prefix = ctx.spec.prefix;
    let spec = &ctx.spec;
    let early = fallback
        || !spec.stale.is_zero()
        || (spec.soft_timeout.is_some() && !spec.fail_safe.is_zero());
    if !early {
        return tracing::info_span!(parent: &ctx.call.span, "tiercache.background", prefix);
    }
    let span = tracing::info_span!(parent: None, "tiercache.background", prefix);
    if !span.is_disabled() {
        span.follows_from(&ctx.call.span);
    }
    span
}

/// The span a refresh runs in: what its body logs is linked to the call
/// that started it (it follows from the caller's span), without being a
/// child of it, which would keep the caller's span open until the refresh
/// ends and stretch the caller's trace over time it did not wait.
fn refresh_span<S: Shape<R>, R>(ctx: &Ctx<S, R>) -> tracing::Span {
    let prefix = ctx.spec.prefix;
    let key = ctx.cache.inner.observer.shown(&ctx.key);
    let span = tracing::info_span!(parent: None, "tiercache.refresh", prefix, cache.key = key);
    if !span.is_disabled() {
        span.follows_from(tracing::Span::current());
    }
    span
}

/// A background load, aborted if it is still running `bound` after its
/// caller stopped waiting for it (cancelled, or answered by an offered
/// value): the load is not cut short for the callers that wait for it, but
/// it cannot hold its key (or its lock) forever. The watch ends with the
/// load.
struct Bounded<T: Send + 'static> {
    /// `None` once it finished.
    task: Option<tokio::task::JoinHandle<T>>,
    bound: std::time::Duration,
    /// The call it loads for: told when the load is cut off.
    call: Call,
}

impl<T: Send + 'static> Bounded<T> {
    /// Waits for the load to finish (then nothing is left to watch).
    async fn finished(&mut self) -> Result<T, tokio::task::JoinError> {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let finished = task.await;
        self.task = None;
        finished
    }
}

impl<T: Send + 'static> Drop for Bounded<T> {
    fn drop(&mut self) {
        let Some(mut task) = self.task.take() else {
            return;
        };
        if task.is_finished() {
            return;
        }
        let (bound, call) = (self.bound, self.call.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if tokio::time::timeout(bound, &mut task).await.is_err() {
                    call.cut_off();
                    task.abort();
                }
            });
        }
    }
}

/// Backs a key's refresh off when dropped: a refresh whose body panicked.
struct BackOffOnDrop<'a>(Option<(&'a crate::flight::Flights, &'a str, std::time::Duration)>);

impl Drop for BackOffOnDrop<'_> {
    fn drop(&mut self) {
        if let Some((flights, key, pause)) = self.0.take() {
            flights.back_off(key, pause);
        }
    }
}

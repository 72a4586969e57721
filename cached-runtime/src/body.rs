//! How the body of a cached function is run: in the caller's task
//! ([`Inline`]), or in the background on owned copies of its arguments
//! ([`Detached`]), for `stale`, `refresh_ahead` and `timeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::codec::answer;
use crate::flight::{self, Landed, Leader, Role};
use crate::lead::{Ctx, Fallback, Mode, lead};
use crate::shape::Shape;

/// How the body of a cached function is run.
///
/// `#[cache_aside]` without `stale`, `refresh_ahead` or `timeout` runs the
/// body in the caller's task ([`crate::aside::load`]). With them, the macro
/// builds a [`Detached`] loader from owned copies of the arguments, so that
/// the body can run in the background: a refresh no caller waits for, or a
/// load that goes on after a slow one was answered with a fail-safe value
/// ([`crate::aside::load_detached`]).
pub(crate) trait Body<S: Shape<R>, R>: Sized {
    /// Whether the body can run in the background.
    const DETACHED: bool;

    /// Starts the body.
    fn start(self) -> impl Future<Output = R>;

    /// Starts a background refresh of the entry unless one runs already
    /// (or one failed less than `fail_safe_throttle` ago); whether it
    /// started. `expires_at_ms`: the end of the fresh period of the value
    /// it replaces.
    fn refresh(&self, ctx: &Ctx<S, R>, expires_at_ms: u64) -> bool;

    /// Leads the flight for the caller (or, without a leader, loads
    /// alone).
    async fn lead(
        ctx: Ctx<S, R>,
        leader: Option<Leader>,
        body: Self,
        fallback: Option<Fallback>,
    ) -> R;
}

/// A body run in the caller's task.
pub(crate) struct Inline<F>(pub(crate) F);

impl<S: Shape<R>, R, F: Future<Output = R>> Body<S, R> for Inline<F> {
    const DETACHED: bool = false;

    fn start(self) -> impl Future<Output = R> {
        self.0
    }

    fn refresh(&self, _: &Ctx<S, R>, _: u64) -> bool {
        false
    }

    async fn lead(
        ctx: Ctx<S, R>,
        leader: Option<Leader>,
        body: Self,
        fallback: Option<Fallback>,
    ) -> R {
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

impl<S, R> Body<S, R> for Detached<R>
where
    S: Shape<R> + 'static,
    S::Value: Send + Sync + 'static,
    R: Send + 'static,
{
    const DETACHED: bool = true;

    fn start(self) -> impl Future<Output = R> {
        (self.0)()
    }

    fn refresh(&self, ctx: &Ctx<S, R>, expires_at_ms: u64) -> bool {
        let inner = &ctx.cache.inner;
        if inner.flights.busy(&ctx.key) || inner.flights.backing_off(&ctx.key) {
            return false;
        }
        let Role::Leader(leader) = inner.flights.join(&ctx.key) else {
            return false;
        };
        let (ctx, body) = (ctx.clone(), self.clone());
        tokio::spawn(async move {
            let mode = Mode::Refresh { expires_at_ms };
            lead(&ctx, Some(leader), body, mode, None).await;
        });
        true
    }

    /// The load runs in its own task: it goes on when this caller stops
    /// waiting (a fail-safe value offered after `timeout`, a stale value
    /// offered at once, or the caller cancelled) and lands its value for
    /// the callers after.
    async fn lead(
        ctx: Ctx<S, R>,
        leader: Option<Leader>,
        body: Self,
        fallback: Option<Fallback>,
    ) -> R {
        let slot = leader.as_ref().map(Leader::slot);
        let task_ctx = ctx.clone();
        let mut task =
            tokio::spawn(async move { lead(&task_ctx, leader, body, Mode::Call, fallback).await });
        let offered = async {
            match &slot {
                Some(slot) => match flight::wait(slot.clone()).await {
                    Some(Landed::Value(shared, _)) => answer::<S, R>(ctx.codec, &shared),
                    _ => None,
                },
                None => None,
            }
        };
        tokio::select! {
            biased;
            finished = &mut task => match finished {
                Ok(Some(result)) => result,
                Ok(None) => unreachable!("a caller's load answers: only a refresh finds nothing to do"),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // Cancelled: the runtime shuts down, and this caller with it.
                Err(_) => std::future::pending().await,
            },
            Some(answer) = offered => answer,
        }
    }
}

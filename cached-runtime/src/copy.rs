//! The copies of a cached function's arguments (and `self`) that a
//! background run (`stale`, `refresh_ahead`, `timeout`) takes: owned,
//! `'static`, cloned for each run, and shared between threads.
//!
//! The generated code copies an argument `x` in two checked steps:
//! `Shared::shared(Owned::owned(&x), (&SendProbe::of(&x)).thread_safe())`.
//! [`Owned`] is `Clone`, or `ToOwned` for a reference (`&str` is copied as
//! a `String`); a type that is not is one error there. The probe finds, by
//! autoref specialization, whether the copy is `Send + Sync`
//! ([`ThreadSafe`]) or not ([`NotThreadSafe`]), and [`Shared`] has no impl
//! for [`NotThreadSafe`]: that is the one error, and the copy's type is
//! then unknown, so the closure that holds the copies (which must be
//! `Send + Sync`) reports nothing more. A bound `Send + Sync` checked at
//! once was one error per part missing, and the same again at the closure:
//! four for an `Rc`. Each run's copy is `Owned::owned` of the first: on a
//! type that failed a check, rustc reports nothing more.

use std::marker::PhantomData;

/// What a background run needs first of an argument (or `self`): an owned
/// copy, `'static`, that it can clone for each run.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be copied into a background run of the function",
    label = "`stale`, `refresh_ahead` and `timeout` need a copy of this",
    note = "those options run the function again in the background, on copies of its arguments and of `self`: make this type `Clone + Send + Sync + 'static` (share state behind an `Arc`, not an `Rc`), or remove the option"
)]
pub trait Owned {
    /// The copy.
    type Owned: Clone + 'static;
    /// Makes the copy.
    fn owned(&self) -> Self::Owned;
}

impl<T: ?Sized + ToOwned> Owned for T
where
    T::Owned: Clone + 'static,
{
    type Owned = T::Owned;

    fn owned(&self) -> T::Owned {
        self.to_owned()
    }
}

/// The receiver of the probe of a copy of type `C`.
pub struct SendProbe<C>(PhantomData<C>);

impl<C> SendProbe<C> {
    /// The probe of the copy of `value`.
    #[must_use]
    pub fn of<T: ?Sized + Owned<Owned = C>>(_value: &T) -> Self {
        Self(PhantomData)
    }
}

/// The copy is `Send + Sync`.
#[derive(Debug, Clone, Copy)]
pub struct ThreadSafe;

/// The copy is not `Send + Sync`.
#[derive(Debug, Clone, Copy)]
pub struct NotThreadSafe;

/// Never an answer of the probe: a second impl of [`Shared`], so that
/// rustc takes the answer from the probe rather than from the only impl.
#[derive(Debug, Clone, Copy)]
pub struct Unused;

/// Found first (no autoref) when the copy is `Send + Sync`.
pub trait ProbeThreadSafe {
    /// [`ThreadSafe`].
    fn thread_safe(&self) -> ThreadSafe {
        ThreadSafe
    }
}

impl<C: Send + Sync> ProbeThreadSafe for SendProbe<C> {}

/// The fallback, found after one autoref.
pub trait ProbeNotThreadSafe {
    /// [`NotThreadSafe`].
    fn thread_safe(&self) -> NotThreadSafe {
        NotThreadSafe
    }
}

impl<C> ProbeNotThreadSafe for &SendProbe<C> {}

/// A copy a background run can share between threads: only for the
/// probe's [`ThreadSafe`] answer. No impl has a bound of its own, so that
/// the answer picks the impl, and a copy that is not `Send + Sync` is this
/// one error.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be copied into a background run of the function: it is not `Send` and `Sync`",
    label = "`stale`, `refresh_ahead` and `timeout` need a copy of this, shared between threads",
    note = "those options run the function again in the background, on copies of its arguments and of `self`: share state behind an `Arc` (not an `Rc`) and a `Mutex` (not a `RefCell`), or remove the option"
)]
pub trait Shared<M> {
    /// The copy.
    type Copy;
    /// The copy, given the probe's answer about it.
    fn shared(self, answer: M) -> Self::Copy;
}

impl<C> Shared<ThreadSafe> for C {
    type Copy = C;

    fn shared(self, _: ThreadSafe) -> C {
        self
    }
}

impl<C> Shared<Unused> for C {
    type Copy = ();

    fn shared(self, _: Unused) {}
}

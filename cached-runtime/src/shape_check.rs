//! Tells a return type the macros read as a plain value from one that only
//! looks like one: a `Result` or an `Option` behind an alias
//! (`type ApiResult<T> = Result<T, ApiError>;`) or another macro.
//!
//! The macros pick a function's [`Shape`](crate::shape::Shape) from how its
//! return type is written, because the generated code must name the shape.
//! Spelled `ApiResult<User>`, a `Result` would be cached whole, its `Err`
//! included. So for a type they read as plain, they also emit a probe of the
//! real type, by autoref specialization: `(&ShapeProbe::<R>::new()).shape()`
//! finds [`ProbeResult::shape`] or [`ProbeOption::shape`] first when `R` is
//! a `Result` or an `Option` (their receivers need no autoref), and
//! [`ProbePlain::shape`] otherwise. The marker it returns picks an impl of
//! one of the checks below (`NotAResult`, `NotAnOption`, … one per
//! attribute and shape, for the message), which exist for the answers that
//! pass; so a `Result` or an `Option` is a compile error whose message says
//! what to write.
//!
//! The checks are defined here, not generated next to the probe: a
//! `#[diagnostic::on_unimplemented]` in generated code does not resolve in a
//! `#![no_implicit_prelude]` module. So the messages name the real type
//! (`{Self}`), and the span shows the type as written.
//!
//! A type parameter `T` is plain: the probe sees the parameter, not what a
//! caller puts in it.

use std::marker::PhantomData;

/// The receiver of the shape probe: `(&ShapeProbe::<R>::new()).shape()`.
pub struct ShapeProbe<R: ?Sized>(PhantomData<R>);

impl<R: ?Sized> ShapeProbe<R> {
    /// A probe of `R`.
    #[must_use]
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<R: ?Sized> Default for ShapeProbe<R> {
    fn default() -> Self {
        Self::new()
    }
}

/// The probed type is a `Result`.
#[derive(Debug, Clone, Copy)]
pub struct IsResult;

/// The probed type is an `Option<T>`: `T` names it in the message.
#[derive(Debug)]
pub struct IsOption<T: ?Sized>(PhantomData<T>);

/// The probed type is neither a `Result` nor an `Option`.
#[derive(Debug, Clone, Copy)]
pub struct IsPlain;

/// Found first (no autoref) when the probed type is a `Result`.
pub trait ProbeResult {
    /// [`IsResult`].
    fn shape(&self) -> IsResult {
        IsResult
    }
}

impl<T, E> ProbeResult for ShapeProbe<Result<T, E>> {}

/// Found first (no autoref) when the probed type is an `Option`.
pub trait ProbeOption {
    /// What the `Option` holds.
    type Some;

    /// [`IsOption`].
    fn shape(&self) -> IsOption<Self::Some> {
        IsOption(PhantomData)
    }
}

impl<T> ProbeOption for ShapeProbe<Option<T>> {
    type Some = T;
}

/// The fallback, found after one autoref: any other type.
pub trait ProbePlain {
    /// [`IsPlain`].
    fn shape(&self) -> IsPlain {
        IsPlain
    }
}

impl<R: ?Sized> ProbePlain for &ShapeProbe<R> {}

/// What an answer of the probe holds, for its message: the `T` of
/// [`IsOption<T>`], so that it reads `Option<User>` (rustc may print the
/// whole `Option<User>` as `std::option::Option<User>`).
pub trait Probed {
    /// The `T` of an `Option<T>`; `()` for the other answers.
    type Some: ?Sized;
}

impl Probed for IsResult {
    type Some = ();
}

impl<T: ?Sized> Probed for IsOption<T> {
    type Some = T;
}

impl Probed for IsPlain {
    type Some = ();
}

/// The type of an `Err`, for the message of an `Option` hidden in an `Ok`.
pub trait ErrOf {
    /// `E` of `Result<T, E>`.
    type Err: ?Sized;
}

impl<T, E> ErrOf for Result<T, E> {
    type Err = E;
}

/// A check that the probed type is not a `Result`: implemented for the
/// probe's other answers, with `Value` the probed type itself.
macro_rules! not_a_result {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub trait $name<M> {
            /// The probed type.
            type Value: ?Sized;
        }

        impl<R: ?Sized> $name<IsPlain> for R {
            type Value = R;
        }

        impl<R: ?Sized, T: ?Sized> $name<IsOption<T>> for R {
            type Value = R;
        }
    };
}

/// A check that the probed type is not an `Option` (of `T`; in an `Ok`
/// beside `E`).
macro_rules! not_an_option {
    ($(#[$doc:meta])* $name:ident<$($param:ident),*>) => {
        $(#[$doc])*
        pub trait $name<M, $($param: ?Sized),*> {
            /// The probed type.
            type Value: ?Sized;
        }

        impl<R: ?Sized, $($param: ?Sized),*> $name<IsPlain, $($param),*> for R {
            type Value = R;
        }

        impl<R: ?Sized, $($param: ?Sized),*> $name<IsResult, $($param),*> for R {
            type Value = R;
        }
    };
}

not_a_result! {
    /// `#[cache_aside]`'s return type is not a `Result` it reads as plain.
    #[diagnostic::on_unimplemented(
        message = "this return type is a `Result`: write it as `{Self}` so that errors are never cached",
        label = "`#[cache_aside]` sees a `Result` only where it is written out",
        note = "`#[cache_aside]` caches `Ok` and returns `Err` unchanged when it sees `Result<T, E>` in the signature; an alias or a macro hides it, and then every result would be cached, `Err` included"
    )]
    NotAResult
}

not_a_result! {
    /// `#[write_through]`'s return type is not a `Result` it reads as plain.
    #[diagnostic::on_unimplemented(
        message = "this return type is a `Result`: write it as `{Self}` so that errors are never stored",
        label = "`#[write_through]` sees a `Result` only where it is written out",
        note = "`#[write_through]` stores `Ok` and returns `Err` unchanged when it sees `Result<T, E>` in the signature; an alias or a macro hides it, and then every result would be stored, `Err` included"
    )]
    NotAStoredResult
}

not_a_result! {
    /// `#[invalidates]`'s return type is not a `Result` it reads as plain.
    #[diagnostic::on_unimplemented(
        message = "this return type is a `Result`: write it as `{Self}` so that `#[invalidates]` can tell a failure from a success",
        label = "`#[invalidates]` sees a `Result` only where it is written out",
        note = "`#[invalidates]` reads the return type from how it is written, and an alias or a macro hides a `Result`: an `Err` would count as a success (with `when = \"always\"`, which invalidates either way, the alias is fine)"
    )]
    NotAnInvalidatingResult
}

not_an_option! {
    /// `#[cache_aside]`'s return type is not an `Option` it reads as plain.
    #[diagnostic::on_unimplemented(
        message = "this return type is an `Option`: write it as `Option<{T}>` so that a `None` is never cached as a value",
        label = "`#[cache_aside]` sees an `Option` only where it is written out",
        note = "`#[cache_aside]` caches `Some(v)`, and `None` only with `cache_none`, when it sees `Option<T>` in the signature; an alias or a macro hides it, and then a `None` would be cached like any value"
    )]
    NotAnOption<T>
}

not_an_option! {
    /// `#[write_through]`'s return type is not an `Option` it reads as plain.
    #[diagnostic::on_unimplemented(
        message = "this return type is an `Option`: write it as `Option<{T}>` so that a `None` is never stored as a value",
        label = "`#[write_through]` sees an `Option` only where it is written out",
        note = "`#[write_through]` stores `Some(v)` and never `None` when it sees `Option<T>` in the signature; an alias or a macro hides it, and then a `None` would be stored like any value"
    )]
    NotAStoredOption<T>
}

not_an_option! {
    /// `#[cache_aside]`'s `Ok` type is not an `Option` it reads as plain.
    #[diagnostic::on_unimplemented(
        message = "this `Ok` type is an `Option`: write the return type as `Result<Option<{T}>, {E}>` so that an `Ok(None)` is never cached as a value",
        label = "`#[cache_aside]` sees an `Option` only where it is written out",
        note = "`#[cache_aside]` caches `Ok(Some(v))`, and `Ok(None)` only with `cache_none`, when it sees `Result<Option<T>, E>` in the signature; an alias or a macro hides the `Option`, and then an `Ok(None)` would be cached like any value"
    )]
    NotAnOkOption<T, E>
}

not_an_option! {
    /// `#[write_through]`'s `Ok` type is not an `Option` it reads as plain.
    #[diagnostic::on_unimplemented(
        message = "this `Ok` type is an `Option`: write the return type as `Result<Option<{T}>, {E}>` so that an `Ok(None)` is never stored as a value",
        label = "`#[write_through]` sees an `Option` only where it is written out",
        note = "`#[write_through]` stores `Ok(Some(v))` and never `Ok(None)` when it sees `Result<Option<T>, E>` in the signature; an alias or a macro hides the `Option`, and then an `Ok(None)` would be stored like any value"
    )]
    NotAStoredOkOption<T, E>
}

/// The error a `hard_timeout` ends a slow load with: the function's error
/// type made from a [`LoadTimeout`](crate::LoadTimeout).
///
/// A trait of the error type itself: rustc reports its message when the
/// `From` bound under it does not hold (`From` alone gets rustc's generic
/// "trait bound not satisfied").
#[diagnostic::on_unimplemented(
    message = "`hard_timeout` ends a slow load with an error, but the error type `{Self}` cannot be made from a `tiercache::LoadTimeout`",
    label = "needs `{Self}: From<tiercache::LoadTimeout>`",
    note = "implement `From<tiercache::LoadTimeout>` for `{Self}` (e.g. with a `Timeout(tiercache::LoadTimeout)` variant), or use `timeout` with `fail_safe` to answer a slow load with the old value instead"
)]
pub trait HardTimeoutError: Sized {
    /// The error, for a load given up after `ms`.
    fn timed_out(ms: u64) -> Self;
}

impl<E: From<crate::LoadTimeout>> HardTimeoutError for E {
    fn timed_out(ms: u64) -> Self {
        From::from(crate::LoadTimeout::after_ms(ms))
    }
}

#[cfg(test)]
mod tests {
    // The borrow is the probe: it is what makes the specific impls win.
    #![allow(clippy::needless_borrow)]

    use super::*;

    type ApiResult<T> = Result<T, String>;
    type Maybe<T> = Option<T>;

    fn generic<T>() -> IsPlain {
        (&ShapeProbe::<T>::new()).shape()
    }

    #[test]
    fn sees_through_aliases() {
        let _: IsResult = (&ShapeProbe::<ApiResult<u8>>::new()).shape();
        let _: IsResult = (&ShapeProbe::<std::io::Result<u8>>::new()).shape();
        let _: IsOption<u8> = (&ShapeProbe::<Maybe<u8>>::new()).shape();
        let _: IsPlain = (&ShapeProbe::<Vec<ApiResult<u8>>>::new()).shape();
        let _: IsPlain = (&ShapeProbe::<str>::new()).shape();
        // A type parameter is plain, whatever a caller puts in it.
        let _: IsPlain = generic::<ApiResult<u8>>();
    }
}

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
//! [`ProbePlain::shape`] otherwise. The marker it returns picks an impl of a
//! trait the macro generates next to the probe, which exists for
//! [`IsPlain`] only; so a `Result` or an `Option` is a compile error whose
//! message (the generated trait's `#[diagnostic::on_unimplemented]`) names
//! the type as written and says what to write.
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

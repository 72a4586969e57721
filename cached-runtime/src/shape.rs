//! The four return shapes a cached function may have.
//!
//! The macro picks the shape from the return type's syntax (`Result<..>`,
//! `Option<..>`, anything else) and the trait bounds here check the rest, so
//! aliases such as `io::Result<T>` or `anyhow::Result<T>` work too. A type it
//! reads as plain that is a `Result` or an `Option` after all (an alias that
//! hides it) is a compile error, by the probe in `shape_check.rs`.

/// What a call produced, seen from the cache.
#[derive(Debug)]
pub enum Outcome<'a, T> {
    /// A value to cache and share: `v`, `Some(v)`, `Ok(v)`, `Ok(Some(v))`.
    Value(&'a T),
    /// A successful "nothing": `None`, `Ok(None)`. Shared with waiting
    /// callers, not cached.
    Absent,
    /// An error: returned to this caller only, never cached.
    Failed,
}

/// Maps a function's return type `R` to the value that is cached.
pub trait Shape<R> {
    /// The cached value.
    type Value;

    /// Classifies a result.
    fn outcome(result: &R) -> Outcome<'_, Self::Value>;

    /// Rebuilds a result from a cached value.
    fn from_value(value: Self::Value) -> R;

    /// Rebuilds the "nothing" result, for shapes that have one.
    fn absent() -> Option<R>;
}

/// `T`: every result is a value.
#[derive(Debug)]
pub struct Plain;

/// `Option<T>`: `Some` is cached, `None` is not.
#[derive(Debug)]
pub struct Optional;

/// `Result<T, E>`: `Ok` is cached, `Err` is returned unchanged.
#[derive(Debug)]
pub struct Fallible;

/// `Result<Option<T>, E>`: `Ok(Some)` is cached; `Ok(None)` and `Err` are not.
#[derive(Debug)]
pub struct FallibleOptional;

impl<T> Shape<T> for Plain {
    type Value = T;

    fn outcome(result: &T) -> Outcome<'_, T> {
        Outcome::Value(result)
    }

    fn from_value(value: T) -> T {
        value
    }

    fn absent() -> Option<T> {
        None
    }
}

impl<T> Shape<Option<T>> for Optional {
    type Value = T;

    fn outcome(result: &Option<T>) -> Outcome<'_, T> {
        result.as_ref().map_or(Outcome::Absent, Outcome::Value)
    }

    fn from_value(value: T) -> Option<T> {
        Some(value)
    }

    fn absent() -> Option<Option<T>> {
        Some(None)
    }
}

impl<T, E> Shape<Result<T, E>> for Fallible {
    type Value = T;

    fn outcome(result: &Result<T, E>) -> Outcome<'_, T> {
        result.as_ref().map_or(Outcome::Failed, Outcome::Value)
    }

    fn from_value(value: T) -> Result<T, E> {
        Ok(value)
    }

    fn absent() -> Option<Result<T, E>> {
        None
    }
}

impl<T, E> Shape<Result<Option<T>, E>> for FallibleOptional {
    type Value = T;

    fn outcome(result: &Result<Option<T>, E>) -> Outcome<'_, T> {
        match result {
            Ok(Some(value)) => Outcome::Value(value),
            Ok(None) => Outcome::Absent,
            Err(_) => Outcome::Failed,
        }
    }

    fn from_value(value: T) -> Result<Option<T>, E> {
        Ok(Some(value))
    }

    fn absent() -> Option<Result<Option<T>, E>> {
        Some(Ok(None))
    }
}

//! The four return shapes a cached function may have.
//!
//! The macro picks the shape from the return type's syntax (`Result<..>`,
//! `Option<..>`, anything else) and the trait bounds here check the rest, so
//! aliases such as `io::Result<T>` or `anyhow::Result<T>` work too. A type it
//! reads as plain that is a `Result` or an `Option` after all (an alias that
//! hides it) is a compile error, by the probe in `shape_check.rs`.

/// A result taken apart by what the cache does with it.
///
/// The cache holds a result's parts, never the result, while it stores
/// them: the function's error type need not be `Send` (`Box<dyn Error>`),
/// and a cached function's future is `Send` whenever the function's is.
#[derive(Debug)]
pub enum Split<T, R> {
    /// What the cache keeps: `v`, `Some(v)`, `Ok(v)`, `Ok(Some(v))`, or a
    /// "nothing".
    Kept(Kept<T, R>),
    /// An error: returned to this caller only, never cached.
    Failed(R),
}

/// What the cache keeps of a successful result, and turns back into it.
#[derive(Debug)]
pub enum Kept<T, R> {
    /// A value to cache and share.
    Value(T),
    /// A successful "nothing" (`None`, `Ok(None)`), with what makes it
    /// again: shared with waiting callers, cached only with `cache_none`.
    Absent(fn() -> R),
}

impl<T, R> Kept<T, R> {
    /// The value, if it is one.
    pub fn value(&self) -> Option<&T> {
        match self {
            Self::Value(value) => Some(value),
            Self::Absent(_) => None,
        }
    }

    /// The result again.
    pub fn rejoin<S: Shape<R, Value = T>>(self) -> R {
        match self {
            Self::Value(value) => S::from_value(value),
            Self::Absent(absent) => absent(),
        }
    }
}

/// Maps a function's return type `R` to the value that is cached.
pub trait Shape<R> {
    /// The cached value.
    type Value;

    /// Takes a result apart.
    fn split(result: R) -> Split<Self::Value, R>;

    /// Rebuilds a result from a cached value.
    fn from_value(value: Self::Value) -> R;

    /// What rebuilds the "nothing" result, for shapes that have one.
    fn absent() -> Option<fn() -> R>;
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

    fn split(result: T) -> Split<T, T> {
        Split::Kept(Kept::Value(result))
    }

    fn from_value(value: T) -> T {
        value
    }

    fn absent() -> Option<fn() -> T> {
        None
    }
}

impl<T> Shape<Option<T>> for Optional {
    type Value = T;

    fn split(result: Option<T>) -> Split<T, Option<T>> {
        Split::Kept(result.map_or(Kept::Absent(|| None), Kept::Value))
    }

    fn from_value(value: T) -> Option<T> {
        Some(value)
    }

    fn absent() -> Option<fn() -> Option<T>> {
        Some(|| None)
    }
}

impl<T, E> Shape<Result<T, E>> for Fallible {
    type Value = T;

    fn split(result: Result<T, E>) -> Split<T, Result<T, E>> {
        match result {
            Ok(value) => Split::Kept(Kept::Value(value)),
            Err(error) => Split::Failed(Err(error)),
        }
    }

    fn from_value(value: T) -> Result<T, E> {
        Ok(value)
    }

    fn absent() -> Option<fn() -> Result<T, E>> {
        None
    }
}

impl<T, E> Shape<Result<Option<T>, E>> for FallibleOptional {
    type Value = T;

    fn split(result: Result<Option<T>, E>) -> Split<T, Result<Option<T>, E>> {
        match result {
            Ok(Some(value)) => Split::Kept(Kept::Value(value)),
            Ok(None) => Split::Kept(Kept::Absent(|| Ok(None))),
            Err(error) => Split::Failed(Err(error)),
        }
    }

    fn from_value(value: T) -> Result<Option<T>, E> {
        Ok(Some(value))
    }

    fn absent() -> Option<fn() -> Result<Option<T>, E>> {
        Some(|| Ok(None))
    }
}

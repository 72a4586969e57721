//! What a writer learns from the reader it names: `#[write_through(get_user(db, id))]`
//! and `#[invalidates(get_user(db, id))]` call a hidden companion of
//! `get_user` that renders that call's entry, so that the prefix, key, TTL
//! and tags come from one definition, and rustc checks the call.

use std::future::Future;
use std::marker::PhantomData;

use crate::cache::Cache;
use crate::codec::TypeCodec;
use crate::shape::Shape;
use crate::spec::Spec;

/// One call's entry of a `#[cache_aside]` function, as its companion
/// renders it; `V` is the function's cached value.
pub struct Target<V> {
    pub(crate) cache: Cache,
    pub(crate) spec: &'static Spec,
    /// The rendered `prefix:key`.
    pub(crate) key: String,
    pub(crate) tags: Vec<String>,
    value: PhantomData<fn() -> V>,
}

impl<V> Target<V> {
    /// For generated code.
    #[must_use]
    pub fn new(
        cache: &Cache,
        spec: &'static Spec,
        _: TypeCodec<V>,
        key: String,
        tags: Vec<String>,
    ) -> Self {
        Self {
            cache: cache.clone(),
            spec,
            key,
            tags,
            value: PhantomData,
        }
    }

    /// The same entry for a writer whose value is `W`, which must be the
    /// reader's: checked here, in a plain function, so that a mismatch is
    /// one error.
    #[must_use]
    pub fn for_writer<W: WrittenAs<V>>(self) -> Target<W> {
        Target {
            cache: self.cache,
            spec: self.spec,
            key: self.key,
            tags: self.tags,
            value: PhantomData,
        }
    }

    /// `#[write_through(reader(args))]`: [`write_through`](crate::write::write_through)
    /// to this entry, with the reader's prefix, key, TTL, windows and
    /// tags.
    pub async fn write_through<S, R, F>(self, codec: TypeCodec<V>, body: F) -> R
    where
        S: Shape<R, Value = V>,
        F: Future<Output = R>,
    {
        crate::write::write_through::<S, R, F>(
            self.cache, self.spec, codec, self.key, self.tags, body,
        )
        .await
    }

    /// The cache and the rendered `prefix:key`, for an invalidation.
    #[must_use]
    pub fn into_key(self) -> (Cache, String) {
        (self.cache, self.key)
    }
}

/// A writer's value must be the value its reader caches.
#[diagnostic::on_unimplemented(
    message = "this writer stores `{Self}`, but the reader it names caches `{V}`",
    label = "the reader caches `{V}`, this writer returns `{Self}`",
    note = "a writer's return value is stored as the reader's: return the reader's value type (in `T`, `Option<T>`, `Result<T, E>` or `Result<Option<T>, E>`), or use `#[invalidates(...)]` to forget the entry instead"
)]
pub trait WrittenAs<V> {}

impl<V> WrittenAs<V> for V {}

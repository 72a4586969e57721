//! The attribute macros of [tiercache](https://docs.rs/tiercache). Use them
//! through that crate: the code they generate calls
//! `::tiercache::__private`, and only `tiercache` documents them.

mod async_trait;
mod attr;
mod batch;
mod companions;
mod ctxt;
mod duration;
mod expand;
mod formats;
mod func;
mod probe;
mod receiver;
mod resilience;
mod spans;
mod suggest;
mod template;

use proc_macro::TokenStream;

/// Caches an `async fn` in tiercache's two-level cache. Documented in the
/// `tiercache` crate.
#[proc_macro_attribute]
pub fn cache_aside(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cache_aside(args.into(), item.into()).into()
}

/// Stores what an `async fn` returns under the key a `#[cache_aside]` reads.
/// Documented in the `tiercache` crate.
#[proc_macro_attribute]
pub fn write_through(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::write_through(args.into(), item.into()).into()
}

/// Invalidates tags, keys or prefixes when an `async fn` succeeds.
/// Documented in the `tiercache` crate.
#[proc_macro_attribute]
pub fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::invalidates(args.into(), item.into()).into()
}

/// Caches a batch function (keys in, a map out) entry by entry. Documented
/// in the `tiercache` crate.
#[proc_macro_attribute]
pub fn cache_batch(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cache_batch(args.into(), item.into()).into()
}

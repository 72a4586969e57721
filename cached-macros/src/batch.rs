//! `#[cache_batch]`: a function of a slice of keys that returns a map of
//! what it found, cached entry by entry. The generated body hands the keys
//! to the runtime's batch (`Cache::entries`): one L1 pass, one Redis round
//! trip, and the function's own body run once, with only the keys found
//! nowhere bound to its key argument.
//!
//! ```text
//! #[cache_batch(prefix = "user", ttl = "5m", skip(db))]
//! async fn users(db: &Db, ids: &[u64]) -> Result<HashMap<u64, User>, DbError> {
//!     db.users(ids).await // `ids`: the ids cached nowhere
//! }
//! ```
//!
//! Its entries are those of `#[cache_aside(prefix = "user", key = "{id}")]`
//! (and `cache.entry("user", &id)`): an element renders as a one-argument
//! key does.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Type};

use crate::attr::Args;
use crate::ctxt::Ctxt;
use crate::expand::local;
use crate::func::{Func, last_segment_arg, last_segment_args, peel, spelled};

/// What a batch function is made of, once checked.
pub(crate) struct BatchFn {
    /// The argument holding the keys.
    keys: Ident,
    /// The element type of the keys.
    key_ty: Type,
    /// The cached value type.
    value_ty: Type,
    /// The error type, if the function returns a `Result`.
    error_ty: Option<Type>,
}

/// Checks the function against what a batch needs: one argument `&[K]`
/// that is not skipped (the others are), no generics, a return type
/// `HashMap<K, V>` or `Result<HashMap<K, V>, E>`.
pub(crate) fn analyze(
    func: &ItemFn,
    args: &Args,
    analyzed: &Func,
    cx: &mut Ctxt,
) -> Option<BatchFn> {
    let name = &func.sig.ident;
    let skipped = |arg: &str| args.skip.iter().any(|s| s.unraw() == arg);
    for skipped_name in &args.skip {
        let text = skipped_name.unraw().to_string();
        if analyzed.named(&text).is_none() {
            cx.error_spanned_by(
                skipped_name,
                format!("`skip({text})`: `{name}` has no argument `{text}`"),
            );
        }
    }
    if let Some(generic) = analyzed.generics.first() {
        cx.error_spanned_by(
            &generic.ident,
            "`#[cache_batch]` does not take a generic function yet: its entries are keyed by the elements alone, so two instances would share them. Write one function per type, or use `cache.entries(..)`",
        );
    }
    let keyed: Vec<_> = analyzed
        .args
        .iter()
        .filter(|arg| !skipped(&arg.name))
        .collect();
    let type_of = |ident: &Ident| {
        func.sig.inputs.iter().find_map(|input| match input {
            FnArg::Typed(typed) => match &*typed.pat {
                Pat::Ident(pat) if pat.ident == *ident => Some(&*typed.ty),
                _ => None,
            },
            FnArg::Receiver(_) => None,
        })
    };
    // The keys: the one argument that is not skipped, or, among several,
    // the one slice (the others are the mistake).
    let slices: Vec<_> = keyed
        .iter()
        .copied()
        .filter(|arg| type_of(&arg.ident).and_then(slice_element).is_some())
        .collect();
    let keys = match (keyed.as_slice(), slices.as_slice()) {
        ([keys], _) | (_, [keys]) => *keys,
        ([], _) => {
            cx.error_spanned_by(
                &func.sig.ident,
                format!(
                    "`{name}` has no argument for the keys: take them as `ids: &[u64]` (every other argument is in `skip(...)`)"
                ),
            );
            return None;
        }
        _ => {
            cx.error_spanned_by(
                &func.sig.ident,
                format!(
                    "`{name}` needs one argument for the keys, a slice (`ids: &[u64]`), and every other argument in `skip(...)`"
                ),
            );
            return None;
        }
    };
    for extra in keyed.iter().filter(|arg| arg.ident != keys.ident) {
        let extra_name = &extra.name;
        cx.error_spanned_by(
            &extra.ident,
            format!(
                "a batch's entries are keyed by the elements of `{}` alone; `{extra_name}` would have to be part of the key: `skip({extra_name})` if it does not change the result, or cache per call with `#[cache_aside]`",
                keys.name
            ),
        );
    }
    let key_ty = type_of(&keys.ident)?;
    let Some(key_elem) = slice_element(key_ty) else {
        cx.error_spanned_by(
            key_ty,
            format!(
                "the keys of a batch are a slice: write `{}: &[{}]`",
                keys.name,
                element_hint(key_ty)
            ),
        );
        return None;
    };
    for template in &args.tags {
        if template.placeholders().any(|(root, _)| root == keys.name) {
            cx.error_spanned_by(
                &template.lit,
                format!(
                    "a batch's tags apply to every entry: a tag cannot name `{{{}}}`, the keys; name another argument (for each key's own tags, use `cache.entries(..).tags_with(..)`)",
                    keys.name
                ),
            );
        }
    }
    let ret: Type = match &func.sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => syn::parse_quote!(()),
    };
    let (map, error_ty) = match last_segment_arg(&ret, "Result") {
        Some(ok) => (ok, result_error(&ret)),
        None => (ret.clone(), None),
    };
    let Some((map_key, value_ty)) = hash_map(&map) else {
        cx.error_spanned_by(
            &func.sig.output,
            format!(
                "a batch returns what it found by key: write `-> HashMap<{}, V>` or `-> Result<HashMap<{}, V>, E>` (found `{}`)",
                spelled(&key_elem),
                spelled(&key_elem),
                spelled(&ret)
            ),
        );
        return None;
    };
    // The map's key type is the slice's element type: rustc says so if not.
    let _ = map_key;
    Some(BatchFn {
        keys: keys.ident.clone(),
        key_ty: key_elem,
        value_ty,
        error_ty,
    })
}

/// `&[T]` → `T`.
fn slice_element(ty: &Type) -> Option<Type> {
    match peel(ty) {
        Type::Reference(reference) if reference.mutability.is_none() => match peel(&reference.elem)
        {
            Type::Slice(slice) => Some((*slice.elem).clone()),
            _ => None,
        },
        _ => None,
    }
}

/// `T` in a hint for a keys argument of type `Vec<T>`, `&Vec<T>`, `T`.
fn element_hint(ty: &Type) -> String {
    let ty = match peel(ty) {
        Type::Reference(reference) => &*reference.elem,
        ty => ty,
    };
    match last_segment_arg(ty, "Vec") {
        Some(element) => spelled(&element),
        None => "K".to_owned(),
    }
}

/// `HashMap<K, V>` (under any path) → `(K, V)`.
fn hash_map(ty: &Type) -> Option<(Type, Type)> {
    let mut types = last_segment_args(ty, "HashMap")?.into_iter();
    Some((types.next()?, types.next()?))
}

/// The `E` of `Result<T, E>`; `None` when it is elided (`io::Result<T>`):
/// then the runtime infers it.
fn result_error(ty: &Type) -> Option<Type> {
    last_segment_args(ty, "Result")?.into_iter().nth(1)
}

/// The body of a batch function.
pub(crate) fn generate(
    func: &ItemFn,
    args: &Args,
    analyzed: &Func,
    batch: &BatchFn,
) -> TokenStream {
    let (Some(prefix), Some(ttl_ms)) = (&args.prefix, args.ttl_ms) else {
        unreachable!("missing options are errors")
    };
    let krate = &args.krate;
    let private = quote!(#krate::__private);
    let BatchFn {
        keys,
        key_ty,
        value_ty,
        error_ty,
    } = batch;
    let cache = local("__tc_cache");
    let missing = local("__tc_missing");
    let ret_value = local("__tc_ret");
    let tags_ident = local("__tc_tags");
    let binding = crate::expand::cache_binding(args, &cache, &private);
    let tags = crate::expand::rendered(
        &args.tags,
        analyzed,
        &private,
        &quote!(#private::TagPart::write_tag),
    );
    let mut spec = quote!(#private::Spec::new(#prefix, #ttl_ms));
    if let Some((_, ms)) = &args.resilience.cache_none {
        spec = quote!(#spec.cache_none(#ms));
    }
    let spec = crate::formats::spec(&private, spec, &args.formats);
    let ret = match &func.sig.output {
        ReturnType::Type(_, ty) => ty.to_token_stream(),
        ReturnType::Default => quote!(()),
    };
    let block = &func.block;
    // The keys the body sees are those found nowhere: its own argument,
    // shadowed.
    let keys_span = keys.span();
    let shadow = quote_spanned!(keys_span=> let #keys: &[#key_ty] = &#missing;);
    let body = quote! {
        move |#missing: ::std::vec::Vec<#key_ty>| async move {
            #shadow
            #[allow(unreachable_code, clippy::needless_return, clippy::let_and_return)]
            let #ret_value: #ret = #block;
            #ret_value
        }
    };
    let call = match error_ty {
        Some(error_ty) => quote! {
            #private::batch::<#key_ty, #value_ty, #error_ty, _, _>
        },
        None if last_segment_arg(&syn::parse_quote!(#ret), "Result").is_some() => {
            quote!(#private::batch::<#key_ty, #value_ty, _, _, _>)
        }
        None => quote!(#private::batch_infallible::<#key_ty, #value_ty, _, _>),
    };
    let check_formats = crate::formats::checks(&private, &args.formats);
    quote! {
        #check_formats
        #binding
        let #tags_ident: ::std::vec::Vec<::std::string::String> = #tags;
        #call(#cache, &const { #spec }, #keys, #tags_ident, #body).await
    }
}

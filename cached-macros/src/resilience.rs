//! The stampede and failure options of `#[cache_aside]`: their checks
//! against the function, and what they add to the generated code.
//!
//! `stale`, `refresh_ahead` and `timeout` make the body run in the
//! background (a refresh nobody waits for; a load that goes on after a slow
//! one was answered with the fail-safe value), so the generated code builds
//! a `Detached` loader: a closure holding owned copies of the arguments and
//! of `self`, which starts a run of the body on demand. In that body `self`
//! is renamed to a binding of the copy, as async-trait does.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::quote;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, ReceiverKind, Type};

use crate::attr::{Args, FAIL_SAFE, Resilience, TIMEOUT};
use crate::ctxt::Ctxt;
use crate::func::{Func, ShapeKind, spelled};
use crate::spans::{first_span, last_span, respanned};

/// The checks that need the function: what its return type can express,
/// and what a background run can copy.
pub(crate) fn check(func: &ItemFn, args: &Args, analyzed: &Func, cx: &mut Ctxt) {
    let r = &args.resilience;
    let name = &func.sig.ident;
    if let Some(output) = &analyzed.output {
        let ret = spelled(&output.ret);
        let can_fail = matches!(
            output.shape,
            ShapeKind::Fallible | ShapeKind::FallibleOptional
        );
        let has_none = matches!(
            output.shape,
            ShapeKind::Optional | ShapeKind::FallibleOptional
        );
        if let Some((option, _)) = &r.cache_none
            && !has_none
        {
            cx.error_spanned_by(
                option,
                format!(
                    "`cache_none` caches a `None`, but `{name}` returns `{ret}`, which has none: return `Option<T>` or `Result<Option<T>, E>`, or remove `cache_none`"
                ),
            );
        }
        if let Some((option, _)) = &r.hard_timeout
            && !can_fail
        {
            cx.error_spanned_by(
                option,
                format!(
                    "`hard_timeout` gives up on a slow load with an error, but `{name}` returns `{ret}`, which cannot hold one: return `Result<T, E>` with `E: From<tiercache::LoadTimeout>`, or use `timeout` with `fail_safe` to answer with the old value instead"
                ),
            );
        }
        if let Some((option, _)) = &r.fail_safe
            && !can_fail
            && r.timeout.is_none()
        {
            cx.error_spanned_by(
                option,
                format!(
                    "`fail_safe` serves the old value when the load fails or is slow, but `{name}` returns `{ret}`, which cannot fail, and has no `timeout`: add `timeout = \"2s\"`, or remove `fail_safe`"
                ),
            );
        }
    }
    if let Some((option, _)) = &r.timeout
        && r.fail_safe.is_none()
    {
        cx.error_spanned_by(
            option,
            format!(
                "`{TIMEOUT}` answers a slow load with the fail-safe value, but there is no `{FAIL_SAFE}`: add `fail_safe = \"1h\"` (how long past its ttl a value may still be served), or write `hard_timeout` to give up with an error"
            ),
        );
    }
    if let (Some((_, soft)), Some((hard, hard_ms))) = (&r.timeout, &r.hard_timeout)
        && hard_ms <= soft
    {
        let shown = |ms: u64| {
            if ms.is_multiple_of(1000) {
                format!("{}s", ms / 1000)
            } else {
                format!("{ms}ms")
            }
        };
        cx.error_spanned_by(
            hard,
            format!(
                "`hard_timeout` ({}) must be longer than `timeout` ({}): past `timeout` the callers take the fail-safe value while the load goes on, until `hard_timeout` ends it. Write a longer `hard_timeout`, e.g. `hard_timeout = \"{}\"`",
                shown(*hard_ms),
                shown(*soft),
                shown(soft * 5),
            ),
        );
    }
    if let Some(option) = r.detaching() {
        if func.sig.receiver().is_some() {
            crate::receiver::check_captures(&func.block, option, cx);
        }
        for input in &func.sig.inputs {
            let instead = match input {
                FnArg::Receiver(receiver) if borrowed(receiver) == Some(true) => {
                    "take `&self` (keep what the body changes in an `Arc<Mutex<_>>` or an atomic, which the copies share)".to_owned()
                }
                FnArg::Typed(arg) => match (&*arg.pat, &*arg.ty) {
                    (syn::Pat::Ident(pat), Type::Reference(r)) if r.mutability.is_some() => {
                        let (name, referent) = (&pat.ident, spelled(&r.elem));
                        format!("take `{name}: &{referent}` or `{name}: {referent}`")
                    }
                    (_, Type::Reference(r)) if r.mutability.is_some() => {
                        format!("take `&{}` or the value", spelled(&r.elem))
                    }
                    _ => continue,
                },
                FnArg::Receiver(_) => continue,
            };
            cx.error_spanned_by(
                input,
                format!(
                    "`{option}` runs `{name}` again in the background, on copies of its arguments, and cannot copy a `&mut` borrow: {instead}, or remove `{option}`"
                ),
            );
        }
    }
}

/// `Some(mutable)` for a receiver that borrows `self` (`&self`,
/// `&mut self`, `self: &Self`), `None` for one that takes it.
fn borrowed(receiver: &syn::Receiver) -> Option<bool> {
    match &receiver.kind {
        ReceiverKind::Reference(_, _, mutability) => Some(mutability.is_some()),
        ReceiverKind::Typed(_, ty) => match &**ty {
            Type::Reference(reference) => Some(reference.mutability.is_some()),
            _ => None,
        },
        _ => None,
    }
}

/// `Spec::new(prefix, ttl).stale(ms)…`: the options as a `const` expression.
pub(crate) fn spec(
    private: &TokenStream,
    prefix: &TokenStream,
    ttl_ms: u64,
    r: &Resilience,
) -> TokenStream {
    let mut spec = quote!(#private::Spec::new(#prefix, #ttl_ms));
    let durations = [
        (&r.stale, "stale"),
        (&r.fail_safe, "fail_safe"),
        (&r.timeout, "timeout"),
        (&r.hard_timeout, "hard_timeout"),
        (&r.cache_none, "cache_none"),
    ];
    for (option, method) in durations {
        if let Some((_, ms)) = option {
            let method = Ident::new(method, Span::call_site());
            spec = quote!(#spec.#method(#ms));
        }
    }
    if let Some((_, beta)) = r.refresh_ahead {
        spec = quote!(#spec.refresh_ahead(#beta));
    }
    if let Some((_, lock)) = r.lock {
        spec = quote!(#spec.lock(#lock));
    }
    spec
}

/// The function's error for `hard_timeout`, spanned on the option so that a
/// missing `From<LoadTimeout>` is reported there.
///
/// The conversion goes through a local trait, so that the error says what
/// `hard_timeout` needs rather than only that a bound does not hold.
pub(crate) fn timed_out(private: &TokenStream, ret: &Type, r: &Resilience) -> TokenStream {
    let Some((option, ms)) = &r.hard_timeout else {
        return quote!(::core::option::Option::None);
    };
    // Spanned on the option, so that a missing `From<LoadTimeout>` is
    // reported there, with `HardTimeoutError`'s message.
    let error = respanned(
        quote!(#private::HardTimeoutError::timed_out(#ms)),
        option.span(),
    );
    quote! {
        ::core::option::Option::Some(
            (|| ::core::result::Result::Err(#error)) as fn() -> #ret
        )
    }
}

/// `Detached::new(...)`: owned copies of `self` and the arguments, and a
/// closure that starts the body on fresh copies of them (`Owned::owned`
/// again, rather than `Clone::clone`: a type that is not `Owned` is then
/// reported once, with `Owned`'s message, on the argument or `self`; see
/// `copy_of`).
pub(crate) fn detached(func: &ItemFn, ret: &Type, private: &TokenStream) -> TokenStream {
    let this = Ident::new("__tc_self", Span::call_site());
    let owned_this = Ident::new("__tc_self_owned", Span::mixed_site());
    let mut copies = Vec::new();
    let mut clones = Vec::new();
    let mut rebinds = Vec::new();
    // A borrowed `self` or argument is copied from `&*name`, not `name` (see
    // `copy_of`); clippy's `borrow_deref_ref` would flag that on the user's
    // tokens.
    for input in &func.sig.inputs {
        match input {
            FnArg::Receiver(receiver) => {
                let (first, last) = (first_span(receiver), receiver.self_token.span);
                let self_token = Ident::new("self", receiver.self_token.span);
                let copy = if borrowed(receiver).is_some() {
                    rebinds.push(quote!(let #this = &#owned_this;));
                    copy_of(private, quote!(&*#self_token), first, last)
                } else {
                    rebinds.push(quote!(let #this = #owned_this;));
                    copy_of(private, quote!(&#self_token), first, last)
                };
                copies.push(quote!(#[allow(clippy::borrow_deref_ref)] let #owned_this = #copy;));
                let again = owned_copy(private, quote!(&#owned_this), first, last);
                clones.push(quote!(let #owned_this = #again;));
            }
            FnArg::Typed(arg) => {
                let syn::Pat::Ident(pat) = &*arg.pat else {
                    continue;
                };
                let ident = &pat.ident;
                // What exists only under a `cfg` is copied only under it.
                let cfg = arg.attrs.iter().filter(|attr| attr.path().is_ident("cfg"));
                let cfg = quote!(#(#cfg)*);
                let (first, last) = (ident.span(), last_span(&arg.ty));
                match crate::func::peel(&arg.ty) {
                    Type::Reference(reference) => {
                        let copy = copy_of(private, quote!(&*#ident), first, last);
                        copies.push(
                            quote!(#cfg #[allow(clippy::borrow_deref_ref)] let #ident = #copy;),
                        );
                        // The copy of an `&impl Trait` is the type itself
                        // (through `Clone`), which no `let` can name.
                        let rebind = match crate::func::peel(&reference.elem) {
                            Type::ImplTrait(_) => quote!(&#ident),
                            referent => {
                                quote!(::core::borrow::Borrow::<#referent>::borrow(&#ident))
                            }
                        };
                        rebinds.push(quote!(#cfg #[allow(unused_variables)] let #ident = #rebind;));
                    }
                    _ => {
                        let copy = copy_of(private, quote!(&#ident), first, last);
                        copies.push(quote!(#cfg let #ident = #copy;));
                    }
                }
                let again = owned_copy(private, quote!(&#ident), first, last);
                let mutability = &pat.mutability;
                // An argument only the key uses is not used by the body.
                clones
                    .push(quote!(#cfg #[allow(unused_variables)] let #mutability #ident = #again;));
            }
        }
    }
    let block = crate::receiver::renamed(&func.block, &this);
    let ret_value = Ident::new("__tc_ret", Span::mixed_site());
    quote! {{
        // Which of the two the probe finds depends on the type.
        #[allow(unused_imports)]
        use #private::{ProbeNotThreadSafe as _, ProbeThreadSafe as _};
        #(#copies)*
        #private::Detached::new(move || {
            #(#clones)*
            #[allow(unreachable_code, clippy::needless_return, clippy::let_and_return)]
            async move {
                #(#rebinds)*
                let #ret_value: #ret = #block;
                #ret_value
            }
        })
    }}
}

/// The first copy of an argument or `self` (`reference` is `&name`, or
/// `&*name` for a reference): [`owned_copy`], then checked to be shareable
/// between threads, by the runtime's probe (see its `copy.rs`), so that a
/// type that is not `Send + Sync` is one error, where the type ends.
fn copy_of(private: &TokenStream, reference: TokenStream, first: Span, last: Span) -> TokenStream {
    let owned = owned_copy(private, reference.clone(), first, last);
    let probe = spanned_call(
        quote!(#private::SendProbe::of),
        spanned_reference(reference, first, last),
        last,
    );
    let method = Ident::new("thread_safe", last);
    spanned_call(
        quote!(#private::Shared::shared),
        quote!(#owned, (&#probe).#method()),
        last,
    )
}

/// `Owned::owned(<reference>)` (`&name`, or `&*name` for a reference),
/// with `name` spanned on `first` and the rest on `last`: the first step of
/// a copy, and each run's copy of the first (on a type that failed a check,
/// rustc reports nothing more).
///
/// Found by trying: this way rustc reports a type that is not `Owned` on
/// the argument, with `Owned`'s message and its own help (`#[derive(Clone)]`).
/// Spanned otherwise, the error points at the whole attribute, or loses the
/// message for "consider borrowing here" (a `&` before the argument's name
/// in the signature, which is wrong).
fn owned_copy(
    private: &TokenStream,
    reference: TokenStream,
    first: Span,
    last: Span,
) -> TokenStream {
    let reference = spanned_reference(reference, first, last);
    spanned_call(quote!(#private::Owned::owned), reference, last)
}

/// `&name` or `&*name`, with `name` spanned on `first`, `&` on `last` and
/// `*` on `first`.
fn spanned_reference(reference: TokenStream, first: Span, last: Span) -> TokenStream {
    let mut tokens: Vec<TokenTree> = reference.into_iter().collect();
    let mut name = tokens.pop();
    if let Some(name) = &mut name {
        // Keeps the name's hygiene (`__tc_self_owned` is the macro's).
        name.set_span(name.span().located_at(first));
    }
    // `&` on `last`; the `*` of `&*name` on `first`.
    let reference: TokenStream = tokens
        .into_iter()
        .enumerate()
        .map(|(index, mut token)| {
            token.set_span(if index == 0 { last } else { first });
            token
        })
        .collect();
    quote!(#reference #name)
}

/// `path(args)`, the path and the parentheses spanned on `span`.
fn spanned_call(path: TokenStream, args: TokenStream, span: Span) -> TokenStream {
    let path = respanned(path, span);
    let mut args = proc_macro2::Group::new(proc_macro2::Delimiter::Parenthesis, args);
    args.set_span(span);
    quote!(#path #args)
}

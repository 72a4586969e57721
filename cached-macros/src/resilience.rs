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
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, ItemFn, ReceiverKind, Type};

use crate::attr::{Args, FAIL_SAFE, Resilience, TIMEOUT};
use crate::ctxt::Ctxt;
use crate::func::{Func, ShapeKind};

fn tokens(ty: &Type) -> String {
    ty.to_token_stream()
        .to_string()
        .replace(" < ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
}

/// The checks that need the function: what its return type can express,
/// and what a background run can copy.
pub(crate) fn check(func: &ItemFn, args: &Args, analyzed: &Func, cx: &mut Ctxt) {
    let r = &args.resilience;
    let name = &func.sig.ident;
    if let Some(output) = &analyzed.output {
        let ret = tokens(&output.ret);
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
        cx.error_spanned_by(
            hard,
            "`hard_timeout` must be longer than `timeout`: past `timeout` the callers take the fail-safe value while the load goes on, until `hard_timeout` ends it",
        );
    }
    if let Some(option) = r.detaching() {
        for input in &func.sig.inputs {
            let mutable = match input {
                FnArg::Receiver(receiver) => borrowed(receiver) == Some(true),
                FnArg::Typed(arg) => {
                    matches!(&*arg.ty, Type::Reference(r) if r.mutability.is_some())
                }
            };
            if mutable {
                cx.error_spanned_by(
                    input,
                    format!(
                        "`{option}` runs `{name}` again in the background, on copies of its arguments, and cannot copy a `&mut` borrow: take `&self` or the value, or remove `{option}`"
                    ),
                );
            }
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
pub(crate) fn timed_out(private: &TokenStream, ret: &Type, r: &Resilience) -> TokenStream {
    match &r.hard_timeout {
        Some((option, ms)) => {
            let from = quote_spanned!(option.span()=> ::core::convert::From::from);
            quote! {
                ::core::option::Option::Some(
                    (|| ::core::result::Result::Err(#from(#private::LoadTimeout::after_ms(#ms))))
                        as fn() -> #ret
                )
            }
        }
        None => quote!(::core::option::Option::None),
    }
}

/// `Detached::new(...)`: owned copies of `self` and the arguments, and a
/// closure that starts the body on fresh clones of them.
pub(crate) fn detached(func: &ItemFn, ret: &Type, private: &TokenStream) -> TokenStream {
    let this = Ident::new("__tc_self", Span::call_site());
    let owned_this = Ident::new("__tc_self_owned", Span::mixed_site());
    let mut copies = Vec::new();
    let mut clones = Vec::new();
    let mut rebinds = Vec::new();
    for input in &func.sig.inputs {
        match input {
            FnArg::Receiver(receiver) => {
                let span = receiver.span();
                let self_token = Ident::new("self", receiver.self_token.span);
                if borrowed(receiver).is_some() {
                    copies.push(quote_spanned!(span=> let #owned_this = #private::Owned::owned(#self_token);));
                    rebinds.push(quote!(let #this = &#owned_this;));
                } else {
                    copies.push(quote_spanned!(span=> let #owned_this = #private::Owned::owned(&#self_token);));
                    rebinds.push(quote!(let #this = #owned_this;));
                }
                clones.push(quote!(let #owned_this = ::core::clone::Clone::clone(&#owned_this);));
            }
            FnArg::Typed(arg) => {
                let syn::Pat::Ident(pat) = &*arg.pat else {
                    continue;
                };
                let ident = &pat.ident;
                let span = arg.ty.span();
                match &*arg.ty {
                    Type::Reference(reference) => {
                        let referent = &reference.elem;
                        copies.push(
                            quote_spanned!(span=> let #ident = #private::Owned::owned(#ident);),
                        );
                        rebinds.push(quote!(let #ident: &#referent = ::core::borrow::Borrow::borrow(&#ident);));
                    }
                    _ => {
                        copies.push(
                            quote_spanned!(span=> let #ident = #private::Owned::owned(&#ident);),
                        );
                    }
                }
                let mutability = &pat.mutability;
                clones.push(quote!(let #mutability #ident = ::core::clone::Clone::clone(&#ident);));
            }
        }
    }
    let block = rename_self(func.block.to_token_stream(), &this);
    let ret_value = Ident::new("__tc_ret", Span::mixed_site());
    quote! {{
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

/// Replaces the `self` keyword (not `self::` paths) with `this`.
fn rename_self(tokens: TokenStream, this: &Ident) -> TokenStream {
    let mut out = Vec::new();
    let mut iter = tokens.into_iter().peekable();
    while let Some(token) = iter.next() {
        match token {
            TokenTree::Ident(ident) if ident == "self" => {
                let path = matches!(iter.peek(), Some(TokenTree::Punct(p)) if p.as_char() == ':');
                if path {
                    out.push(TokenTree::Ident(ident));
                } else {
                    out.push(TokenTree::Ident(Ident::new(
                        &this.to_string(),
                        ident.span(),
                    )));
                }
            }
            TokenTree::Group(group) => {
                let mut renamed =
                    proc_macro2::Group::new(group.delimiter(), rename_self(group.stream(), this));
                renamed.set_span(group.span());
                out.push(TokenTree::Group(renamed));
            }
            other => out.push(other),
        }
    }
    out.into_iter().collect()
}

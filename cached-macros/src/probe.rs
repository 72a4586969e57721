//! The compile-time check that a return type read as a plain value is not a
//! `Result` or an `Option` in disguise.
//!
//! `func::shape_of` reads the shape from how the type is written, so
//! `type ApiResult<T> = Result<T, ApiError>;` looks like a plain value: its
//! `Err` would be cached. For such a type the generated code probes the real
//! one (`__private::ShapeProbe`, by autoref specialization: see
//! `shape_check.rs` in the runtime) and requires a trait generated here,
//! implemented for the probe's "plain" answer only: one of the runtime's
//! checks (`NotAResult`, `NotAnOption`, … one per attribute and shape),
//! whose `#[diagnostic::on_unimplemented]` says what to write, with rustc
//! filling in the real type (`{Self}`, or the `T` of an `Option<T>`). They
//! are not generated here: a diagnostic attribute in generated code does not
//! resolve in a `#![no_implicit_prelude]` module.
//!
//! Dispatching on the real type instead (making the alias just work) would
//! need the shape as a type in the generated calls: an answer of the probe
//! is a value, and the runtime's entry points take the shape as a type
//! parameter they cannot infer (`Plain` fits every return type), so that
//! would take new entry points taking the shape by value, and moving the
//! shape-dependent checks of options (`cache_none`, `hard_timeout`,
//! `fail_safe`) from the macro into the type system.
//!
//! For a plain value, the codec is built through the same check: when the
//! probe finds a `Result`, the codec's type does not resolve, so the error
//! that says what to write is the only one (not also "`ApiError` is not
//! `Serialize`", which is not what is wrong).

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::Ident;
use syn::spanned::Spanned;

use crate::attr::Kind;
use crate::func::{Output, ShapeKind};
use crate::spans::{first_span, last_span};

/// A shape the probe may find.
#[derive(Clone, Copy)]
enum Found {
    Result,
    Option,
}

impl Found {
    /// The runtime's check, and its arguments after `M` (the probe's
    /// answer): an `Option`'s check also takes what it holds, and in an
    /// `Ok`, the error type, for the message.
    fn check(
        self,
        private: &TokenStream,
        kind: Kind,
        output: &Output,
        (m, err): (&Ident, &Ident),
    ) -> TokenStream {
        let fallible = matches!(output.shape, ShapeKind::Fallible);
        let some = quote!(<#m as #private::Probed>::Some);
        match (self, kind) {
            (Self::Result, Kind::CacheAside | Kind::CacheBatch) => quote!(#private::NotAResult<#m>),
            (Self::Result, Kind::WriteThrough) => quote!(#private::NotAStoredResult<#m>),
            (Self::Result, Kind::Invalidates) => quote!(#private::NotAnInvalidatingResult<#m>),
            (Self::Option, Kind::WriteThrough) if fallible => {
                quote!(#private::NotAStoredOkOption<#m, #some, #err>)
            }
            (Self::Option, Kind::WriteThrough) => quote!(#private::NotAStoredOption<#m, #some>),
            (Self::Option, _) if fallible => quote!(#private::NotAnOkOption<#m, #some, #err>),
            (Self::Option, _) => quote!(#private::NotAnOption<#m, #some>),
        }
    }
}

/// The shapes `output.hidden` asks to rule out, in order.
fn checks(output: &Output) -> Vec<Found> {
    let mut checks = Vec::new();
    if output.hidden.result {
        checks.push(Found::Result);
    }
    if output.hidden.option {
        checks.push(Found::Option);
    }
    checks
}

/// The generic parameters of the checking function (`R`, the probed type,
/// `M`, the probe's answer, and `E`, the error type of a `Result` whose
/// `Ok` is probed, for the message), its where clauses, and the type they
/// let through: `R` itself, when every check holds.
///
/// Only parameters: an item nested in the function cannot name its
/// generics or `Self`, which the types may mention; the call passes them.
fn bounds(
    private: &TokenStream,
    kind: Kind,
    output: &Output,
    checks: &[Found],
) -> (TokenStream, Vec<TokenStream>, TokenStream) {
    let site = Span::mixed_site();
    let (r, m, e) = (
        Ident::new("__TcR", site),
        Ident::new("__TcM", site),
        Ident::new("__TcE", site),
    );
    let mut checked = quote!(#r);
    let mut bounds = vec![quote!(#m: #private::Probed)];
    for found in checks {
        let check = found.check(private, kind, output, (&m, &e));
        bounds.push(quote!(#checked: #check));
        checked = quote!(<#checked as #check>::Value);
    }
    let sized = quote!(?::core::marker::Sized);
    let params = quote!(#r: #sized, #m, #e: #sized);
    (params, bounds, checked)
}

/// `let #codec = ...;`: the value's codec, after the checks the value type
/// needs.
pub(crate) fn codec(
    private: &TokenStream,
    kind: Kind,
    output: &Output,
    codec: &Ident,
) -> TokenStream {
    let value_ty = &output.value_ty;
    let span = value_ty.span();
    if let Some(make) = arc_codec(private, value_ty, codec) {
        return make;
    }
    if !output.hidden.result {
        // Without a `Result` to rule out, the codec's own errors are the
        // ones to see: it is built directly.
        let check = check(private, kind, output);
        let make = quote_spanned!(span=> #private::codec::<#value_ty>());
        return quote! {
            #check
            let #codec = #make;
        };
    }
    let checks = checks(output);
    let (params, bounds, checked) = bounds(private, kind, output, &checks);
    let answer = Ident::new("__TcM", Span::mixed_site());
    let call = probe_call(private, output, "__tc_codec_of");
    let imports = imports(private);
    quote! {
        let #codec = {
            #imports
            fn __tc_codec_of<#params>(_: #answer) -> #private::TypeCodec<#checked>
            where
                #(#bounds,)*
                #checked: #private::Cacheable,
            {
                #private::codec()
            }
            #call
        };
    }
}

/// A statement that fails to compile, saying what to write, when the value
/// type is a shape `output.hidden` rules out; nothing when there is none.
pub(crate) fn check(private: &TokenStream, kind: Kind, output: &Output) -> TokenStream {
    let checks = checks(output);
    if checks.is_empty() {
        return quote!();
    }
    let (params, bounds, _) = bounds(private, kind, output, &checks);
    let answer = Ident::new("__TcM", Span::mixed_site());
    let call = probe_call(private, output, "__tc_check");
    let imports = imports(private);
    quote! {
        {
            #imports
            fn __tc_check<#params>(_: #answer)
            where
                #(#bounds,)*
            {
            }
            #call;
        }
    }
}

/// `function::<value_ty, _>((&ShapeProbe::<value_ty>::new()).shape())`,
/// spanning exactly the type as written: from its first token to its last
/// (rustc spans a call from its name to its closing parenthesis), so that
/// the failed bound and the call's return type are reported at one place,
/// once.
fn probe_call(private: &TokenStream, output: &Output, function: &str) -> TokenStream {
    let value_ty = &output.value_ty;
    let (first, last) = (first_span(value_ty), last_span(value_ty));
    let function = Ident::new(function, first);
    let probe = quote_spanned!(first=> (&#private::ShapeProbe::<#value_ty>::new()).shape());
    let mut args = Group::new(Delimiter::Parenthesis, probe);
    args.set_span(last);
    let ret = &output.ret;
    let err = match output.shape {
        ShapeKind::Fallible => quote_spanned!(first=> <#ret as #private::ErrOf>::Err),
        _ => quote_spanned!(first=> ()),
    };
    quote_spanned!(first=> #function::<#value_ty, _, #err> #args)
}

/// `let #codec = arc_codec::<T>();` for a value `Arc<T>` (see
/// `func::shared`), spanned on the type: what the function and its
/// companions build alike.
pub(crate) fn arc_codec(
    private: &TokenStream,
    value_ty: &syn::Type,
    codec: &Ident,
) -> Option<TokenStream> {
    let inner = crate::func::shared(value_ty)?;
    let span = value_ty.span();
    Some(quote_spanned!(span=> let #codec = #private::arc_codec::<#inner>();))
}

/// The probe's methods in scope.
fn imports(private: &TokenStream) -> TokenStream {
    quote! {
        // Which of the three the probe finds depends on the type.
        #[allow(unused_imports)]
        use #private::{ProbeOption as _, ProbePlain as _, ProbeResult as _};
    }
}

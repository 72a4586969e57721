//! The compile-time check that a return type read as a plain value is not a
//! `Result` or an `Option` in disguise.
//!
//! `func::shape_of` reads the shape from how the type is written, so
//! `type ApiResult<T> = Result<T, ApiError>;` looks like a plain value: its
//! `Err` would be cached. For such a type the generated code probes the real
//! one (`__private::ShapeProbe`, by autoref specialization: see
//! `shape_check.rs` in the runtime) and requires a trait generated here,
//! implemented for the probe's "plain" answer only. Its
//! `#[diagnostic::on_unimplemented]` names the type as written and says what
//! to write, with rustc filling in the real type (`{Self}`, or the `T` of an
//! `Option<T>`).
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

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{GenericArgument, Ident, PathArguments, Type};

use crate::attr::Kind;
use crate::func::{Output, ShapeKind, peel, spelled};

/// A shape the probe may find.
#[derive(Clone, Copy)]
enum Found {
    Result,
    Option,
}

impl Found {
    fn trait_name(self, span: Span) -> Ident {
        match self {
            Self::Result => Ident::new("__TcNotAResult", span),
            Self::Option => Ident::new("__TcNotAnOption", span),
        }
    }

    /// The trait's arguments after `M`, the probe's answer: an `Option`'s
    /// check also takes what it holds, for the message.
    fn args(self, private: &TokenStream, m: &Ident) -> TokenStream {
        match self {
            Self::Result => quote!(<#m>),
            Self::Option => quote!(<#m, <#m as #private::Probed>::Some>),
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
/// and `M`, the probe's answer), its where clauses, and the type they let
/// through: `R` itself, when every check holds.
fn bounds(
    private: &TokenStream,
    checks: &[Found],
    span: Span,
) -> (Ident, Ident, Vec<TokenStream>, TokenStream) {
    let site = Span::mixed_site();
    let (r, m) = (Ident::new("__TcR", site), Ident::new("__TcM", site));
    let mut checked = quote!(#r);
    let mut bounds = vec![quote!(#m: #private::Probed)];
    for found in checks {
        let name = found.trait_name(span);
        let args = found.args(private, &m);
        bounds.push(quote!(#checked: #name #args));
        checked = quote!(<#checked as #name #args>::Value);
    }
    (r, m, bounds, checked)
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
    let items = items(private, kind, output, &checks);
    let (r, m, bounds, checked) = bounds(private, &checks, span);
    let call = probe_call(private, value_ty, "__tc_codec_of");
    quote! {
        let #codec = {
            #items
            fn __tc_codec_of<#r: ?::core::marker::Sized, #m>(_: #m) -> #private::Codec<#checked>
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
    let value_ty = &output.value_ty;
    let items = items(private, kind, output, &checks);
    let (r, m, bounds, _) = bounds(private, &checks, value_ty.span());
    let call = probe_call(private, value_ty, "__tc_check");
    quote! {
        {
            #items
            fn __tc_check<#r: ?::core::marker::Sized, #m>(_: #m)
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
fn probe_call(private: &TokenStream, value_ty: &Type, function: &str) -> TokenStream {
    let (first, last) = (first_span(value_ty), last_span(value_ty));
    let function = Ident::new(function, first);
    let probe = quote_spanned!(first=> (&#private::ShapeProbe::<#value_ty>::new()).shape());
    let mut args = Group::new(Delimiter::Parenthesis, probe);
    args.set_span(last);
    quote_spanned!(first=> #function::<#value_ty, _> #args)
}

fn first_span(ty: &Type) -> Span {
    ty.to_token_stream()
        .into_iter()
        .next()
        .map_or_else(|| ty.span(), |token| token.span())
}

/// The span of the last token of a type (`>` of `Vec<u8>`).
fn last_span(ty: &Type) -> Span {
    match ty.to_token_stream().into_iter().last() {
        Some(TokenTree::Group(group)) => group.span_close(),
        Some(token) => token.span(),
        None => ty.span(),
    }
}

/// The probe's methods in scope, and one trait per check, implemented for
/// the answers that pass it; `Value` is the probed type itself.
fn items(private: &TokenStream, kind: Kind, output: &Output, checks: &[Found]) -> TokenStream {
    let span = output.value_ty.span();
    let traits = checks.iter().map(|&found| {
        let name = found.trait_name(span);
        let Diagnostic {
            message,
            label,
            note,
        } = diagnostic(kind, output, found);
        let definition = match found {
            Found::Result => quote! {
                trait #name<__TcM> {
                    type Value: ?::core::marker::Sized;
                }
                impl<__TcR: ?::core::marker::Sized> #name<#private::IsPlain> for __TcR {
                    type Value = __TcR;
                }
                impl<__TcR: ?::core::marker::Sized, __TcT: ?::core::marker::Sized>
                    #name<#private::IsOption<__TcT>> for __TcR
                {
                    type Value = __TcR;
                }
            },
            Found::Option => quote! {
                trait #name<__TcM, __TcT: ?::core::marker::Sized> {
                    type Value: ?::core::marker::Sized;
                }
                impl<__TcR: ?::core::marker::Sized, __TcT: ?::core::marker::Sized>
                    #name<#private::IsPlain, __TcT> for __TcR
                {
                    type Value = __TcR;
                }
                impl<__TcR: ?::core::marker::Sized, __TcT: ?::core::marker::Sized>
                    #name<#private::IsResult, __TcT> for __TcR
                {
                    type Value = __TcR;
                }
            },
        };
        quote! {
            #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note)]
            #definition
        }
    });
    quote! {
        // Which of the three the probe finds depends on the type.
        #[allow(unused_imports)]
        use #private::{ProbeOption as _, ProbePlain as _, ProbeResult as _};
        #(#traits)*
    }
}

struct Diagnostic {
    message: String,
    label: String,
    note: String,
}

/// What the error says, with `{Self}` standing for the real type and
/// `{__TcT}` for what an `Option` holds (rustc fills them in).
fn diagnostic(kind: Kind, output: &Output, found: Found) -> Diagnostic {
    let attribute = kind.attribute();
    let caches = if kind == Kind::WriteThrough {
        "stores"
    } else {
        "caches"
    };
    // What the attribute does with an `Option` it sees.
    let keeps = |some: &str, none: &str| match kind {
        Kind::WriteThrough => format!("stores `{some}` and never `{none}`"),
        _ => format!("caches `{some}`, and `{none}` only with `cache_none`,"),
    };
    let written = escape(&spelled(peel(&output.value_ty)));
    let label = match found {
        Found::Result => format!("`{attribute}` sees a `Result` only where it is written out"),
        Found::Option => format!("`{attribute}` sees an `Option` only where it is written out"),
    };
    match (found, kind) {
        (Found::Result, Kind::Invalidates) => Diagnostic {
            message: format!(
                "`{written}` is a `Result`: write the return type as `{{Self}}` so that `#[invalidates]` can tell a failure from a success"
            ),
            label,
            note: format!(
                "`#[invalidates]` reads the return type from how it is written, and an alias or a macro hides a `Result`: written as `{written}`, an `Err` would count as a success (with `when = \"always\"`, which invalidates either way, the alias is fine)"
            ),
        },
        (Found::Result, _) => Diagnostic {
            message: format!(
                "`{written}` is a `Result`: write the return type as `{{Self}}` so that errors are never cached"
            ),
            label,
            note: format!(
                "`{attribute}` {caches} `Ok` and returns `Err` unchanged when it sees `Result<T, E>` in the signature; an alias or a macro hides it: written as `{written}`, every result would be cached, `Err` included"
            ),
        },
        (Found::Option, _) if matches!(output.shape, ShapeKind::Fallible) => {
            let ret = with_ok_written_out(&output.ret);
            Diagnostic {
                message: format!(
                    "`{written}` is an `Option`: write the return type as `{ret}` so that an `Ok(None)` is never cached as a value"
                ),
                label,
                note: format!(
                    "`{attribute}` {} when it sees `Result<Option<T>, E>` in the signature; an alias or a macro hides the `Option`: written as `{written}`, an `Ok(None)` would be cached like any value",
                    keeps("Ok(Some(v))", "Ok(None)")
                ),
            }
        }
        (Found::Option, _) => Diagnostic {
            message: format!(
                "`{written}` is an `Option`: write the return type as `Option<{{__TcT}}>` so that a `None` is never cached as a value"
            ),
            label,
            note: format!(
                "`{attribute}` {} when it sees `Option<T>` in the signature; an alias or a macro hides it: written as `{written}`, a `None` would be cached like any value",
                keeps("Some(v)", "None")
            ),
        },
    }
}

/// `io::Result<MaybeUser>` → `` io::Result<Option<{__TcT}>> ``: the return
/// type to write, with rustc filling in what the `Option` holds.
fn with_ok_written_out(ret: &Type) -> String {
    const PLACEHOLDER: &str = "__TC_OPTION__";
    let mut ret = peel(ret).clone();
    if let Type::Path(path) = &mut ret
        && let Some(segment) = path.path.segments.last_mut()
        && let PathArguments::AngleBracketed(args) = &mut segment.arguments
        && let Some(ok) = args.args.iter_mut().find_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
    {
        *ok = Type::Verbatim(Ident::new(PLACEHOLDER, Span::call_site()).into_token_stream());
        return escape(&spelled(&ret)).replace(PLACEHOLDER, "Option<{__TcT}>");
    }
    "Result<Option<{__TcT}>, E>".to_owned()
}

/// Braces are `on_unimplemented`'s placeholders: a type written with a
/// const block keeps its own.
fn escape(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

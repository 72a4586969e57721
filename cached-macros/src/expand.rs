//! Writes the cached function.
//!
//! The generated body builds the key, tries L1 inline, and hands the rest to
//! `__private::load` with the original body as a future. On any error the
//! original function is emitted unchanged, followed by the errors, so the
//! user sees only what is wrong and the IDE keeps working.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemFn};

use crate::attr::CacheAsideArgs;
use crate::ctxt::Ctxt;
use crate::func::{Arg, Func};
use crate::template::{Piece, Template};

pub(crate) fn cache_aside(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(error) => {
            let error = syn::Error::new(
                error.span(),
                format!("`#[cache_aside]` goes on an `async fn` with a body: {error}"),
            );
            return with_errors(item, error);
        }
    };
    let mut cx = Ctxt::default();
    let args = CacheAsideArgs::parse(args, &mut cx);
    let analyzed = Func::analyze(&func, &mut cx);
    if let (Some(args), Some(analyzed)) = (&args, &analyzed) {
        check_key_arguments(&func, args, analyzed, &mut cx);
    }
    match (cx.check(), args, analyzed) {
        (Ok(()), Some(args), Some(analyzed)) => {
            let body = generate(&func, &args, &analyzed);
            func.block = Box::new(syn::parse_quote!({ #body }));
            quote!(#func)
        }
        (Err(error), _, _) => with_errors(item, error),
        (Ok(()), _, _) => unreachable!("options and function were checked"),
    }
}

fn with_errors(item: TokenStream, error: syn::Error) -> TokenStream {
    let errors = error.into_compile_error();
    quote!(#item #errors)
}

fn argument_list(args: &[Arg]) -> String {
    if args.is_empty() {
        return "it has none".to_owned();
    }
    let names: Vec<String> = args.iter().map(|a| format!("`{}`", a.ident)).collect();
    format!("its arguments are {}", names.join(", "))
}

/// `skip(...)` and the template name arguments that exist; with a template,
/// every argument is either in it or skipped.
fn check_key_arguments(func: &ItemFn, args: &CacheAsideArgs, analyzed: &Func, cx: &mut Ctxt) {
    let name = &func.sig.ident;
    let is_arg = |ident: &str| analyzed.args.iter().any(|a| a.ident == ident);
    for skipped in &args.skip {
        if skipped == "self" {
            cx.error_spanned_by(
                skipped,
                "`self` is never part of the key: remove it from `skip(...)`",
            );
        } else if !is_arg(&skipped.to_string()) {
            cx.error_spanned_by(
                skipped,
                format!(
                    "`skip({skipped})`: `{name}` has no argument `{skipped}`; {}",
                    argument_list(&analyzed.args)
                ),
            );
        }
    }
    let Some(template) = &args.key else { return };
    let has_self = func.sig.receiver().is_some();
    for (root, _) in template.placeholders() {
        if root == "self" && has_self {
            continue;
        }
        if !is_arg(root) {
            cx.error_spanned_by(
                &template.lit,
                format!(
                    "key template names `{{{root}}}`, but `{name}` has no argument `{root}`; {}",
                    argument_list(&analyzed.args)
                ),
            );
        } else if let Some(skipped) = args.skip.iter().find(|s| *s == root) {
            cx.error_spanned_by(
                skipped,
                format!("`{root}` is skipped, but the key template uses `{{{root}}}`: remove one of them"),
            );
        }
    }
    for arg in &analyzed.args {
        let used = template.placeholders().any(|(root, _)| arg.ident == root);
        let skipped = args.skip.iter().any(|s| *s == arg.ident);
        if !used && !skipped {
            let ident = &arg.ident;
            cx.error_spanned_by(
                ident,
                format!(
                    "argument `{ident}` is not in the key template {:?}: calls that differ only in `{ident}` would share one entry. Add `{{{ident}}}` to `key`, or `skip({ident})` if it does not change the result",
                    template.lit.value()
                ),
            );
        }
    }
}

fn generate(func: &ItemFn, args: &CacheAsideArgs, analyzed: &Func) -> TokenStream {
    let krate = &args.krate;
    let private = quote!(#krate::__private);
    let site = Span::mixed_site();
    let cache = Ident::new("__tc_cache", site);
    let key = Ident::new("__tc_key", site);
    let writer = Ident::new("__tc_writer", site);
    let hit = Ident::new("__tc_hit", site);
    let owned = Ident::new("__tc_owned", site);
    let body_future = Ident::new("__tc_body", site);
    let ret_value = Ident::new("__tc_ret", site);

    let prefix = &args.prefix;
    let ttl_ms = args.ttl_ms;
    let ret = &analyzed.ret;
    let value_ty = &analyzed.value_ty;
    let shape = format_ident!("{}", analyzed.shape.runtime_name());
    let block = &func.block;

    let cache_expr = match &args.cache {
        Some(expr) => quote_spanned!(expr.span()=> &(#expr)),
        None => quote!(#private::global()),
    };
    let key_parts = match &args.key {
        Some(template) => template_parts(template, &writer, &private),
        None => default_parts(analyzed, &args.skip, &writer),
    };
    let codec = Ident::new("__tc_codec", site);
    let make_codec = quote_spanned!(value_ty.span()=> #private::codec::<#value_ty>());

    quote! {
        let #codec = #make_codec;
        let #cache: &#private::Cache = #cache_expr;
        let #key: ::std::string::String = {
            let mut #writer = #private::KeyWriter::new(#prefix);
            #key_parts
            #writer.finish()
        };
        if let ::core::option::Option::Some(#hit) =
            #private::l1_get::<#private::#shape, #ret>(#cache, &#key, #codec)
        {
            return #hit;
        }
        let #owned = #private::Cache::clone(#cache);
        #[allow(unreachable_code, clippy::needless_return, clippy::let_and_return)]
        let #body_future = async move {
            let #ret_value: #ret = #block;
            #ret_value
        };
        #private::load::<#private::#shape, #ret, _>(
            #owned,
            {
                const SPEC: #private::Spec = #private::Spec::new(#prefix, #ttl_ms);
                &SPEC
            },
            #codec,
            #key,
            ::std::vec::Vec::new(),
            #body_future,
        )
        .await
    }
}

fn default_parts(analyzed: &Func, skip: &[Ident], writer: &Ident) -> TokenStream {
    let keyed = analyzed
        .args
        .iter()
        .filter(|arg| !skip.iter().any(|s| *s == arg.ident));
    keyed
        .enumerate()
        .map(|(index, Arg { ident, ty })| quote_spanned!(ty.span()=> #writer.arg(#index, &#ident);))
        .collect()
}

fn template_parts(template: &Template, writer: &Ident, private: &TokenStream) -> TokenStream {
    let span = template.lit.span();
    template
        .pieces
        .iter()
        .map(|piece| match piece {
            Piece::Literal(text) => quote!(#writer.literal(#text);),
            Piece::Placeholder { root, fields } => {
                let root = Ident::new(root, span);
                let fields = fields.iter().map(|field| match field.parse::<u32>() {
                    Ok(index) => {
                        let index = syn::Index { index, span };
                        quote_spanned!(span=> .#index)
                    }
                    Err(_) => {
                        let field = Ident::new(field, span);
                        quote_spanned!(span=> .#field)
                    }
                });
                quote_spanned!(span=> #private::KeyPart::write_key(&#root #(#fields)*, &mut #writer);)
            }
        })
        .collect()
}

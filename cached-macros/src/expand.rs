//! Writes the function back, wrapped.
//!
//! `#[cache_aside]`: the generated body builds the key, tries L1 inline, and
//! hands the rest to `__private::load` with the original body as a future.
//! `#[write_through]` and `#[invalidates]` render their keys and tags, then
//! hand the body to `__private::write_through` / `__private::invalidating`.
//! On any error the original function is emitted unchanged, followed by the
//! errors, so the user sees only what is wrong and the IDE keeps working.

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Ident, ItemFn};

use crate::attr::{Args, CacheOption, Kind, Prefix, When};
use crate::ctxt::Ctxt;
use crate::func::{Arg, Func, Generic, Named};
use crate::spans::respanned;
use crate::suggest;
use crate::template::{self, Piece, Template};

pub(crate) fn cache_aside(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::CacheAside, args, item)
}

pub(crate) fn write_through(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::WriteThrough, args, item)
}

pub(crate) fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Invalidates, args, item)
}

pub(crate) fn cache_batch(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::CacheBatch, args, item)
}

fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let written: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(error) => {
            let error = syn::Error::new(
                error.span(),
                format!(
                    "`{}` goes on an `async fn` with a body: {error}",
                    kind.attribute()
                ),
            );
            return with_errors(item, error);
        }
    };
    // A method `#[async_trait]` rewrote is expanded as the `async fn` it
    // was, then rewritten back.
    let async_trait = crate::async_trait::unwrapped(&written);
    let func = async_trait.as_ref().unwrap_or(&written);
    let mut cx = Ctxt::default();
    let args = Args::parse(kind, args, &mut cx);
    let analyzed = Func::analyze(func, kind, &mut cx);
    if let Some(args) = &args {
        if kind.caches() {
            check_key_arguments(func, args, &analyzed, &mut cx);
        }
        check_templates(func, &analyzed, &args.tags, "tag", &mut cx);
        check_templates(func, &analyzed, &args.keys, "key", &mut cx);
        if kind == Kind::CacheAside {
            crate::resilience::check(func, args, &analyzed, &mut cx);
        }
    }
    let batch = match (&args, kind) {
        (Some(args), Kind::CacheBatch) => crate::batch::analyze(func, args, &analyzed, &mut cx),
        _ => None,
    };
    if let Err(error) = cx.check() {
        return with_errors(item, error);
    }
    let Some(args) = args else {
        unreachable!("options that do not parse are an error")
    };
    let reader = kind == Kind::WriteThrough && !args.readers.is_empty();
    let parts = (kind.caches() && !reader).then(|| Parts::new(&args, &analyzed));
    let mut body = match (kind, &parts) {
        (Kind::CacheAside | Kind::WriteThrough, Some(parts)) => {
            generate(func, &args, &analyzed, parts)
        }
        (Kind::WriteThrough, None) => generate_write_to_reader(func, &args, &analyzed),
        (Kind::CacheBatch, _) => match &batch {
            Some(batch) => crate::batch::generate(func, &args, &analyzed, batch),
            None => unreachable!("a batch function that does not check is an error"),
        },
        _ => generate_invalidates(func, &args, &analyzed),
    };
    // An `#[async_trait]` method is in a trait impl (or a trait), which
    // takes no extra methods.
    let companions = match &parts {
        Some(parts) if kind == Kind::CacheAside && args.companions && async_trait.is_none() => {
            crate::companions::generate(func, &analyzed, parts)
        }
        _ => quote!(),
    };
    if async_trait.is_some() {
        body = crate::async_trait::rewrapped(&body);
    }
    let mut func = written.clone();
    match syn::parse2(quote!({ #body })) {
        Ok(block) => *func.block = block,
        Err(error) => {
            let error = syn::Error::new(
                error.span(),
                format!(
                    "tiercache generated code that does not parse ({error}): please report this"
                ),
            );
            return with_errors(item, error);
        }
    }
    quote!(#func #companions)
}

/// Tag and `keys` templates name arguments (or `self`, or a type or const
/// parameter) that exist.
fn check_templates(
    func: &ItemFn,
    analyzed: &Func,
    templates: &[Template],
    what: &str,
    cx: &mut Ctxt,
) {
    let name = &func.sig.ident;
    let names: Vec<String> = analyzed.args.iter().map(|a| a.name.clone()).collect();
    let has_self = func.sig.receiver().is_some();
    for template in templates {
        for (root, fields) in template.placeholders() {
            if root == "self" && has_self {
                continue;
            }
            match analyzed.named(root) {
                Some(Named::Arg(_)) => continue,
                Some(Named::Generic(generic)) => {
                    if !fields.is_empty() {
                        cx.error_spanned_by(&template.lit, generic_with_fields(generic, fields));
                    }
                    continue;
                }
                None => {}
            }
            // `{self.org}` in a free function most likely means an `org`
            // argument.
            let meant = match (root, fields.first()) {
                ("self", Some(field)) => suggest::closest(field, &names),
                ("self", None) => None,
                _ => suggest::closest(root, &names),
            };
            let hint = match (meant, root) {
                (Some(meant), _) => format!(": did you mean `{{{meant}}}`?"),
                (None, "self") => {
                    ": name an argument, or make it a method that takes `&self`".to_owned()
                }
                (None, _) => String::new(),
            };
            let missing = if root == "self" {
                "no `self` receiver".to_owned()
            } else {
                format!("no argument `{root}`")
            };
            cx.error_spanned_by(
                &template.lit,
                format!(
                    "{what} template names `{{{root}}}`, but `{name}` has {missing} ({}){hint}",
                    argument_list(&analyzed.args)
                ),
            );
        }
    }
}

/// `{T.id}`: a type parameter has no fields.
fn generic_with_fields(generic: &Generic, fields: &[String]) -> String {
    let (name, what) = if generic.is_const {
        (&generic.name, "a const parameter")
    } else {
        (&generic.name, "a type parameter")
    };
    format!(
        "`{{{name}.{}}}`: `{name}` is {what}, and a placeholder `{{{name}}}` writes it whole (a type as its `std::any::type_name`, a constant as its value): write `{{{name}}}`",
        fields.join(".")
    )
}

fn with_errors(item: TokenStream, error: syn::Error) -> TokenStream {
    let errors = error.into_compile_error();
    quote!(#item #errors)
}

fn argument_list(args: &[Arg]) -> String {
    if args.is_empty() {
        return "it has none".to_owned();
    }
    let names: Vec<String> = args.iter().map(|a| format!("`{}`", a.name)).collect();
    format!("its arguments are {}", names.join(", "))
}

/// `skip(...)` and the template name arguments (or type and const
/// parameters) that exist; with a template, every argument and parameter
/// of a `#[cache_aside]` is either in it or skipped (a `#[write_through]`
/// has arguments that are the data it writes).
fn check_key_arguments(func: &ItemFn, args: &Args, analyzed: &Func, cx: &mut Ctxt) {
    let name = &func.sig.ident;
    let is_keyable = |name: &str| analyzed.named(name).is_some();
    let names: Vec<String> = analyzed.args.iter().map(|a| a.name.clone()).collect();
    // The arguments `skip(...)` names, or, for a misspelled name, most likely
    // means: not reported again as missing from the template.
    let mut skipped_args: Vec<String> = Vec::new();
    for skipped in &args.skip {
        let text = skipped.unraw().to_string();
        if text == "self" {
            cx.error_spanned_by(
                skipped,
                "`self` is never part of the key: remove it from `skip(...)`",
            );
        } else if is_keyable(&text) {
            skipped_args.push(text);
        } else {
            let meant = suggest::closest(&text, &names);
            let hint = match meant {
                Some(meant) => format!(": did you mean `skip({meant})`?"),
                None => String::new(),
            };
            skipped_args.extend(meant.map(str::to_owned));
            cx.error_spanned_by(
                skipped,
                format!(
                    "`skip({text})`: `{name}` has no argument `{text}` ({}){hint}",
                    argument_list(&analyzed.args)
                ),
            );
        }
    }
    let Some(template) = &args.key else { return };
    let has_self = func.sig.receiver().is_some();
    let in_template = |name: &str| template.placeholders().any(|(root, _)| root == name);
    // Arguments the template should name but does not: the likely meaning of
    // a placeholder that names no argument.
    // An argument only a tag names is not accounted for: two calls that
    // differ in it would share the entry. `skip(org)` says it cannot differ.
    let mut unnamed: Vec<String> = analyzed
        .args
        .iter()
        .map(|arg| arg.name.clone())
        .filter(|arg| !in_template(arg) && !skipped_args.contains(arg))
        .collect();
    for (root, fields) in template.placeholders() {
        if root == "self" && has_self {
            continue;
        }
        if let Some(Named::Generic(generic)) = analyzed.named(root)
            && !fields.is_empty()
        {
            cx.error_spanned_by(&template.lit, generic_with_fields(generic, fields));
        }
        if !is_keyable(root) {
            // With one argument left out of a reader's key, that is what
            // the user meant; otherwise only a near spelling is (a writer's
            // other arguments are the data it writes).
            let meant = match unnamed.as_slice() {
                [only] if args.kind == Kind::CacheAside => Some(only.clone()),
                candidates => suggest::closest(root, candidates).map(str::to_owned),
            };
            let hint = match &meant {
                Some(meant) => {
                    unnamed.retain(|arg| arg != meant);
                    format!(": did you mean `{{{meant}}}`?")
                }
                None => String::new(),
            };
            let missing = if root == "self" {
                "no `self` receiver".to_owned()
            } else {
                format!("no argument `{root}`")
            };
            cx.error_spanned_by(
                &template.lit,
                format!(
                    "key template names `{{{root}}}`, but `{name}` has {missing} ({}){hint}",
                    argument_list(&analyzed.args)
                ),
            );
        } else if let Some(skipped) = args.skip.iter().find(|s| s.unraw() == root) {
            cx.error_spanned_by(
                skipped,
                format!("`{root}` is skipped, but the key template uses `{{{root}}}`: remove one of them"),
            );
        }
    }
    if args.kind != Kind::CacheAside {
        return;
    }
    let written = template.lit.value();
    for arg in &analyzed.args {
        let (ident, name) = (&arg.ident, &arg.name);
        if unnamed.contains(name) {
            cx.error_spanned_by(
                ident,
                format!(
                    "argument `{name}` is not in the key template {written:?}: calls that differ only in `{name}` would share one entry. Add `{{{name}}}` to `key`, or `skip({name})` if it does not change the result"
                ),
            );
        }
    }
    // A template writes an argument's value, not its type: two calls whose
    // `impl Trait` arguments of two types render alike (`1_u8`, `"1"`)
    // would share one entry. (The default key writes the type too.)
    for arg in analyzed.args.iter().filter(|arg| arg.impl_trait) {
        let name = &arg.name;
        if in_template(name) {
            cx.error_spanned_by(
                &arg.ident,
                format!(
                    "argument `{name}` has an `impl Trait` type, which the key template {written:?} cannot name: two calls with values of two types that render alike (`1_u8` and `\"1\"`) would share one entry. Take a type parameter (`<T: ...>({name}: T)`) and add `{{T}}` to `key`, or leave out `key`: the default key writes the type too"
                ),
            );
        }
    }
    for generic in &analyzed.generics {
        let name = &generic.name;
        if in_template(name) || skipped_args.contains(name) {
            continue;
        }
        let (what, written_as) = if generic.is_const {
            ("const parameter", "its value")
        } else {
            ("type parameter", "its `std::any::type_name`")
        };
        cx.error_spanned_by(
            &generic.ident,
            format!(
                "{what} `{name}` is not in the key template {written:?}: calls that differ only in `{name}` would share one entry. Add `{{{name}}}` to `key` (it writes {written_as}), or `skip({name})` if it does not change the result"
            ),
        );
    }
}

/// `let cache: &Cache = ...;` for the `cache` option, or the global cache.
pub(crate) fn cache_binding(args: &Args, cache: &Ident, private: &TokenStream) -> TokenStream {
    match &args.cache {
        // An invisible group keeps the expression's precedence without
        // parentheses of our own, so a type error spans exactly what the
        // user wrote (parentheses spanned on its first token would cut it
        // there).
        Some(CacheOption { name, expr }) => {
            let span = expr.span();
            let mut group = Group::new(Delimiter::None, expr.to_token_stream());
            group.set_span(span);
            let reference = quote_spanned!(span=> &#group);
            let expected = respanned(quote!(&#private::Cache), name.span());
            quote!(let #cache: #expected = #reference;)
        }
        None => quote!(let #cache: &#private::Cache = #private::global();),
    }
}

/// `vec![rendered template, ...]`: each template written from scratch (tags,
/// and the `prefix:key` templates of `#[invalidates]`).
pub(crate) fn rendered(
    templates: &[Template],
    analyzed: &Func,
    private: &TokenStream,
    write: &TokenStream,
) -> TokenStream {
    let writer = Ident::new("__tc_writer", Span::mixed_site());
    let items = templates.iter().map(|template| {
        let parts = template_parts(template, analyzed, &writer, write);
        quote!({
            let mut #writer = #private::KeyWriter::bare();
            #parts
            #writer.finish()
        })
    });
    quote!(::std::vec![#(#items),*])
}

/// `let __tc_body = async move { <the function's block> };`: the body as a
/// future for the runtime, its type pinned to the declared return type so
/// that a type error points at the signature.
pub(crate) fn body_statement(ret: &syn::Type, block: &syn::Block) -> TokenStream {
    let site = Span::mixed_site();
    let body_future = Ident::new("__tc_body", site);
    let ret_value = Ident::new("__tc_ret", site);
    quote! {
        #[allow(unreachable_code, clippy::needless_return, clippy::let_and_return)]
        let #body_future = async move {
            let #ret_value: #ret = #block;
            #ret_value
        };
    }
}

/// The body of a `#[write_through(reader(args))]`: the reader's companion
/// renders the entry (prefix, key, TTL, tags, cache) before the body runs,
/// and the value must be the reader's.
fn generate_write_to_reader(func: &ItemFn, args: &Args, analyzed: &Func) -> TokenStream {
    let (Some(output), [reader]) = (&analyzed.output, args.readers.as_slice()) else {
        unreachable!("a writer to a reader names one and returns a value")
    };
    let krate = &args.krate;
    let private = quote!(#krate::__private);
    let (codec, target, body_future) = (
        local("__tc_codec"),
        local("__tc_target"),
        local("__tc_body"),
    );
    let make_codec = crate::probe::codec(&private, args.kind, output, &codec);
    let ret = &output.ret;
    let shape = format_ident!("{}", output.shape.runtime_name());
    let call = &reader.target;
    let body_statement = body_statement(ret, &func.block);
    // Spanned on the reader's call: a writer whose value is not the
    // reader's is reported there.
    let value = quote!(<#private::#shape as #private::Shape<#ret>>::Value);
    let for_writer = quote_spanned!(reader.span=> for_writer::<#value>);
    quote! {
        #make_codec
        let #target = #call.#for_writer();
        #body_statement
        #target.write_through::<#private::#shape, #ret, _>(#codec, #body_future).await
    }
}

/// The body of an `#[invalidates]` function.
fn generate_invalidates(func: &ItemFn, args: &Args, analyzed: &Func) -> TokenStream {
    let Some(output) = &analyzed.output else {
        unreachable!("#[invalidates] takes any return type")
    };
    let krate = &args.krate;
    let private = quote!(#krate::__private);
    let site = Span::mixed_site();
    let cache = Ident::new("__tc_cache", site);
    let owned = Ident::new("__tc_owned", site);
    let body_future = Ident::new("__tc_body", site);
    let tags_ident = Ident::new("__tc_tags", site);
    let keys_ident = Ident::new("__tc_keys", site);
    let ret = &output.ret;
    let shape = format_ident!("{}", output.shape.runtime_name());
    // With `when = "always"` a failure invalidates too: the shape does not
    // matter.
    let (check_shape, call, when) = match args.when {
        When::Always => (
            quote!(),
            quote!(#private::invalidating_always::<#ret, _>),
            quote!(),
        ),
        When::After | When::Before => {
            let when = format_ident!("{}", args.when.runtime_name());
            (
                crate::probe::check(&private, args.kind, output),
                quote!(#private::invalidating::<#private::#shape, #ret, _>),
                quote!(#private::When::#when,),
            )
        }
    };
    let body_statement = body_statement(ret, &func.block);
    // The readers named by their call: their companions render their
    // entries (after the templates, which borrow what a call may move),
    // each forgotten in its own cache; the first one's cache is the
    // default for what the attribute lists.
    let (reader_cache, readers_ident) = (local("__tc_reader_cache"), local("__tc_readers"));
    let readers = match args.readers.split_first() {
        Some((first, rest)) => {
            let (first, rest) = (&first.target, rest.iter().map(|reader| &reader.target));
            let first_key = local("__tc_first_key");
            quote! {
                let (#reader_cache, #first_key) = #private::Target::into_key(#first);
                let #readers_ident: ::std::vec::Vec<(#private::Cache, ::std::string::String)> = ::std::vec![
                    (::core::clone::Clone::clone(&#reader_cache), #first_key),
                    #(#private::Target::into_key(#rest)),*
                ];
            }
        }
        None => quote!(let #readers_ident = ::std::vec::Vec::new();),
    };
    let binding = match (&args.cache, args.readers.is_empty()) {
        (None, false) => quote!(let #cache: &#private::Cache = &#reader_cache;),
        _ => cache_binding(args, &cache, &private),
    };
    let tags = rendered(
        &args.tags,
        analyzed,
        &private,
        &quote!(#private::TagPart::write_tag),
    );
    let keys = rendered(
        &args.keys,
        analyzed,
        &private,
        &quote!(#private::KeyPart::write_key),
    );
    let prefixes = args
        .prefixes
        .iter()
        .map(|lit| quote!(::std::string::String::from(#lit)));
    quote! {
        #check_shape
        let #tags_ident: ::std::vec::Vec<::std::string::String> = #tags;
        let #keys_ident: ::std::vec::Vec<::std::string::String> = #keys;
        #readers
        #binding
        let #owned = ::core::clone::Clone::clone(#cache);
        #body_statement
        #call(
            #owned,
            #when
            #tags_ident,
            #keys_ident,
            ::std::vec![#(#prefixes),*],
            #readers_ident,
            #body_future,
        )
        .await
    }
}

/// What the body of a reader (or a `#[write_through]` with its own key)
/// and its companions share: statements and expressions, each built once.
pub(crate) struct Parts {
    pub(crate) private: TokenStream,
    /// `let __tc_codec = …;`
    pub(crate) make_codec: TokenStream,
    /// `let __tc_cache: &Cache = …;`
    pub(crate) cache_binding: TokenStream,
    /// `let mut __tc_writer = KeyWriter::new(prefix); <parts>`
    pub(crate) start_key: TokenStream,
    /// `let __tc_tags: Vec<String> = …;`
    pub(crate) make_tags: TokenStream,
    /// `&const { Spec… }`
    pub(crate) spec: TokenStream,
    /// The runtime's shape, as a path.
    pub(crate) shape: TokenStream,
    pub(crate) ret: syn::Type,
}

/// The names the generated code binds, hygienic (`Span::mixed_site`): the
/// user's code cannot see them, nor they the user's.
pub(crate) fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

impl Parts {
    /// Called only when the `Ctxt` holds no error, so every required part
    /// is there.
    pub(crate) fn new(args: &Args, analyzed: &Func) -> Self {
        let (Some(prefix), Some(ttl_ms), Some(output)) =
            (&args.prefix, args.ttl_ms, &analyzed.output)
        else {
            unreachable!("missing or invalid options and return types are errors")
        };
        let krate = &args.krate;
        let private = quote!(#krate::__private);
        let (cache, writer, codec) = (
            local("__tc_cache"),
            local("__tc_writer"),
            local("__tc_codec"),
        );
        let tags = rendered(
            &args.tags,
            analyzed,
            &private,
            &quote!(#private::TagPart::write_tag),
        );
        let tags_ident = local("__tc_tags");
        let key_parts = match &args.key {
            Some(template) => template_parts(
                template,
                analyzed,
                &writer,
                &quote!(#private::KeyPart::write_key),
            ),
            None => default_parts(analyzed, &args.skip, &writer),
        };
        let spec = crate::resilience::spec(
            &private,
            &prefix.to_token_stream(),
            ttl_ms,
            &args.resilience,
        );
        let spec = crate::formats::spec(&private, spec, &args.formats);
        let shape = format_ident!("{}", output.shape.runtime_name());
        Self {
            make_codec: crate::probe::codec(&private, args.kind, output, &codec),
            cache_binding: cache_binding(args, &cache, &private),
            start_key: quote! {
                let mut #writer = #private::KeyWriter::new(#prefix);
                #key_parts
            },
            make_tags: quote!(let #tags_ident: ::std::vec::Vec<::std::string::String> = #tags;),
            // Inline `const` blocks, not `const` items: no name to collide
            // with the user's (`prefix = SPEC`), and they may name `Self`
            // and the function's generics (`prefix = Self::PREFIX`). A
            // constant's reference is promoted to `'static`.
            spec: quote!(&const { #spec }),
            shape: quote!(#private::#shape),
            ret: output.ret.clone(),
            private,
        }
    }

    /// `let __tc_key: String = …;`: the key, rendered.
    pub(crate) fn make_key(&self) -> TokenStream {
        let (start, key, writer) = (&self.start_key, local("__tc_key"), local("__tc_writer"));
        quote! {
            let #key: ::std::string::String = {
                #start
                #writer.finish()
            };
        }
    }
}

/// Called only when the `Ctxt` holds no error, so every required part is
/// there.
fn generate(func: &ItemFn, args: &Args, analyzed: &Func, parts: &Parts) -> TokenStream {
    let Some(prefix) = &args.prefix else {
        unreachable!("a missing prefix is an error")
    };
    let Parts {
        private,
        make_codec,
        cache_binding,
        start_key,
        make_tags,
        spec,
        shape,
        ret,
    } = parts;
    let (cache, key, writer) = (local("__tc_cache"), local("__tc_key"), local("__tc_writer"));
    let (hit, owned, body_future) = (local("__tc_hit"), local("__tc_owned"), local("__tc_body"));
    let (codec, tags_ident) = (local("__tc_codec"), local("__tc_tags"));
    let body_statement = body_statement(ret, &func.block);

    // A `const` prefix is checked where it is used, at compile time: by an
    // anonymous `const` item, which `cargo check` evaluates, unless the path
    // names `Self` or a generic parameter, which only an inline `const`
    // block may (evaluated when the function is built for a type).
    let check_prefix = match prefix {
        Prefix::Literal(_) => quote!(),
        Prefix::Const(path) => {
            let assertion = quote_spanned! {path.span()=>
                ::core::assert!(
                    #private::is_valid_prefix(#path),
                    "a cache prefix must be a non-empty name of ASCII letters, digits and `-`, `_`, `.`, `/`"
                )
            };
            let first = path
                .segments
                .first()
                .map(|segment| segment.ident.to_string());
            let generic = first.as_deref().is_some_and(|first| {
                first == "Self" || analyzed.generics.iter().any(|g| g.name == first)
            });
            if generic {
                quote_spanned!(path.span()=> const { #assertion };)
            } else {
                quote_spanned!(path.span()=> const _: () = #assertion;)
            }
        }
    };
    let check_formats = crate::formats::checks(private, &args.formats);
    let prologue = quote! {
        #check_prefix
        #check_formats
        #make_codec
        #cache_binding
    };
    if args.kind == Kind::WriteThrough {
        let make_key = parts.make_key();
        return quote! {
            #prologue
            #make_key
            #make_tags
            let #owned = ::core::clone::Clone::clone(#cache);
            #body_statement
            #private::write_through::<#shape, #ret, _>(
                #owned, #spec, #codec, #key, #tags_ident, #body_future,
            )
            .await
        };
    }

    // Boxed: the miss path's state (the body, L2 and the flight) would
    // otherwise make the function's future kilobytes large, moved and
    // zeroed on every call, hits included.
    let timed_out = crate::resilience::timed_out(private, ret, &args.resilience);
    let load = if args.resilience.detaching().is_some() {
        let detached = crate::resilience::detached(func, ret, private);
        quote! {
            ::std::boxed::Box::pin(#private::load_detached::<#shape, #ret>(
                #owned, #spec, #codec, #key, #tags_ident, #detached, #timed_out,
            ))
            .await
        }
    } else {
        quote! {
            #body_statement
            ::std::boxed::Box::pin(#private::load::<#shape, #ret, _>(
                #owned, #spec, #codec, #key, #tags_ident, #body_future, #timed_out,
            ))
            .await
        }
    };
    // A hit looks the key up where it was rendered (on the stack): only a
    // miss makes its `String`.
    quote! {
        #prologue
        let #key: ::std::string::String = {
            #start_key
            if let ::core::option::Option::Some(#hit) =
                #private::l1_get_rendered::<#shape, #ret>(#cache, &#writer, #codec)
            {
                return #hit;
            }
            #writer.finish()
        };
        #make_tags
        let #owned = ::core::clone::Clone::clone(#cache);
        #load
    }
}

/// The default key: every argument not skipped, then the `type_name` of
/// those whose type is an `impl Trait`, then every type parameter's
/// `type_name` and const parameter's value.
fn default_parts(analyzed: &Func, skip: &[Ident], writer: &Ident) -> TokenStream {
    let skipped = |name: &str| skip.iter().any(|s| s.unraw() == name);
    let keyed: Vec<&Arg> = analyzed
        .args
        .iter()
        .filter(|arg| !skipped(&arg.name))
        .collect();
    // Spanned on the argument's name: a type that is not a `KeyPart` is
    // one error there, not a second label on the call.
    let values = keyed.iter().map(|Arg { ident, cfg, .. }| {
        let span = ident.span();
        (span, quote!(#(#cfg)*), quote_spanned!(span=> &#ident))
    });
    let impl_types = keyed
        .iter()
        .filter(|arg| arg.impl_trait)
        .map(|Arg { ident, cfg, .. }| {
            let span = ident.span();
            let value = quote_spanned!(span=> ::core::any::type_name_of_val(&#ident));
            (span, quote!(#(#cfg)*), value)
        });
    let generics = analyzed
        .generics
        .iter()
        .filter(|generic| !skipped(&generic.name))
        .map(
            |Generic {
                 ident, is_const, ..
             }| {
                let span = ident.span();
                let value = if *is_const {
                    quote_spanned!(span=> &#ident)
                } else {
                    quote_spanned!(span=> ::core::any::type_name::<#ident>())
                };
                (span, quote!(), value)
            },
        );
    // With an argument under `#[cfg]`, which parts are written is known
    // only where it is compiled: each separates itself from the one before.
    let cfg = keyed.iter().any(|arg| !arg.cfg.is_empty());
    values
        .chain(impl_types)
        .chain(generics)
        .enumerate()
        .map(|(index, (span, cfg_attrs, value))| {
            if cfg {
                quote_spanned!(span=> #cfg_attrs #writer.arg_present(#value);)
            } else {
                quote_spanned!(span=> #writer.arg(#index, #value);)
            }
        })
        .collect()
}

/// The statements writing a template; `write` is the function that writes a
/// placeholder's value (`KeyPart::write_key`, or `TagPart::write_tag` for its
/// diagnostic).
fn template_parts(
    template: &Template,
    analyzed: &Func,
    writer: &Ident,
    write: &TokenStream,
) -> TokenStream {
    let span = template.lit.span();
    // Field names come from inside the string: marked as generated (at the
    // same place), so rustc does not offer to rewrite the whole literal into
    // the field it thinks was meant.
    let field_span = span.resolved_at(Span::mixed_site());
    template
        .pieces
        .iter()
        .map(|piece| match piece {
            Piece::Literal(text) => quote!(#writer.literal(#text);),
            Piece::Placeholder { root, fields } => {
                let write_key = respanned(write.clone(), span);
                // What a placeholder names resolves where it is declared
                // (a `macro_rules!` may declare the function), and is
                // reported on the template.
                let declared = |ident: &Ident| {
                    let mut ident = ident.clone();
                    ident.set_span(ident.span().located_at(span));
                    ident
                };
                let value = match (analyzed.named(root), &analyzed.receiver) {
                    (Some(Named::Generic(generic)), _) if !generic.is_const => {
                        let ident = declared(&generic.ident);
                        return quote_spanned!(span=> #write_key(::core::any::type_name::<#ident>(), &mut #writer););
                    }
                    (Some(Named::Arg(Arg { ident, .. }) | Named::Generic(Generic { ident, .. })), _) => {
                        declared(ident)
                    }
                    (None, Some(receiver)) if root == "self" => declared(receiver),
                    (None, _) => template::ident(root, span),
                };
                let field_tokens = fields.iter().map(|field| match field.parse::<u32>() {
                    Ok(index) => {
                        let index = syn::Index {
                            index,
                            span: field_span,
                        };
                        quote_spanned!(span=> .#index)
                    }
                    Err(_) => {
                        let field = template::ident(field, field_span);
                        quote_spanned!(span=> .#field)
                    }
                });
                // In the context of the argument's last token, so a type
                // error is one label on the template, not two.
                let call_span = if fields.is_empty() { span } else { field_span };
                let write_key = respanned(write.clone(), call_span);
                quote_spanned!(span=> #write_key(&#value #(#field_tokens)*, &mut #writer);)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    /// The messages of the `compile_error!`s an expansion ends with.
    fn errors(args: TokenStream, item: TokenStream) -> Vec<String> {
        errors_of(super::cache_aside(args, item))
    }

    fn errors_of(output: TokenStream) -> Vec<String> {
        let output = output.to_string();
        output
            .split("compile_error !")
            .skip(1)
            .map(|call| {
                let start = call.find('"').unwrap() + 1;
                let end = call.rfind('"').unwrap();
                call[start..end].to_owned()
            })
            .collect()
    }

    #[test]
    fn reports_every_mistake_once() {
        let errors = errors(
            quote!(
                prefix = "user",
                ttl = "5 minutes",
                key = "{user_id}",
                skip(dbase)
            ),
            quote!(
                async fn user(db: &str, id: u64) -> String {
                    String::new()
                }
            ),
        );
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].contains("write \\\"5m\\\""), "{errors:#?}");
        assert!(
            errors[1].contains("did you mean `skip(db)`?"),
            "{errors:#?}"
        );
        assert!(errors[2].contains("did you mean `{id}`?"), "{errors:#?}");
    }

    #[test]
    fn a_duration_over_a_year_is_refused() {
        let item = quote!(
            async fn user(id: u64) -> u64 {
                id
            }
        );
        let found = errors(quote!(prefix = "u", ttl = "366d"), item.clone());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("longer than a year"), "{found:#?}");
        assert!(errors(quote!(prefix = "u", ttl = "365d"), item).is_empty());
    }

    #[test]
    fn a_suggested_option_is_not_also_missing() {
        let errors = errors(
            quote!(prefix = "user", tll = "5m"),
            quote!(
                async fn user(id: u64) -> String {
                    String::new()
                }
            ),
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
    }

    #[test]
    fn keeps_the_function_when_wrong() {
        let output = super::cache_aside(
            quote!(prefix = "user"),
            quote!(
                async fn user(id: u64) -> u64 {
                    id
                }
            ),
        )
        .to_string();
        assert!(output.starts_with("async fn user"), "{output}");
        assert!(output.contains("missing `ttl`"), "{output}");
    }

    #[test]
    fn expands_a_valid_function() {
        let output = super::cache_aside(
            quote!(prefix = "user", ttl = 60, key = "{id}"),
            quote!(
                async fn user(id: u64) -> u64 {
                    id
                }
            ),
        )
        .to_string();
        assert!(!output.contains("compile_error"), "{output}");
        assert!(output.contains("60000u64"), "{output}");
    }

    #[test]
    fn a_writer_is_not_told_to_key_its_data() {
        let errors = errors_of(super::write_through(
            quote!(prefix = "user", ttl = "5m", key = "{uid}"),
            quote!(
                async fn save(user: User) -> User {
                    user
                }
            ),
        ));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(!errors[0].contains("did you mean"), "{errors:#?}");
        let errors = errors_of(super::write_through(
            quote!(prefix = "user", ttl = "5m", key = "{uid}"),
            quote!(
                async fn save(id: u64, user: User) -> User {
                    user
                }
            ),
        ));
        assert!(errors[0].contains("did you mean `{id}`?"), "{errors:#?}");
    }

    #[test]
    fn a_writer_or_invalidator_may_destructure_what_it_does_not_name() {
        let errors = errors_of(super::invalidates(
            quote!(keys = ["user:{id}"]),
            quote!(
                async fn rename(id: u64, (first, last): (String, String)) {
                    drop((id, first, last));
                }
            ),
        ));
        assert!(errors.is_empty(), "{errors:#?}");
        let errors = errors_of(super::write_through(
            quote!(prefix = "user", ttl = "5m", key = "{id}"),
            quote!(
                async fn rename(id: u64, (first, last): (String, String)) -> String {
                    format!("{id}{first}{last}")
                }
            ),
        ));
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn refuses_more_tags_than_an_entry_records() {
        let tags = |n: usize| -> Vec<String> { (0..n).map(|i| format!("t{i}")).collect() };
        let item = quote!(
            async fn user(id: u64) -> u64 {
                id
            }
        );
        let (at_limit, over) = (tags(253), tags(254));
        let found = errors(
            quote!(prefix = "user", ttl = "5m", tags = [#(#at_limit),*]),
            item.clone(),
        );
        assert!(found.is_empty(), "{found:#?}");
        let found = errors(
            quote!(prefix = "user", ttl = "5m", tags = [#(#over),*]),
            item.clone(),
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].contains("`tags` lists 254 tags, more than the 253"),
            "{found:#?}"
        );
        let found = errors_of(super::write_through(
            quote!(prefix = "user", ttl = "5m", key = "{id}", tags = [#(#over),*]),
            item.clone(),
        ));
        assert_eq!(found.len(), 1, "{found:#?}");
        // An invalidation records no versions: it may bump any number.
        let many = tags(300);
        let found = errors_of(super::invalidates(quote!(tags = [#(#many),*]), item));
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn says_what_an_invalidation_should_list() {
        let item = quote!(
            async fn delete(id: u64) {}
        );
        let cases = [
            (quote!(keys = [id]), "write `keys = [\\\"user:{id}\\\"]`"),
            (quote!(tags = [id]), "write `tags = [\\\"id:{id}\\\"]`"),
            (
                quote!(keys = ["user{id}"]),
                "Write `keys = [\\\"user:{id}\\\"]`",
            ),
            (
                quote!(keys = ["user/{id}"]),
                "Write `keys = [\\\"user:{id}\\\"]`",
            ),
            (
                quote!(keys = ["users"]),
                "write `prefixes = [\\\"users\\\"]`",
            ),
            (
                quote!(keys = ["user@v1:{id}"]),
                "`keys = [\\\"user-v1:{id}\\\"]`",
            ),
            (quote!(keys = [":{id}"]), "the prefix is empty"),
            (quote!(tags = [""]), "a tag cannot be empty"),
            (quote!(tags = ["{self.org}"]), "has no `self` receiver"),
            (quote!(tags = ["{self.id}"]), "did you mean `{id}`?"),
            (quote!(tags = ["org {id}"]), "cannot appear in a tag"),
        ];
        for (args, expected) in cases {
            let errors = errors_of(super::invalidates(args.clone(), item.clone()));
            assert_eq!(errors.len(), 1, "{args}: {errors:#?}");
            assert!(errors[0].contains(expected), "{args}: {errors:#?}");
        }
    }
}

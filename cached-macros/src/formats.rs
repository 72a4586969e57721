//! `codec = "…"`, `compress = "…"`, `compress_above = n` and `encrypt`:
//! how a function's values are stored in Redis, checked here and written
//! into its `const` spec. A choice whose feature is off is reported by the
//! runtime's `const fn` of that name, evaluated in the spec: its message
//! names the feature.

use proc_macro2::TokenStream;
use quote::quote_spanned;
use syn::{Expr, ExprLit, Ident, Lit, LitStr};

use crate::suggest;

pub(crate) const CODEC: &str = "codec";
pub(crate) const COMPRESS: &str = "compress";
pub(crate) const COMPRESS_ABOVE: &str = "compress_above";
pub(crate) const ENCRYPT: &str = "encrypt";

/// The codecs `codec` takes, and the runtime's function for each.
const CODECS: &[(&str, &str)] = &[
    ("json", "json"),
    ("postcard", "postcard"),
    ("msgpack", "msgpack"),
];

/// The algorithms `compress` takes, and the runtime's function for each.
const COMPRESSIONS: &[(&str, &str)] = &[("zstd", "zstd"), ("lz4", "lz4"), ("none", "none")];

/// A function's storage options, as written.
#[derive(Default)]
pub(crate) struct Formats {
    /// The literal, and the runtime's function for it.
    pub(crate) codec: Option<(LitStr, &'static str)>,
    pub(crate) compress: Option<(LitStr, &'static str)>,
    pub(crate) compress_above: Option<(Ident, u64)>,
    /// The option's name, when it is on.
    pub(crate) encrypt: Option<Ident>,
}

/// `codec = "postcard"`.
pub(crate) fn codec(lit: LitStr) -> syn::Result<(LitStr, &'static str)> {
    named(CODEC, lit, CODECS, "`codec = \"postcard\"`")
}

/// `compress = "zstd"`.
pub(crate) fn compress(lit: LitStr) -> syn::Result<(LitStr, &'static str)> {
    named(COMPRESS, lit, COMPRESSIONS, "`compress = \"zstd\"`")
}

fn named(
    option: &str,
    lit: LitStr,
    known: &'static [(&'static str, &'static str)],
    example: &str,
) -> syn::Result<(LitStr, &'static str)> {
    let value = lit.value();
    if let Some((_, function)) = known.iter().find(|(name, _)| *name == value) {
        return Ok((lit, function));
    }
    let names: Vec<&str> = known.iter().map(|(name, _)| *name).collect();
    let listed = names
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = match suggest::closest(&value, &names) {
        Some(meant) => format!("did you mean \"{meant}\"? "),
        None if option == CODEC && value == "bincode" => {
            "bincode is unmaintained (RUSTSEC-2025-0141); \"postcard\" is as compact. ".to_owned()
        }
        None => String::new(),
    };
    Err(syn::Error::new_spanned(
        &lit,
        format!("{hint}`{option}` takes one of {listed}, e.g. {example}"),
    ))
}

/// `compress_above = 4096`: bytes, an integer.
pub(crate) fn compress_above(expr: &Expr) -> syn::Result<u64> {
    if let Expr::Lit(ExprLit {
        lit: Lit::Int(int), ..
    }) = expr
        && let Ok(bytes) = int.base10_parse::<u64>()
        && u32::try_from(bytes).is_ok()
    {
        return Ok(bytes);
    }
    Err(syn::Error::new_spanned(
        expr,
        "`compress_above` takes a size in bytes, an integer below 4 GiB: e.g. `compress_above = 4096`",
    ))
}

/// The same choices as anonymous `const` items, which `cargo check`
/// evaluates (the spec is an inline `const` block, which only a build
/// does): a feature that is off is reported by `cargo check` and clippy
/// too.
pub(crate) fn checks(private: &TokenStream, formats: &Formats) -> TokenStream {
    let mut checks = TokenStream::new();
    let named = [&formats.codec, &formats.compress];
    for (lit, function) in named.into_iter().flatten() {
        let function = Ident::new(function, lit.span());
        checks.extend(
            quote_spanned!(lit.span()=> const _: () = { let _ = #private::formats::#function(); };),
        );
    }
    if let Some(name) = &formats.encrypt {
        checks.extend(
            quote_spanned!(name.span()=> const _: () = { let _ = #private::formats::encrypt(); };),
        );
    }
    checks
}

/// The spec's calls for these options, each spanned on its option so that
/// a feature that is off is reported there.
pub(crate) fn spec(private: &TokenStream, spec: TokenStream, formats: &Formats) -> TokenStream {
    let mut spec = spec;
    if let Some((lit, function)) = &formats.codec {
        let function = Ident::new(function, lit.span());
        spec = quote_spanned!(lit.span()=> #spec.codec(#private::formats::#function()));
    }
    if let Some((lit, function)) = &formats.compress {
        let function = Ident::new(function, lit.span());
        spec = quote_spanned!(lit.span()=> #spec.compress(#private::formats::#function()));
    }
    if let Some((name, bytes)) = &formats.compress_above {
        // Checked to fit a u32: a usize everywhere.
        let bytes = proc_macro2::Literal::usize_unsuffixed(*bytes as usize);
        spec = quote_spanned!(name.span()=> #spec.compress_above(#bytes));
    }
    if let Some(name) = &formats.encrypt {
        spec = quote_spanned!(name.span()=> #spec.encrypt(#private::formats::encrypt()));
    }
    spec
}

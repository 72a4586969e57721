//! The options of `#[cache_aside(...)]`: parsed into raw `name = value`
//! records first, then checked one by one so every mistake is reported.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

use crate::ctxt::Ctxt;
use crate::duration;
use crate::template::Template;

/// Option names, in the order the docs list them.
const PREFIX: &str = "prefix";
const TTL: &str = "ttl";
const KEY: &str = "key";
const SKIP: &str = "skip";
const CACHE: &str = "cache";
const CRATE: &str = "crate";
const OPTIONS: &[&str] = &[PREFIX, TTL, KEY, SKIP, CACHE, CRATE];

/// One `name`, `name = value` or `name(a, b)` as written.
struct RawOption {
    name: Ident,
    value: RawValue,
}

enum RawValue {
    Assign(Expr),
    List(Punctuated<Ident, Token![,]>),
    Flag,
}

fn parse_raw(input: ParseStream) -> syn::Result<Vec<RawOption>> {
    let mut options = Vec::new();
    while !input.is_empty() {
        let name = input.call(Ident::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            RawValue::Assign(input.parse()?)
        } else if input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            RawValue::List(content.parse_terminated(Ident::parse_any, Token![,])?)
        } else {
            RawValue::Flag
        };
        options.push(RawOption { name, value });
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(options)
}

/// The checked options of `#[cache_aside]`.
pub(crate) struct CacheAsideArgs {
    pub(crate) prefix: LitStr,
    pub(crate) ttl_ms: u64,
    pub(crate) key: Option<Template>,
    pub(crate) skip: Vec<Ident>,
    pub(crate) cache: Option<Expr>,
    pub(crate) krate: Path,
}

impl CacheAsideArgs {
    /// Parses and checks the options; every mistake is recorded in `cx`, and
    /// `None` comes back if any was found.
    pub(crate) fn parse(args: TokenStream, cx: &mut Ctxt) -> Option<Self> {
        let raw = match parse_raw.parse2(args) {
            Ok(raw) => raw,
            Err(error) => {
                cx.push(error);
                return None;
            }
        };
        let mut seen: Vec<String> = Vec::new();
        let (mut prefix, mut ttl_ms, mut key, mut skip, mut cache, mut krate) =
            (None, None, None, Vec::new(), None, None);
        for RawOption { name, value } in raw {
            let text = name.to_string();
            if !OPTIONS.contains(&text.as_str()) {
                cx.error_spanned_by(&name, unknown_option(&text));
                continue;
            }
            if seen.contains(&text) {
                cx.error_spanned_by(&name, format!("`{text}` is given twice: keep one"));
                continue;
            }
            seen.push(text.clone());
            match (text.as_str(), value) {
                (SKIP, RawValue::List(names)) => skip.extend(names),
                (SKIP, _) => {
                    cx.error_spanned_by(&name, "`skip` takes a list of arguments: `skip(db, conn)`")
                }
                (_, RawValue::Assign(expr)) => match text.as_str() {
                    PREFIX => prefix = record(cx, prefix_value(&expr)),
                    TTL => ttl_ms = record(cx, duration::parse(TTL, &expr)),
                    KEY => {
                        key = record(
                            cx,
                            string_value(KEY, &expr).and_then(|lit| Template::parse(&lit)),
                        )
                    }
                    CACHE => cache = Some(expr),
                    CRATE => krate = record(cx, crate_path(&expr)),
                    _ => unreachable!("every option is matched"),
                },
                (_, _) => cx
                    .error_spanned_by(&name, format!("`{text}` takes a value: {}", example(&text))),
            }
        }
        let missing = |cx: &mut Ctxt, option: &str| {
            if !seen.iter().any(|s| s == option) {
                cx.push(syn::Error::new(
                    Span::call_site(),
                    format!("missing `{option}`: add {}", example(option)),
                ));
            }
        };
        missing(cx, PREFIX);
        missing(cx, TTL);
        Some(Self {
            prefix: prefix?,
            ttl_ms: ttl_ms?,
            key,
            skip,
            cache,
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::tiercache)),
        })
    }
}

fn record<T>(cx: &mut Ctxt, result: syn::Result<T>) -> Option<T> {
    result.map_err(|error| cx.push(error)).ok()
}

fn example(option: &str) -> &'static str {
    match option {
        PREFIX => "`prefix = \"user\"` (names what this function caches; shared by its writers)",
        TTL => "`ttl = \"5m\"` (or \"30s\", \"1h30m\", or an integer of seconds)",
        KEY => "`key = \"{id}:{lang}\"`",
        CACHE => "`cache = self.cache` (any expression that derefs to `tiercache::Cache`)",
        CRATE => "`crate = \"my_crate::tiercache\"`",
        _ => "`skip(db)`",
    }
}

fn unknown_option(text: &str) -> String {
    let valid = OPTIONS
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let closest = OPTIONS
        .iter()
        .map(|o| (edit_distance(text, o), o))
        .min()
        .filter(|(distance, _)| *distance <= 2);
    match closest {
        Some((_, option)) => {
            format!("unknown option `{text}`: did you mean `{option}`? Valid options: {valid}")
        }
        None => format!("unknown option `{text}`: valid options are {valid}"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn string_value(option: &str, expr: &Expr) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit.clone()),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!("`{option}` takes a string literal: {}", example(option)),
        )),
    }
}

fn prefix_value(expr: &Expr) -> syn::Result<LitStr> {
    let lit = string_value(PREFIX, expr)?;
    let text = lit.value();
    let valid = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if !valid {
        return Err(syn::Error::new_spanned(
            &lit,
            format!(
                "invalid prefix {text:?}: use a non-empty name of ASCII letters, digits and `-`, `_`, `.`, `/`, e.g. `prefix = \"user\"`"
            ),
        ));
    }
    Ok(lit)
}

fn crate_path(expr: &Expr) -> syn::Result<Path> {
    match expr {
        Expr::Path(path) if path.qself.is_none() => Ok(path.path.clone()),
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => lit.parse(),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!("`crate` takes a path: {}", example(CRATE)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_option() {
        assert!(unknown_option("tll").contains("did you mean `ttl`"));
        assert!(unknown_option("prefx").contains("did you mean `prefix`"));
        assert!(!unknown_option("lifetime").contains("did you mean"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}

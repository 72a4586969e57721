//! The options of `#[cache_aside(...)]`: parsed into raw `name = value`
//! records first, then checked one by one so every mistake is reported.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

use crate::ctxt::Ctxt;
use crate::duration;
use crate::suggest;
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
            let eq = input.parse::<Token![=]>()?;
            if input.is_empty() || input.peek(Token![,]) {
                let text = name.to_string();
                let instead = if OPTIONS.contains(&text.as_str()) {
                    example(&text).to_owned()
                } else {
                    format!("`{text} = value`")
                };
                return Err(syn::Error::new_spanned(
                    quote::quote!(#name #eq),
                    format!("`{text} =` needs a value: {instead}"),
                ));
            }
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
        if !input.peek(Token![,]) {
            return Err(input.error(
                "expected `,`: options are separated by commas, e.g. `prefix = \"user\", ttl = \"5m\"`",
            ));
        }
        input.parse::<Token![,]>()?;
    }
    Ok(options)
}

/// The checked options of `#[cache_aside]`. A required option that is
/// missing or invalid is `None`, its error is in the `Ctxt`, and nothing is
/// generated; the other options are still checked against the function.
pub(crate) struct CacheAsideArgs {
    pub(crate) prefix: Option<LitStr>,
    pub(crate) ttl_ms: Option<u64>,
    pub(crate) key: Option<Template>,
    pub(crate) skip: Vec<Ident>,
    pub(crate) cache: Option<CacheOption>,
    pub(crate) krate: Path,
}

/// `cache = expr`, with the option's name: a value of the wrong type is
/// reported on the expression, "expected due to" the name.
pub(crate) struct CacheOption {
    pub(crate) name: Ident,
    pub(crate) expr: Expr,
}

impl CacheAsideArgs {
    /// Parses and checks the options; every mistake is recorded in `cx`.
    /// `None` comes back only when the attribute does not parse at all.
    pub(crate) fn parse(args: TokenStream, cx: &mut Ctxt) -> Option<Self> {
        let raw = match parse_raw.parse2(args) {
            Ok(raw) => raw,
            Err(error) => {
                cx.push(error);
                return None;
            }
        };
        let mut seen: Vec<String> = Vec::new();
        // Options an unknown name was taken for: not reported missing as well.
        let mut suggested: Vec<&str> = Vec::new();
        let (mut prefix, mut ttl_ms, mut key, mut skip, mut cache, mut krate) =
            (None, None, None, Vec::new(), None, None);
        for RawOption { name, value } in raw {
            let text = name.to_string();
            if !OPTIONS.contains(&text.as_str()) {
                let closest = suggest::closest(&text, OPTIONS);
                cx.error_spanned_by(&name, unknown_option(&text, closest));
                suggested.extend(closest);
                continue;
            }
            if seen.contains(&text) {
                cx.error_spanned_by(&name, format!("`{text}` is given twice: keep one"));
                continue;
            }
            seen.push(text.clone());
            match (text.as_str(), value) {
                (SKIP, RawValue::List(names)) => skip.extend(names),
                (SKIP, RawValue::Assign(expr)) => cx.error_spanned_by(
                    quote::quote!(#name = #expr),
                    format!(
                        "`skip` takes a list of arguments in parentheses: write {}",
                        skip_example(&expr)
                    ),
                ),
                (_, RawValue::Assign(expr)) => match text.as_str() {
                    PREFIX => prefix = record(cx, prefix_value(&expr)),
                    TTL => ttl_ms = record(cx, duration::parse(TTL, &expr)),
                    KEY => {
                        key = record(
                            cx,
                            string_value(KEY, &expr).and_then(|lit| Template::parse(&lit)),
                        )
                    }
                    CACHE => {
                        cache = record(cx, cache_expr(expr)).map(|expr| CacheOption {
                            name: name.clone(),
                            expr,
                        })
                    }
                    CRATE => krate = record(cx, crate_path(&expr)),
                    _ => unreachable!("every option is matched"),
                },
                (_, _) => cx
                    .error_spanned_by(&name, format!("`{text}` takes a value: {}", example(&text))),
            }
        }
        for option in [PREFIX, TTL] {
            if !seen.iter().any(|s| s == option) && !suggested.contains(&option) {
                cx.push(syn::Error::new(
                    Span::call_site(),
                    format!("missing `{option}`: add {}", example(option)),
                ));
            }
        }
        Some(Self {
            prefix,
            ttl_ms,
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

fn unknown_option(text: &str, closest: Option<&str>) -> String {
    let valid = OPTIONS
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match closest {
        Some(option) => {
            format!("unknown option `{text}`: did you mean `{option}`? Valid options: {valid}")
        }
        None => format!("unknown option `{text}`: valid options are {valid}"),
    }
}

/// `skip = db` → `skip(db)`, `skip = [db, conn]` → `skip(db, conn)`.
fn skip_example(expr: &Expr) -> String {
    let names: Option<Vec<String>> = match expr {
        Expr::Array(array) => array.elems.iter().map(single_ident).collect(),
        Expr::Tuple(tuple) => tuple.elems.iter().map(single_ident).collect(),
        Expr::Paren(paren) => single_ident(&paren.expr).map(|name| vec![name]),
        expr => single_ident(expr).map(|name| vec![name]),
    };
    match names {
        Some(names) if !names.is_empty() => format!("`skip({})`", names.join(", ")),
        _ => example(SKIP).to_owned(),
    }
}

/// `db` in `skip = db` or `key = id`: a name written where a list or a
/// string was expected.
fn single_ident(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Path(path) if path.qself.is_none() => {
            path.path.get_ident().map(|ident| ident.unraw().to_string())
        }
        _ => None,
    }
}

fn string_value(option: &str, expr: &Expr) -> syn::Result<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit.clone()),
        _ => {
            let instead = match (option, single_ident(expr)) {
                (KEY, Some(name)) => format!("`key = \"{{{name}}}\"`"),
                (_, Some(name)) => format!("`{option} = \"{name}\"`"),
                (_, None) => example(option).to_owned(),
            };
            Err(syn::Error::new_spanned(
                expr,
                format!("`{option}` takes a string literal: write {instead}"),
            ))
        }
    }
}

/// `cache = "self.cache"` is a string, not the cache: refuse it here rather
/// than as a type error in generated code.
fn cache_expr(expr: Expr) -> syn::Result<Expr> {
    match &expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => {
            let instead = match lit.parse::<Expr>() {
                Ok(_) => format!("`cache = {}`", lit.value()),
                Err(_) => example(CACHE).to_owned(),
            };
            Err(syn::Error::new_spanned(
                lit,
                format!(
                    "`cache` takes an expression, not a string: write {instead} without quotes"
                ),
            ))
        }
        _ => Ok(expr),
    }
}

fn prefix_value(expr: &Expr) -> syn::Result<LitStr> {
    let lit = string_value(PREFIX, expr)?;
    match prefix_error(&lit.value()) {
        Some(message) => Err(syn::Error::new_spanned(&lit, message)),
        None => Ok(lit),
    }
}

fn prefix_error(text: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if text.is_empty() {
        return Some(
            "the prefix is empty: name what this function caches, e.g. `prefix = \"user\"`"
                .to_owned(),
        );
    }
    let bad = text.chars().find(|&c| !allowed(c))?;
    let fixed: String = text
        .chars()
        .map(|c| if allowed(c) { c } else { '-' })
        .collect();
    let why = if bad == ':' {
        " (`:` separates the namespace, the prefix and the key)"
    } else {
        ""
    };
    Some(format!(
        "invalid prefix {text:?}: `{bad}` cannot appear in a prefix{why}. Use ASCII letters, digits and `-`, `_`, `.`, `/`: `prefix = {fixed:?}`"
    ))
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

    fn errors_of(args: TokenStream) -> Vec<String> {
        let mut cx = Ctxt::default();
        CacheAsideArgs::parse(args, &mut cx);
        match cx.check() {
            Ok(()) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn suggests_the_closest_option() {
        let errors = errors_of(quote::quote!(prefix = "user", tll = "5m"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("did you mean `ttl`"), "{errors:?}");
        let errors = errors_of(quote::quote!(prefix = "user", lifetime = "5m"));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(!errors[0].contains("did you mean"), "{errors:?}");
        assert!(errors[1].contains("missing `ttl`"), "{errors:?}");
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix_error("user"), None);
        assert_eq!(prefix_error("user/v1.2_x-y"), None);
        let error = prefix_error("user:v1").unwrap();
        assert!(error.contains("`prefix = \"user-v1\"`"), "{error}");
        assert!(prefix_error("").unwrap().contains("empty"));
        assert!(prefix_error("café").unwrap().contains("`é`"));
    }

    #[test]
    fn says_what_to_write_instead() {
        let errors = errors_of(quote::quote!(
            prefix = user,
            ttl = 60,
            skip = [db, conn],
            key = id
        ));
        assert_eq!(
            errors,
            [
                "`prefix` takes a string literal: write `prefix = \"user\"`",
                "`skip` takes a list of arguments in parentheses: write `skip(db, conn)`",
                "`key` takes a string literal: write `key = \"{id}\"`",
            ]
        );
        let errors = errors_of(quote::quote!(
            prefix = "user",
            ttl = 60,
            cache = "self.cache"
        ));
        assert_eq!(
            errors,
            [
                "`cache` takes an expression, not a string: write `cache = self.cache` without quotes"
            ]
        );
    }
}

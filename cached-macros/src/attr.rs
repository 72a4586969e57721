//! The options of `#[cache_aside(...)]`, `#[write_through(...)]` and
//! `#[invalidates(...)]`: parsed into raw `name = value` records first, then
//! checked one by one so every mistake is reported.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::visit_mut::{self, VisitMut};
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

use crate::ctxt::Ctxt;
use crate::duration;
use crate::formats::{self, CODEC, COMPRESS, COMPRESS_ABOVE, ENCRYPT, Formats};
use crate::suggest;
use crate::template::{Piece, Template};

/// Option names, in the order the docs list them.
const PREFIX: &str = "prefix";
const TTL: &str = "ttl";
const KEY: &str = "key";
const SKIP: &str = "skip";
const TAGS: &str = "tags";
const KEYS: &str = "keys";
const PREFIXES: &str = "prefixes";
const WHEN: &str = "when";
const CACHE: &str = "cache";
const CRATE: &str = "crate";
pub(crate) const LOCK: &str = "lock";
pub(crate) const REFRESH_AHEAD: &str = "refresh_ahead";
pub(crate) const STALE: &str = "stale";
pub(crate) const FAIL_SAFE: &str = "fail_safe";
pub(crate) const TIMEOUT: &str = "timeout";
pub(crate) const HARD_TIMEOUT: &str = "hard_timeout";
pub(crate) const CACHE_NONE: &str = "cache_none";
const COMPANIONS: &str = "companions";
/// Every option of every macro, for messages about a value.
const OPTIONS: &[&str] = &[
    PREFIX,
    TTL,
    KEY,
    SKIP,
    TAGS,
    KEYS,
    PREFIXES,
    WHEN,
    CACHE,
    CRATE,
    LOCK,
    REFRESH_AHEAD,
    STALE,
    FAIL_SAFE,
    TIMEOUT,
    HARD_TIMEOUT,
    CACHE_NONE,
    CODEC,
    COMPRESS,
    COMPRESS_ABOVE,
    ENCRYPT,
    COMPANIONS,
];

/// Which attribute is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    CacheAside,
    WriteThrough,
    Invalidates,
    CacheBatch,
}

impl Kind {
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            Self::CacheAside => "#[cache_aside]",
            Self::WriteThrough => "#[write_through]",
            Self::Invalidates => "#[invalidates]",
            Self::CacheBatch => "#[cache_batch]",
        }
    }

    /// The options this attribute takes, in the order the docs list them.
    fn options(self) -> &'static [&'static str] {
        match self {
            Self::CacheAside => &[
                PREFIX,
                TTL,
                KEY,
                SKIP,
                TAGS,
                STALE,
                FAIL_SAFE,
                TIMEOUT,
                HARD_TIMEOUT,
                REFRESH_AHEAD,
                LOCK,
                CACHE_NONE,
                CODEC,
                COMPRESS,
                COMPRESS_ABOVE,
                ENCRYPT,
                CACHE,
                COMPANIONS,
                CRATE,
            ],
            Self::WriteThrough => &[
                PREFIX,
                TTL,
                KEY,
                SKIP,
                TAGS,
                CODEC,
                COMPRESS,
                COMPRESS_ABOVE,
                ENCRYPT,
                CACHE,
                CRATE,
            ],
            Self::Invalidates => &[TAGS, KEYS, PREFIXES, WHEN, CACHE, CRATE],
            Self::CacheBatch => &[
                PREFIX,
                TTL,
                SKIP,
                TAGS,
                CACHE_NONE,
                CODEC,
                COMPRESS,
                COMPRESS_ABOVE,
                ENCRYPT,
                CACHE,
                CRATE,
            ],
        }
    }

    fn required(self) -> &'static [&'static str] {
        match self {
            Self::CacheAside => &[PREFIX, TTL],
            Self::WriteThrough => &[PREFIX, TTL, KEY],
            Self::Invalidates => &[],
            Self::CacheBatch => &[PREFIX, TTL],
        }
    }

    /// Whether the attribute stores one value per call (and so has a key,
    /// a TTL and a return shape).
    pub(crate) fn caches(self) -> bool {
        matches!(self, Self::CacheAside | Self::WriteThrough)
    }
}

/// `when = "..."` of `#[invalidates]`.
#[derive(Clone, Copy)]
pub(crate) enum When {
    After,
    Before,
    Always,
}

impl When {
    /// The runtime's `When` (`always` has an entry point of its own).
    pub(crate) fn runtime_name(self) -> &'static str {
        match self {
            Self::After => "After",
            Self::Before => "Before",
            Self::Always => unreachable!("`when = \"always\"` is `invalidating_always`"),
        }
    }
}

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

/// Whether the next item is a reader's call (`get_user(db, id)`,
/// `self.user(id)`, `users::get(id)`), not an option: it starts with a
/// path or `self` that no option is named, followed by a call, a path or a
/// method.
fn at_call(input: ParseStream) -> bool {
    let fork = input.fork();
    if fork.peek(Token![::]) {
        return true;
    }
    let Ok(ident) = fork.call(Ident::parse_any) else {
        return false;
    };
    !OPTIONS.contains(&ident.unraw().to_string().as_str())
        && (fork.peek(syn::token::Paren)
            || fork.peek(Token![::])
            || fork.peek(Token![.])
            || fork.peek(Token![<]))
}

/// The options as written: the readers' calls first (writers only), then
/// `name = value` options.
fn parse_raw(kind: Kind, input: ParseStream) -> syn::Result<(Vec<Expr>, Vec<RawOption>)> {
    let mut calls = Vec::new();
    while kind != Kind::CacheAside && !input.is_empty() && at_call(input) {
        calls.push(input.parse::<Expr>()?);
        if input.is_empty() {
            break;
        }
        if !input.peek(Token![,]) {
            return Err(input.error(
                "expected `,`: the reader's call is separated from the options by a comma, e.g. `get_user(db, id), crate = \"...\"`",
            ));
        }
        input.parse::<Token![,]>()?;
    }
    let mut options = Vec::new();
    while !input.is_empty() {
        if kind != Kind::CacheAside && at_call(input) {
            return Err(input.error(
                "a reader's call goes before the options: write it first, e.g. `#[invalidates(get_user(db, id), tags = [\"org:{org}\"])]`",
            ));
        }
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
    Ok((calls, options))
}

/// A reader named by its call in a writer: `get_user(db, id)`, rewritten to
/// call the reader's hidden companion that renders that call's entry.
pub(crate) struct Reader {
    /// The companion's call, spanned as the user's.
    pub(crate) target: TokenStream,
    /// The call as written, for messages.
    pub(crate) written: String,
    pub(crate) span: Span,
}

/// The hidden companion of a `#[cache_aside]` function `name` that renders
/// a call's entry.
pub(crate) fn target_name(name: &Ident) -> Ident {
    quote::format_ident!("__tiercache_reader_{}", name.unraw(), span = name.span())
}

fn reader(call: &Expr) -> syn::Result<Reader> {
    let span = syn::spanned::Spanned::span(call);
    let written = quote::ToTokens::to_token_stream(call)
        .to_string()
        .replace(" (", "(")
        .replace(" ,", ",")
        .replace(" . ", ".")
        .replace(" :: ", "::");
    let target = match call {
        Expr::Call(syn::ExprCall { func, args, .. }) => match &**func {
            Expr::Path(syn::ExprPath {
                qself: None, path, ..
            }) if !path.segments.is_empty() => {
                let mut path = path.clone();
                if let Some(last) = path.segments.last_mut() {
                    last.ident = target_name(&last.ident);
                }
                quote::quote_spanned!(span=> #path(#args))
            }
            _ => return Err(not_a_reader_call(call)),
        },
        Expr::MethodCall(syn::ExprMethodCall {
            receiver,
            method,
            turbofish,
            args,
            ..
        }) => {
            let method = target_name(method);
            quote::quote_spanned!(span=> #receiver.#method #turbofish(#args))
        }
        _ => return Err(not_a_reader_call(call)),
    };
    Ok(Reader {
        target,
        written,
        span,
    })
}

fn not_a_reader_call(expr: &Expr) -> syn::Error {
    syn::Error::new_spanned(
        expr,
        "name the reader as a call with this function's arguments: `get_user(db, id)`, `self.get_user(id)` or `Self::get_user(self, id)` (a `#[cache_aside]` function)",
    )
}

/// The checked options of an attribute. A required option that is missing
/// or invalid is `None`, its error is in the `Ctxt`, and nothing is
/// generated; the other options are still checked against the function.
pub(crate) struct Args {
    pub(crate) kind: Kind,
    pub(crate) prefix: Option<Prefix>,
    pub(crate) ttl_ms: Option<u64>,
    pub(crate) key: Option<Template>,
    pub(crate) skip: Vec<Ident>,
    /// Tag templates (`"org:{org}"`).
    pub(crate) tags: Vec<Template>,
    /// `prefix:key` templates of `#[invalidates]` (`"user:{id}"`).
    pub(crate) keys: Vec<Template>,
    /// Prefixes `#[invalidates]` forgets whole.
    pub(crate) prefixes: Vec<LitStr>,
    pub(crate) when: When,
    pub(crate) cache: Option<CacheOption>,
    pub(crate) krate: Path,
    pub(crate) resilience: Resilience,
    /// How values are stored in Redis.
    pub(crate) formats: Formats,
    /// The readers a writer names by their call.
    pub(crate) readers: Vec<Reader>,
    /// Whether a `#[cache_aside]` generates its companions.
    pub(crate) companions: bool,
}

/// The stampede and failure options of `#[cache_aside]`, each with the
/// option's name, for errors that depend on the function.
#[derive(Default)]
pub(crate) struct Resilience {
    pub(crate) stale: Option<(Ident, u64)>,
    pub(crate) fail_safe: Option<(Ident, u64)>,
    pub(crate) timeout: Option<(Ident, u64)>,
    pub(crate) hard_timeout: Option<(Ident, u64)>,
    /// XFetch's β; `Some(0.0)` for `refresh_ahead = false`.
    pub(crate) refresh_ahead: Option<(Ident, f64)>,
    pub(crate) lock: Option<(Ident, bool)>,
    pub(crate) cache_none: Option<(Ident, u64)>,
}

impl Resilience {
    /// The option that makes the body run in the background (and so needs
    /// owned copies of the arguments), if any.
    pub(crate) fn detaching(&self) -> Option<&Ident> {
        let refresh = self
            .refresh_ahead
            .as_ref()
            .filter(|(_, beta)| *beta > 0.0)
            .map(|(name, _)| name);
        let stale = self.stale.as_ref().map(|(name, _)| name);
        let timeout = self.timeout.as_ref().map(|(name, _)| name);
        stale.or(refresh).or(timeout)
    }
}

/// `cache = expr`, with the option's name: a value of the wrong type is
/// reported on the expression, "expected due to" the name.
pub(crate) struct CacheOption {
    pub(crate) name: Ident,
    pub(crate) expr: Expr,
}

impl Args {
    /// Parses and checks the options; every mistake is recorded in `cx`.
    /// `None` comes back only when the attribute does not parse at all.
    pub(crate) fn parse(kind: Kind, args: TokenStream, cx: &mut Ctxt) -> Option<Self> {
        let (calls, raw) = match (|input: ParseStream| parse_raw(kind, input)).parse2(args) {
            Ok(raw) => raw,
            Err(error) => {
                cx.push(error);
                return None;
            }
        };
        let readers: Vec<Reader> = calls
            .iter()
            .filter_map(|call| record(cx, reader(call)))
            .collect();
        if kind == Kind::WriteThrough
            && let [_, extra, ..] = calls.as_slice()
        {
            cx.error_spanned_by(
                extra,
                "a write-through stores one entry: name one reader's call, and forget the others' entries with `#[invalidates(reader(args))]` on the same function",
            );
        }
        let mut companions = true;
        let mut seen: Vec<String> = Vec::new();
        // Options an unknown name was taken for: not reported missing as well.
        let mut suggested: Vec<&str> = Vec::new();
        let (mut prefix, mut ttl_ms, mut key, mut skip, mut cache, mut krate) =
            (None, None, None, Vec::new(), None, None);
        let (mut tags, mut keys, mut prefixes, mut when) =
            (Vec::new(), Vec::new(), Vec::new(), When::After);
        let mut resilience = Resilience::default();
        let mut storage = Formats::default();
        let options = kind.options();
        for RawOption { name, value } in raw {
            let text = name.to_string();
            if !options.contains(&text.as_str()) {
                let closest = suggest::closest(&text, options);
                cx.error_spanned_by(&name, unknown_option(kind, &text, closest));
                suggested.extend(closest);
                continue;
            }
            if seen.contains(&text) {
                cx.error_spanned_by(&name, format!("`{text}` is given twice: keep one"));
                continue;
            }
            seen.push(text.clone());
            if kind == Kind::WriteThrough && !calls.is_empty() && text != CRATE {
                let call = readers
                    .first()
                    .map_or_else(String::new, |r| r.written.clone());
                cx.error_spanned_by(
                    &name,
                    format!("`{text}` comes from the reader: `{call}` names its prefix, key, ttl, tags and cache. Remove `{text}`, or drop the reader's call and give `prefix`, `ttl` and `key` here"),
                );
                continue;
            }
            match (text.as_str(), value) {
                (SKIP, RawValue::List(names)) => skip.extend(names),
                (REFRESH_AHEAD, RawValue::Flag) => resilience.refresh_ahead = Some((name, 1.0)),
                (LOCK, RawValue::Flag) => resilience.lock = Some((name, true)),
                (ENCRYPT, RawValue::Flag) => storage.encrypt = Some(name),
                (ENCRYPT, RawValue::Assign(expr)) => {
                    let on = record(cx, bool_value(ENCRYPT, &ungrouped(expr)));
                    storage.encrypt = on.filter(|on| *on).map(|_| name);
                }
                (COMPANIONS, RawValue::Flag) => companions = true,
                (COMPANIONS, RawValue::Assign(expr)) => {
                    companions =
                        record(cx, bool_value(COMPANIONS, &ungrouped(expr))).unwrap_or(true);
                }
                (REFRESH_AHEAD, RawValue::Assign(expr)) => {
                    let beta = beta(&ungrouped(expr));
                    resilience.refresh_ahead = record(cx, beta).map(|beta| (name, beta));
                }
                (LOCK, RawValue::Assign(expr)) => {
                    let lock = bool_value(LOCK, &ungrouped(expr));
                    resilience.lock = record(cx, lock).map(|on| (name, on));
                }
                (SKIP, RawValue::Assign(expr)) => cx.error_spanned_by(
                    quote::quote!(#name = #expr),
                    format!(
                        "`skip` takes a list of arguments in parentheses: write {}",
                        skip_example(&expr)
                    ),
                ),
                (_, RawValue::Assign(expr)) => match text.as_str() {
                    // Written back as is: an invisible group keeps its
                    // precedence.
                    CACHE => {
                        cache = record(cx, cache_expr(expr)).map(|expr| CacheOption {
                            name: name.clone(),
                            expr,
                        })
                    }
                    _ => {
                        let expr = ungrouped(expr);
                        match text.as_str() {
                            PREFIX => prefix = record(cx, prefix_value(&expr)),
                            TTL => ttl_ms = record(cx, duration::parse(TTL, &expr)),
                            KEY => {
                                key = record(
                                    cx,
                                    string_value(KEY, &expr)
                                        .and_then(|lit| Template::parse(&lit, "key")),
                                )
                            }
                            CRATE => krate = record(cx, crate_path(&expr)),
                            TAGS => {
                                let parsed = templates(TAGS, &expr, tag_template)
                                    .and_then(|tags| within_tag_limit(kind, &expr, tags));
                                tags = record(cx, parsed).unwrap_or_default()
                            }
                            KEYS => {
                                keys = record(cx, templates(KEYS, &expr, prefixed_key))
                                    .unwrap_or_default()
                            }
                            PREFIXES => {
                                prefixes = record(cx, prefix_list(&expr)).unwrap_or_default()
                            }
                            WHEN => when = record(cx, when_value(&expr)).unwrap_or(When::After),
                            CODEC => {
                                let lit = string_value(CODEC, &expr);
                                storage.codec = record(cx, lit.and_then(formats::codec));
                            }
                            COMPRESS => {
                                let lit = string_value(COMPRESS, &expr);
                                storage.compress = record(cx, lit.and_then(formats::compress));
                            }
                            COMPRESS_ABOVE => {
                                let bytes = record(cx, formats::compress_above(&expr));
                                storage.compress_above = bytes.map(|bytes| (name.clone(), bytes));
                            }
                            STALE | FAIL_SAFE | TIMEOUT | HARD_TIMEOUT | CACHE_NONE => {
                                let ms = record(cx, duration::parse(&text, &expr));
                                let slot = match text.as_str() {
                                    STALE => &mut resilience.stale,
                                    FAIL_SAFE => &mut resilience.fail_safe,
                                    TIMEOUT => &mut resilience.timeout,
                                    HARD_TIMEOUT => &mut resilience.hard_timeout,
                                    _ => &mut resilience.cache_none,
                                };
                                *slot = ms.map(|ms| (name.clone(), ms));
                            }
                            _ => unreachable!("every option is matched"),
                        }
                    }
                },
                (_, _) => cx
                    .error_spanned_by(&name, format!("`{text}` takes a value: {}", example(&text))),
            }
        }
        let required = if calls.is_empty() {
            kind.required()
        } else {
            &[]
        };
        for &option in required {
            if !seen.iter().any(|s| s == option) && !suggested.contains(&option) {
                let message = if option == KEY {
                    "missing `key`: add the key template of the `#[cache_aside]` that reads this entry, e.g. `key = \"{id}\"`".to_owned()
                } else {
                    format!("missing `{option}`: add {}", example(option))
                };
                cx.push(syn::Error::new(Span::call_site(), message));
            }
        }
        let targets = [TAGS, KEYS, PREFIXES];
        if kind == Kind::Invalidates
            && calls.is_empty()
            && !seen.iter().any(|s| targets.contains(&s.as_str()))
            && !suggested.iter().any(|s| targets.contains(s))
        {
            cx.push(syn::Error::new(
                Span::call_site(),
                "nothing to invalidate: name a reader's call (`get_user(db, id)`), or add `tags = [\"org:{org}\"]`, `keys = [\"user:{id}\"]` or `prefixes = [\"user\"]`",
            ));
        }
        Some(Self {
            kind,
            prefix,
            ttl_ms,
            key,
            skip,
            tags,
            keys,
            prefixes,
            when,
            cache,
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::tiercache)),
            resilience,
            formats: storage,
            readers,
            companions,
        })
    }
}

/// The expression without the invisible groups `macro_rules!` wraps its
/// fragments in (`prefix = $p` with `$p:expr`, a `$t:literal` in a list),
/// as serde_derive's `ungroup` does: what the options read is what the user
/// wrote.
fn ungrouped(mut expr: Expr) -> Expr {
    struct Ungroup;
    impl VisitMut for Ungroup {
        fn visit_expr_mut(&mut self, expr: &mut Expr) {
            while let Expr::Group(group) = expr {
                *expr = (*group.expr).clone();
            }
            visit_mut::visit_expr_mut(self, expr);
        }
    }
    Ungroup.visit_expr_mut(&mut expr);
    expr
}

fn record<T>(cx: &mut Ctxt, result: syn::Result<T>) -> Option<T> {
    result.map_err(|error| cx.push(error)).ok()
}

fn example(option: &str) -> &'static str {
    match option {
        PREFIX => {
            "`prefix = \"user\"` (names what this function caches; shared by its writers), or a `const` such as `prefix = USER`"
        }
        TTL => "`ttl = \"5m\"` (or \"30s\", \"1h30m\", or an integer of seconds)",
        KEY => "`key = \"{id}:{lang}\"`",
        CACHE => "`cache = self.cache` (any expression that derefs to `tiercache::Cache`)",
        CRATE => "`crate = \"my_crate::tiercache\"`",
        TAGS => "`tags = [\"org:{org}\"]`",
        KEYS => "`keys = [\"user:{id}\"]` (the prefix, then the key template)",
        PREFIXES => "`prefixes = [\"user\"]`",
        WHEN => "`when = \"before\"` (or \"after\", the default, or \"always\")",
        STALE => {
            "`stale = \"1h\"` (past the ttl, serve the old value at once while one refresh runs)"
        }
        FAIL_SAFE => {
            "`fail_safe = \"1h\"` (when the load fails or times out, serve a value up to this much past its ttl)"
        }
        TIMEOUT => "`timeout = \"2s\"` (past it, a slow load is answered with the fail-safe value)",
        HARD_TIMEOUT => "`hard_timeout = \"10s\"` (past it, the load is given up)",
        CACHE_NONE => "`cache_none = \"30s\"` (cache `None` for this long)",
        COMPANIONS => {
            "`companions = false` (no `_invalidate`, `_refresh`, `_peek` and `_set` functions beside this one: needed in a trait impl)"
        }
        LOCK => "`lock = false` (or `true`, the default with Redis)",
        CODEC => {
            "`codec = \"postcard\"` (or \"json\", the default, or \"msgpack\"): how values are serialized in Redis"
        }
        COMPRESS => {
            "`compress = \"zstd\"` (or \"lz4\", or \"none\"): payloads from `compress_above` bytes are compressed in Redis"
        }
        COMPRESS_ABOVE => "`compress_above = 4096` (bytes; the cache's default is 1024)",
        ENCRYPT => {
            "`encrypt` alone (or `encrypt = true`): values are encrypted in Redis with the cache's `KeyRing`"
        }
        REFRESH_AHEAD => {
            "`refresh_ahead` (or `refresh_ahead = 2.0`, XFetch's beta: higher refreshes earlier)"
        }
        _ => "`skip(db)`",
    }
}

fn unknown_option(kind: Kind, text: &str, closest: Option<&str>) -> String {
    let valid = kind
        .options()
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let attribute = kind.attribute();
    if OPTIONS.contains(&text) {
        let owners: Vec<Kind> = [
            Kind::CacheAside,
            Kind::WriteThrough,
            Kind::Invalidates,
            Kind::CacheBatch,
        ]
        .into_iter()
        .filter(|other| other.options().contains(&text))
        .collect();
        let names: Vec<&str> = owners.iter().map(|owner| owner.attribute()).collect();
        let owner = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => names.concat(),
        };
        // A writer may also invalidate: the option belongs on a second
        // attribute of the same function.
        let instead = if kind == Kind::WriteThrough && owners == [Kind::Invalidates] {
            "move it to an `#[invalidates(...)]` on the same function, or remove it"
        } else {
            "remove it"
        };
        return format!(
            "`{text}` is an option of {owner}, not of {attribute}: {instead}. Valid options of {attribute} are {valid}"
        );
    }
    // A writer's reader is named by its call, not its name.
    let reader = if kind == Kind::CacheAside {
        String::new()
    } else {
        format!(
            ". To name the `#[cache_aside]` function `{text}` as the reader, write its call: `{text}(db, id)`"
        )
    };
    match closest {
        Some(option) => format!(
            "unknown option `{text}`: did you mean `{option}`? Valid options: {valid}{reader}"
        ),
        None => format!("unknown option `{text}`: valid options are {valid}{reader}"),
    }
}

/// `tags = ["org:{org}", ...]`: a non-empty list of string templates.
fn templates(
    option: &str,
    expr: &Expr,
    parse: fn(&LitStr) -> syn::Result<Template>,
) -> syn::Result<Vec<Template>> {
    let items = match expr {
        Expr::Array(array) => &array.elems,
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => {
            return Err(syn::Error::new_spanned(
                lit,
                format!(
                    "`{option}` takes a list: write `{option} = [{:?}]`",
                    lit.value()
                ),
            ));
        }
        _ => {
            return Err(syn::Error::new_spanned(
                expr,
                format!(
                    "`{option}` takes a list of string literals: {}",
                    example(option)
                ),
            ));
        }
    };
    if items.is_empty() {
        return Err(syn::Error::new_spanned(
            expr,
            format!(
                "`{option} = []` is empty: list at least one, e.g. {}, or remove `{option}`",
                example(option)
            ),
        ));
    }
    let mut errors: Option<syn::Error> = None;
    let mut parsed = Vec::new();
    for item in items {
        let result = list_item(option, item).and_then(|lit| parse(&lit));
        match result {
            Ok(template) => parsed.push(template),
            Err(error) => match &mut errors {
                Some(errors) => errors.combine(error),
                None => errors = Some(error),
            },
        }
    }
    errors.map_or(Ok(parsed), Err)
}

/// The most tags a cached entry can have: its envelope records the version
/// of each, beside its namespace's and its prefix's, in a one-byte count
/// (kept equal to the runtime's `envelope::MAX_VERSIONS` minus 2).
const MAX_TAGS: usize = 253;

/// An entry of a reader or a writer records its tags' versions; an
/// invalidation only bumps them, and may list any number.
fn within_tag_limit(kind: Kind, expr: &Expr, tags: Vec<Template>) -> syn::Result<Vec<Template>> {
    if kind == Kind::Invalidates || tags.len() <= MAX_TAGS {
        return Ok(tags);
    }
    Err(syn::Error::new_spanned(
        expr,
        format!(
            "`tags` lists {} tags, more than the {MAX_TAGS} an entry can have (it records the version of each tag, and of its prefix and namespace, 255 in all): remove {}, e.g. tag what many entries share (`tags = [\"org:{{org}}\"]`) rather than each thing one entry holds",
            tags.len(),
            tags.len() - MAX_TAGS,
        ),
    ))
}

/// One entry of `tags = [...]`, `keys = [...]` or `prefixes = [...]`: a
/// string literal.
fn list_item(option: &str, item: &Expr) -> syn::Result<LitStr> {
    if let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = item
    {
        return Ok(lit.clone());
    }
    let instead = match (option, single_ident(item)) {
        (TAGS, Some(name)) => format!("`tags = [\"{name}:{{{name}}}\"]`"),
        (KEYS, Some(name)) => format!(
            "`keys = [\"user:{{{name}}}\"]`, where `user` is the prefix of the `#[cache_aside]` that reads the key"
        ),
        (_, Some(name)) => format!("`{option} = [{name:?}]`"),
        (_, None) => example(option).to_owned(),
    };
    Err(syn::Error::new_spanned(
        item,
        format!("`{option}` lists string literals: write {instead}"),
    ))
}

/// A tag: a template that renders to something.
fn tag_template(lit: &LitStr) -> syn::Result<Template> {
    let template = Template::parse(lit, "tag")?;
    if template.pieces.is_empty() {
        return Err(syn::Error::new_spanned(
            lit,
            "a tag cannot be empty: name what the entries share, e.g. \"org:{org}\", or remove it",
        ));
    }
    Ok(template)
}

/// `"user:{id}"` in `keys = [...]`: a literal prefix, `:`, then the key
/// template, as `#[cache_aside(prefix = "user", key = "{id}")]` renders it.
fn prefixed_key(lit: &LitStr) -> syn::Result<Template> {
    let template = Template::parse(lit, "key")?;
    let value = lit.value();
    let first = match template.pieces.first() {
        Some(Piece::Literal(text)) => text.as_str(),
        _ => "",
    };
    let Some((prefix, rest)) = first.split_once(':') else {
        if template.pieces.len() == 1 && prefix_error(first, &PrefixIn::Prefixes).is_none() {
            return Err(syn::Error::new_spanned(
                lit,
                format!(
                    "{value:?} is a prefix, not a key: write `prefixes = [{value:?}]` to forget every entry of `#[cache_aside(prefix = {value:?})]`, or `keys = [\"{value}:{{id}}\"]` for the one entry of key \"{{id}}\""
                ),
            ));
        }
        // `"user{id}"` or `"user/{id}"` most likely misses the `:` after
        // the prefix; `"{id}"` misses the prefix.
        let (prefix, key) = match first.trim_end_matches(['/', '|', '@', '=', ';']) {
            written
                if !written.is_empty() && prefix_error(written, &PrefixIn::Prefix).is_none() =>
            {
                (written, &value[first.len()..])
            }
            _ => ("user", value.as_str()),
        };
        return Err(syn::Error::new_spanned(
            lit,
            format!(
                "{value:?} does not start with a prefix and `:`: a key in `keys` is the prefix of the `#[cache_aside]` that reads it, `:`, then its key template. Write `keys = [\"{prefix}:{key}\"]` for `#[cache_aside(prefix = {prefix:?}, key = {key:?})]`"
            ),
        ));
    };
    let rest = format!("{rest}{}", &value[first.len()..]);
    if let Some(message) = prefix_error(prefix, &PrefixIn::Key(&rest)) {
        return Err(syn::Error::new_spanned(lit, message));
    }
    Ok(template)
}

/// `prefixes = ["user", ...]`.
fn prefix_list(expr: &Expr) -> syn::Result<Vec<LitStr>> {
    let templates = templates(PREFIXES, expr, |lit| {
        match prefix_error(&lit.value(), &PrefixIn::Prefixes) {
            Some(message) => Err(syn::Error::new_spanned(lit, message)),
            None => Template::parse(lit, "key"),
        }
    })?;
    Ok(templates.into_iter().map(|template| template.lit).collect())
}

/// `refresh_ahead = true | false | β`.
fn beta(expr: &Expr) -> syn::Result<f64> {
    let err = |message: &str| Err(syn::Error::new_spanned(expr, message));
    let Expr::Lit(ExprLit { lit, .. }) = expr else {
        return err(
            "`refresh_ahead` takes `true`, `false` or XFetch's beta as a number, e.g. `refresh_ahead = 1.0` (the default when written alone); higher refreshes earlier",
        );
    };
    let value = match lit {
        Lit::Bool(on) => return Ok(if on.value { 1.0 } else { 0.0 }),
        Lit::Float(f) => f.base10_parse::<f64>(),
        Lit::Int(i) => i.base10_parse::<f64>(),
        _ => return err("`refresh_ahead` takes `true`, `false` or a number such as `1.0`"),
    };
    match value {
        Ok(beta) if beta > 0.0 && beta <= 10.0 => Ok(beta),
        _ => err(
            "`refresh_ahead`'s beta must be above 0 and at most 10 (1.0 is XFetch's optimum; write `refresh_ahead = false` to turn it off)",
        ),
    }
}

fn bool_value(option: &str, expr: &Expr) -> syn::Result<bool> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(on), ..
        }) => Ok(on.value),
        Expr::Lit(ExprLit {
            lit: Lit::Str(text),
            ..
        }) if matches!(text.value().as_str(), "true" | "false") => Err(syn::Error::new_spanned(
            expr,
            format!(
                "`{option}` takes a bool, not a string: write `{option} = {}`",
                text.value()
            ),
        )),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!("`{option}` takes `true` or `false`: {}", example(option)),
        )),
    }
}

fn when_value(expr: &Expr) -> syn::Result<When> {
    let lit = string_value(WHEN, expr)?;
    match lit.value().as_str() {
        "after" => Ok(When::After),
        "before" => Ok(When::Before),
        "always" => Ok(When::Always),
        other => {
            let write = match suggest::closest(other, &["after", "before", "always"]) {
                Some(meant) => format!("did you mean \"{meant}\"? Write"),
                None => "write".to_owned(),
            };
            Err(syn::Error::new_spanned(
                &lit,
                format!(
                    "`when = {other:?}` is not a moment: {write} \"after\" (the default: after the body succeeded), \"before\" (before the body, and after it succeeded) or \"always\" (after the body, even when it failed)"
                ),
            ))
        }
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

/// `prefix = "user"`, or `prefix = USER` naming a `const &str` that a
/// reader and its writers share.
pub(crate) enum Prefix {
    Literal(LitStr),
    /// Checked at compile time by a const assertion in the generated code.
    Const(Path),
}

impl quote::ToTokens for Prefix {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        match self {
            Self::Literal(lit) => lit.to_tokens(tokens),
            Self::Const(path) => path.to_tokens(tokens),
        }
    }
}

/// A path whose last segment is `SCREAMING_CASE`: a constant, by Rust's
/// naming convention (a lowercase name is more likely a forgotten string).
fn const_path(expr: &Expr) -> Option<Path> {
    let Expr::Path(path) = expr else { return None };
    let last = path.path.segments.last()?.ident.to_string();
    let screaming = last.chars().any(|c| c.is_ascii_uppercase())
        && last
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    (path.qself.is_none() && screaming).then(|| path.path.clone())
}

fn prefix_value(expr: &Expr) -> syn::Result<Prefix> {
    if let Some(path) = const_path(expr) {
        return Ok(Prefix::Const(path));
    }
    let lit = string_value(PREFIX, expr)?;
    match prefix_error(&lit.value(), &PrefixIn::Prefix) {
        Some(message) => Err(syn::Error::new_spanned(&lit, message)),
        None => Ok(Prefix::Literal(lit)),
    }
}

/// Where a prefix is written, to say what to write instead.
enum PrefixIn<'a> {
    /// `prefix = "user"`.
    Prefix,
    /// `prefixes = ["user"]`.
    Prefixes,
    /// `keys = ["user:{id}"]`, with what follows the prefix's `:`.
    Key(&'a str),
}

impl PrefixIn<'_> {
    fn write(&self, prefix: &str) -> String {
        match self {
            Self::Prefix => format!("`prefix = {prefix:?}`"),
            Self::Prefixes => format!("`prefixes = [{prefix:?}]`"),
            Self::Key(rest) => format!("`keys = [\"{prefix}:{rest}\"]`"),
        }
    }
}

fn prefix_error(text: &str, written: &PrefixIn) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if text.is_empty() {
        let what = match written {
            PrefixIn::Prefix => "name what this function caches",
            PrefixIn::Prefixes | PrefixIn::Key(_) => {
                "name the prefix of the `#[cache_aside]` to invalidate"
            }
        };
        return Some(format!(
            "the prefix is empty: {what}, e.g. {}",
            written.write("user")
        ));
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
        "invalid prefix {text:?}: `{bad}` cannot appear in a prefix{why}. Use ASCII letters, digits and `-`, `_`, `.`, `/`: {}",
        written.write(&fixed)
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
        Args::parse(Kind::CacheAside, args, &mut cx);
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
        let prefix = |text| prefix_error(text, &PrefixIn::Prefix);
        assert_eq!(prefix("user"), None);
        assert_eq!(prefix("user/v1.2_x-y"), None);
        let error = prefix("user:v1").unwrap();
        assert!(error.contains("`prefix = \"user-v1\"`"), "{error}");
        assert!(prefix("").unwrap().contains("empty"));
        assert!(prefix("café").unwrap().contains("`é`"));
        let error = prefix_error("user list", &PrefixIn::Prefixes).unwrap();
        assert!(error.contains("`prefixes = [\"user-list\"]`"), "{error}");
        let error = prefix_error("user list", &PrefixIn::Key("{id}")).unwrap();
        assert!(error.contains("`keys = [\"user-list:{id}\"]`"), "{error}");
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

//! Key and tag templates: `key = "{id}:{lang}"`, `key = "{self.tenant}/{id}"`,
//! `tags = ["org:{org}"]`.

use syn::LitStr;

/// The separators a template must put between two placeholders; no escaped
/// value contains them (kept equal to the runtime's `TEMPLATE_SEPARATORS`).
const SEPARATORS: &[char] = &[':', '/', '|', '@', '=', ';'];

/// Characters a template's literal text may hold besides the separators.
fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Text written as is.
    Literal(String),
    /// `{root.field.field}`: an argument (or `self`) and a field path.
    Placeholder { root: String, fields: Vec<String> },
}

/// The identifier a placeholder's name stands for: raw when it is a
/// keyword (`{f.type}` is `f.r#type`). Every name a template holds was
/// checked to be one of the two.
pub(crate) fn ident(name: &str, span: proc_macro2::Span) -> syn::Ident {
    if name == "self" {
        return syn::Ident::new(name, span);
    }
    // `gen` is reserved in edition 2024, which syn's parser does not know.
    if name == "gen" {
        return syn::Ident::new_raw(name, span);
    }
    match syn::parse_str::<syn::Ident>(name) {
        Ok(mut ident) => {
            ident.set_span(span);
            ident
        }
        Err(_) => syn::Ident::new_raw(name, span),
    }
}

/// A parsed template.
pub(crate) struct Template {
    pub(crate) lit: LitStr,
    pub(crate) pieces: Vec<Piece>,
}

impl Template {
    /// `what` names the template in messages: `"key"` or `"tag"`.
    pub(crate) fn parse(lit: &LitStr, what: &str) -> syn::Result<Self> {
        let text = lit.value();
        let err = |message: String| syn::Error::new(lit.span(), message);
        let mut pieces = Vec::new();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let Some(end) = after.find('}') else {
                    return Err(err(format!(
                        "unclosed `{{` in {what} template {text:?}: close the placeholder, e.g. \"{{id}}\""
                    )));
                };
                let inner = &after[..end];
                if inner.contains('{') {
                    return Err(err(format!(
                        "unclosed `{{` in {what} template {text:?}: close each placeholder before the next, e.g. \"{{a}}:{{b}}\""
                    )));
                }
                pieces.push(
                    placeholder(inner)
                        .map_err(|why| err(format!("{why} in {what} template {text:?}")))?,
                );
                rest = &after[end + 1..];
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let literal = &rest[..end];
                if let Some(bad) = literal
                    .chars()
                    .find(|&c| !is_literal_char(c) && !SEPARATORS.contains(&c))
                {
                    let hint = match bad {
                        '}' => "a `}` without its `{`".to_owned(),
                        ' ' => format!("a space cannot appear in a {what}"),
                        c if c.is_whitespace() => format!("{c:?} cannot appear in a {what}"),
                        c => format!("`{c}` cannot appear in a {what}"),
                    };
                    return Err(err(format!(
                        "{hint} (template {text:?}): between placeholders write ASCII letters and digits, `-`, `_`, `.` and the separators `:` `/` `|` `@` `=` `;` (a value of an argument may hold any text: it is escaped)"
                    )));
                }
                pieces.push(Piece::Literal(literal.to_owned()));
                rest = &rest[end..];
            }
        }
        check_separated(&pieces).map_err(err)?;
        Ok(Self {
            lit: lit.clone(),
            pieces,
        })
    }

    pub(crate) fn placeholders(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Placeholder { root, fields } => Some((root.as_str(), fields.as_slice())),
            Piece::Literal(_) => None,
        })
    }
}

fn placeholder(inner: &str) -> Result<Piece, String> {
    if inner.is_empty() {
        return Err("empty placeholder `{}`: name an argument, e.g. `{id}`".to_owned());
    }
    let mut parts = inner
        .split('.')
        .map(|part| part.strip_prefix("r#").unwrap_or(part));
    let root = parts.next().unwrap_or_default();
    let fields: Vec<String> = parts.map(str::to_owned).collect();
    // A name Rust accepts, plain or raw (`type` is `r#type`), exactly as
    // written: the parser would also take `"type "` or `"x/**/"`.
    let parses_as =
        |text: &str| syn::parse_str::<syn::Ident>(text).is_ok_and(|ident| ident == text);
    let is_ident = |s: &str| s != "_" && (parses_as(s) || parses_as(&format!("r#{s}")));
    // Names that cannot be fields, raw or not.
    let is_field = |s: &str| {
        (is_ident(s) && !matches!(s, "self" | "Self" | "super" | "crate"))
            || (s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u32>().is_ok())
    };
    if !(is_ident(root) || root == "self") || !fields.iter().all(|f| is_field(f)) {
        return Err(format!(
            "`{{{inner}}}` is not an argument name: write `{{arg}}` or `{{arg.field}}`"
        ));
    }
    Ok(Piece::Placeholder {
        root: root.to_owned(),
        fields,
    })
}

/// Two placeholders must have a separator between them, or `{a}{b}` with
/// ("1", "23") and ("12", "3") would be one key.
fn check_separated(pieces: &[Piece]) -> Result<(), String> {
    let mut last_placeholder: Option<&str> = None;
    for piece in pieces {
        match piece {
            Piece::Placeholder { root, .. } => {
                if let Some(previous) = last_placeholder {
                    return Err(format!(
                        "placeholders `{{{previous}}}` and `{{{root}}}` need a separator between them, e.g. \"{{{previous}}}:{{{root}}}\": one of `:` `/` `|` `@` `=` `;`"
                    ));
                }
                last_placeholder = Some(root);
            }
            Piece::Literal(text) => {
                if text.contains(SEPARATORS) {
                    last_placeholder = None;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Piece>, String> {
        let lit = LitStr::new(text, proc_macro2::Span::call_site());
        Template::parse(&lit, "key")
            .map(|t| t.pieces)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_placeholders_and_literals() {
        assert_eq!(
            parse("v2/{id}:{user.org}").unwrap(),
            vec![
                Piece::Literal("v2/".into()),
                Piece::Placeholder {
                    root: "id".into(),
                    fields: vec![]
                },
                Piece::Literal(":".into()),
                Piece::Placeholder {
                    root: "user".into(),
                    fields: vec!["org".into()]
                },
            ]
        );
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_what_would_break_keys() {
        for (bad, why) in [
            ("{id", "unclosed"),
            ("{a{b}", "unclosed"),
            ("{}", "empty placeholder"),
            ("{a b}", "not an argument name"),
            ("{a}{b}", "need a separator"),
            ("{a}-{b}", "need a separator"),
            ("{a}}", "without its"),
            ("{a} {b}", "cannot appear"),
            ("{a}#{b}", "cannot appear"),
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
        assert!(parse("{a}-x:{b}").is_ok());
        assert!(parse("{f.self}").is_err());
        assert!(parse("{t.+1}").is_err());
        for spaced in ["{f.type }", "{f.type\t}", "{f.type/**/}", "{f.x }", "{ x}"] {
            let error = parse(spaced).unwrap_err();
            assert!(
                error.contains("not an argument name"),
                "{spaced:?}: {error}"
            );
        }
        assert!(parse("{_}").is_err());
        assert!(parse("café:{id}").unwrap_err().contains("ASCII letters"));
    }

    #[test]
    fn keywords_are_raw_identifiers() {
        let span = proc_macro2::Span::call_site();
        assert_eq!(ident("type", span).to_string(), "r#type");
        assert_eq!(ident("gen", span).to_string(), "r#gen");
        assert_eq!(ident("name", span).to_string(), "name");
        assert_eq!(ident("self", span).to_string(), "self");
    }

    #[test]
    fn raw_names_are_the_names() {
        assert_eq!(
            parse("{r#type}:{f.r#type}:{f.type}").unwrap(),
            vec![
                Piece::Placeholder {
                    root: "type".into(),
                    fields: vec![]
                },
                Piece::Literal(":".into()),
                Piece::Placeholder {
                    root: "f".into(),
                    fields: vec!["type".into()]
                },
                Piece::Literal(":".into()),
                Piece::Placeholder {
                    root: "f".into(),
                    fields: vec!["type".into()]
                },
            ]
        );
    }

    #[test]
    fn names_what_the_template_is() {
        let lit = LitStr::new("org:{org", proc_macro2::Span::call_site());
        let error = Template::parse(&lit, "tag").err().unwrap().to_string();
        assert!(error.contains("in tag template"), "{error}");
        let lit = LitStr::new("org {org}", proc_macro2::Span::call_site());
        let error = Template::parse(&lit, "tag").err().unwrap().to_string();
        assert!(error.contains("cannot appear in a tag"), "{error}");
    }
}

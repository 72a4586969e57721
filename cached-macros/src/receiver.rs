//! The `self` of a background run: `stale`, `refresh_ahead` and `timeout`
//! run the body again on an owned copy of `self`, bound to a variable, so
//! the body's `self` is renamed to it, as async-trait's `ReplaceSelf` does:
//! on the syntax tree, so that `use` trees (`use std::fmt::{self, Write};`),
//! `self::` paths and nested items keep theirs. Inside a macro's tokens,
//! where there is no tree, every `self` is renamed but a path's and a
//! field name's (`tracing::info!(self = ?self)`); a `{self}` in a format
//! string cannot be renamed, and is an error that says what to write.

use proc_macro2::{Group, Ident, Literal, TokenStream, TokenTree};
use syn::visit::{self, Visit};
use syn::visit_mut::{self, VisitMut};
use syn::{Block, Item, Macro, Path};

use crate::ctxt::Ctxt;

/// `block` with its `self` renamed to `this`.
pub(crate) fn renamed(block: &Block, this: &Ident) -> Block {
    let mut block = block.clone();
    Rename(this).visit_block_mut(&mut block);
    block
}

/// Reports each `{self}` a format string of the body captures: a
/// background run has no `self` to capture.
pub(crate) fn check_captures(block: &Block, option: &Ident, cx: &mut Ctxt) {
    let mut found = Captures(Vec::new());
    found.visit_block(block);
    for literal in found.0 {
        cx.push(syn::Error::new(
            literal.span(),
            format!(
                "`{option}` runs this body again in the background, on a copy of `self`, and a format string cannot capture that copy by name: pass it as an argument (`\"{{:?}}\", self` for `{{self:?}}`), or remove `{option}`"
            ),
        ));
    }
}

struct Rename<'a>(&'a Ident);

impl VisitMut for Rename<'_> {
    fn visit_path_mut(&mut self, path: &mut Path) {
        // `self` alone is the receiver; `self::x` is a module path.
        if path.segments.len() == 1
            && let Some(segment) = path.segments.first_mut()
            && segment.ident == "self"
        {
            segment.ident = Ident::new(&self.0.to_string(), segment.ident.span());
            return;
        }
        visit_mut::visit_path_mut(self, path);
    }

    fn visit_item_mut(&mut self, item: &mut Item) {
        // A nested item has its own `self`; a local `macro_rules!` may use
        // the body's.
        if let Item::Macro(item) = item
            && item.mac.path.is_ident("macro_rules")
        {
            self.visit_macro_mut(&mut item.mac);
        }
    }

    fn visit_macro_mut(&mut self, mac: &mut Macro) {
        mac.tokens = rename_tokens(mac.tokens.clone(), self.0);
    }
}

/// In a macro's tokens: every `self` but a path's (`self::`) and a field
/// name's (`self = …`, not `self == …`).
fn rename_tokens(tokens: TokenStream, this: &Ident) -> TokenStream {
    let mut out = Vec::new();
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        match token {
            TokenTree::Ident(ident) if ident == "self" => {
                let kept = match tokens.peek() {
                    Some(TokenTree::Punct(punct)) if punct.as_char() == ':' => true,
                    Some(TokenTree::Punct(punct)) if punct.as_char() == '=' => {
                        punct.spacing() == proc_macro2::Spacing::Alone
                    }
                    _ => false,
                };
                let ident = if kept {
                    ident
                } else {
                    Ident::new(&this.to_string(), ident.span())
                };
                out.push(TokenTree::Ident(ident));
            }
            TokenTree::Group(group) => {
                let mut renamed =
                    Group::new(group.delimiter(), rename_tokens(group.stream(), this));
                renamed.set_span(group.span());
                out.push(TokenTree::Group(renamed));
            }
            other => out.push(other),
        }
    }
    out.into_iter().collect()
}

/// The format strings of macros that capture `{self}`. A macro's format
/// string is taken to be its first string literal that is not the value of
/// a named argument (`target: "…"`, `user = "…"`): `format!("…")`,
/// `write!(f, "…")`, `tracing::info!(target: "x", "…")`. A macro called in
/// another's tokens (`name!(…)`) is read the same way; other groups
/// (`lookup("{self}")`, a block) are only searched for such calls.
struct Captures(Vec<Literal>);

impl Visit<'_> for Captures {
    fn visit_item(&mut self, _: &Item) {}

    fn visit_macro(&mut self, mac: &Macro) {
        self.scan_macro(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }
}

impl Captures {
    /// The tokens of a macro call.
    fn scan_macro(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let named = |at: usize| {
            at >= 2
                && matches!(&tokens[at - 1], TokenTree::Punct(p) if matches!(p.as_char(), ':' | '='))
                && matches!(&tokens[at - 2], TokenTree::Ident(_))
        };
        let format_string = tokens
            .iter()
            .enumerate()
            .find_map(|(at, token)| match token {
                TokenTree::Literal(literal) if !named(at) => {
                    let text = syn::parse2::<syn::LitStr>(token.clone().into()).ok()?;
                    Some((literal.clone(), text.value()))
                }
                _ => None,
            });
        if let Some((literal, text)) = format_string
            && captures_self(&text)
        {
            self.0.push(literal);
        }
        self.scan_calls(&tokens);
    }

    /// Other tokens: only the macros called in them.
    fn scan_calls(&mut self, tokens: &[TokenTree]) {
        for (at, token) in tokens.iter().enumerate() {
            let TokenTree::Group(group) = token else {
                continue;
            };
            let called =
                at >= 1 && matches!(&tokens[at - 1], TokenTree::Punct(p) if p.as_char() == '!');
            if called {
                self.scan_macro(group.stream());
            } else {
                let inner: Vec<TokenTree> = group.stream().into_iter().collect();
                self.scan_calls(&inner);
            }
        }
    }
}

/// Whether a format string holds `{self}` or `{self:…}` as a placeholder
/// (not `{{self}}`, which is text).
fn captures_self(text: &str) -> bool {
    text.match_indices("{self").any(|(at, _)| {
        let rest = &text[at + "{self".len()..];
        let braces = text[..at].chars().rev().take_while(|&c| c == '{').count();
        braces % 2 == 0 && (rest.starts_with('}') || rest.starts_with(':'))
    })
}

#[cfg(test)]
mod tests {
    use quote::{ToTokens, quote};

    use super::*;

    fn renamed_text(block: TokenStream) -> String {
        let block: Block = syn::parse2(block).unwrap();
        let this = Ident::new("this", proc_macro2::Span::call_site());
        renamed(&block, &this).to_token_stream().to_string()
    }

    #[test]
    fn renames_the_receiver_only() {
        let text = renamed_text(quote!({
            use std::fmt::{self, Write};
            let a = self.a + self::helper();
            fn nested(&self) -> u8 {
                self.b
            }
            tracing::info!(self = ?self, "x");
            println!("{}", self.c);
            a
        }));
        assert!(
            text.contains("use std :: fmt :: { self , Write }"),
            "{text}"
        );
        assert!(text.contains("this . a + self :: helper ()"), "{text}");
        assert!(
            text.contains("fn nested (& self) -> u8 { self . b }"),
            "{text}"
        );
        assert!(text.contains("self = ? this"), "{text}");
        assert!(text.contains("this . c"), "{text}");
    }

    #[test]
    fn finds_format_strings_that_capture_self() {
        assert!(captures_self("{self}"));
        assert!(captures_self("a {self:?} b"));
        assert!(!captures_self("{{self}}"));
        assert!(captures_self("{{{self}}}"));
        assert!(!captures_self("{selfish}"));
        let found = |block: TokenStream| {
            let block: Block = syn::parse2(block).unwrap();
            let mut found = Captures(Vec::new());
            found.visit_block(&block);
            found.0.len()
        };
        assert_eq!(found(quote!({ format!("{self:?}") })), 1);
        assert_eq!(found(quote!({ format!(r#"{self}"#) })), 1);
        assert_eq!(found(quote!({ write!(f, "{self}") })), 1);
        assert_eq!(found(quote!({ vec![format!("{self}")] })), 1);
        assert_eq!(found(quote!({ format!("{}", self) })), 0);
        assert_eq!(found(quote!({ format!("{}:{id}", lookup("{self}")) })), 0);
        assert_eq!(
            found(quote!({ tracing::info!(target: "shop", "{self:?}") })),
            1
        );
        assert_eq!(found(quote!({ tracing::info!(user = "bob", "{self}") })), 1);
        assert_eq!(found(quote!({ assert!(ok, "{self}") })), 1);
        assert_eq!(found(quote!({ vec![1, { format!("{self}") }.len()] })), 1);
    }
}

//! Where generated tokens are reported: rustc points an error at a
//! generated token's span, so the generated code borrows the spans of the
//! user's tokens it stands for.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::spanned::Spanned;

/// `tokens` with every span set to `span`: for generated paths that a type
/// error names, so it points at what the user wrote rather than at the
/// whole attribute.
pub(crate) fn respanned(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut inner = Group::new(group.delimiter(), respanned(group.stream(), span));
                inner.set_span(span);
                token = TokenTree::Group(inner);
            }
            token.set_span(span);
            token
        })
        .collect()
}

/// The span of the first token (`Vec` of `Vec<u8>`).
pub(crate) fn first_span(tokens: &impl ToTokens) -> Span {
    tokens
        .to_token_stream()
        .into_iter()
        .next()
        .map_or_else(|| tokens.span(), |token| token.span())
}

/// The span of the last token (`>` of `Vec<u8>`, the closing delimiter of
/// a group).
pub(crate) fn last_span(tokens: &impl ToTokens) -> Span {
    match tokens.to_token_stream().into_iter().last() {
        Some(TokenTree::Group(group)) => group.span_close(),
        Some(token) => token.span(),
        None => tokens.span(),
    }
}

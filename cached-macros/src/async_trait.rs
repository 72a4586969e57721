//! Methods that `#[async_trait]` rewrote before the attribute saw them.
//!
//! `#[async_trait]` on an impl expands first, and turns each
//! `async fn f(&self, id: u64) -> R { body }` into
//! `fn f<'life0, 'async_trait>(&'life0 self, id: u64) -> Pin<Box<dyn
//! Future<Output = R> + Send + 'async_trait>> { Box::pin(async move { …
//! body … }) }`. As `#[tracing::instrument]` does, the attribute takes such
//! a method back to the `async fn` it was (its body awaits async-trait's
//! block, which holds the arguments' bindings and the body), expands that,
//! and puts the result back in `Box::pin(async move { … })`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Block, Expr, ItemFn, ReturnType, Stmt, Type};

/// The `async fn` an async-trait method was, if `func` is one.
pub(crate) fn unwrapped(func: &ItemFn) -> Option<ItemFn> {
    if func.sig.asyncness.is_some() {
        return None;
    }
    let output = future_output(&func.sig.output)?;
    let [Stmt::Expr(Expr::Call(call), None)] = func.block.stmts.as_slice() else {
        return None;
    };
    let Expr::Path(callee) = &*call.func else {
        return None;
    };
    let names: Vec<String> = callee
        .path
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect();
    if !names.ends_with(&["Box".to_owned(), "pin".to_owned()]) || call.args.len() != 1 {
        return None;
    }
    let Some(Expr::Async(future)) = call.args.first() else {
        return None;
    };
    let mut unwrapped = func.clone();
    unwrapped.sig.asyncness = Some(Default::default());
    unwrapped.sig.output = ReturnType::Type(Default::default(), Box::new(output));
    let block: Block = syn::parse2(quote!({ #future.await })).ok()?;
    *unwrapped.block = block;
    Some(unwrapped)
}

/// The body of the method async-trait wrote: `body` (the expansion of the
/// `async fn`) in `Box::pin(async move { … })`.
pub(crate) fn rewrapped(body: &TokenStream) -> TokenStream {
    quote!(::std::boxed::Box::pin(async move { #body }))
}

/// `R` of `Pin<Box<dyn Future<Output = R> + …>>`.
fn future_output(output: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let boxed = crate::func::last_segment_arg(ty, "Pin")?;
    let Type::TraitObject(object) = crate::func::last_segment_arg(&boxed, "Box")? else {
        return None;
    };
    crate::func::output_of_future(&object.bounds)
}

#[cfg(test)]
mod tests {
    use quote::{ToTokens, quote};

    use super::*;

    #[test]
    fn takes_an_async_trait_method_back_to_its_async_fn() {
        let func: ItemFn = syn::parse2(quote! {
            fn user<'life0, 'async_trait>(
                &'life0 self,
                id: u64,
            ) -> ::core::pin::Pin<Box<
                dyn ::core::future::Future<Output = Result<User, E>> + ::core::marker::Send + 'async_trait,
            >>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move {
                    let __self = self;
                    let id = id;
                    let __ret: Result<User, E> = { __self.load(id).await };
                    #[allow(unreachable_code)]
                    __ret
                })
            }
        })
        .unwrap();
        let unwrapped = unwrapped(&func).unwrap();
        assert!(unwrapped.sig.asyncness.is_some());
        let output = unwrapped.sig.output.to_token_stream().to_string();
        assert_eq!(output, "-> Result < User , E >");
        let block = unwrapped.block.to_token_stream().to_string();
        assert!(block.starts_with("{ async move {"), "{block}");
        assert!(block.ends_with(". await }"), "{block}");
    }

    #[test]
    fn leaves_other_functions_alone() {
        let func: ItemFn = syn::parse2(quote! {
            fn f() -> ::core::pin::Pin<Box<dyn ::core::future::Future<Output = u8>>> {
                let x = 1;
                Box::pin(async move { x })
            }
        })
        .unwrap();
        assert!(unwrapped(&func).is_none());
    }
}

//! The function under the attribute: its arguments and return shape.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::{
    FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PathArguments, ReturnType, Type,
};

use crate::attr::Kind;
use crate::ctxt::Ctxt;

/// How the return type maps to the cached value (the runtime's `Shape`s).
#[derive(Clone, Copy)]
pub(crate) enum ShapeKind {
    Plain,
    Optional,
    Fallible,
    FallibleOptional,
}

impl ShapeKind {
    pub(crate) fn runtime_name(self) -> &'static str {
        match self {
            Self::Plain => "Plain",
            Self::Optional => "Optional",
            Self::Fallible => "Fallible",
            Self::FallibleOptional => "FallibleOptional",
        }
    }
}

/// A named argument.
pub(crate) struct Arg {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

/// The declared return type and what of it is cached.
pub(crate) struct Output {
    pub(crate) ret: Type,
    pub(crate) value_ty: Type,
    pub(crate) shape: ShapeKind,
}

pub(crate) struct Func {
    pub(crate) args: Vec<Arg>,
    /// `None` when the function returns `()`: an error in the `Ctxt`; the
    /// arguments are still checked against the options.
    pub(crate) output: Option<Output>,
}

impl Func {
    pub(crate) fn analyze(item: &ItemFn, kind: Kind, cx: &mut Ctxt) -> Self {
        let sig = &item.sig;
        if sig.asyncness.is_none() {
            cx.error_spanned_by(
                sig.fn_token,
                format!(
                    "`{}` goes on an `async fn`: write `async fn` (a blocking function would hold a thread while it waits for Redis)",
                    kind.attribute()
                ),
            );
        }
        let mut args = Vec::new();
        for input in &sig.inputs {
            let FnArg::Typed(arg) = input else { continue };
            match &*arg.pat {
                Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => args.push(Arg {
                    ident: pat.ident.clone(),
                    ty: (*arg.ty).clone(),
                }),
                // Only a reader's default key takes every argument; a
                // writer's or invalidator's templates name what they use,
                // and a template naming a destructured argument is an
                // error there.
                pat if kind == Kind::CacheAside => cx.error_spanned_by(
                    pat,
                    "a cached function's arguments need names (the key is built from them): write `name: Type` and destructure in the body",
                ),
                _ => {}
            }
        }
        if !kind.caches() {
            // `#[invalidates]` takes any return type; a `Result` tells
            // success from failure.
            let ret: Type = match &sig.output {
                ReturnType::Type(_, ty) => (**ty).clone(),
                ReturnType::Default => syn::parse_quote!(()),
            };
            let (shape, value_ty) = match shape_of(&ret) {
                (ShapeKind::Fallible | ShapeKind::FallibleOptional, ok) => {
                    (ShapeKind::Fallible, ok)
                }
                _ => (ShapeKind::Plain, ret.clone()),
            };
            return Self {
                args,
                output: Some(Output {
                    ret,
                    value_ty,
                    shape,
                }),
            };
        }
        let ret = match &sig.output {
            ReturnType::Type(_, ty) => (**ty).clone(),
            ReturnType::Default => {
                let message = match kind {
                    Kind::WriteThrough => {
                        "this function returns `()`: there is nothing to store. Return the value written (`-> User`, `-> Option<User>`, `-> Result<User, E>`), or use `#[invalidates(keys = [\"user:{id}\"])]` to drop the cached entry instead"
                    }
                    _ => {
                        "this function returns `()`: there is nothing to cache. Return the value to cache (`-> User`, `-> Option<User>`, `-> Result<User, E>`), or use `#[invalidates]` for a function that changes data"
                    }
                };
                cx.error_spanned_by(&sig.ident, message);
                check_generics(item, &args, cx);
                return Self { args, output: None };
            }
        };
        let (shape, value_ty) = shape_of(&ret);
        if is_unit(&value_ty) {
            let message = match kind {
                Kind::WriteThrough => {
                    "the value written would be `()`: there is nothing to store. Return the value written (`Result<User, E>`), or use `#[invalidates(keys = [\"user:{id}\"])]` to drop the cached entry instead"
                }
                _ => {
                    "the cached value would be `()`: there is nothing to cache. Return the value to cache, or use `#[invalidates]` for a function that changes data"
                }
            };
            cx.error_spanned_by(&value_ty, message);
        }
        if let Type::ImplTrait(_) = value_ty {
            cx.error_spanned_by(
                &value_ty,
                "a cached value needs a concrete type: `impl Trait` cannot be stored",
            );
        }
        check_generics(item, &args, cx);
        Self {
            args,
            output: Some(Output {
                ret,
                value_ty,
                shape,
            }),
        }
    }
}

fn is_unit(ty: &Type) -> bool {
    match ty {
        Type::Tuple(tuple) => tuple.elems.is_empty(),
        Type::Paren(inner) => is_unit(&inner.elem),
        _ => false,
    }
}

/// Reads the shape from the type's syntax; the runtime's trait bounds check
/// the rest, so `io::Result<T>` (an alias of `Result<T, io::Error>`) works.
fn shape_of(ret: &Type) -> (ShapeKind, Type) {
    match last_segment_arg(ret, "Result") {
        Some(ok) => match last_segment_arg(&ok, "Option") {
            Some(inner) => (ShapeKind::FallibleOptional, inner),
            None => (ShapeKind::Fallible, ok),
        },
        None => match last_segment_arg(ret, "Option") {
            Some(inner) => (ShapeKind::Optional, inner),
            None => (ShapeKind::Plain, ret.clone()),
        },
    }
}

/// `Name<A, ..>` → `A`.
fn last_segment_arg(ty: &Type, name: &str) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let segment = path.path.segments.last()?;
    if segment.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty.clone()),
        _ => None,
    })
}

/// A type or const parameter that no argument mentions could change the
/// result without changing the key (`parse::<T>(s)`): refuse it.
fn check_generics(item: &ItemFn, args: &[Arg], cx: &mut Ctxt) {
    let mut mentioned = Vec::new();
    for arg in args {
        collect_idents(arg.ty.to_token_stream(), &mut mentioned);
    }
    for param in &item.sig.generics.params {
        let ident = match param {
            GenericParam::Type(param) => &param.ident,
            GenericParam::Const(param) => &param.ident,
            GenericParam::Lifetime(_) => continue,
        };
        if !mentioned.contains(ident) {
            cx.error_spanned_by(
                ident,
                format!(
                    "generic parameter `{ident}` appears in no argument, so it is not part of the key: calls with different `{ident}` would share one entry. Take an argument whose type mentions `{ident}`, or cache a non-generic function per type"
                ),
            );
        }
    }
}

fn collect_idents(tokens: TokenStream, out: &mut Vec<Ident>) {
    for token in tokens {
        match token {
            TokenTree::Ident(ident) => out.push(ident),
            TokenTree::Group(group) => collect_idents(group.stream(), out),
            _ => {}
        }
    }
}

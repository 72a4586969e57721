//! The function under the attribute: its arguments and return shape.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{
    Attribute, FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PathArguments, ReturnType,
    Type,
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
    /// As written (`r#type`).
    pub(crate) ident: Ident,
    /// As templates name it (`type`).
    pub(crate) name: String,
    /// Its `#[cfg(...)]` attributes: what the function does with it
    /// (the key, the copies of a background run) is compiled only with it.
    pub(crate) cfg: Vec<Attribute>,
    /// Whether its type is or holds an `impl Trait`: a type no name can
    /// key, so the default key writes its `type_name` too.
    pub(crate) impl_trait: bool,
}

/// A type or const parameter of the function: it may change the result
/// without changing any argument's value (`Id<T>(u64, PhantomData<T>)`), so
/// it is part of the key, as `std::any::type_name::<T>()` or the constant's
/// value.
pub(crate) struct Generic {
    pub(crate) ident: Ident,
    pub(crate) name: String,
    pub(crate) is_const: bool,
}

/// What a placeholder of a template names.
pub(crate) enum Named<'a> {
    Arg(&'a Arg),
    Generic(&'a Generic),
}

/// The declared return type and what of it is cached.
pub(crate) struct Output {
    pub(crate) ret: Type,
    pub(crate) value_ty: Type,
    pub(crate) shape: ShapeKind,
    /// What the written type could hide from [`shape_of`], which reads only
    /// syntax: the generated code checks the real type (see `probe.rs`).
    pub(crate) hidden: Hidden,
}

/// The shapes a type read from its syntax could still turn out to be, behind
/// an alias (`type ApiResult<T> = Result<T, ApiError>;`) or a macro: a
/// `Result` read as a plain value would cache its `Err`, an `Option` its
/// `None`. The generated code checks that the real type is neither.
#[derive(Clone, Copy, Default)]
pub(crate) struct Hidden {
    /// `value_ty` must not be a `Result`.
    pub(crate) result: bool,
    /// `value_ty` must not be an `Option`.
    pub(crate) option: bool,
}

pub(crate) struct Func {
    pub(crate) args: Vec<Arg>,
    pub(crate) generics: Vec<Generic>,
    /// The `self` of the receiver, if any: a template's `{self}` resolves
    /// as it does (the function may come from a `macro_rules!`).
    pub(crate) receiver: Option<Ident>,
    /// `None` when the function returns `()`: an error in the `Ctxt`; the
    /// arguments are still checked against the options.
    pub(crate) output: Option<Output>,
}

impl Func {
    pub(crate) fn analyze(item: &ItemFn, kind: Kind, cx: &mut Ctxt) -> Self {
        let sig = &item.sig;
        // A function that returns a future: the one error says what to
        // write (not also that `impl Future` cannot be cached).
        let returns_future = match &sig.output {
            ReturnType::Type(_, ty) => future_output(ty),
            ReturnType::Default => None,
        };
        if sig.asyncness.is_none() {
            let message = match &returns_future {
                Some(output) => format!(
                    "`{}` goes on an `async fn`: write `async fn {}(…) -> {}` with the body of the future it returns",
                    kind.attribute(),
                    sig.ident,
                    spelled(output),
                ),
                None => format!(
                    "`{}` goes on an `async fn`: write `async fn` (a blocking function would hold a thread while it waits for Redis)",
                    kind.attribute()
                ),
            };
            cx.error_spanned_by(sig.fn_token, message);
        }
        let mut args = Vec::new();
        for input in &sig.inputs {
            let FnArg::Typed(arg) = input else { continue };
            match &*arg.pat {
                Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => args.push(Arg {
                    ident: pat.ident.clone(),
                    name: pat.ident.unraw().to_string(),
                    cfg: arg
                        .attrs
                        .iter()
                        .filter(|attr| attr.path().is_ident("cfg"))
                        .cloned()
                        .collect(),
                    impl_trait: holds_impl(arg.ty.to_token_stream()),
                }),
                // Only a reader's default key takes every argument; a
                // writer's or invalidator's templates name what they use,
                // and a template naming a destructured argument is an
                // error there.
                pat if matches!(kind, Kind::CacheAside | Kind::CacheBatch) => cx.error_spanned_by(
                    pat,
                    "a cached function's arguments need names (the key is built from them): write `name: Type` and destructure in the body",
                ),
                _ => {}
            }
        }
        let generics = sig
            .generics
            .params
            .iter()
            .filter_map(|param| {
                let (ident, is_const) = match param {
                    GenericParam::Type(param) => (&param.ident, false),
                    GenericParam::Const(param) => (&param.ident, true),
                    GenericParam::Lifetime(_) => return None,
                };
                Some(Generic {
                    ident: ident.clone(),
                    name: ident.unraw().to_string(),
                    is_const,
                })
            })
            .collect();
        let receiver = sig
            .receiver()
            .map(|receiver| Ident::new("self", receiver.self_token.span));
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
            // Only a `Result` tells a failure from a success: an `Option`
            // is any other value here.
            let hidden = Hidden {
                result: matches!(shape, ShapeKind::Plain) && may_hide_a_shape(&ret),
                option: false,
            };
            return Self {
                args,
                generics,
                receiver,
                output: Some(Output {
                    ret,
                    value_ty,
                    shape,
                    hidden,
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
                return Self {
                    args,
                    generics,
                    receiver,
                    output: None,
                };
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
        if let Type::ImplTrait(_) = peel(&value_ty)
            && (sig.asyncness.is_some() || returns_future.is_none())
        {
            cx.error_spanned_by(
                &value_ty,
                "a cached value needs a concrete type: `impl Trait` cannot be stored",
            );
        }
        // A cached `Ok` that is an `Option` would cache `Ok(None)` as a
        // value, which `Result<Option<T>, E>` written out does not.
        let hidden = match shape {
            ShapeKind::Plain => Hidden {
                result: may_hide_a_shape(&value_ty),
                option: may_hide_a_shape(&value_ty),
            },
            ShapeKind::Fallible => Hidden {
                result: false,
                option: may_hide_a_shape(&value_ty),
            },
            ShapeKind::Optional | ShapeKind::FallibleOptional => Hidden::default(),
        };
        Self {
            args,
            generics,
            receiver,
            output: Some(Output {
                ret,
                value_ty,
                shape,
                hidden,
            }),
        }
    }
}

/// A type as the user wrote it, for messages: `io::Result<User>`, not
/// `io :: Result < User >`.
pub(crate) fn spelled(ty: &Type) -> String {
    ty.to_token_stream()
        .to_string()
        .replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" < ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace(" ;", ";")
        .replace("& ", "&")
}

fn is_unit(ty: &Type) -> bool {
    matches!(peel(ty), Type::Tuple(tuple) if tuple.elems.is_empty())
}

/// The type inside invisible groups (a `$ret:ty` that `macro_rules!`
/// forwarded) and parentheses: what the user wrote.
pub(crate) fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => peel(&group.elem),
        Type::Paren(paren) => peel(&paren.elem),
        ty => ty,
    }
}

/// Whether a type could name a `Result` or an `Option` without the macro
/// seeing it: a path (an alias, `Self`, an associated type) or a macro. A
/// tuple, a reference, an array and the like cannot.
fn may_hide_a_shape(ty: &Type) -> bool {
    matches!(peel(ty), Type::Path(_) | Type::Macro(_) | Type::Verbatim(_)) && shared(ty).is_none()
}

/// `Arc<T>` → `T`: a value cached as the `T` it shares (see the runtime's
/// `TypeCodec::arc`), which serde's `rc` feature need not serialize. Not for
/// an unsized `T` (`str`, a slice, a trait object), which cannot be
/// deserialized on its own: an `Arc<str>` goes through serde's `rc`
/// feature as before.
pub(crate) fn shared(ty: &Type) -> Option<Type> {
    let inner = last_segment_arg(ty, "Arc")?;
    let unsized_ = match peel(&inner) {
        Type::Slice(_) | Type::TraitObject(_) => true,
        Type::Path(path) => path.qself.is_none() && path.path.is_ident("str"),
        _ => false,
    };
    (!unsized_).then_some(inner)
}

/// Reads the shape from the type's syntax. A `Result` or an `Option` written
/// out, under any path (`io::Result<T>`, an alias of `Result<T, io::Error>`,
/// with the error elided), is checked by the runtime's trait bounds; one
/// read as plain is checked by the generated probe (see [`Hidden`]).
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
pub(crate) fn last_segment_arg(ty: &Type, name: &str) -> Option<Type> {
    last_segment_args(ty, name)?.into_iter().next()
}

/// `Name<A, B, ..>` (under any path) → `[A, B, ..]`, its type arguments.
pub(crate) fn last_segment_args(ty: &Type, name: &str) -> Option<Vec<Type>> {
    let Type::Path(path) = peel(ty) else {
        return None;
    };
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
    let types: Vec<Type> = args
        .args
        .iter()
        .filter_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty.clone()),
            _ => None,
        })
        .collect();
    (!types.is_empty()).then_some(types)
}

impl Func {
    /// The argument, or else the type or const parameter, a template's
    /// placeholder names.
    pub(crate) fn named(&self, root: &str) -> Option<Named<'_>> {
        if let Some(arg) = self.args.iter().find(|arg| arg.name == root) {
            return Some(Named::Arg(arg));
        }
        let generic = self.generics.iter().find(|generic| generic.name == root)?;
        Some(Named::Generic(generic))
    }
}

/// `R` of `impl Future<Output = R>`.
fn future_output(ty: &Type) -> Option<Type> {
    let Type::ImplTrait(bounds) = peel(ty) else {
        return None;
    };
    output_of_future(&bounds.bounds)
}

/// `R` of the bounds `Future<Output = R> + …` (of an `impl` or a `dyn`).
pub(crate) fn output_of_future<'a>(
    bounds: impl IntoIterator<Item = &'a syn::TypeParamBound>,
) -> Option<Type> {
    bounds.into_iter().find_map(|bound| {
        let syn::TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let segment = bound.path.segments.last()?;
        if segment.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &segment.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(assoc.ty.clone()),
            _ => None,
        })
    })
}

/// Whether a type is or holds an `impl Trait`.
fn holds_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => ident == "impl",
        TokenTree::Group(group) => holds_impl(group.stream()),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use proc_macro2::{Delimiter, Group, TokenStream};
    use quote::quote;

    use super::*;

    /// The shape, the cached type and what the probe must rule out, for a
    /// `#[cache_aside]` function returning `ret`.
    fn read(ret: TokenStream) -> (&'static str, String, bool, bool) {
        // Parsed, never compiled: the body does not matter.
        let item: ItemFn = syn::parse2(quote!(async fn f(id: u64) -> #ret {})).unwrap();
        let mut cx = Ctxt::default();
        let func = Func::analyze(&item, Kind::CacheAside, &mut cx);
        cx.check().unwrap();
        let output = func.output.unwrap();
        (
            output.shape.runtime_name(),
            spelled(peel(&output.value_ty)),
            output.hidden.result,
            output.hidden.option,
        )
    }

    /// A `$ret:ty` as `macro_rules!` forwards it: in an invisible group.
    fn forwarded(ty: TokenStream) -> TokenStream {
        TokenTree::Group(Group::new(Delimiter::None, ty)).into()
    }

    #[test]
    fn reads_shapes_through_groups_and_parentheses() {
        let fallible = ("Fallible", "User".to_owned(), false, true);
        assert_eq!(read(quote!(Result<User, E>)), fallible);
        assert_eq!(read(forwarded(quote!(Result<User, E>))), fallible);
        assert_eq!(read(quote!((Result<User, E>))), fallible);
        assert_eq!(read(quote!(io::Result<User>)), fallible);
        let option = forwarded(quote!(Option<User>));
        assert_eq!(
            read(quote!(Result<#option, E>)),
            ("FallibleOptional", "User".to_owned(), false, false)
        );
        assert_eq!(
            read(forwarded(quote!(Option<User>))),
            ("Optional", "User".to_owned(), false, false)
        );
    }

    #[test]
    fn a_type_read_as_plain_is_probed_unless_it_cannot_hide_a_shape() {
        assert_eq!(
            read(quote!(ApiResult<User>)),
            ("Plain", "ApiResult<User>".to_owned(), true, true)
        );
        assert_eq!(
            read(forwarded(quote!(ApiResult<User>))),
            ("Plain", "ApiResult<User>".to_owned(), true, true)
        );
        assert_eq!(read(quote!(T)), ("Plain", "T".to_owned(), true, true));
        assert_eq!(
            read(quote!((u64, String))),
            ("Plain", "(u64, String)".to_owned(), false, false)
        );
        assert_eq!(
            read(quote!([u8; 4])),
            ("Plain", "[u8; 4]".to_owned(), false, false)
        );
    }

    #[test]
    fn an_invalidation_probes_only_for_a_result() {
        let item: ItemFn = syn::parse2(quote!(
            async fn f(id: u64) -> ApiResult<()> {}
        ))
        .unwrap();
        let output = Func::analyze(&item, Kind::Invalidates, &mut Ctxt::default())
            .output
            .unwrap();
        assert!(output.hidden.result && !output.hidden.option);
        let item: ItemFn = syn::parse2(quote!(
            async fn f(id: u64) {}
        ))
        .unwrap();
        let output = Func::analyze(&item, Kind::Invalidates, &mut Ctxt::default())
            .output
            .unwrap();
        assert!(!output.hidden.result, "`()` is no `Result`");
    }
}

//! The parsed model of a `#[cbase::service]` trait. Each node keeps the syntax
//! it came from, so later checks can point at the smallest wrong token.

use syn::visit::Visit;
use syn::{Attribute, FnArg, Ident, ItemTrait, Pat, ReturnType, TraitItem, TraitItemFn, Type};

use crate::attr::{self, Access, KeySpec};
use crate::ctxt::{Ctxt, suggest};

pub struct Service {
    /// The user's trait with the rule attributes removed.
    pub item: ItemTrait,
    pub methods: Vec<Method>,
}

pub struct Method {
    pub ident: Ident,
    pub docs: Vec<Attribute>,
    /// The method's `#[cfg(..)]`s, repeated on every item generated for it.
    pub cfgs: Vec<Attribute>,
    /// Request arguments, in declaration order (without `&self` and `ctx`).
    pub args: Vec<Arg>,
    /// Where `ctx: &Context` sits among the parameters after `self`, if present.
    pub ctx_position: Option<usize>,
    pub ctx_ident: Option<Ident>,
    pub output: Type,
    pub rules: Vec<Rule>,
}

pub struct Arg {
    pub ident: Ident,
    pub ty: Type,
}

pub struct Rule {
    pub access: Access,
    pub attr: Attribute,
    pub keys: Vec<KeySpec>,
}

impl Method {
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }
}

const RULES: [&str; 2] = ["reads", "writes"];

impl Service {
    /// Reads the trait, recording every problem in `cx`; returns the model
    /// (possibly partial) and always the trait to emit.
    pub fn from_trait(cx: &Ctxt, mut item: ItemTrait) -> Service {
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            cx.error_spanned_by(
                &item.generics,
                "a service trait cannot be generic: its requests must be one concrete, serializable type",
            );
        }
        item.attrs.retain(|attribute| {
            let rule = RULES.iter().find(|rule| attribute.path().is_ident(rule));
            if let Some(rule) = rule {
                cx.error_spanned_by(
                    attribute.path(),
                    format!("`#[{rule}]` goes on the methods of the trait, not on the trait: move it onto each method it applies to"),
                );
            }
            rule.is_none()
        });
        let mut methods = Vec::new();
        for trait_item in &mut item.items {
            match trait_item {
                TraitItem::Fn(function) => {
                    if let Some(method) = Method::from_fn(cx, function) {
                        methods.push(method);
                    }
                }
                other => cx.error_spanned_by(
                    &*other,
                    "a service trait may contain only methods, each of which becomes a request; move this item to another trait or to the type that implements the service",
                ),
            }
        }
        Service { item, methods }
    }
}

impl Method {
    fn from_fn(cx: &Ctxt, function: &mut TraitItemFn) -> Option<Method> {
        let rules = take_rules(cx, &mut function.attrs);
        let sig = &function.sig;
        // Owned: the emitted trait's parameters are rewritten below.
        let name = sig.ident.clone();
        let mut valid = true;
        let mut fail = |tokens: &dyn quote::ToTokens, message: String| {
            cx.error_spanned_by(tokens.to_token_stream(), message);
            valid = false;
        };

        if let Some(asyncness) = &sig.asyncness {
            fail(
                asyncness,
                format!(
                    "service methods cannot be `async`: requests run on the executor's worker threads; remove `async` from `{name}` (the generated client is async)"
                ),
            );
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            fail(
                &sig.generics,
                format!(
                    "service methods cannot be generic: `{name}` becomes one variant of a serializable request enum; use concrete types"
                ),
            );
        }
        if let Some(unsafety) = &sig.unsafety {
            fail(
                unsafety,
                format!("service methods cannot be `unsafe`; remove `unsafe` from `{name}`"),
            );
        }
        if let Some(variadic) = &sig.variadic {
            fail(variadic, "service methods cannot be variadic".to_owned());
        }

        match sig.inputs.first() {
            Some(FnArg::Receiver(receiver)) => {
                if let Some(mutability) = &receiver.mutability
                    && receiver.reference.is_some()
                {
                    fail(
                        mutability,
                        format!(
                            "service methods take `&self`, not `&mut self`: requests run concurrently, so state lives in cbase containers (`Table`, `Cell`) that are safe to share; remove `mut` from `{name}`"
                        ),
                    );
                }
                if receiver.reference.is_none() || receiver.colon_token.is_some() {
                    fail(
                        &receiver.self_token,
                        format!(
                            "service methods take `&self`; write `&self` as the receiver of `{name}`"
                        ),
                    );
                }
            }
            _ => fail(
                &name,
                format!(
                    "`{name}` has no receiver: service methods take `&self` as their first parameter"
                ),
            ),
        }

        let mut args = Vec::new();
        let mut patterns = Vec::new();
        let mut ctx_position = None;
        let mut ctx_ident = None;
        for (position, input) in sig
            .inputs
            .iter()
            .filter(|i| matches!(i, FnArg::Typed(_)))
            .enumerate()
        {
            let FnArg::Typed(typed) = input else { continue };
            let ident = match &*typed.pat {
                Pat::Ident(pat) if pat.subpat.is_none() && pat.by_ref.is_none() => {
                    pat.ident.clone()
                }
                other => {
                    fail(
                        other,
                        "service method parameters must be plain names, like `id: u64`".to_owned(),
                    );
                    patterns.push(position);
                    continue;
                }
            };
            if ident.to_string().starts_with("__cbase") {
                fail(
                    &ident,
                    "names starting with `__cbase` are reserved for generated code".into(),
                );
            }
            match context_kind(&typed.ty) {
                ContextKind::ByRef => {
                    if ctx_position.is_some() {
                        fail(
                            &typed.ty,
                            "only one `&Context` parameter is allowed; remove this one".to_owned(),
                        );
                    }
                    ctx_position = Some(position);
                    ctx_ident = Some(ident);
                    continue;
                }
                ContextKind::ByValue => {
                    fail(
                        &typed.ty,
                        format!("take the context by reference: `{ident}: &Context`"),
                    );
                    continue;
                }
                ContextKind::No => {}
            }
            if let Some(impl_trait) = find_impl_trait(&typed.ty) {
                fail(
                    &impl_trait,
                    format!(
                        "argument `{ident}` is sent over the network inside the request; use a concrete type instead of `impl Trait`"
                    ),
                );
                continue;
            }
            if let Type::Reference(reference) = &*typed.ty {
                fail(
                    &reference.and_token,
                    format!(
                        "argument `{ident}` is moved into the request, so it must be owned: write `{ident}: {}`",
                        owned_type(&reference.elem)
                    ),
                );
                continue;
            }
            args.push(Arg {
                ident,
                ty: (*typed.ty).clone(),
            });
        }

        let output = match &sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, ty) => {
                if let Some(impl_trait) = find_impl_trait(ty) {
                    fail(
                        &impl_trait,
                        format!(
                            "`{name}` returns its result over the network; use a concrete type instead of `impl Trait`"
                        ),
                    );
                } else if let Type::Reference(reference) = &**ty {
                    fail(
                        &reference.and_token,
                        format!(
                            "`{name}` returns its result over the network, so it must return an owned type: write `-> {}`",
                            owned_type(&reference.elem)
                        ),
                    );
                }
                (**ty).clone()
            }
        };

        // Rust rejects patterns in methods without a body too; replace them
        // in the emitted trait so the mistake is reported once.
        if function.default.is_none() {
            let typed = function
                .sig
                .inputs
                .iter_mut()
                .filter_map(|input| match input {
                    FnArg::Typed(typed) => Some(typed),
                    FnArg::Receiver(_) => None,
                });
            for (position, typed) in typed.enumerate() {
                if patterns.contains(&position) {
                    *typed.pat = syn::parse_quote!(_);
                }
            }
        }

        let attrs_named = |name: &str| {
            function
                .attrs
                .iter()
                .filter(|a| a.path().is_ident(name))
                .cloned()
                .collect()
        };
        let (docs, cfgs) = (attrs_named("doc"), attrs_named("cfg"));
        valid.then(|| Method {
            ident: name,
            docs,
            cfgs,
            args,
            ctx_position,
            ctx_ident,
            output,
            rules,
        })
    }
}

/// Removes `#[reads]`/`#[writes]` (and near misses, after reporting them)
/// from a method's attributes and parses them.
fn take_rules(cx: &Ctxt, attrs: &mut Vec<Attribute>) -> Vec<Rule> {
    let mut rules = Vec::new();
    let mut kept = Vec::new();
    for attribute in attrs.drain(..) {
        let Some(ident) = attribute.path().get_ident().map(Ident::to_string) else {
            kept.push(attribute);
            continue;
        };
        let access = match ident.as_str() {
            "reads" => Access::Read,
            "writes" => Access::Write,
            other => {
                if let Some(intended) = suggest(other, RULES).filter(|_| !is_known_attribute(other))
                {
                    cx.error_spanned_by(
                        attribute.path(),
                        format!("unknown attribute `#[{other}]`; did you mean `#[{intended}]`?"),
                    );
                } else {
                    kept.push(attribute);
                }
                continue;
            }
        };
        match attr::parse_keys(&attribute) {
            Ok(keys) => rules.push(Rule {
                access,
                attr: attribute,
                keys,
            }),
            Err(error) => cx.syn_error(error),
        }
    }
    *attrs = kept;
    rules
}

/// Attributes that Rust itself gives meaning to on trait methods; never
/// mistaken for a misspelled rule.
fn is_known_attribute(name: &str) -> bool {
    matches!(
        name,
        "doc"
            | "cfg"
            | "cfg_attr"
            | "allow"
            | "warn"
            | "deny"
            | "expect"
            | "forbid"
            | "deprecated"
            | "must_use"
            | "inline"
            | "track_caller"
    )
}

enum ContextKind {
    ByRef,
    ByValue,
    No,
}

fn context_kind(ty: &Type) -> ContextKind {
    let is_context = |ty: &Type| match ty {
        Type::Path(path) => {
            path.qself.is_none()
                && path
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == "Context" && s.arguments.is_empty())
        }
        _ => false,
    };
    match ty {
        Type::Reference(reference) if is_context(&reference.elem) => ContextKind::ByRef,
        other if is_context(other) => ContextKind::ByValue,
        _ => ContextKind::No,
    }
}

/// The owned counterpart of a borrowed type, for suggestions.
fn owned_type(ty: &Type) -> String {
    match ty {
        Type::Slice(slice) => format!("Vec<{}>", owned_type(&slice.elem)),
        Type::Reference(reference) => owned_type(&reference.elem),
        Type::Path(path) if path.path.is_ident("str") => "String".to_owned(),
        Type::Path(path)
            if path.qself.is_none()
                && path.path.segments.last().is_some_and(|last| {
                    ["Path", "OsStr", "CStr"].contains(&last.ident.to_string().as_str())
                        && last.arguments.is_empty()
                }) =>
        {
            let mut owned = path.path.clone();
            let last = owned.segments.last_mut().expect("checked above");
            let name = match last.ident.to_string().as_str() {
                "Path" => "PathBuf",
                "OsStr" => "OsString",
                _ => "CString",
            };
            last.ident = Ident::new(name, last.ident.span());
            owned_type(&Type::Path(syn::TypePath {
                qself: None,
                path: owned,
            }))
        }
        other => {
            let mut text = quote::ToTokens::to_token_stream(other).to_string();
            for (spaced, tight) in [
                (" <", "<"),
                ("< ", "<"),
                (" >", ">"),
                (" ::", "::"),
                (":: ", "::"),
                (" ,", ","),
                ("& ", "&"),
                ("( ", "("),
                (" )", ")"),
                ("[ ", "["),
                (" ]", "]"),
                (" ;", ";"),
            ] {
                text = text.replace(spaced, tight);
            }
            text
        }
    }
}

fn find_impl_trait(ty: &Type) -> Option<syn::TypeImplTrait> {
    struct Finder(Option<syn::TypeImplTrait>);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, node: &'ast syn::TypeImplTrait) {
            self.0.get_or_insert_with(|| node.clone());
        }
    }
    let mut finder = Finder(None);
    finder.visit_type(ty);
    finder.0
}

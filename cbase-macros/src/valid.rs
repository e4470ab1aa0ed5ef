//! Checks that need the whole method or the whole service: what a key may
//! refer to, duplicate and contradictory rules, and names that would clash
//! with generated items.

use std::collections::BTreeMap;

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::visit::Visit;
use syn::{Expr, Ident};

use crate::ast::{Method, Service};
use crate::attr::{Access, Target};
use crate::ctxt::{Ctxt, suggest};

/// Methods of the generated client; a service method of the same name would
/// clash with them.
const CLIENT_METHODS: [&str; 3] = ["new", "invoker", "into_invoker"];

pub fn check(cx: &Ctxt, service: &Service) {
    let mut variants: BTreeMap<String, &Ident> = BTreeMap::new();
    for method in &service.methods {
        check_rules(cx, method);
        let name = method.ident.to_string();
        if CLIENT_METHODS.contains(&name.as_str()) {
            cx.error_spanned_by(
                &method.ident,
                format!(
                    "method `{name}` clashes with the generated `{}Client::{name}`; rename the method",
                    service.item.ident
                ),
            );
        }
        let variant = crate::expand::variant_name(&method.ident).to_string();
        if let Some(first) = variants.insert(variant.clone(), &method.ident) {
            cx.error_spanned_by(
                &method.ident,
                format!(
                    "methods `{first}` and `{name}` both become the request variant `{variant}`; rename one"
                ),
            );
        }
    }
}

fn check_rules(cx: &Ctxt, method: &Method) {
    let name = &method.ident;
    let mut seen_attribute: BTreeMap<&'static str, ()> = BTreeMap::new();
    // Every key's text, with its access and tokens, to find duplicates.
    let mut declared: BTreeMap<String, (Access, TokenStream)> = BTreeMap::new();
    for rule in &method.rules {
        let attribute = rule.access.attribute();
        if seen_attribute.insert(attribute, ()).is_some() {
            cx.error_spanned_by(
                rule.attr.path(),
                format!("duplicate `#[{attribute}]` on `{name}`: list every key in one `#[{attribute}(..)]`"),
            );
            continue;
        }
        if rule.keys.is_empty() {
            cx.error_spanned_by(
                &rule.attr.meta,
                format!(
                    "empty rule on `{name}`: list at least one key, e.g. `#[{attribute}(table[argument])]`, or remove the attribute (a method without rules conflicts with every request)"
                ),
            );
        }
        for key in &rule.keys {
            let text = key.text();
            match declared.get(&text) {
                Some((previous, _)) if *previous == rule.access => {
                    cx.error_spanned_by(
                        key.tokens(),
                        format!("duplicate key: `#[{attribute}]` of `{name}` already lists this key; remove this one"),
                    );
                }
                Some((_, previous)) => {
                    // Point at the read, which is the one to remove.
                    let read = match rule.access {
                        Access::Read => key.tokens(),
                        Access::Write => previous.clone(),
                    };
                    cx.error_spanned_by(
                        read,
                        format!(
                            "this key is both read and written by `{name}`; a write already allows reading, so remove it from `#[reads]`"
                        ),
                    );
                }
                None => {
                    declared.insert(text, (rule.access, key.tokens()));
                }
            }
            check_key(cx, method, key);
        }
    }
}

fn check_key(cx: &Ctxt, method: &Method, key: &crate::attr::KeySpec) {
    let mut bindings: Vec<Ident> = Vec::new();
    if let Some(each) = &key.each {
        match &key.target {
            Target::All(star) => cx.error_spanned_by(
                star,
                "`*` already covers everything; remove the `for` clause",
            ),
            Target::Table(table) => cx.error_spanned_by(
                each.for_token,
                format!("`{table}[*]` already covers the whole table; remove the `for` clause"),
            ),
            _ => {}
        }
        check_expr(cx, method, &each.collection, &[]);
        let mut collector = Bindings(&mut bindings);
        collector.visit_pat(&each.pat);
    }
    match &key.target {
        Target::Entry(_, expr) | Target::Bare(expr) => check_expr(cx, method, expr, &bindings),
        Target::Prefix(_, leading, _) => {
            for expr in leading {
                check_expr(cx, method, expr, &bindings);
            }
        }
        Target::All(_) | Target::Table(_) => {}
    }
}

/// Whether a one-segment path in a key names a variable, rather than a
/// constant, a unit struct or an enum variant (`MAX`, `None`): by Rust's
/// naming conventions, variables start with a lowercase letter or `_`.
fn is_variable_name(ident: &Ident) -> bool {
    let name = ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    name.starts_with(|c: char| c.is_lowercase() || c == '_')
}

struct Bindings<'a>(&'a mut Vec<Ident>);

impl<'ast> Visit<'ast> for Bindings<'_> {
    fn visit_pat_ident(&mut self, node: &'ast syn::PatIdent) {
        self.0.push(node.ident.clone());
        syn::visit::visit_pat_ident(self, node);
    }
}

/// Every name a key expression uses must be an argument or a `for` binding;
/// `self` is never allowed: access sets are computed from the request alone.
fn check_expr(cx: &Ctxt, method: &Method, expr: &Expr, bindings: &[Ident]) {
    struct Names {
        variables: Vec<Ident>,
        self_uses: Vec<TokenStream>,
    }
    impl Names {
        fn path(&mut self, node: &syn::ExprPath, callee: bool) {
            if node.qself.is_none() && node.path.leading_colon.is_none() {
                let first = &node.path.segments[0].ident;
                if first == "self" || first == "Self" {
                    self.self_uses.push(first.to_token_stream());
                } else if node.path.segments.len() == 1 && !callee && is_variable_name(first) {
                    self.variables.push(first.clone());
                }
            }
        }
    }
    impl<'ast> Visit<'ast> for Names {
        fn visit_expr_path(&mut self, node: &'ast syn::ExprPath) {
            self.path(node, false);
            syn::visit::visit_expr_path(self, node);
        }
        // A called function (`hash(id)`) is not an argument.
        fn visit_expr_call(&mut self, node: &'ast syn::ExprCall) {
            match &*node.func {
                Expr::Path(callee) => self.path(callee, true),
                other => self.visit_expr(other),
            }
            for argument in &node.args {
                self.visit_expr(argument);
            }
        }
        // Closures bring their own names; keys rarely need them, and their
        // bodies are checked by the compiler in the generated code.
        fn visit_expr_closure(&mut self, _: &'ast syn::ExprClosure) {}
    }
    let mut names = Names {
        variables: Vec::new(),
        self_uses: Vec::new(),
    };
    names.visit_expr(expr);
    let method_name = &method.ident;
    for self_use in names.self_uses {
        cx.error_spanned_by(
            self_use,
            format!(
                "keys cannot use `self`: a request's access set is computed from its arguments alone, before it runs; use the arguments of `{method_name}`"
            ),
        );
    }
    let arguments: Vec<String> = method.args.iter().map(|a| a.ident.to_string()).collect();
    for variable in names.variables {
        if bindings.contains(&variable) || method.args.iter().any(|a| a.ident == variable) {
            continue;
        }
        let name = variable.to_string();
        if method
            .ctx_ident
            .as_ref()
            .is_some_and(|ctx| *ctx == variable)
        {
            cx.error_spanned_by(
                &variable,
                format!("`{name}` is the context, not part of the request; keys can use only the arguments of `{method_name}`"),
            );
            continue;
        }
        let listing = if arguments.is_empty() {
            format!("`{method_name}` has no arguments")
        } else if let [only] = arguments.as_slice() {
            format!("the only argument of `{method_name}` is `{only}`")
        } else {
            format!(
                "the arguments of `{method_name}` are {}",
                arguments
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let hint = suggest(&name, arguments.iter().map(String::as_str))
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        cx.error_spanned_by(
            &variable,
            format!("unknown argument `{name}` in key: {listing}{hint}"),
        );
    }
}

//! Code generation for `#[cbase::service]`: one method per generated item.
//!
//! For `trait Bank` it emits, beside the trait itself:
//! `BankRequest` and `BankResponse` (serde enums, one variant per method), the
//! request's access sets (`cbase::Request`), a dispatcher for any `T: Bank`,
//! the adapter `BankService<T>` from `T: Bank + State` to `cbase::Service`, and
//! the typed async client `BankClient<I>`.

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Ident, Path};

use crate::ast::{Method, Service};
use crate::attr::{Access, KeySpec, Target};

/// A hash of a service's interface: its name, and each method's name,
/// argument names and types, and return type, in order, as written. Two
/// builds of the same trait agree; reordering, renaming or retyping a method
/// or argument changes it. (FNV-1a: no dependency, and a version check needs
/// no cryptographic strength.)
fn interface_fingerprint(service: &str, methods: &[Method]) -> u64 {
    let mut text = format!("{service}\n");
    for method in methods {
        let args: Vec<String> = method
            .args
            .iter()
            .map(|a| format!("{}: {}", a.ident.unraw(), type_text(&a.ty)))
            .collect();
        text.push_str(&format!(
            "{}({}) -> {}\n",
            method.ident.unraw(),
            args.join(", "),
            type_text(&method.output)
        ));
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A type as the user would write it: `Vec<u8>`, not `Vec < u8 >`.
fn type_text(ty: &syn::Type) -> String {
    let spaced = quote!(#ty).to_string();
    let mut text = String::with_capacity(spaced.len());
    let mut chars = spaced.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' ' {
            // Spaces stay between words and after commas: `&mut T`,
            // `(u8, u8)`, `[u8; 4]`.
            let glued_after = matches!(text.chars().last(), Some('<' | '(' | '[' | '&' | ':'));
            let glued_before =
                matches!(chars.peek(), Some('<' | '>' | ',' | ')' | ']' | ':' | ';'));
            if glued_after || glued_before {
                continue;
            }
        }
        text.push(c);
    }
    text
}

/// The request variant of a method: `transfer_all` becomes `TransferAll`.
pub fn variant_name(method: &Ident) -> Ident {
    let name = method.to_string();
    let camel: String = name
        .trim_start_matches("r#")
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect();
    format_ident!("{}", camel, span = method.span())
}

/// The single generic type argument of `ty` if it is a path type whose last
/// segment is `name` (`Vec<T>`, `std::vec::Vec<T>`, `Option<T>`).
fn single_argument<'a>(ty: &'a syn::Type, name: &str) -> Option<&'a syn::Type> {
    let syn::Type::Path(path) = ty else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let syn::PathArguments::AngleBracketed(arguments) = &last.arguments else {
        return None;
    };
    match arguments.args.first() {
        Some(syn::GenericArgument::Type(argument)) if arguments.args.len() == 1 => Some(argument),
        _ => None,
    }
}

/// Whether `ty` is written `Vec<u8>`.
fn is_byte_vec(ty: &syn::Type) -> bool {
    single_argument(ty, "Vec").is_some_and(|element| {
        matches!(element, syn::Type::Path(p) if p.qself.is_none() && p.path.is_ident("u8"))
    })
}

/// Whether `ty` is written `Vec<u8>` or `Option<Vec<u8>>`.
fn is_byte_string(ty: &syn::Type) -> bool {
    is_byte_vec(ty) || single_argument(ty, "Option").is_some_and(is_byte_vec)
}

pub struct Generator<'a> {
    service: &'a Service,
    krate: Path,
    request: Ident,
    response: Ident,
    adapter: Ident,
    client: Ident,
}

impl<'a> Generator<'a> {
    pub fn new(service: &'a Service, krate: Path) -> Self {
        let name = &service.item.ident;
        Generator {
            service,
            krate,
            request: format_ident!("{}Request", name),
            response: format_ident!("{}Response", name),
            adapter: format_ident!("{}Service", name),
            client: format_ident!("{}Client", name),
        }
    }

    fn core(&self) -> TokenStream {
        let krate = &self.krate;
        quote!(#krate::__private::core)
    }

    fn serde(&self) -> TokenStream {
        let krate = &self.krate;
        quote!(#krate::__private::serde)
    }

    pub fn generate(&self) -> TokenStream {
        let item = &self.service.item;
        let pieces = [
            self.enum_request(),
            self.enum_response(),
            self.impl_request(),
            self.impl_dispatch(),
            self.struct_adapter(),
            self.struct_client(),
        ];
        quote! {
            #item
            #(#pieces)*
        }
    }

    fn enum_request(&self) -> TokenStream {
        let (vis, trait_name, request, serde) = (
            &self.service.item.vis,
            &self.service.item.ident,
            &self.request,
            self.serde(),
        );
        let serde_path = serde.to_string();
        let variants = self.service.methods.iter().map(|m| {
            let variant = variant_name(&m.ident);
            let docs = &m.docs;
            let fields = m.args.iter().map(|a| {
                let (ident, ty) = (&a.ident, &a.ty);
                let bound = self.wire_bound(ty);
                let with = self.byte_string_with(ty);
                // Documented, so `#![deny(missing_docs)]` holds for a public service.
                let doc = format!("The `{ident}` argument of `{}`.", m.ident);
                quote!(#[doc = #doc] #bound #with #ident: #ty)
            });
            let cfgs = &m.cfgs;
            quote! { #(#cfgs)* #(#docs)* #variant { #(#fields),* } }
        });
        let doc = format!(
            "A request to a [`{trait_name}`] service: one variant per method, with its arguments."
        );
        quote! {
            #[doc = #doc]
            #[derive(::core::fmt::Debug, ::core::clone::Clone, #serde::Serialize, #serde::Deserialize)]
            #[serde(crate = #serde_path)]
            #vis enum #request {
                #(#variants,)*
            }
        }
    }

    fn enum_response(&self) -> TokenStream {
        let (vis, trait_name, response, serde) = (
            &self.service.item.vis,
            &self.service.item.ident,
            &self.response,
            self.serde(),
        );
        let serde_path = serde.to_string();
        let variants = self.service.methods.iter().map(|m| {
            let variant = variant_name(&m.ident);
            let output = &m.output;
            let bound = self.wire_bound(output);
            let with = self.byte_string_with(output);
            let doc = format!("What `{}` returned.", m.ident);
            let cfgs = &m.cfgs;
            quote! { #(#cfgs)* #[doc = #doc] #variant(#bound #with #output) }
        });
        let doc = format!("A response from a [`{trait_name}`] service: one variant per method.");
        quote! {
            #[doc = #doc]
            #[derive(::core::fmt::Debug, ::core::clone::Clone, #serde::Serialize, #serde::Deserialize)]
            #[serde(crate = #serde_path)]
            #vis enum #response {
                #(#variants,)*
            }
        }
    }

    /// `#[serde(bound = "..")]` for one field of the request or response
    /// enum: argument and return types travel inside requests and responses.
    ///
    /// The bound replaces the `Ty: Serialize` (and `Deserialize`) that the
    /// code serde generates would otherwise need, and report when missing
    /// several times over, partly at the macro call. On these non-generic
    /// impls it is a "trivial bound", which rustc checks where it is written
    /// (the string's span, which is the type's) and then assumes in the
    /// bodies; the identical reports of the serde impls are merged into one.
    /// `Debug` and `Clone` are left to their derives, which report at the
    /// field, once.
    fn wire_bound(&self, ty: &syn::Type) -> TokenStream {
        let serde = self.serde();
        let predicate = quote! {
            #ty: #serde::Serialize + #serde::de::DeserializeOwned + ::core::marker::Send + 'static
        };
        let predicate = syn::LitStr::new(&predicate.to_string(), ty.span());
        quote!(#[serde(bound = #predicate)])
    }

    /// `#[serde(with = "..::codec::bytes")]` for an argument or return type
    /// written `Vec<u8>` or `Option<Vec<u8>>`: the bytes are encoded in one
    /// piece rather than one call per byte, to exactly the same bytes (so the
    /// interface, its fingerprint and the wire are unchanged). Other spellings
    /// (an alias, a newtype) keep serde's default, which is as correct.
    fn byte_string_with(&self, ty: &syn::Type) -> TokenStream {
        if !is_byte_string(ty) {
            return TokenStream::new();
        }
        let path = format!("{}::codec::bytes", self.core());
        quote!(#[serde(with = #path)])
    }

    fn impl_request(&self) -> TokenStream {
        let (core, request) = (self.core(), &self.request);
        let access_arms = self.service.methods.iter().map(|m| {
            let variant = variant_name(&m.ident);
            let bindings = m.args.iter().map(|a| &a.ident);
            let body = self.access_set_body(m);
            let cfgs = &m.cfgs;
            quote! { #(#cfgs)* #request::#variant { #(#bindings),* } => { #body } }
        });
        let method_arms = self.service.methods.iter().map(|m| {
            let variant = variant_name(&m.ident);
            let name = m.ident.unraw().to_string();
            let cfgs = &m.cfgs;
            quote! { #(#cfgs)* #request::#variant { .. } => #name }
        });
        let read_only_arms = self.service.methods.iter().map(|m| {
            let variant = variant_name(&m.ident);
            // Rules that only read: the default rule (none) writes everything.
            let read_only = m.has_rules()
                && m.rules
                    .iter()
                    .all(|rule| matches!(rule.access, Access::Read));
            let cfgs = &m.cfgs;
            quote! { #(#cfgs)* #request::#variant { .. } => #read_only }
        });
        let tables = self.service.methods.iter().map(|m| {
            let method = m.ident.unraw().to_string();
            let mut names: Vec<String> = m
                .rules
                .iter()
                .flat_map(|r| {
                    r.keys
                        .iter()
                        .filter_map(KeySpec::table)
                        .map(|table| table.unraw().to_string())
                })
                .collect();
            names.sort();
            names.dedup();
            let cfgs = &m.cfgs;
            // Nothing for no tables: `extend([])` could not infer its type.
            (!names.is_empty())
                .then(|| quote! { #(#cfgs)* __cbase_tables.extend([#((#method, #names)),*]); })
        });
        let methods = self.service.methods.iter().map(|m| {
            let name = m.ident.unraw().to_string();
            let variant = variant_name(&m.ident).to_string();
            let args = m.args.iter().map(|a| {
                let arg = a.ident.unraw().to_string();
                let ty = type_text(&a.ty);
                quote!((#arg, #ty))
            });
            let cfgs = &m.cfgs;
            quote! {
                #(#cfgs)* __cbase_methods.push(#core::MethodInfo {
                    name: #name,
                    variant: #variant,
                    args: ::std::vec![#(#args),*],
                });
            }
        });
        let service_name = self.service.item.ident.unraw().to_string();
        let fingerprint = interface_fingerprint(&service_name, &self.service.methods);
        quote! {
            impl #core::Request for #request {
                #[allow(unused_variables, clippy::needless_borrow)]
                fn access_set(&self) -> #core::AccessSet {
                    match self {
                        #(#access_arms)*
                    }
                }

                fn method(&self) -> &'static str {
                    match self {
                        #(#method_arms,)*
                    }
                }

                fn read_only(&self) -> bool {
                    match self {
                        #(#read_only_arms,)*
                    }
                }

                fn declared_tables() -> ::std::vec::Vec<(&'static str, &'static str)> {
                    #[allow(unused_mut)]
                    let mut __cbase_tables = ::std::vec::Vec::new();
                    #(#tables)*
                    __cbase_tables
                }

                fn fingerprint() -> ::core::option::Option<#core::Fingerprint> {
                    ::core::option::Option::Some(#core::Fingerprint {
                        service: #service_name,
                        hash: #fingerprint,
                    })
                }

                fn methods() -> ::std::vec::Vec<#core::MethodInfo> {
                    #[allow(unused_mut)]
                    let mut __cbase_methods = ::std::vec::Vec::new();
                    #(#methods)*
                    __cbase_methods
                }
            }
        }
    }

    fn access_set_body(&self, method: &Method) -> TokenStream {
        let core = self.core();
        if !method.has_rules() {
            return quote!(#core::AccessSet::exclusive());
        }
        let set = Ident::new("__cbase_set", Span::call_site());
        let pushes = method.rules.iter().flat_map(|rule| {
            let push = match rule.access {
                Access::Read => quote!(push_read),
                Access::Write => quote!(push_write),
            };
            let core = core.clone();
            let set = set.clone();
            rule.keys.iter().map(move |key| {
                let make = match &key.target {
                    Target::All(_) => quote!(#core::Key::All),
                    Target::Table(table) => {
                        let name = table.unraw().to_string();
                        quote!(#core::Key::table(#name))
                    }
                    Target::Entry(table, expr) => {
                        // Named as `#[derive(State)]` names the field: `r#type` is `type`.
                        let name = table.unraw().to_string();
                        let (entry, value) =
                            (respan(quote!(#core::Key::entry), expr), borrow(expr));
                        quote_spanned!(expr.span()=> #entry(#name, #value))
                    }
                    Target::Prefix(table, leading, _) => {
                        let name = table.unraw().to_string();
                        let first = &leading[0];
                        let prefix = respan(quote!(#core::Key::prefix), first);
                        let values = leading.iter().map(borrow);
                        quote_spanned!(first.span()=> #prefix(#name, &(#(#values,)*)))
                    }
                    Target::Bare(expr) => {
                        let (key, value) = (respan(quote!(#core::Key::value), expr), borrow(expr));
                        quote_spanned!(expr.span()=> #key(#value))
                    }
                };
                match &key.each {
                    None => quote! { #set.#push(#make); },
                    Some(each) => {
                        let pat = &each.pat;
                        // Fields are bound by reference, so iterate the
                        // collection by reference whether or not the rule
                        // wrote `&`.
                        let collection = match &each.collection {
                            syn::Expr::Reference(r) if r.mutability.is_none() => &*r.expr,
                            other => other,
                        };
                        // The loop's own `IntoIterator` call is reported at
                        // `collection` when it is not iterable; wrapping it in
                        // another call would report it twice.
                        quote! { for #pat in #collection { #set.#push(#make); } }
                    }
                }
            })
        });
        quote! {
            let mut #set = #core::AccessSet::none();
            #(#pushes)*
            #set
        }
    }

    fn impl_dispatch(&self) -> TokenStream {
        let (core, request, response, trait_name) = (
            self.core(),
            &self.request,
            &self.response,
            &self.service.item.ident,
        );
        let vis = &self.service.item.vis;
        let service = Ident::new("__cbase_service", Span::call_site());
        let ctx = Ident::new("__cbase_ctx", Span::call_site());
        let arms = self.service.methods.iter().map(|m| {
            let (variant, name) = (variant_name(&m.ident), &m.ident);
            let bindings = m.args.iter().map(|a| &a.ident);
            let call_args = call_arguments(m, &ctx);
            let cfgs = &m.cfgs;
            quote! {
                #(#cfgs)* #request::#variant { #(#bindings),* } => #response::#variant(#service.#name(#(#call_args),*))
            }
        });
        let doc = format!("Runs this request against any [`{trait_name}`] implementation.");
        quote! {
            impl #request {
                #[doc = #doc]
                #[allow(unused_variables)]
                #vis fn dispatch<__CbaseT: #trait_name + ?Sized>(
                    self,
                    #service: &__CbaseT,
                    #ctx: &#core::Context,
                ) -> #response {
                    match self {
                        #(#arms,)*
                    }
                }
            }
        }
    }

    fn struct_adapter(&self) -> TokenStream {
        let (core, request, response, adapter, trait_name) = (
            self.core(),
            &self.request,
            &self.response,
            &self.adapter,
            &self.service.item.ident,
        );
        let vis = &self.service.item.vis;
        let doc = format!(
            "Runs a `T: {trait_name} + State` as a replicated service: the adapter the executor and the cluster take."
        );
        let table_checks = self.service.methods.iter().map(|m| {
            let method = m.ident.unraw().to_string();
            let mut tables: Vec<String> = m
                .rules
                .iter()
                .flat_map(|r| r.keys.iter().filter_map(KeySpec::table))
                .map(|table| table.unraw().to_string())
                .collect();
            tables.sort();
            tables.dedup();
            let checks = tables.iter().map(|table| {
                let message = format!(
                    "a rule of `{method}` names table `{table}`, which the state does not have: \
                     check the spelling, or add a `{table}` field (a Table or Cell) to the state struct"
                );
                quote! {
                    if !#core::state::has_table(tables, #table) {
                        ::core::panic!(#message);
                    }
                }
            });
            let prefix_checks = m.rules.iter().flat_map(|r| &r.keys).filter_map(|key| {
                let Target::Prefix(table, leading, star) = &key.target else {
                    return None;
                };
                let table = table.unraw().to_string();
                let elements: Vec<String> = leading
                    .iter()
                    .map(|e| e.to_token_stream().to_string().replace(" . ", "."))
                    .collect();
                let written = format!("{table}[({}, *)]", elements.join(", "));
                let entry = format!("{table}[({})]", elements.join(", "));
                let len = leading.len();
                let not_tuple = format!(
                    "`{written}` in a rule of `{method}` is a prefix, but the key of table `{table}` \
                     is not a tuple: a prefix needs a table keyed by a tuple of 2 to 4 elements, such \
                     as `Table<(u64, u32), V>`; declare one entry, `{table}[key]`, or the whole table, \
                     `{table}[*]`"
                );
                let too_long = format!(
                    "`{written}` in a rule of `{method}` is a prefix of {len} element{}, but the key \
                     of table `{table}` is not longer: a prefix names fewer elements than the key has; \
                     for one entry write `{entry}`",
                    if len == 1 { "" } else { "s" }
                );
                // Spanned at the `*`, so that the error points at the prefix.
                Some(quote_spanned! {star.span=>
                    if let ::core::option::Option::Some(arities) = <T as #core::StateTables>::KEY_ARITIES {
                        let arity = #core::state::key_arity(tables, arities, #table);
                        if arity == 0 {
                            ::core::panic!(#not_tuple);
                        } else if arity <= #len {
                            ::core::panic!(#too_long);
                        }
                    }
                })
            });
            let cfgs = &m.cfgs;
            quote! { #(#cfgs)* { #(#checks)* #(#prefix_checks)* } }
        });
        quote! {
            #[doc = #doc]
            #[derive(::core::fmt::Debug, ::core::default::Default)]
            #vis struct #adapter<T>(pub T);

            impl<T> ::core::convert::From<T> for #adapter<T> {
                fn from(inner: T) -> Self {
                    #adapter(inner)
                }
            }

            impl<T: #trait_name + #core::StateTables> #adapter<T> {
                /// Evaluated when the adapter is built for a state type:
                /// every table the rules name is one of its containers.
                const __CBASE_TABLES_EXIST: () = {
                    if let ::core::option::Option::Some(tables) = <T as #core::StateTables>::TABLES {
                        #(#table_checks)*
                    }
                };
            }

            impl<T: #trait_name + #core::StateTables> #core::Service for #adapter<T> {
                type Request = #request;
                type Response = #response;

                fn execute(&self, request: #request, ctx: &#core::Context) -> #response {
                    request.dispatch(&self.0, ctx)
                }

                fn state(&self) -> &dyn #core::State {
                    // A rule naming a table the state lacks fails the build here.
                    #[allow(clippy::let_unit_value)]
                    let () = Self::__CBASE_TABLES_EXIST;
                    &self.0
                }
            }
        }
    }

    fn struct_client(&self) -> TokenStream {
        let (core, request, response, client, trait_name) = (
            self.core(),
            &self.request,
            &self.response,
            &self.client,
            &self.service.item.ident,
        );
        let vis = &self.service.item.vis;
        let methods = self.service.methods.iter().map(|m| {
            let (variant, name, output, docs) = (variant_name(&m.ident), &m.ident, &m.output, &m.docs);
            let params = m.args.iter().map(|a| {
                let (ident, ty) = (&a.ident, &a.ty);
                quote!(#ident: #ty)
            });
            let fields = m.args.iter().map(|a| &a.ident);
            let method_name = name.unraw().to_string();
            let cfgs = &m.cfgs;
            quote! {
                #(#cfgs)*
                #(#docs)*
                pub async fn #name(&self, #(#params),*) -> ::core::result::Result<#output, #core::ClientError> {
                    let response = #core::Invoke::invoke(&self.invoker, #request::#variant { #(#fields),* }).await?;
                    #[allow(unreachable_patterns)]
                    match response {
                        #response::#variant(value) => ::core::result::Result::Ok(value),
                        _ => ::core::result::Result::Err(#core::ClientError::MismatchedResponse { method: #method_name }),
                    }
                }
            }
        });
        let doc = format!(
            "A typed client of a [`{trait_name}`] service: one async method per trait method. Each returns `Err` when the call itself failed, and the method's own return value otherwise."
        );
        quote! {
            #[doc = #doc]
            #[derive(::core::fmt::Debug, ::core::clone::Clone)]
            #vis struct #client<I> {
                invoker: I,
            }

            impl<I: #core::Invoke<#request, #response>> #client<I> {
                /// A client that sends its requests through `invoker` (and
                /// tells it which service, and which version of it, they
                /// are for: replicas running another refuse it).
                pub fn new(invoker: I) -> Self {
                    if let ::core::option::Option::Some(fingerprint) =
                        <#request as #core::Request>::fingerprint()
                    {
                        <I as #core::Invoke<#request, #response>>::bind_service(&invoker, fingerprint);
                    }
                    #client { invoker }
                }

                /// The invoker this client sends through.
                pub fn invoker(&self) -> &I {
                    &self.invoker
                }

                /// Gives the invoker back.
                pub fn into_invoker(self) -> I {
                    self.invoker
                }

                #(#methods)*
            }
        }
    }
}

/// `&(expr)`, spanned from the first to the last token of `expr`, so that a
/// key whose type is not `Serialize` is reported over the whole key.
fn borrow(expr: &syn::Expr) -> TokenStream {
    let tokens = quote!(#expr);
    let first = expr.span();
    let last = tokens
        .clone()
        .into_iter()
        .last()
        .map_or(first, |t| t.span());
    let mut group = Group::new(Delimiter::Parenthesis, tokens);
    group.set_span(last);
    let and = syn::Token![&](first);
    quote!(#and #group)
}

/// `tokens` (a path of generated code) with the span of `at`, so that errors
/// about a call point at the user's tokens, not at the macro.
fn respan(tokens: TokenStream, at: &syn::Expr) -> TokenStream {
    let span = at.span();
    tokens
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}

/// The arguments of a call to the trait method, with the context back in
/// the place where the method declares it.
fn call_arguments(method: &Method, ctx: &Ident) -> Vec<TokenStream> {
    let mut args: Vec<TokenStream> = method
        .args
        .iter()
        .map(|a| {
            let i = &a.ident;
            quote!(#i)
        })
        .collect();
    if let Some(position) = method.ctx_position {
        args.insert(position.min(args.len()), quote!(#ctx));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::{is_byte_string, type_text};

    #[test]
    fn byte_strings_are_recognized_as_written() {
        let cases = [
            ("Vec<u8>", true),
            ("std::vec::Vec<u8>", true),
            ("Option<Vec<u8>>", true),
            ("core::option::Option<alloc::vec::Vec<u8>>", true),
            ("Vec<u16>", false),
            ("Vec<Vec<u8>>", false),
            ("Option<Option<Vec<u8>>>", false),
            ("Result<Vec<u8>, String>", false),
            ("[u8; 32]", false),
            ("Box<[u8]>", false),
            ("Vec<u8, A>", false),
        ];
        for (written, expected) in cases {
            let ty: syn::Type = syn::parse_str(written).unwrap();
            assert_eq!(is_byte_string(&ty), expected, "{written}");
        }
    }

    #[test]
    fn types_print_as_written() {
        let cases = [
            ("Vec<u8>", "Vec<u8>"),
            ("Option<Vec<u8>>", "Option<Vec<u8>>"),
            (
                "std::collections::BTreeMap<String, u64>",
                "std::collections::BTreeMap<String, u64>",
            ),
            ("(u8, String)", "(u8, String)"),
            ("[u8; 32]", "[u8; 32]"),
            ("&'static str", "&'static str"),
            ("Result<u64, String>", "Result<u64, String>"),
        ];
        for (written, expected) in cases {
            let ty: syn::Type = syn::parse_str(written).unwrap();
            assert_eq!(type_text(&ty), expected);
        }
    }
}

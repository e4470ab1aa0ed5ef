//! `#[derive(State)]`: lists a struct's container fields, named after the fields.
//!
//! Every named field is a container (`Table`, `Cell`, or anything that
//! implements `cbase::Container`) unless marked `#[state(skip)]`, which is for
//! configuration that is not replicated state (and must never change while
//! requests run).

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Path};

use crate::ctxt::Ctxt;

pub fn derive(input: DeriveInput, krate: Path) -> TokenStream {
    let cx = Ctxt::default();
    let fields = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(named) => named.named.iter().collect(),
            other => {
                cx.error_spanned_by(
                    other,
                    "`State` needs named fields: each field's name is its table name in rules",
                );
                Vec::new()
            }
        },
        Data::Enum(data) => {
            cx.error_spanned_by(
                data.enum_token,
                "`State` can only be derived for a struct of containers",
            );
            Vec::new()
        }
        Data::Union(data) => {
            cx.error_spanned_by(
                data.union_token,
                "`State` can only be derived for a struct of containers",
            );
            Vec::new()
        }
    };
    let mut entries = Vec::new();
    let mut names = Vec::new();
    let mut arities = Vec::new();
    for field in fields {
        let mut skip = false;
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("state")) {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("skip") {
                    skip = true;
                    Ok(())
                } else {
                    let option = meta.path.to_token_stream().to_string().replace(' ', "");
                    Err(meta.error(format!(
                        "unknown `state` option `{option}`; the only option is `#[state(skip)]`"
                    )))
                }
            });
            if let Err(error) = parsed {
                cx.syn_error(error);
                // Left out of the generated impl, so the mistake is reported once.
                skip = true;
            }
        }
        if skip {
            continue;
        }
        let ident = field.ident.as_ref().expect("named fields have names");
        let name = ident.to_string();
        let name = name.strip_prefix("r#").unwrap_or(&name).to_owned();
        names.push(name.clone());
        let ty = &field.ty;
        arities.push(quote! {{
            use #krate::__private::core::container::NoTupleKey as _;
            <#krate::__private::core::container::ArityOf<#ty>>::KEY_ARITY
        }});
        let container = quote!(#krate::__private::core::Container);
        // Spanned at the field's type (the field name too, or rustc reports
        // the whole `name: Type`), so a field that is not a container is
        // reported at its type.
        let mut member = ident.clone();
        member.set_span(field.ty.span());
        entries.push(quote_spanned! {field.ty.span()=>
            (#name, &self.#member as &dyn #container)
        });
    }
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    // A field type with type parameters may or may not be a tuple-keyed
    // table: for a generic state, prefix rules are not checked while
    // compiling (their accesses are still checked as they run).
    let key_arities = if input.generics.type_params().next().is_none() {
        quote! {
            const KEY_ARITIES: ::core::option::Option<&'static [usize]> =
                ::core::option::Option::Some(&[#(#arities),*]);
        }
    } else {
        TokenStream::new()
    };
    let implementation = quote! {
        impl #impl_generics #krate::__private::core::State for #ident #ty_generics #where_clause {
            fn containers(&self) -> ::std::vec::Vec<(&'static str, &dyn #krate::__private::core::Container)> {
                ::std::vec![#(#entries),*]
            }
        }

        impl #impl_generics #krate::__private::core::StateTables for #ident #ty_generics #where_clause {
            const TABLES: ::core::option::Option<&'static [&'static str]> =
                ::core::option::Option::Some(&[#(#names),*]);
            #key_arities
        }
    };
    // On a mistake the impl is still emitted (without the fields in error),
    // so code using the struct as a `State` does not fail a second time.
    match cx.check() {
        Ok(()) => implementation,
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#error #implementation)
        }
    }
}

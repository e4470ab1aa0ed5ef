//! Procedural macros of cbase: `#[service]` and `#[derive(State)]`.
//!
//! Use them through the `cbase` facade crate (`#[cbase::service]`,
//! `#[derive(cbase::State)]`); its documentation describes what they accept
//! and generate. This crate reads the input into a model (`ast`, `attr`),
//! checks it (`valid`), collecting every mistake before reporting any
//! (`ctxt`), and only then generates code (`expand`, `state`).

#![warn(missing_docs)]

mod ast;
mod attr;
mod ctxt;
mod expand;
mod state;
mod valid;

use proc_macro::TokenStream;
use quote::{ToTokens, quote};
use syn::parse::Parser;
use syn::{ItemTrait, LitStr, Path};

/// Derives a replicated service from an annotated trait. See the `cbase` crate.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    let cx = ctxt::Ctxt::default();
    let krate = parse_options(&cx, args.into());
    let item: ItemTrait = match syn::parse(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let input: proc_macro2::TokenStream = input.into();
            let error = syn::Error::new_spanned(
                first_tokens(&input),
                "#[cbase::service] goes on a trait whose methods are the service's operations",
            );
            let error = error.to_compile_error();
            return quote!(#error #input).into();
        }
    };
    let service = ast::Service::from_trait(&cx, item);
    valid::check(&cx, &service);
    match cx.check() {
        Ok(()) => expand::Generator::new(&service, krate).generate().into(),
        Err(error) => {
            // Emit the trait (rule attributes removed) beside the errors, so
            // one mistake does not cascade into "trait not found" errors.
            let error = error.to_compile_error();
            let item = service.item.to_token_stream();
            quote!(#error #item).into()
        }
    }
}

/// Implements `cbase::State` for a struct of containers, naming each after its field.
#[proc_macro_derive(State, attributes(state))]
pub fn derive_state(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    state::derive(input, syn::parse_quote!(::cbase)).into()
}

fn parse_options(cx: &ctxt::Ctxt, args: proc_macro2::TokenStream) -> Path {
    let mut krate: Path = syn::parse_quote!(::cbase);
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            let value: LitStr = meta.value()?.parse()?;
            krate = value.parse()?;
            Ok(())
        } else {
            let name = meta.path.to_token_stream().to_string().replace(' ', "");
            Err(meta.error(format!(
                "unknown option `{name}` for #[cbase::service]; the only option is `crate = \"path::to::cbase\"`"
            )))
        }
    });
    if let Err(error) = parser.parse2(args) {
        cx.syn_error(error);
    }
    krate
}

/// The first few tokens of an item, to point an error at its start.
fn first_tokens(input: &proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    input.clone().into_iter().take(2).collect()
}

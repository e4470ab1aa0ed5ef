//! Parsing of the rule attributes `#[reads(..)]` and `#[writes(..)]`.
//!
//! Key forms, several per attribute, separated by commas:
//!
//! | form                                | meaning                        |
//! |-------------------------------------|--------------------------------|
//! | `*`                                 | everything                     |
//! | `table[*]`                          | the whole table                |
//! | `table[expr]`                       | one entry of a table           |
//! | `expr`                              | that value in every table      |
//! | `table[expr] for pat in collection` | one entry per element          |
//! | `expr for pat in collection`        | one value per element          |

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, Pat, Token, bracketed, token};

/// Whether a rule reads or writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn attribute(self) -> &'static str {
        match self {
            Access::Read => "reads",
            Access::Write => "writes",
        }
    }
}

/// One key of a rule.
pub struct KeySpec {
    pub target: Target,
    pub each: Option<Each>,
    /// The key's tokens as written, with their spans.
    written: TokenStream,
}

/// What a key names.
pub enum Target {
    All(Token![*]),
    Table(Ident),
    Entry(Ident, Expr),
    Bare(Expr),
}

/// The `for pat in collection` suffix.
pub struct Each {
    pub for_token: Token![for],
    pub pat: Pat,
    pub collection: Expr,
}

impl KeySpec {
    /// The key as written, for spans and for finding duplicates.
    pub fn tokens(&self) -> TokenStream {
        self.written.clone()
    }

    /// A normalized text of the key, equal for keys written alike.
    pub fn text(&self) -> String {
        self.written.to_string()
    }

    /// The table this key names, if any.
    pub fn table(&self) -> Option<&Ident> {
        match &self.target {
            Target::Table(table) | Target::Entry(table, _) => Some(table),
            Target::All(_) | Target::Bare(_) => None,
        }
    }
}

impl Parse for KeySpec {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let start = input.fork();
        let (target, each) = parse_key(input)?;
        let mut written = TokenStream::new();
        while start.cursor() < input.cursor() {
            written.extend([start.parse::<proc_macro2::TokenTree>()?]);
        }
        Ok(KeySpec {
            target,
            each,
            written,
        })
    }
}

fn parse_key(input: ParseStream) -> syn::Result<(Target, Option<Each>)> {
    let target = if input.peek(Token![*]) {
        Target::All(input.parse()?)
    } else if input.peek(Ident) && input.peek2(token::Bracket) {
        let table: Ident = input.parse()?;
        let content;
        bracketed!(content in input);
        if content.is_empty() {
            return Err(syn::Error::new(
                table.span(),
                format!(
                    "empty key in `{table}[]`: write `{table}[argument]` for one entry or `{table}[*]` for the whole table"
                ),
            ));
        }
        if content.peek(Token![*]) && is_lone_star(&content) {
            content.parse::<Token![*]>()?;
            Target::Table(table)
        } else {
            let expr: Expr = content.parse()?;
            if !content.is_empty() {
                return Err(content.error(format!(
                    "unexpected tokens in the key of `{table}[..]`: write one expression, e.g. `{table}[id]`"
                )));
            }
            Target::Entry(table, expr)
        }
    } else {
        Target::Bare(input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected a key: `*`, `table[*]`, `table[argument]`, an argument, or \
                 `table[expr] for x in collection`",
            )
        })?)
    };
    let each = if input.peek(Token![for]) {
        let for_token = input.parse()?;
        let pat = Pat::parse_single(input)?;
        input.parse::<Token![in]>()?;
        let collection = input.parse()?;
        Some(Each {
            for_token,
            pat,
            collection,
        })
    } else {
        None
    };
    if !(input.is_empty() || input.peek(Token![,])) {
        return Err(input.error("expected `,` between keys"));
    }
    Ok((target, each))
}

fn is_lone_star(content: ParseStream) -> bool {
    let fork = content.fork();
    fork.parse::<Token![*]>().is_ok() && fork.is_empty()
}

/// Parses the keys inside `#[reads(..)]`.
pub fn parse_keys(attr: &syn::Attribute) -> syn::Result<Vec<KeySpec>> {
    match &attr.meta {
        syn::Meta::List(list) => {
            let keys = list.parse_args_with(Punctuated::<KeySpec, Token![,]>::parse_terminated)?;
            Ok(keys.into_iter().collect())
        }
        syn::Meta::Path(_) => Ok(Vec::new()),
        syn::Meta::NameValue(nv) => {
            let name = nv.path.to_token_stream();
            let example = match &nv.value {
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(keys),
                    ..
                }) => keys.value(),
                _ => "accounts[id]".to_owned(),
            };
            Err(syn::Error::new_spanned(
                nv.eq_token,
                format!("write the keys in parentheses, without quotes: `#[{name}({example})]`"),
            ))
        }
    }
}

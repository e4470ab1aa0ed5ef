//! Parsing of the rule attributes `#[reads(..)]` and `#[writes(..)]`.
//!
//! Key forms, several per attribute, separated by commas:
//!
//! | form                                | meaning                        |
//! |-------------------------------------|--------------------------------|
//! | `*`                                 | everything                     |
//! | `table[*]`                          | the whole table                |
//! | `table[expr]`                       | one entry of a table           |
//! | `table[(expr, *)]`, `table[(a, b, *)]` | the entries under a prefix of a tuple key |
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
    /// `table[(a, b, *)]`: the leading elements, then the `*`.
    Prefix(Ident, Vec<Expr>, Token![*]),
    Bare(Expr),
}

/// The most leading elements of a prefix: tuple keys have up to 4 elements.
pub const MAX_PREFIX_LEN: usize = 3;

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
            Target::Table(table) | Target::Entry(table, _) | Target::Prefix(table, _, _) => {
                Some(table)
            }
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
        } else if let Some((leading, star)) = parse_prefix(&table, &content)? {
            Target::Prefix(table, leading, star)
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
                "expected a key: `*`, `table[*]`, `table[argument]`, `table[(argument, *)]`, \
                 an argument, or `table[expr] for x in collection`",
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

/// Parses `(a, b, *)`, the whole of a key, as a prefix; `None` (consuming
/// nothing) if the key is not a parenthesized list with a lone `*` in it,
/// such as the tuple key `(a, b)` or the expression `(*id)`.
fn parse_prefix(
    table: &Ident,
    content: ParseStream,
) -> syn::Result<Option<(Vec<Expr>, Token![*])>> {
    if !content.peek(token::Paren) {
        return Ok(None);
    }
    let fork = content.fork();
    let inner;
    syn::parenthesized!(inner in fork);
    if !fork.is_empty() {
        return Ok(None);
    }
    // Elements: `None` for a lone `*`.
    let mut elements: Vec<(Option<Expr>, TokenStream)> = Vec::new();
    let mut stars = 0;
    while !inner.is_empty() {
        let start = inner.fork();
        let element = if inner.peek(Token![*]) && is_lone_element_star(&inner) {
            inner.parse::<Token![*]>()?;
            stars += 1;
            None
        } else {
            match inner.parse::<Expr>() {
                Ok(expr) => Some(expr),
                // Not a list of expressions: let the caller parse the key
                // as one expression and report what is wrong with it.
                Err(_) => return Ok(None),
            }
        };
        let mut written = TokenStream::new();
        while start.cursor() < inner.cursor() {
            written.extend([start.parse::<proc_macro2::TokenTree>()?]);
        }
        elements.push((element, written));
        if inner.is_empty() {
            break;
        }
        if inner.parse::<Token![,]>().is_err() {
            return Ok(None);
        }
    }
    if stars == 0 {
        return Ok(None);
    }
    // The parenthesized group is the whole key: consume it.
    content.parse::<proc_macro2::TokenTree>()?;
    let last = elements.len() - 1;
    let leading: Vec<Expr> = elements[..last]
        .iter()
        .filter_map(|(e, _)| e.clone())
        .collect();
    for (at, (element, written)) in elements.iter().enumerate() {
        if element.is_none() && at != last {
            return Err(syn::Error::new_spanned(
                written,
                format!(
                    "`*` stands for the rest of the key, so it comes last: a prefix names the leading elements of a tuple key, as in `{table}[(a, *)]`; for a wildcard anywhere else, declare the whole table, `{table}[*]`"
                ),
            ));
        }
    }
    let Some((None, star)) = elements.last() else {
        unreachable!("a `*` was found, and every `*` but the last was refused");
    };
    let star: Token![*] = syn::parse2(star.clone())?;
    if leading.is_empty() {
        return Err(syn::Error::new_spanned(
            star,
            format!(
                "a prefix needs at least one leading element before `*`, as in `{table}[(a, *)]`; for every entry, write `{table}[*]`"
            ),
        ));
    }
    if leading.len() > MAX_PREFIX_LEN {
        return Err(syn::Error::new_spanned(
            &elements[MAX_PREFIX_LEN].1,
            format!(
                "a prefix has at most {MAX_PREFIX_LEN} leading elements: tuple keys have 2 to 4 elements"
            ),
        ));
    }
    Ok(Some((leading, star)))
}

/// Whether the next element of a tuple is a lone `*` (followed by `,` or the
/// end), not a dereference such as `*id`.
fn is_lone_element_star(inner: ParseStream) -> bool {
    let fork = inner.fork();
    fork.parse::<Token![*]>().is_ok() && (fork.is_empty() || fork.peek(Token![,]))
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

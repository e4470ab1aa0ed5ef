//! Replicated state containers: [`Table`] and [`Cell`].
//!
//! Requests run concurrently and take `&self`, so replicated state lives in
//! containers that are safe to share. Every access is first checked against the
//! running request's declared access set (see [`crate::scope`]); only then is
//! data touched. Containers are named after the field that holds them (by
//! `#[derive(State)]`, or [`Table::named`] by hand); the name is the table in
//! rules such as `#[reads(accounts[id])]`.

mod cell;
mod table;

use std::any::Any;
use std::sync::OnceLock;

pub use cell::Cell;
pub use table::Table;

use crate::codec::CodecError;
use crate::key::TableId;

/// A piece of replicated state that can be named, snapshotted and restored.
///
/// Implemented by [`Table`] and [`Cell`]; `#[derive(State)]` lists the
/// containers of a struct through this trait.
pub trait Container: Send + Sync {
    /// Gives the container its name (the field name). Naming twice with the
    /// same name is fine; with a different name it is an error.
    fn bind(&self, name: &'static str) -> Result<(), BindError>;

    /// The name, once bound.
    fn name(&self) -> Option<&'static str>;

    /// The contents in canonical form (sorted by key), encoded.
    fn encode_snapshot(&self) -> Result<Vec<u8>, CodecError>;

    /// Decodes snapshot bytes into a value that [`Container::install_snapshot`]
    /// accepts, without changing the container. Split in two so that restoring
    /// a whole state either installs every container or none.
    fn decode_snapshot(&self, bytes: &[u8]) -> Result<Box<dyn Any + Send>, CodecError>;

    /// Replaces the contents with a value from [`Container::decode_snapshot`].
    ///
    /// # Panics
    /// If `staged` did not come from this container type's `decode_snapshot`.
    fn install_snapshot(&self, staged: Box<dyn Any + Send>);
}

/// A container was given two different names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container is named `{existing}` and cannot be renamed `{requested}`")]
pub struct BindError {
    /// The name it already has.
    pub existing: &'static str,
    /// The name it was asked to take.
    pub requested: &'static str,
}

/// A container's name and table identity, set once.
#[derive(Default)]
pub(crate) struct Binding(OnceLock<(&'static str, TableId)>);

impl Binding {
    pub(crate) fn named(name: &'static str) -> Binding {
        let binding = Binding::default();
        binding.bind(name).expect("a fresh binding takes any name");
        binding
    }

    pub(crate) fn bind(&self, name: &'static str) -> Result<(), BindError> {
        let (existing, _) = *self.0.get_or_init(|| (name, TableId::of(name)));
        if existing == name {
            Ok(())
        } else {
            Err(BindError {
                existing,
                requested: name,
            })
        }
    }

    pub(crate) fn name(&self) -> Option<&'static str> {
        self.0.get().map(|(name, _)| *name)
    }

    /// Name and id for an access check. An unnamed container can only be
    /// used outside requests; inside one it is a setup bug reported loudly.
    pub(crate) fn for_access(&self) -> (&'static str, TableId) {
        match self.0.get() {
            Some(binding) => *binding,
            None => {
                if let Some(method) = crate::scope::current_method() {
                    panic!(
                        "request `{method}` used a container that has no name; \
                         derive `State` for the struct that holds it, or build it with `named(..)`"
                    );
                }
                ("<unnamed>", TableId::of(""))
            }
        }
    }
}

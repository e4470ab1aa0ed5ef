//! The [`Service`] trait: what the executor runs.
//!
//! `#[cbase::service]` implements these traits for a user's annotated trait;
//! they can also be written by hand, as below.
//!
//! ```
//! use cbase_core::{AccessSet, Container, Context, ExecutorBuilder, Key, Request, Service, State, Table};
//!
//! /// The state: one table, named after its field.
//! struct Counters {
//!     counts: Table<String, u64>,
//! }
//!
//! impl State for Counters {
//!     fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
//!         vec![("counts", &self.counts)]
//!     }
//! }
//!
//! /// The requests, each with its access set.
//! enum CounterRequest {
//!     Add { name: String, by: u64 },
//!     Get { name: String },
//! }
//!
//! impl Request for CounterRequest {
//!     fn access_set(&self) -> AccessSet {
//!         match self {
//!             CounterRequest::Add { name, .. } => AccessSet::none().write(Key::entry("counts", name)),
//!             CounterRequest::Get { name } => AccessSet::none().read(Key::entry("counts", name)),
//!         }
//!     }
//!     fn method(&self) -> &'static str {
//!         match self {
//!             CounterRequest::Add { .. } => "add",
//!             CounterRequest::Get { .. } => "get",
//!         }
//!     }
//!     fn declared_tables() -> Vec<(&'static str, &'static str)> {
//!         vec![("add", "counts"), ("get", "counts")]
//!     }
//! }
//!
//! struct CounterService(Counters);
//!
//! impl Service for CounterService {
//!     type Request = CounterRequest;
//!     type Response = u64;
//!     fn execute(&self, request: CounterRequest, _ctx: &Context) -> u64 {
//!         match request {
//!             CounterRequest::Add { name, by } => self.0.counts.upsert(name, || 0, |n| { *n += by; *n }),
//!             CounterRequest::Get { name } => self.0.counts.get(&name).unwrap_or(0),
//!         }
//!     }
//!     fn state(&self) -> &dyn State {
//!         &self.0
//!     }
//! }
//!
//! let (replies, received) = std::sync::mpsc::channel();
//! let executor = ExecutorBuilder::new()
//!     .workers(4)
//!     .start(CounterService(Counters { counts: Table::new() }), move |reply| {
//!         let _ = replies.send(reply);
//!     })
//!     .unwrap();
//! for tag in 0..10 {
//!     let request = CounterRequest::Add { name: format!("c{}", tag % 3), by: 1 };
//!     executor.submit(tag, Context::new(0, [0; 32]), request).unwrap();
//! }
//! executor.wait_idle();
//! assert_eq!(received.try_iter().count(), 10);
//! assert_eq!(executor.service().0.counts.get(&"c0".to_owned()), Some(4));
//! ```

use crate::access::AccessSet;
use crate::context::Context;
use crate::state::{State, StateError};

/// A request: something the executor can schedule, because it knows what it touches.
pub trait Request: Send + 'static {
    /// The keys this request reads and writes. Must be a pure function of the
    /// request (no state, no clock): every replica must derive the same set.
    /// If it panics (a key expression that indexes an argument out of
    /// range, say), the request runs nothing and fails with
    /// [`ExecError::Panicked`](crate::ExecError::Panicked).
    fn access_set(&self) -> AccessSet;

    /// The name of the method, for error messages.
    fn method(&self) -> &'static str;

    /// Whether this request only reads: its method's rules are all
    /// `#[reads(..)]` (not the default rule, which writes everything).
    /// Clients may send such a request on the read-only fast path, where
    /// replicas answer it from their committed state without ordering it;
    /// a replica checks the access set has no writes before it does.
    /// `#[cbase::service]` derives it; a hand-written request type answers
    /// `false` unless it says otherwise.
    fn read_only(&self) -> bool {
        false
    }

    /// Every (method, table) pair that the rules name, so a service can refuse
    /// to start when a rule names a table its state does not have.
    fn declared_tables() -> Vec<(&'static str, &'static str)>
    where
        Self: Sized,
    {
        Vec::new()
    }

    /// The service's name and a fingerprint of its interface (method names,
    /// argument and return types, in order), so a replica can refuse a
    /// client built from another version of the service before ordering
    /// anything it sends. `#[cbase::service]` computes it; `None` (a
    /// hand-written request type): not checked.
    fn fingerprint() -> Option<Fingerprint>
    where
        Self: Sized,
    {
        None
    }

    /// The service's methods with their arguments, for tools that call any
    /// method by name (`cbase::app`'s `call` command). `#[cbase::service]`
    /// lists every method; a hand-written request type may list none.
    fn methods() -> Vec<MethodInfo>
    where
        Self: Sized,
    {
        Vec::new()
    }
}

/// A service's interface, as [`Request::fingerprint`] gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// The service trait's name.
    pub service: &'static str,
    /// A hash of its methods' names, argument types and return types, in
    /// order (as written: the fields of your own types are not part of
    /// it).
    pub hash: u64,
}

/// One method of a service, as [`Request::methods`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// The method's name, as written in the trait (`transfer`).
    pub name: &'static str,
    /// The request enum's variant that carries it (`Transfer`): the tag of
    /// the request in self-describing encodings such as JSON.
    pub variant: &'static str,
    /// Its arguments, in order: name and type, as written in the trait.
    pub args: Vec<(&'static str, &'static str)>,
}

impl std::fmt::Display for MethodInfo {
    /// `transfer(from: String, to: String, amount: u64)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}(", self.name)?;
        for (at, (name, ty)) in self.args.iter().enumerate() {
            if at > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{name}: {ty}")?;
        }
        write!(f, ")")
    }
}

/// A replicated service: requests, how to execute one, and the state.
///
/// `execute` takes `&self` because independent requests run at the same time;
/// the state must live in cbase containers, which check every access against
/// the request's [`AccessSet`].
pub trait Service: Send + Sync + 'static {
    /// The requests this service accepts.
    type Request: Request;
    /// What a request returns.
    type Response: Send + 'static;

    /// Runs one request. A panic becomes an error reply; it does not stop the
    /// executor.
    fn execute(&self, request: Self::Request, ctx: &Context) -> Self::Response;

    /// The replicated state, for naming, snapshots and digests.
    fn state(&self) -> &dyn State;
}

/// Names the service's containers and checks that every table its rules name
/// exists. Called by the executor at start.
pub fn prepare<S: Service>(service: &S) -> Result<(), StateError> {
    let state = service.state();
    state.bind_names()?;
    let known = state.table_names();
    for (method, table) in S::Request::declared_tables() {
        if !known.contains(&table) {
            return Err(StateError::UnknownTable {
                method,
                table,
                known: known.join(", "),
                suggestion: closest(table, &known),
            });
        }
    }
    Ok(())
}

/// The name among `known` closest to `name`, if it is a likely typo of it:
/// within a third of its length in edits (insertions, deletions,
/// substitutions), and at least one.
fn closest(name: &str, known: &[&'static str]) -> Option<&'static str> {
    let allowed = (name.chars().count() / 3).max(1);
    known
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= allowed)
        .min()
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelled_table_gets_the_likely_one_and_a_different_one_gets_none() {
        let known = ["shows", "holds", "accounts"];
        assert_eq!(closest("shoes", &known), Some("shows"));
        assert_eq!(closest("acounts", &known), Some("accounts"));
        assert_eq!(closest("hold", &known), Some("holds"));
        assert_eq!(closest("customers", &known), None);
        assert_eq!(closest("x", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}

//! Undeclared accesses and panics: refused and reported the same way on every
//! run, and the executor carries on.

mod common;

use cbase_core::{
    AccessKind, AccessSet, Container, Context, ExecError, ExecutorBuilder, Request, Service, State,
    StateError, Table, UndeclaredAccess,
};
use common::{BankRequest, run_bank};

fn sneaky_workload() -> Vec<BankRequest> {
    vec![
        BankRequest::Open { id: 1, amount: 10 },
        BankRequest::Open { id: 2, amount: 10 },
        BankRequest::Sneaky { id: 1 },
        BankRequest::Balance { id: 2 },
        BankRequest::Explode { id: 2 },
        BankRequest::Balance { id: 2 },
        BankRequest::Total,
    ]
}

#[test]
fn undeclared_access_is_refused_with_method_table_and_key() {
    let (replies, _) = run_bank(1, sneaky_workload());
    let ExecError::UndeclaredAccess(refusal) = replies[2].clone().unwrap_err() else {
        panic!("expected a refusal, got {:?}", replies[2]);
    };
    assert_eq!(refusal.method, "sneaky");
    assert_eq!(refusal.table, "accounts");
    assert_eq!(refusal.key, "2");
    assert_eq!(refusal.kind, AccessKind::Read);
    assert_eq!(
        refusal.to_string(),
        "undeclared access: method `sneaky` tried to read accounts[2], which its rule does not \
         declare; add `#[reads(accounts[2])]` to `sneaky`, with the key written as the arguments \
         that give it, or a wider key (`accounts[*]`)"
    );
    // The refused read touched nothing; the balance of 2 is unchanged.
    assert_eq!(replies[3], Ok(Ok(10)));
}

#[test]
fn a_panicking_request_becomes_an_error_and_the_worker_survives() {
    let (replies, _) = run_bank(1, sneaky_workload());
    assert_eq!(
        replies[4],
        Err(ExecError::Panicked {
            method: "explode".into(),
            message: "explode on account 2".into()
        })
    );
    // With a single worker, these replies prove it survived the panic.
    assert_eq!(
        replies[5],
        Ok(Ok(10)),
        "the debit before the panic was never applied"
    );
    assert_eq!(replies[6], Ok(Ok(20)));
}

#[test]
fn a_refused_request_leaves_no_trace() {
    // `sneaky` credits account 1, then is refused reading account 2: the
    // credit is dropped with it.
    let workload = vec![
        BankRequest::Open { id: 1, amount: 10 },
        BankRequest::Open { id: 2, amount: 10 },
        BankRequest::Sneaky { id: 1 },
        BankRequest::Balance { id: 1 },
    ];
    for workers in [1, 4] {
        let (replies, _) = run_bank(workers, workload.clone());
        assert!(matches!(replies[2], Err(ExecError::UndeclaredAccess(_))));
        assert_eq!(replies[3], Ok(Ok(10)), "with {workers} workers");
    }
}

#[test]
fn refusals_are_identical_across_runs_and_worker_counts() {
    let reference = run_bank(1, sneaky_workload());
    for workers in [1, 2, 8, 16] {
        for _ in 0..5 {
            assert_eq!(run_bank(workers, sneaky_workload()), reference);
        }
    }
}

struct Ledger {
    entries: Table<u64, u64>,
}

impl State for Ledger {
    fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
        vec![("entries", &self.entries)]
    }
}

struct Misnamed;

impl Request for Misnamed {
    fn access_set(&self) -> AccessSet {
        AccessSet::exclusive()
    }
    fn method(&self) -> &'static str {
        "post"
    }
    fn declared_tables() -> Vec<(&'static str, &'static str)> {
        vec![("post", "entries"), ("post", "entires")]
    }
}

struct LedgerService(Ledger);

impl Service for LedgerService {
    type Request = Misnamed;
    type Response = ();
    fn execute(&self, _: Misnamed, _: &Context) {}
    fn state(&self) -> &dyn State {
        &self.0
    }
}

#[test]
fn a_rule_naming_a_missing_table_stops_the_start() {
    let err = ExecutorBuilder::new()
        .start(
            LedgerService(Ledger {
                entries: Table::new(),
            }),
            |_| {},
        )
        .err()
        .expect("the misspelled table is refused");
    assert_eq!(
        err,
        StateError::UnknownTable {
            method: "post",
            table: "entires",
            known: "entries".into(),
            suggestion: Some("entries"),
        }
    );
    assert_eq!(
        err.to_string(),
        "rule of `post` names table `entires`, which the state does not have (its tables: \
         entries); did you mean `entries`?"
    );
}

#[test]
fn refusal_payload_round_trips_through_serde() {
    // Error replies travel to clients, so they must encode.
    let refusal = UndeclaredAccess::new("m", "t", "1".into(), AccessKind::Write);
    let error = ExecError::from(refusal);
    let bytes = cbase_core::codec::encode(&error).unwrap();
    assert_eq!(
        cbase_core::codec::decode::<ExecError>(&bytes).unwrap(),
        error
    );
}

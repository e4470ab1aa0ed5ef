//! Compile-time behaviour of `#[cbase::service]` and `#[derive(State)]`:
//! every mistake in `ui/fail` must be reported at the smallest wrong token
//! with a message saying what to write instead, and every form in `ui/pass`
//! must compile (warning-free: the pass cases `#![deny(warnings)]`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}

//! Agreement and networking for cbase: PBFT as a pure state machine, its tokio
//! TCP runtime, a deterministic simulated network and the client.
//!
//! This crate is being built up; agreement arrives with the PBFT milestone.

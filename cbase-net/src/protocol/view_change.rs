//! View changes: replacing a primary that is faulty or slow.
//!
//! 1. A backup that has waited longer than the request timeout for a batch it
//!    knows of suspects the primary and broadcasts a signed view-change for
//!    the next view, carrying its stable checkpoint (with 2f+1 signed
//!    checkpoints) and a prepared certificate for every batch above it.
//! 2. A replica that sees f+1 view-changes for later views joins the
//!    smallest of them, so one slow replica cannot be left behind and f
//!    faulty ones cannot start view changes alone.
//! 3. The primary of the new view, with 2f+1 valid view-changes, re-issues a
//!    pre-prepare for every sequence number between the highest stable
//!    checkpoint and the highest prepared batch: the batch prepared in the
//!    highest view, or an empty one. It broadcasts them with the
//!    view-changes as a new-view.
//! 4. A backup checks every certificate, recomputes the pre-prepares and
//!    enters the view only if they match. Anything that was committed at
//!    some correct replica was prepared at 2f+1, so at least one of any 2f+1
//!    view-changes carries it: the new view cannot lose it.
//!
//! A view change that does not complete in time moves on to the next view,
//! with the timeout doubled, so the cluster stays live once the network
//! delivers messages within some (unknown) bound.

use std::collections::BTreeMap;

use super::certificates::{Quorums, plan_new_view};
use super::{Output, Replica, Status};
use crate::config::ReplicaId;
use crate::message::{
    NewView, PrePrepare, Proposal, ReplicaMessage, View, ViewChange, ViewChangeBody, domain,
    pre_prepare_header, view_change_bytes,
};

impl Replica {
    fn quorums(&self) -> Quorums<'_> {
        Quorums { keys: &self.keys, f: self.f, window: self.config.window }
    }

    fn primary_of(&self, view: View) -> ReplicaId {
        (view % self.n as u64) as ReplicaId
    }

    /// Checks the request timer and the view-change timer.
    pub(super) fn on_tick(&mut self, out: &mut Vec<Output>) {
        match self.status {
            Status::Normal => {
                if self.is_primary() {
                    return;
                }
                let oldest = self.waiting.values().min().copied();
                if oldest.is_some_and(|since| self.now.saturating_sub(since) >= self.config.request_timeout) {
                    self.start_view_change(self.view + 1, out);
                }
            }
            Status::ChangingTo { target, since } => {
                if self.now.saturating_sub(since) >= self.view_change_timeout {
                    // This view change failed (its primary may be faulty too):
                    // try the next one, waiting longer this time.
                    self.view_change_timeout = self.view_change_timeout.saturating_mul(2);
                    self.start_view_change(target + 1, out);
                }
            }
        }
    }

    /// Votes to move to `target` and stops taking part in the current view.
    fn start_view_change(&mut self, target: View, out: &mut Vec<Output>) {
        self.stats.view_changes_started += 1;
        self.status = Status::ChangingTo { target, since: self.now };
        let prepared = self
            .log
            .values()
            .filter_map(|slot| slot.prepared_proof(self.f))
            .collect();
        let body = ViewChangeBody {
            new_view: target,
            stable_seq: self.low,
            stable_state: self.stable_state,
            checkpoint_proof: self.stable_proof.clone(),
            prepared,
            replica: self.id,
        };
        let signature = self.secret.sign(domain::VIEW_CHANGE, &view_change_bytes(&body));
        let view_change = ViewChange { body, signature };
        self.view_changes.entry(target).or_default().insert(self.id, view_change.clone());
        out.push(Output::Broadcast(ReplicaMessage::ViewChange(view_change)));
        self.try_new_view(target, out);
    }

    pub(super) fn on_view_change(&mut self, from: ReplicaId, view_change: ViewChange, out: &mut Vec<Output>) {
        let target = view_change.body.new_view;
        if view_change.body.replica != from {
            self.stats.wrong_sender += 1;
            return;
        }
        if target <= self.view {
            self.stats.stale += 1;
            return;
        }
        if self.view_changes.get(&target).is_some_and(|votes| votes.contains_key(&from)) {
            self.stats.duplicate += 1;
            return;
        }
        // Bound memory: only views a little ahead of ours are kept.
        if target > self.view + self.n as u64 * 4 {
            self.stats.out_of_window += 1;
            return;
        }
        if !self.quorums().view_change_holds(&view_change) {
            self.stats.bad_certificate += 1;
            return;
        }
        self.view_changes.entry(target).or_default().insert(from, view_change);

        // f+1 replicas want a later view than the one we work in or move to:
        // at least one correct replica suspects the primary, so join.
        let heading_to = match self.status {
            Status::Normal => self.view,
            Status::ChangingTo { target, .. } => target,
        };
        let mut senders: BTreeMap<ReplicaId, View> = BTreeMap::new();
        for (view, votes) in self.view_changes.range(heading_to + 1..) {
            for replica in votes.keys() {
                senders.entry(*replica).or_insert(*view);
            }
        }
        if senders.len() > self.f {
            let smallest = *senders.values().min().expect("more than f senders");
            if !senders.contains_key(&self.id) {
                self.start_view_change(smallest, out);
            }
        }
        self.try_new_view(target, out);
    }

    /// As the primary of `target`, starts it once 2f+1 view-changes are in.
    fn try_new_view(&mut self, target: View, out: &mut Vec<Output>) {
        if self.primary_of(target) != self.id || target <= self.view {
            return;
        }
        let Some(votes) = self.view_changes.get(&target) else { return };
        if votes.len() <= 2 * self.f {
            return;
        }
        // The 2f+1 lowest senders: any choice works, a fixed one is easier to debug.
        let view_changes: Vec<ViewChange> = votes.values().take(2 * self.f + 1).cloned().collect();
        let plan = plan_new_view(&view_changes);
        let pre_prepares: Vec<PrePrepare> = plan
            .proposals
            .iter()
            .map(|(seq, proposal)| self.sign_pre_prepare(target, *seq, proposal.clone()))
            .collect();
        let new_view = NewView { view: target, view_changes, pre_prepares };
        out.push(Output::Broadcast(ReplicaMessage::NewView(new_view.clone())));
        self.enter_view(new_view, out);
    }

    fn sign_pre_prepare(&self, view: View, seq: u64, proposal: Proposal) -> PrePrepare {
        let digest = proposal.digest();
        let signature = self.secret.sign(domain::PRE_PREPARE, &pre_prepare_header(view, seq, &digest));
        PrePrepare { view, seq, digest, proposal, signature }
    }

    pub(super) fn on_new_view(&mut self, from: ReplicaId, new_view: NewView, out: &mut Vec<Output>) {
        if from != self.primary_of(new_view.view) {
            self.stats.wrong_sender += 1;
            return;
        }
        if new_view.view <= self.view {
            self.stats.stale += 1;
            return;
        }
        if !self.new_view_holds(&new_view) {
            self.stats.bad_certificate += 1;
            return;
        }
        self.enter_view(new_view, out);
    }

    /// 2f+1 valid view-changes for the view from distinct replicas, and
    /// exactly the pre-prepares they call for, signed by the new primary.
    fn new_view_holds(&self, new_view: &NewView) -> bool {
        let quorums = self.quorums();
        let mut senders = std::collections::BTreeSet::new();
        for view_change in &new_view.view_changes {
            if view_change.body.new_view != new_view.view || !quorums.view_change_holds(view_change) {
                return false;
            }
            senders.insert(view_change.body.replica);
        }
        if senders.len() != new_view.view_changes.len() || senders.len() <= 2 * self.f {
            return false;
        }
        let plan = plan_new_view(&new_view.view_changes);
        plan.proposals.len() == new_view.pre_prepares.len()
            && plan.proposals.iter().zip(&new_view.pre_prepares).all(|((seq, proposal), pre_prepare)| {
                pre_prepare.view == new_view.view
                    && pre_prepare.seq == *seq
                    && pre_prepare.proposal == *proposal
                    && quorums.pre_prepare_holds(pre_prepare)
            })
    }

    /// Starts working in the new view from its re-issued pre-prepares.
    fn enter_view(&mut self, new_view: NewView, out: &mut Vec<Output>) {
        let plan = plan_new_view(&new_view.view_changes);
        self.view = new_view.view;
        self.status = Status::Normal;
        self.view_change_timeout = self.config.view_change_timeout;
        self.view_changes = self.view_changes.split_off(&(self.view + 1));
        // Agreement state of the old view is replaced by the new view's.
        self.log.clear();
        if plan.stable_seq > self.low {
            if self.delivered >= plan.stable_seq {
                // We executed that far; our own checkpoint will confirm it.
                self.low = plan.stable_seq;
                self.stable_state = plan.stable_state;
            } else {
                out.push(Output::FetchState { seq: plan.stable_seq, state: plan.stable_state });
                self.low = plan.stable_seq;
                self.stable_state = plan.stable_state;
            }
        }
        let highest = new_view.pre_prepares.last().map_or(self.low, |p| p.seq);
        self.next_seq = highest.max(self.low) + 1;
        // Give the new primary a fresh chance before suspecting it.
        for since in self.waiting.values_mut() {
            *since = self.now;
        }
        out.push(Output::ViewEntered(self.view));
        let primary = self.is_primary();
        for pre_prepare in new_view.pre_prepares {
            if pre_prepare.seq <= self.low {
                continue;
            }
            for batch in &pre_prepare.proposal.batches {
                let digest = batch.digest();
                self.known_batches.insert(digest, Some(pre_prepare.seq));
                self.pending.retain(|(d, _)| *d != digest);
            }
            if primary {
                let seq = pre_prepare.seq;
                self.log.entry(seq).or_default().pre_prepare = Some(pre_prepare);
            } else {
                self.accept_pre_prepare(pre_prepare, out);
            }
        }
        // Messages for this view that arrived before it started.
        let held = std::mem::take(&mut self.future);
        for (from, message) in held {
            self.on_replica_message(from, message, out);
        }
        if primary {
            self.propose(out);
        }
    }
}

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
use super::{Output, Replica, Status, recovery};
use crate::config::ReplicaId;
use crate::message::{
    ClientBatch, Hash, NewView, PrePrepare, PrePrepareHeader, ReplicaMessage, Seq, View,
    ViewChange, ViewChangeBody, domain, pre_prepare_header, view_change_bytes,
};

impl Replica {
    pub(super) fn quorums(&self) -> Quorums<'_> {
        Quorums {
            keys: &self.keys,
            quorum: self.quorum,
            window: self.config.window,
        }
    }

    pub(super) fn primary_of(&self, view: View) -> ReplicaId {
        (view % self.n as u64) as ReplicaId
    }

    /// The view this replica works in, or the one it voted to move to. Once
    /// it has voted for view t, it takes part in no view below t: its
    /// view-change for t promised what it had prepared, and a view below t
    /// could commit what that promise left out (PBFT's rule).
    pub(super) fn heading_to(&self) -> View {
        match self.status {
            Status::Normal => self.view,
            Status::ChangingTo { target, .. } => target,
        }
    }

    /// The lowest slot that has this view's pre-prepare and is not
    /// committed in this view. Slots this replica executed in an earlier
    /// view count too: a new view re-issues them, and the others may need
    /// them committed again to execute them.
    fn lowest_open_slot(&self) -> Option<Seq> {
        self.log
            .iter()
            .find(|(_, slot)| {
                slot.header.is_some_and(|header| header.view == self.view) && !slot.committed
            })
            .map(|(seq, _)| *seq)
    }

    /// Updates [`Replica::stalled`]: the lowest open slot, and since when it
    /// has been the lowest.
    fn note_stall(&mut self) {
        self.stalled = match (self.lowest_open_slot(), self.stalled) {
            (None, _) => None,
            (Some(seq), Some((stalled, since))) if stalled == seq => Some((seq, since)),
            (Some(seq), _) => Some((seq, self.now)),
        };
    }

    /// Checks the request timer and the view-change timer, and reports
    /// this replica's status now and then.
    pub(super) fn on_tick(&mut self, out: &mut Vec<Output>) {
        if self.now.saturating_sub(self.last_status) >= self.config.status_interval_ns() {
            self.last_status = self.now;
            self.fetch_missing_proposals(out);
            out.push(Output::Broadcast(ReplicaMessage::Status(
                self.status_message(None),
            )));
        }
        match self.status {
            Status::Normal => {
                if self.is_primary() {
                    return;
                }
                // What this backup waits for: requests it knows of, and
                // the lowest slot of this view it accepted and has not
                // seen committed. The second matters when no request timer
                // runs here: the backup executed the request in an earlier
                // view (so it answers retransmissions from its reply cache)
                // or saw it only in a pre-prepare, while the new view cannot
                // commit it again (its voters crashed or are recovering).
                self.note_stall();
                let oldest = self
                    .waiting
                    .values()
                    .map(|timer| timer.since)
                    .chain(self.stalled.map(|(_, since)| since))
                    .min();
                let timeout = self.backoff.request_timeout(&self.config);
                if oldest.is_some_and(|since| self.now.saturating_sub(since) >= timeout) {
                    // Peers ahead means the primary works and this replica
                    // lags (lost messages): suspecting alone would only take
                    // it out of the view, so it catches up through
                    // retransmission and gives the requests a fresh timer.
                    // But only while catching up makes progress. Reports of
                    // progress are old (a peer that crashed since still
                    // counts) and the commits this replica lacks may be
                    // nowhere to be had in this view (their senders crashed
                    // or are recovering): then only a view change re-issues
                    // what it missed.
                    let excused = self.lag_excused_at != Some(self.delivered);
                    if excused && self.behind_peers() {
                        self.lag_excused_at = Some(self.delivered);
                        let now = self.now;
                        for timer in self.waiting.values_mut() {
                            timer.since = now;
                        }
                        if let Some((_, since)) = &mut self.stalled {
                            *since = now;
                        }
                    } else {
                        self.start_view_change(self.view + 1, out);
                    }
                }
            }
            Status::ChangingTo { target, since } => {
                if self.now.saturating_sub(since) < self.backoff.view_change_timeout(&self.config) {
                    return;
                }
                let joined = self
                    .view_changes
                    .get(&target)
                    .map_or(0, |votes| votes.len());
                if joined >= self.quorum {
                    // A quorum joined and still no new-view: the new primary
                    // is faulty or slow. Try the next view, waiting longer.
                    self.start_view_change(target + 1, out);
                } else {
                    // Too few joined: votes (ours or theirs) may have been
                    // lost. Running ahead alone would not help; say it again
                    // to everyone and wait again.
                    if let Some(mine) = self.view_changes.get(&target).and_then(|v| v.get(&self.id))
                    {
                        out.push(Output::Broadcast(ReplicaMessage::ViewChange(mine.clone())));
                    }
                    self.status = Status::ChangingTo {
                        target,
                        since: self.now,
                    };
                }
            }
        }
    }

    /// Whether f+1 peers (so at least one correct one) report having
    /// executed more than this replica in its current view.
    fn behind_peers(&self) -> bool {
        let ahead = self
            .peer_progress
            .values()
            .filter(|(view, delivered)| *view == self.view && *delivered > self.delivered)
            .count();
        ahead > self.f
    }

    /// Votes to move to `target` and stops taking part in the current view.
    fn start_view_change(&mut self, target: View, out: &mut Vec<Output>) {
        // Restarted without its memory and not yet answered by enough
        // peers: it may not have heard of every view it acted in (see
        // `recovery`). It keeps asking with its statuses, and votes once
        // they answer.
        let needed = recovery::answers_needed(self.n, self.quorum, self.f);
        if self.recovery.as_ref().is_some_and(|r| !r.may_vote(needed)) {
            self.stats.votes_withheld += 1;
            return;
        }
        // What this backup held back for its next vote goes now: it casts
        // no more votes in this view, and the primary may well stay (the
        // others need not follow).
        self.tell_untold(out);
        if let Some(recovery) = &mut self.recovery {
            recovery.vote(target);
        }
        self.stats.view_changes_started += 1;
        self.backoff.suspect(self.now, &self.config);
        self.backoff.vote(self.now);
        self.status = Status::ChangingTo {
            target,
            since: self.now,
        };
        // Nothing below `target` will be entered now.
        self.held.drop_below(target);
        let prepared = self.prepared.values().cloned().collect();
        let body = ViewChangeBody {
            new_view: target,
            stable_seq: self.low,
            stable_state: self.stable_state,
            checkpoint_proof: self.stable_proof.clone(),
            prepared,
            replica: self.id,
        };
        let signature = self
            .secret
            .sign(domain::VIEW_CHANGE, &view_change_bytes(&body));
        let view_change = ViewChange { body, signature };
        self.view_changes
            .entry(target)
            .or_default()
            .insert(self.id, view_change.clone());
        // On disk before the vote leaves: no view below `target` after a restart.
        out.push(Output::Persist(super::Durable::View(target)));
        out.push(Output::Broadcast(ReplicaMessage::ViewChange(view_change)));
        self.try_new_view(target, out);
    }

    pub(super) fn on_view_change(
        &mut self,
        from: ReplicaId,
        view_change: ViewChange,
        out: &mut Vec<Output>,
    ) {
        let target = view_change.body.new_view;
        if view_change.body.replica != from {
            self.stats.wrong_sender += 1;
            return;
        }
        if target <= self.view || target < self.heading_to() {
            // A vote for a view this replica is past or has voted beyond:
            // it will never build or enter that view.
            self.stats.stale += 1;
            return;
        }
        if self
            .view_changes
            .get(&target)
            .is_some_and(|votes| votes.contains_key(&from))
        {
            self.stats.duplicate += 1;
            return;
        }
        // Memory is bounded per sender, not by how far ahead a vote is: a
        // bound relative to our view dropped every vote of peers that had
        // gone through more failed view changes than it allowed (after a
        // partition, or a long outage of the primaries' links), so they
        // could never be joined, nor their view built.
        // The views `from` has votes kept for, lowest first.
        let kept: Vec<View> = self
            .view_changes
            .iter()
            .filter(|(_, votes)| votes.contains_key(&from))
            .map(|(view, _)| *view)
            .collect();
        let evict = kept
            .first()
            .copied()
            .filter(|_| kept.len() >= VOTES_KEPT_PER_SENDER);
        if evict.is_some_and(|lowest| target < lowest) {
            self.stats.stale += 1;
            return;
        }
        if !self.quorums().view_change_holds(&view_change) {
            self.stats.bad_certificate += 1;
            return;
        }
        self.view_changes
            .entry(target)
            .or_default()
            .insert(from, view_change);
        if let Some(lowest) = evict {
            // Its highest votes are the ones that may still be built or
            // joined: a correct replica only ever votes higher.
            self.forget_vote(lowest, from);
        }

        // f+1 replicas vote for views later than the one we work in or move
        // to: at least one correct replica suspects, so join. Join the
        // highest view that f+1 of them reached, so a replica that fell
        // behind by several view changes catches up in one step.
        let heading_to = self.heading_to();
        let mut latest: BTreeMap<ReplicaId, View> = BTreeMap::new();
        for (view, votes) in self.view_changes.range(heading_to + 1..) {
            for replica in votes.keys() {
                latest.insert(*replica, *view);
            }
        }
        let mut reached: Vec<View> = latest.into_values().collect();
        if reached.len() > self.f {
            reached.sort_unstable_by(|a, b| b.cmp(a));
            self.start_view_change(reached[self.f], out);
        }
        self.try_new_view(target, out);
    }

    /// Drops `from`'s vote for `view`.
    fn forget_vote(&mut self, view: View, from: ReplicaId) {
        if let Some(votes) = self.view_changes.get_mut(&view) {
            votes.remove(&from);
            if votes.is_empty() {
                self.view_changes.remove(&view);
            }
        }
    }

    /// As the primary of `target`, starts it once 2f+1 view-changes are in.
    fn try_new_view(&mut self, target: View, out: &mut Vec<Output>) {
        // After a restart, it may have built a new-view for this view before.
        let may_have_built = self.recovery.as_ref().is_some_and(|r| r.covers(target));
        if self.primary_of(target) != self.id
            || target <= self.view
            || target != self.heading_to()
            || may_have_built
        {
            // Not ours to build, past, below a view this replica voted for
            // (the votes for `target` may predate what it prepared since), or
            // possibly built already before a restart.
            return;
        }
        let Some(votes) = self.view_changes.get(&target) else {
            return;
        };
        if votes.len() < self.quorum {
            return;
        }
        // The 2f+1 lowest senders: any choice works, a fixed one is easier to debug.
        let view_changes: Vec<ViewChange> = votes.values().take(self.quorum).cloned().collect();
        let plan = plan_new_view(&view_changes);
        if let Some((seq, _)) = plan.proposals.last() {
            self.cover_window(target, *seq, out);
        }
        let pre_prepares: Vec<PrePrepareHeader> = plan
            .proposals
            .iter()
            .map(|(seq, digest)| self.sign_header(target, *seq, *digest))
            .collect();
        let new_view = NewView {
            view: target,
            view_changes,
            pre_prepares,
        };
        out.push(Output::Broadcast(ReplicaMessage::NewView(new_view.clone())));
        self.enter_view(new_view, out);
    }

    fn sign_header(&self, view: View, seq: u64, digest: Hash) -> PrePrepareHeader {
        let signature = self
            .secret
            .sign(domain::PRE_PREPARE, &pre_prepare_header(view, seq, &digest));
        PrePrepareHeader {
            view,
            seq,
            digest,
            signature,
        }
    }

    pub(super) fn on_new_view(
        &mut self,
        from: ReplicaId,
        new_view: NewView,
        out: &mut Vec<Output>,
    ) {
        // A new-view proves itself (signed view-changes, pre-prepares signed
        // by the new primary), so any replica may relay it to one that
        // missed it.
        let _ = from;
        // A replica recovering from a restart votes in no view it enters this
        // way (see `recovery`), so following the others into a view below
        // one it voted for breaks no promise: its vote carried nothing it
        // prepared, and it prepares nothing there.
        let below_vote = new_view.view < self.heading_to() && !self.learns_after_restart();
        if new_view.view <= self.view || below_vote {
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
            // Distinct senders first: a vote listed twice costs a
            // comparison, not a second round of signature checks.
            if !senders.insert(view_change.body.replica) {
                return false;
            }
            // One this replica already checked (and kept) needs no second
            // check: replaying valid votes inside bogus new-views costs a
            // comparison, not a round of signature checks.
            let known = self
                .view_changes
                .get(&new_view.view)
                .and_then(|votes| votes.get(&view_change.body.replica))
                .is_some_and(|kept| kept == view_change);
            if view_change.body.new_view != new_view.view
                || !(known || quorums.view_change_holds(view_change))
            {
                return false;
            }
        }
        if senders.len() < self.quorum {
            return false;
        }
        let plan = plan_new_view(&new_view.view_changes);
        plan.proposals.len() == new_view.pre_prepares.len()
            && plan.proposals.iter().zip(&new_view.pre_prepares).all(
                |((seq, digest), pre_prepare)| {
                    pre_prepare.view == new_view.view
                        && pre_prepare.seq == *seq
                        && pre_prepare.digest == *digest
                        && quorums.pre_prepare_holds(pre_prepare)
                },
            )
    }

    /// Starts working in the new view from its re-issued pre-prepares.
    fn enter_view(&mut self, new_view: NewView, out: &mut Vec<Output>) {
        self.last_new_view = Some(new_view.clone());
        self.backoff.entered_view(self.now);
        self.lag_excused_at = None;
        let takes_part = self
            .recovery
            .as_ref()
            .is_some_and(|r| r.ends_at(new_view.view));
        let plan = plan_new_view(&new_view.view_changes);
        self.view = new_view.view;
        self.status = Status::Normal;
        // On disk before anything is sent in the new view, with what the
        // view carried (the read barrier below, after a restart).
        let carried = new_view
            .pre_prepares
            .last()
            .map_or(plan.stable_seq.max(self.low), |p| p.seq);
        out.push(Output::Persist(super::Durable::Entered {
            view: self.view,
            carried,
        }));
        self.view_changes = self.view_changes.split_off(&(self.view + 1));
        // Batches ordered in the old view but not executed may not be in
        // the new one: forget where they were, so a retransmission is
        // treated as new (the new view's pre-prepares re-register theirs).
        let delivered = self.delivered;
        self.known_batches
            .retain(|_, at| at.is_none_or(|seq| seq <= delivered));
        // Agreement state of the old view is replaced by the new view's;
        // prepared certificates stay until the new view prepares anew.
        self.log.clear();
        self.withheld.clear();
        self.stalled = None;
        self.prepared = self
            .prepared
            .split_off(&(plan.stable_seq.max(self.low) + 1));
        // Executed here, so committed: no view re-issues another digest there.
        self.pre_prepared = self
            .pre_prepared
            .split_off(&(plan.stable_seq.max(self.low).max(self.delivered) + 1));
        self.proposals_on_disk = self.proposals_on_disk.split_off(&(
            plan.stable_seq.max(self.low).max(self.delivered) + 1,
            [0; 32],
        ));
        if plan.stable_seq > self.low {
            // The view starts above a checkpoint 2f+1 replicas proved; if we
            // have not executed that far, the log to get there is gone: fetch it.
            self.low = plan.stable_seq;
            self.stable_state = plan.stable_state;
            self.stable_proof = plan.stable_proof.clone();
            self.note_behind(
                super::state_transfer::Certified {
                    seq: plan.stable_seq,
                    state: plan.stable_state,
                    proof: plan.stable_proof.clone(),
                },
                true,
            );
        }
        if takes_part && let Some(recovery) = &mut self.recovery {
            // It takes part from here, but holds none of the certificates
            // it held before the restart: it owes one for every slot the
            // view carried (see `recovery`; settled after each input).
            let low = self.low;
            let owed = new_view
                .pre_prepares
                .iter()
                .map(|p| p.seq)
                .filter(|seq| *seq > low)
                .collect();
            recovery.enter(new_view.view, owed);
        }
        let highest = carried;
        self.next_seq = highest.max(self.low) + 1;
        // Whatever committed before this view is among its pre-prepares (or
        // below its checkpoint): reads wait for all of it, which covers what
        // a replica restarted with empty memory prepared before it crashed.
        // And no more: a number this replica prepared in an earlier view
        // that the new view does not carry never committed, and a barrier
        // kept there would hold reads until some later proposal took it.
        self.highest_prepared = highest;
        // Haves went to the old primary, and a batch the old primary held
        // unvouched reaches the new one as its client's signed
        // retransmission (see `vouching`).
        self.haves.clear();
        self.unvouched.clear();
        self.untold.clear();
        // Give the new primary a fresh chance before suspecting it.
        for timer in self.waiting.values_mut() {
            timer.since = self.now;
        }
        out.push(Output::ViewEntered(self.view));
        let primary = self.is_primary();
        let mut reissued = std::collections::BTreeSet::new();
        for header in new_view.pre_prepares {
            if header.seq <= self.low {
                continue;
            }
            // The proposal: known from an earlier view, the null one, or
            // fetched from a peer (it is executed once it arrives).
            if self.proposals.need(header.seq, header.digest)
                && let Some(proposal) = self.proposals.get(header.seq, &header.digest)
            {
                let batches: Vec<Hash> = proposal.batches.iter().map(ClientBatch::digest).collect();
                for batch in &batches {
                    self.known_batches.insert(*batch, Some(header.seq));
                }
                reissued.extend(batches);
            }
            if primary {
                self.log.entry(header.seq).or_default().header = Some(header);
            } else {
                self.accept_header(header, out);
            }
        }
        // Batches re-issued by the new view are not proposed again.
        if !reissued.is_empty() {
            self.pending
                .retain(|queued| !reissued.contains(&queued.digest));
        }
        // A timer for a batch this replica no longer holds nor sees ordered
        // (it timed a retransmission of a batch proposed in a slot the new
        // view skipped) watches for something nobody may propose again: if
        // its client gave up, it would stay for good and depose every
        // primary in turn. The client's next retransmission is new again
        // (see above) and is held and timed anew.
        let known = &self.known_batches;
        self.waiting.retain(|digest, _| known.contains_key(digest));
        // Proposals neither the new view, a prepared certificate nor a
        // prepare this replica sent names are no longer needed.
        let referenced: std::collections::BTreeSet<(Seq, Hash)> =
            self.log
                .iter()
                .filter_map(|(seq, slot)| slot.digest().map(|d| (*seq, *d)))
                .chain(
                    self.prepared
                        .values()
                        .map(|proof| (proof.pre_prepare.seq, proof.pre_prepare.digest)),
                )
                .chain(self.pre_prepared.iter().flat_map(|(seq, digests)| {
                    digests.iter().map(move |(_, digest)| (*seq, *digest))
                }))
                .collect();
        self.proposals.retain(self.low, &referenced);
        self.fetch_missing_proposals(out);
        // Messages for this view that arrived before it started.
        let held = self.held.take(self.view);
        for (from, message) in held {
            self.on_replica_message(from, message, out);
        }
        if primary {
            self.propose(out);
        }
    }
}

/// Most slots resent in answer to one status message, to bound the burst.
const MAX_RESENT_SLOTS: u64 = 64;

/// How many view-change votes of one peer a replica keeps: its highest. A
/// correct replica only ever votes higher, so its older votes are for views
/// nobody will build; two leave room for a vote that arrives after a later
/// one, or whose view is still being built when the next is voted for.
const VOTES_KEPT_PER_SENDER: usize = 2;

impl Replica {
    /// This replica's status now; `echo` answers a peer's probe.
    fn status_message(&self, echo: Option<u64>) -> crate::message::Status {
        crate::message::Status {
            view: self.view,
            changing_to: match self.status {
                Status::Normal => None,
                Status::ChangingTo { target, .. } => Some(target),
            },
            delivered: self.delivered,
            low: self.low,
            replica: self.id,
            probe: self.recovery.as_ref().and_then(|r| r.probe()),
            echo,
        }
    }

    /// A peer reported where it is: resend what it evidently missed.
    pub(super) fn on_status(
        &mut self,
        from: ReplicaId,
        status: crate::message::Status,
        out: &mut Vec<Output>,
    ) {
        if status.replica != from {
            self.stats.wrong_sender += 1;
            return;
        }
        // An answer to this replica's probe counts even if it comes right
        // after the peer's periodic status.
        if let Some(recovery) = &mut self.recovery {
            recovery.answer(from, status.echo);
        }
        let answered = self.status_answered.get(&from).copied();
        if answered
            .is_some_and(|at| self.now.saturating_sub(at) < self.config.status_interval_ns() / 2)
        {
            self.stats.duplicate += 1;
            return;
        }
        self.status_answered.insert(from, self.now);
        // A replica restarted without its memory asks where we are before
        // it votes: this answer, echoing its probe, shows it was sent after
        // the restart.
        if let Some(probe) = status.probe {
            out.push(Output::Send(
                from,
                ReplicaMessage::Status(self.status_message(Some(probe))),
            ));
        }
        if status.changing_to.is_none() {
            self.peer_progress
                .insert(from, (status.view, status.delivered));
        } else {
            self.peer_progress.remove(&from);
        }
        let normal = self.status == Status::Normal;
        // Still in an older view: it missed the new-view.
        if status.view < self.view
            && normal
            && let Some(new_view) = &self.last_new_view
        {
            out.push(Output::Send(
                from,
                ReplicaMessage::NewView(new_view.clone()),
            ));
        }
        // Behind the view we vote for: it may have missed our vote (f+1
        // votes make it join), or be changing to the same view and miss it.
        let peer_heading_to = status.changing_to.unwrap_or(status.view);
        if let Status::ChangingTo { target, .. } = self.status
            && peer_heading_to <= target
            && let Some(mine) = self.view_changes.get(&target).and_then(|v| v.get(&self.id))
        {
            out.push(Output::Send(from, ReplicaMessage::ViewChange(mine.clone())));
            // It still waits for a view we voted for and left because its
            // primary never came: our vote there may be the one it lacks
            // to time that view out too and follow us. Without it, it
            // waits for a quorum it never gets while we wait for it.
            if let Some(waiting_for) = status.changing_to
                && waiting_for < target
                && let Some(old) = self
                    .view_changes
                    .get(&waiting_for)
                    .and_then(|votes| votes.get(&self.id))
            {
                out.push(Output::Send(from, ReplicaMessage::ViewChange(old.clone())));
            }
        }
        // Behind on checkpoints: our votes (and the proof of our stable one).
        if status.low < self.low {
            for checkpoint in &self.stable_proof {
                out.push(Output::Send(
                    from,
                    ReplicaMessage::Checkpoint(checkpoint.clone()),
                ));
            }
        }
        // (Saturating: the peer chooses `low`, and claiming the last
        // sequence number there is must cost it nothing but silence.)
        for (_, votes) in self.checkpoint_votes.range(status.low.saturating_add(1)..) {
            if let Some(mine) = votes.get(&self.id) {
                out.push(Output::Send(from, ReplicaMessage::Checkpoint(mine.clone())));
            }
        }
        // Same view, behind on execution: the pre-prepares (signed by the
        // primary, so anyone may relay them) and our own prepares and commits.
        // (Also slots nobody has executed yet: a lost message may be what
        // holds everyone back.) A replica that has left the view for a view
        // change still resends what it sent in it: repeating old votes is not
        // taking part in the old view, and the peer may need them to commit.
        // A peer that executed *more* than we did still gets our votes above
        // what we executed: a new view re-issues slots it executed in an
        // older one, and it may need our lost prepare to commit one again,
        // the commit we lack to execute it at all. And a slot of this view
        // that we have not seen committed gets our votes even when neither
        // of us is behind: both may have executed it in an older view, while
        // a third replica that did not waits for the commits this new view
        // gathers, and a vote lost between the two of us would hold it back
        // for good.
        if status.view == self.view {
            let open = self.lowest_open_slot().unwrap_or(Seq::MAX);
            let first = (status.delivered.min(self.delivered) + 1)
                .min(open)
                .max(self.low + 1);
            for (seq, slot) in self.log.range(first..first + MAX_RESENT_SLOTS) {
                let Some(header) = slot.header else {
                    continue;
                };
                if let Some(proposal) = self.proposals.get(*seq, &header.digest) {
                    let pre_prepare = PrePrepare::from_header(header, proposal.clone());
                    out.push(Output::Send(from, ReplicaMessage::PrePrepare(pre_prepare)));
                }
                if let Some(prepare) = slot.prepares.get(&self.id) {
                    out.push(Output::Send(from, ReplicaMessage::Prepare(prepare.clone())));
                }
                if slot.commit_sent {
                    out.push(Output::Send(
                        from,
                        ReplicaMessage::Commit(crate::message::Commit {
                            view: self.view,
                            seq: *seq,
                            digest: header.digest,
                            replica: self.id,
                        }),
                    ));
                }
            }
        }
    }
}

//! The normal case of agreement: the primary proposes (pre-prepare),
//! backups prepare, every replica commits, and committed proposals are
//! handed to execution in sequence order (steps 1-3 of the protocol in the
//! [module documentation](super)).

use super::proposals::NULL_DIGEST;
use super::slot::Slot;
use super::{
    Committed, Durable, MAX_FETCHES_PER_ROUND, Output, PROPOSAL_FRAMING, Replica, Status, ViewFit,
    awaited,
};
use crate::config::ReplicaId;
use crate::crypto::PublicKey;
use crate::message::{
    ClientBatch, Commit, Hash, PrePrepare, PrePrepareHeader, Prepare, Proposal, ReplicaMessage,
    Seq, View, digest_and_size_of, domain, pre_prepare_header, prepare_header,
};

impl Replica {
    /// Whether the pre-prepare is signed by its view's primary and names
    /// its proposal's digest.
    fn pre_prepare_signed(&mut self, pre_prepare: &PrePrepare) -> bool {
        let header = pre_prepare_header(pre_prepare.view, pre_prepare.seq, &pre_prepare.digest);
        let primary = self.primary_of(pre_prepare.view) as usize;
        if !self.keys[primary].verify(domain::PRE_PREPARE, &header, &pre_prepare.signature) {
            self.stats.bad_signature += 1;
            return false;
        }
        let (digest, bytes) = digest_and_size_of(&pre_prepare.proposal);
        if digest != pre_prepare.digest {
            self.stats.bad_digest += 1;
            return false;
        }
        if bytes > self.config.max_batch_bytes + PROPOSAL_FRAMING {
            self.stats.oversized += 1;
            return false;
        }
        true
    }

    /// Sends this backup's prepare for a slot whose pre-prepare it holds
    /// but did not prepare yet, once it received every unsigned batch of
    /// the proposal itself or f+1 replicas vouch for it (the primary and f
    /// backups that prepared the same digest).
    pub(super) fn prepare_if_vouched(&mut self, seq: Seq, out: &mut Vec<Output>) {
        if self.learning() {
            return;
        }
        let (f, id, view) = (self.f, self.id, self.view);
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        let Some(header) = slot.header else {
            return;
        };
        if header.view != view || !slot.withheld || slot.prepares.contains_key(&id) {
            return;
        }
        let vouchers = 1 + slot
            .prepares
            .values()
            .filter(|prepare| prepare.digest == header.digest)
            .count();
        if (slot.awaiting.is_empty() && !slot.stale) || vouchers > f {
            slot.awaiting.clear();
            slot.stale = false;
            slot.withheld = false;
            self.withheld.remove(&seq);
            self.send_prepare(header.view, seq, header.digest, out);
        }
    }

    /// Proposes pending batches while the window and the pipeline allow.
    pub(super) fn propose(&mut self, out: &mut Vec<Output>) {
        while !self.pending.is_empty()
            && self.status == Status::Normal
            && !self.learns_after_restart()
            && self.is_primary()
            && self.next_seq <= self.high()
            && self.in_flight() < self.config.pipeline
        {
            if self
                .log
                .get(&self.next_seq)
                .is_some_and(|slot| slot.header.is_some())
            {
                // Never two proposals for one slot: this one is taken (a
                // pre-prepare of this view relayed back, say).
                self.next_seq += 1;
                continue;
            }
            let mut batches = Vec::new();
            let (mut requests, mut bytes) = (0, 0);
            while let Some(next) = self.pending.front() {
                let size = next.batch.batch.requests.len();
                let full = requests + size > self.config.max_batch_requests
                    || bytes + next.bytes > self.config.max_batch_bytes;
                if !batches.is_empty() && full {
                    break;
                }
                requests += size;
                bytes += next.bytes;
                batches.push(self.pending.pop_front().expect("front exists").batch);
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.cover_window(self.view, seq, out);
            let proposal = Proposal {
                timestamp: self.now,
                batches,
            };
            self.stats.proposals += 1;
            self.stats.proposed_requests += requests as u64;
            let digest = proposal.digest();
            for batch in &proposal.batches {
                self.known_batches.insert(batch.digest(), Some(seq));
            }
            let signature = self.secret.sign(
                domain::PRE_PREPARE,
                &pre_prepare_header(self.view, seq, &digest),
            );
            let pre_prepare = PrePrepare {
                view: self.view,
                seq,
                digest,
                proposal,
                signature,
            };
            self.log.entry(seq).or_default().header = Some(pre_prepare.header());
            self.proposals
                .insert(seq, digest, pre_prepare.proposal.clone());
            // Not written to disk here, unlike a backup's before its
            // prepare: every prepared certificate holds the prepares of at
            // least f correct backups besides this pre-prepare (at most f
            // of its 2f+1 signers are faulty), and each records the
            // proposal with its prepare (see `durable.rs`). So a correct
            // backup can serve it after a restart, and the primary's disk
            // is not on the path of every batch (its prepared
            // certificate's record carries it).
            self.note_pre_prepared(self.view, seq, digest);
            out.push(Output::Broadcast(ReplicaMessage::PrePrepare(pre_prepare)));
        }
    }

    /// A peer asks for a proposal a certificate named: served once per
    /// request timeout for a given slot, if known.
    pub(super) fn on_fetch_proposal(
        &mut self,
        from: ReplicaId,
        seq: Seq,
        digest: Hash,
        out: &mut Vec<Output>,
    ) {
        let Some(proposal) = self.proposals.get(seq, &digest) else {
            self.stats.stale += 1;
            return;
        };
        let repeated = self
            .proposals_served
            .get(&from)
            .is_some_and(|&(served, at)| {
                served == seq && self.now.saturating_sub(at) < self.config.request_timeout_ns()
            });
        if repeated {
            self.stats.duplicate += 1;
            return;
        }
        self.proposals_served.insert(from, (seq, self.now));
        out.push(Output::Send(
            from,
            ReplicaMessage::ProposalBody {
                seq,
                proposal: proposal.clone(),
            },
        ));
    }

    /// A proposal this replica asked for. It is taken only if it hashes to
    /// the digest the quorum agreed on at `seq`; then the client batches
    /// need no check: f+1 correct replicas checked them before preparing.
    pub(super) fn on_proposal_body(&mut self, seq: Seq, proposal: Proposal, out: &mut Vec<Output>) {
        let (digest, bytes) = digest_and_size_of(&proposal);
        if !self.proposals.is_missing(seq, &digest)
            || bytes > self.config.max_batch_bytes + PROPOSAL_FRAMING
        {
            self.stats.stale += 1;
            return;
        }
        self.learn_proposal(seq, digest, proposal);
        self.persist_fetched_proposal(seq, digest, out);
        self.deliver(out);
    }

    /// Asks peers for the proposals agreed slots still lack.
    pub(super) fn fetch_missing_proposals(&mut self, out: &mut Vec<Output>) {
        let asks = self
            .proposals
            .fetches(self.n, self.id, MAX_FETCHES_PER_ROUND);
        for (peer, seq, digest) in asks {
            out.push(Output::Send(
                peer,
                ReplicaMessage::FetchProposal { seq, digest },
            ));
        }
    }

    /// Proposals made and not yet handed to execution.
    fn in_flight(&self) -> usize {
        (self.next_seq - 1).saturating_sub(self.delivered) as usize
    }

    pub(super) fn on_pre_prepare(
        &mut self,
        from: ReplicaId,
        pre_prepare: PrePrepare,
        out: &mut Vec<Output>,
    ) {
        let PrePrepare {
            view, seq, digest, ..
        } = pre_prepare;
        // Any replica may relay a pre-prepare (retransmission): what makes it
        // the primary's is the primary's signature.
        match self.view_fit(view) {
            ViewFit::Current | ViewFit::Learn => {}
            ViewFit::Next => {
                if self.pre_prepare_signed(&pre_prepare) {
                    self.hold(view, from, ReplicaMessage::PrePrepare(pre_prepare));
                }
                return;
            }
            ViewFit::Other => return,
        }
        if self.outside_window(seq) {
            return;
        }
        if let Some(existing) = self.log.get(&seq).and_then(Slot::digest) {
            if *existing == digest {
                self.stats.duplicate += 1;
            } else {
                self.stats.equivocation += 1;
            }
            return;
        }
        if pre_prepare.proposal.len() > self.config.max_batch_requests {
            self.stats.oversized += 1;
            return;
        }
        if !self.pre_prepare_signed(&pre_prepare) {
            return;
        }
        if pre_prepare.proposal.timestamp > self.now.saturating_add(self.config.max_clock_skew_ns())
        {
            self.stats.bad_timestamp += 1;
            return;
        }
        // Stamped far behind: a faulty primary holding the agreed clock
        // still (sessions would stop idling out, clients' numbers would
        // end up refused as too far ahead), or a pre-prepare that reached
        // this backup long after it was made. Prepared only once f+1
        // replicas vouch for it, the primary and f prepares: by induction
        // the first correct replica to prepare it found it fresh. A correct
        // primary's pre-prepare is fresh to every correct backup it reaches
        // in time, and one that arrives late finds the others' prepares; a
        // faulty primary's stale proposals stall, and the request timers
        // replace it.
        let stale = pre_prepare
            .proposal
            .timestamp
            .saturating_add(self.backoff.clock_lag(&self.config))
            < self.now;
        if self.learning() {
            // Executed only once a quorum commits it, and a quorum prepares
            // only batches their clients sent (see `vouching`): nothing to
            // check here.
            let header = pre_prepare.header();
            self.learn_proposal(seq, digest, pre_prepare.proposal);
            self.log.entry(seq).or_default().header = Some(header);
            self.advance(seq, out);
            return;
        }
        // The primary cannot forge requests: every signed batch must carry
        // its client's signature, and every unsigned one must have reached
        // this replica from its client or be vouched for by f+1 replicas.
        let digests: Vec<Hash> = pre_prepare
            .proposal
            .batches
            .iter()
            .map(ClientBatch::digest)
            .collect();
        let mut awaiting = Vec::new();
        for (batch, digest) in pre_prepare.proposal.batches.iter().zip(&digests) {
            if self.authenticated.contains(digest) {
                continue;
            }
            if !batch.is_signed() {
                awaiting.push(*digest);
            } else if batch.verify() {
                self.authenticated.insert(*digest);
            } else {
                self.stats.bad_signature += 1;
                return;
            }
        }
        if pre_prepare
            .proposal
            .batches
            .iter()
            .all(|batch| self.admits(&batch.batch.client))
        {
            let header = pre_prepare.header();
            self.learn_proposal_of(seq, digest, pre_prepare.proposal, digests);
            if awaiting.is_empty() && !stale {
                self.accept_header(header, out);
            } else {
                if stale {
                    self.stats.stale_timestamp += 1;
                }
                if !awaiting.is_empty() {
                    self.stats.awaited_vouchers += 1;
                }
                let slot = self.log.entry(seq).or_default();
                slot.header = Some(header);
                slot.awaiting = awaiting;
                slot.stale = stale;
                slot.withheld = true;
                self.withheld.insert(seq);
                self.prepare_if_vouched(seq, out);
                self.advance(seq, out);
            }
        } else {
            // Nor can it smuggle in a client the cluster does not admit: no
            // prepare for that. (A replica only learning what a quorum
            // committed, above, takes the proposal as committed.)
            self.stats.unadmitted += 1;
        }
    }

    /// Whether the cluster file admits `client` (every client, if it lists
    /// none).
    pub(super) fn admits(&self, client: &PublicKey) -> bool {
        self.admitted
            .as_ref()
            .is_none_or(|admitted| admitted.contains(client))
    }

    /// Whether this replica has voted to leave its view and not entered
    /// another yet. It takes no further part in the view it voted to leave
    /// (no prepares, no commits: its view-change promised what it had
    /// prepared, and a vote cannot be taken back), but it keeps learning
    /// what the others commit there, from a quorum of their commits, and
    /// executes it. So a replica that suspected the primary alone (a lost
    /// message, a slow link) stays as current as its peers while its vote
    /// waits for company, instead of falling behind until the next view.
    ///
    /// A replica recovering from a restart learns the same way (see
    /// [`recovery`](super::recovery)).
    pub(super) fn learning(&self) -> bool {
        self.status != Status::Normal || self.learns_after_restart()
    }

    /// Whether this replica restarted and has not yet entered a view above
    /// every one it may have acted in (see [`recovery`](super::recovery)).
    pub(super) fn learns_after_restart(&self) -> bool {
        self.recovery.as_ref().is_some_and(|r| r.learns())
    }

    /// Keeps a proposal known to match the digest agreed (or proposed) at
    /// `seq`, and the batches it orders.
    fn learn_proposal(&mut self, seq: Seq, digest: Hash, proposal: Proposal) {
        let batches = proposal.batches.iter().map(ClientBatch::digest).collect();
        self.learn_proposal_of(seq, digest, proposal, batches);
    }

    /// [`learn_proposal`](Self::learn_proposal) with its batches' digests
    /// already computed (an encoding and a hash each).
    fn learn_proposal_of(
        &mut self,
        seq: Seq,
        digest: Hash,
        proposal: Proposal,
        batches: Vec<Hash>,
    ) {
        for batch in batches {
            self.known_batches.insert(batch, Some(seq));
        }
        self.proposals.insert(seq, digest, proposal);
    }

    /// Records a pre-prepare header (checked, or re-issued by a checked
    /// new-view) and sends this backup's prepare. Agreement is on the
    /// digest; the proposal may still be on its way.
    pub(super) fn accept_header(&mut self, header: PrePrepareHeader, out: &mut Vec<Output>) {
        let (view, seq, digest) = (header.view, header.seq, header.digest);
        self.log.entry(seq).or_default().header = Some(header);
        if self.learning() {
            self.advance(seq, out);
            return;
        }
        self.send_prepare(view, seq, digest, out);
    }

    /// Signs, records and broadcasts this backup's prepare for `seq`.
    fn send_prepare(&mut self, view: View, seq: Seq, digest: Hash, out: &mut Vec<Output>) {
        self.cover_window(view, seq, out);
        let signature = self.secret.sign(
            domain::PREPARE,
            &prepare_header(view, seq, &digest, self.id),
        );
        let prepare = Prepare {
            view,
            seq,
            digest,
            replica: self.id,
            signature,
        };
        self.log
            .entry(seq)
            .or_default()
            .prepares
            .insert(self.id, prepare.clone());
        self.note_pre_prepared(view, seq, digest);
        self.persist_proposal(view, seq, digest, out);
        out.push(Output::Broadcast(ReplicaMessage::Prepare(prepare)));
        self.advance(seq, out);
    }

    /// Records the proposal this backup is about to vouch for, once (see
    /// `durable.rs`), if it holds it. One it fetches later is written
    /// when it arrives ([`Replica::persist_fetched_proposal`]).
    fn persist_proposal(&mut self, view: View, seq: Seq, digest: Hash, out: &mut Vec<Output>) {
        if digest == *NULL_DIGEST || self.proposals_on_disk.contains(&(seq, digest)) {
            return;
        }
        if let Some(proposal) = self.proposals.get(seq, &digest) {
            out.push(Output::Persist(Durable::Proposal {
                view,
                seq,
                digest,
                proposal: proposal.clone(),
            }));
            self.proposals_on_disk.insert((seq, digest));
        }
    }

    /// A fetched proposal arrived: if this replica vouched for it without
    /// holding it (it prepared a new view's re-issue while fetching), it
    /// writes it to disk now, as it would have before its prepare.
    pub(super) fn persist_fetched_proposal(
        &mut self,
        seq: Seq,
        digest: Hash,
        out: &mut Vec<Output>,
    ) {
        let vouched = self
            .pre_prepared
            .get(&seq)
            .and_then(|digests| digests.iter().find(|(_, known)| *known == digest))
            .map(|(view, _)| *view);
        if let Some(view) = vouched {
            self.persist_proposal(view, seq, digest, out);
        }
    }

    /// Records that this replica vouched for `digest` at `seq` in `view`
    /// (see `Replica::pre_prepared`).
    pub(super) fn note_pre_prepared(&mut self, view: View, seq: Seq, digest: Hash) {
        let digests = self.pre_prepared.entry(seq).or_default();
        digests.retain(|(_, known)| *known != digest);
        digests.push((view, digest));
    }

    pub(super) fn on_prepare(&mut self, from: ReplicaId, prepare: Prepare, out: &mut Vec<Output>) {
        let Prepare {
            view,
            seq,
            digest,
            replica,
            ..
        } = prepare;
        if replica != from {
            self.stats.wrong_sender += 1;
            return;
        }
        match self.view_fit(view) {
            ViewFit::Current | ViewFit::Learn => {}
            ViewFit::Next => {
                let header = prepare_header(view, seq, &digest, replica);
                if self.keys[from as usize].verify(domain::PREPARE, &header, &prepare.signature) {
                    self.hold(view, from, ReplicaMessage::Prepare(prepare));
                } else {
                    self.stats.bad_signature += 1;
                }
                return;
            }
            ViewFit::Other => return,
        }
        if from == self.primary() {
            self.stats.wrong_sender += 1;
            return;
        }
        if self.outside_window(seq) {
            return;
        }
        if let Some(existing) = self.log.get(&seq).and_then(|s| s.prepares.get(&from)) {
            if existing.digest == digest {
                self.stats.duplicate += 1;
            } else {
                self.stats.equivocation += 1;
            }
            return;
        }
        if self.log.get(&seq).is_some_and(|slot| slot.commit_sent) {
            // Prepared already, on 2f verified prepares that its certificate
            // holds: this one can add nothing, and checking its signature
            // was a quarter of the verifying a slot cost. It is not kept,
            // so an unchecked signature never enters a certificate.
            self.stats.late_prepares += 1;
            return;
        }
        let header = prepare_header(view, seq, &digest, replica);
        if !self.keys[from as usize].verify(domain::PREPARE, &header, &prepare.signature) {
            self.stats.bad_signature += 1;
            return;
        }
        self.log
            .entry(seq)
            .or_default()
            .prepares
            .insert(from, prepare);
        self.prepare_if_vouched(seq, out);
        self.advance(seq, out);
    }

    pub(super) fn on_commit(&mut self, from: ReplicaId, commit: Commit, out: &mut Vec<Output>) {
        let Commit {
            view,
            seq,
            digest,
            replica,
        } = commit;
        if replica != from {
            self.stats.wrong_sender += 1;
            return;
        }
        match self.view_fit(view) {
            ViewFit::Current | ViewFit::Learn => {}
            ViewFit::Next => {
                // The transport authenticated the sender, and `replica == from`.
                self.hold(view, from, ReplicaMessage::Commit(commit));
                return;
            }
            ViewFit::Other => return,
        }
        if self.outside_window(seq) {
            return;
        }
        if let Some(existing) = self.log.get(&seq).and_then(|s| s.commits.get(&from)) {
            if *existing == digest {
                self.stats.duplicate += 1;
            } else {
                self.stats.equivocation += 1;
            }
            return;
        }
        self.log
            .entry(seq)
            .or_default()
            .commits
            .insert(from, digest);
        self.advance(seq, out);
    }

    /// Moves a slot forward: prepared -> send commit; committed -> deliver.
    pub(super) fn advance(&mut self, seq: Seq, out: &mut Vec<Output>) {
        let (quorum, id, view) = (self.quorum, self.id, self.view);
        let learning = self.learning();
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        if learning {
            // Commits of the others only: this replica does not vote here.
            if !slot.committed && slot.is_committed(quorum) {
                slot.committed = true;
                self.deliver(out);
            }
            return;
        }
        if !slot.commit_sent && slot.is_prepared(quorum) {
            let proof = slot.prepared_proof(quorum);
            slot.commit_sent = true;
            self.highest_prepared = self.highest_prepared.max(seq);
            let digest = *slot.digest().expect("prepared slots have a pre-prepare");
            slot.commits.insert(id, digest);
            if let Some(proof) = proof {
                // On disk before the commit vote leaves (see `durable.rs`).
                // The proposal goes with it unless it is on disk already.
                let proposal = if self.proposals_on_disk.contains(&(seq, digest)) {
                    None
                } else {
                    self.proposals.get(seq, &digest).cloned()
                };
                out.push(Output::Persist(Durable::Prepared {
                    proof: proof.clone(),
                    proposal,
                }));
                self.prepared.insert(seq, proof);
            }
            out.push(Output::Broadcast(ReplicaMessage::Commit(Commit {
                view,
                seq,
                digest,
                replica: id,
            })));
        }
        if !slot.committed && slot.is_committed(quorum) {
            slot.committed = true;
            self.deliver(out);
        }
    }

    /// Hands committed batches to execution in sequence order, without gaps.
    pub(super) fn deliver(&mut self, out: &mut Vec<Output>) {
        if self.installing.is_some() {
            return;
        }
        while let Some(slot) = self.log.get(&(self.delivered + 1)) {
            if !slot.committed {
                break;
            }
            let header = slot.header.expect("committed slots have a pre-prepare");
            let seq = self.delivered + 1;
            let Some(proposal) = self.proposals.get(seq, &header.digest) else {
                // Agreed, but the proposal is still being fetched.
                break;
            };
            // A backup (or a former primary that had not proposed them yet)
            // no longer waits for these batches, nor keeps them. The primary
            // arms no timers and took what it proposed out of its queue, so
            // its agreement loop skips this.
            let holds_others = !self.pending.is_empty() && !self.is_primary();
            if !self.waiting.is_empty() || holds_others {
                let ordered: std::collections::BTreeSet<Hash> =
                    proposal.batches.iter().map(ClientBatch::digest).collect();
                for digest in &ordered {
                    if let Some(timer) = self.waiting.remove(digest) {
                        let waited = self.now.saturating_sub(timer.since);
                        self.backoff.executed(self.now, waited, &self.config);
                    }
                }
                // Requests are what clients wait for, not batches: one
                // executed in another batch ends the timers of the batches
                // that carried it too. (A queued copy stays: proposed
                // again, it is answered from the exactly-once table.)
                if !self.waiting.is_empty() {
                    let executed = awaited::executed_by(&proposal.batches);
                    self.waiting
                        .retain(|_, timer| !timer.note_executed(&executed));
                }
                if holds_others {
                    self.pending
                        .retain(|queued| !ordered.contains(&queued.digest));
                }
            }
            let proposal = proposal.clone();
            out.push(Output::Execute(Committed {
                view: header.view,
                seq,
                digest: header.digest,
                proposal,
                checkpoint: seq.is_multiple_of(self.config.checkpoint_interval),
            }));
            self.delivered = seq;
        }
        if self.is_primary() {
            // A delivery frees pipeline room.
            self.propose(out);
        }
    }
}

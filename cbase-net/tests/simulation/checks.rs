//! What every run is checked against.
//!
//! As the run goes (recorded in `World::violations`):
//! - a correct replica never enters a view below one it voted for;
//! - a correct replica never signs two proposals for one view and sequence
//!   number, as a primary (pre-prepares) or a backup (prepares), restarts
//!   (from disk, a copy or nothing) included;
//! - a correct replica's view-change carries a complete proof of its stable
//!   checkpoint (2f+1 votes from distinct replicas for that digest);
//! - a correct replica never diverges from the quorum's checkpoint;
//! - the agreed clock at a correct replica never runs far ahead of real time;
//! - memory stays bounded: a correct replica does not hold messages for
//!   views far ahead of its own, nor more than a window of pre-prepares
//!   (proposals of up to a frame each) from one sender for a view it has
//!   not entered, and its log, pending batches and known batches stay
//!   within the configured limits.
//!
//! At the end:
//! - safety: correct replicas executed the same batch at every sequence
//!   number, sent the same reply to every request and agree on every
//!   checkpoint digest;
//! - linearizability: the agreed order is a linearization of the honest
//!   clients' history (results match a sequential bank at the agreed time;
//!   real-time order is respected), and money is neither created nor
//!   destroyed; a read answered on the fast path (not in the agreed order)
//!   fits at some position of it where the bank gives the same answer, after
//!   every operation that finished before the read started (fast reads
//!   included) and before every ordered one that started after it finished;
//! - liveness: every honest request completed within the bound after the
//!   heal; correct replicas that are up settled in one view (no view
//!   entered during the final settle period, none still changing views)
//!   and caught up with the stable checkpoint; no read on the fast path
//!   waits at a correct replica for a sequence number it executed, or one
//!   no correct replica executed;
//! - a replica whose state was damaged repaired itself.

use std::collections::{BTreeMap, BTreeSet};

use cbase_net::checkpoint::{Admission, ClientTable};
use cbase_net::config::ReplicaId;
use cbase_net::crypto::PublicKey;
use cbase_net::message::{ReplicaMessage, View, ViewChange};

use crate::scenarios::MS;
use crate::service::{ACCOUNTS, OPENING, model};
use crate::world::{Done, ExecutedBatch, World};

/// How far past its own view a replica may hold messages for later views.
pub const FUTURE_VIEWS: u64 = 100;

impl World {
    /// A message an instance is about to send.
    pub fn note_sent(&mut self, instance: usize, message: &ReplicaMessage) {
        self.note_signed(instance, message);
        let ReplicaMessage::ViewChange(view_change) = message else {
            return;
        };
        if view_change.body.new_view > self.nodes[instance].voted {
            self.trace(
                instance,
                format_args!("votes for view {}", view_change.body.new_view),
            );
        }
        let node = &mut self.nodes[instance];
        node.voted = node.voted.max(view_change.body.new_view);
        if self.now < self.network.heal {
            node.voted_before_heal = node.voted;
        }
        if !self.is_correct(instance) {
            return;
        }
        if let Some(problem) = self.incomplete_proof(view_change) {
            self.violation(format!(
                "correct replica instance {instance} sent a view-change for view {} whose {problem}",
                view_change.body.new_view
            ));
        }
    }

    /// A correct replica's own pre-prepare or prepare: it must not sign
    /// another digest for the same view and number, whatever restarts it
    /// went through since (relayed pre-prepares of another primary are not
    /// its own).
    fn note_signed(&mut self, instance: usize, message: &ReplicaMessage) {
        let id = self.nodes[instance].id;
        let (kind, view, seq, digest) = match message {
            ReplicaMessage::PrePrepare(pp) if pp.view % self.n as u64 == u64::from(id) => {
                ("pre-prepare", pp.view, pp.seq, pp.digest)
            }
            ReplicaMessage::Prepare(p) if p.replica == id => ("prepare", p.view, p.seq, p.digest),
            _ => return,
        };
        if !self.is_correct(instance) {
            return;
        }
        let signed = *self.signed.entry((id, kind, view, seq)).or_insert(digest);
        if signed != digest {
            self.violation(format!(
                "correct replica {id} signed two {kind}s for view {view}, sequence number {seq}"
            ));
        }
    }

    /// The stable-checkpoint proof of a view-change, if it does not hold.
    fn incomplete_proof(&self, view_change: &ViewChange) -> Option<String> {
        let body = &view_change.body;
        if body.stable_seq == 0 {
            return None;
        }
        let signers: BTreeSet<_> = body
            .checkpoint_proof
            .iter()
            .filter(|c| c.seq == body.stable_seq && c.state == body.stable_state)
            .map(|c| c.replica)
            .collect();
        (signers.len() <= 2 * self.f).then(|| {
            format!(
                "checkpoint {} is proven by {} votes only",
                body.stable_seq,
                signers.len()
            )
        })
    }

    pub fn note_view_entered(&mut self, instance: usize, view: View) {
        let now = self.now;
        self.trace(instance, format_args!("enters view {view}"));
        let node = &mut self.nodes[instance];
        node.views.push((now, view));
        let voted = node.voted;
        // A replica learning after a restart may follow the others into a
        // lower view: it votes in none of them (it only learns there).
        let learning = node.replica.learning_after_restart();
        if view < voted && !learning && self.is_correct(instance) {
            self.violation(format!(
                "correct replica instance {instance} entered view {view} after voting for view {voted}"
            ));
        }
    }

    /// A normal-case message for `target` reached an instance in `view`;
    /// `held` if the replica buffered it.
    pub fn note_buffered(&mut self, instance: usize, view: View, target: View, held: bool) {
        if held && target > view.saturating_add(FUTURE_VIEWS) && self.is_correct(instance) {
            self.violation(format!(
                "correct replica instance {instance} in view {view} holds a message for view {target}"
            ));
        }
    }

    /// A correct instance held a pre-prepare (view, sender, seq, digest) for
    /// a view it has not entered. Held messages go when the replica enters
    /// their view or votes past it; a window of proposals from one sender
    /// is what the normal case holds anyway, and one per slot is all that
    /// could ever count, so a faulty next primary's flood of pre-prepares
    /// for one slot must not be held beyond that.
    pub fn note_held_pre_prepare(
        &mut self,
        instance: usize,
        held: (View, ReplicaId, u64, [u8; 32]),
    ) {
        if !self.is_correct(instance) {
            return;
        }
        let node = &mut self.nodes[instance];
        let (view, heading) = (node.replica.view(), node.replica.changing_to().unwrap_or(0));
        let records = &mut node.held_pre_prepares;
        records.retain(|(target, _, _, _)| *target > view && *target >= heading);
        records.insert(held);
        let from = held.1;
        let count = records
            .iter()
            .filter(|(_, sender, _, _)| *sender == from)
            .count();
        let window = self.protocol.window as usize;
        if count > window {
            self.violation(format!(
                "correct replica instance {instance} in view {view} holds {count} pre-prepares of \
                 replica {from} for views it has not entered, more than a window ({window})"
            ));
        }
    }

    /// Memory bounds observable through the public API, on every tick.
    pub fn sample_memory(&mut self) {
        let window = self.protocol.window as usize;
        let pending = self.protocol.max_pending;
        let known = pending + window * self.protocol.max_batch_requests;
        for instance in self.live_correct() {
            let replica = &self.nodes[instance].replica;
            let (log, waiting, batches) = (
                replica.log_len(),
                replica.pending_batches(),
                replica.known_batch_count(),
            );
            if log > window || waiting > pending || batches > known {
                self.violation(format!(
                    "replica instance {instance} holds too much: log {log} (window {window}), \
                     pending {waiting} (max {pending}), known batches {batches} (max {known})"
                ));
            }
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if let Some(first) = self.violations.first() {
            return Err(first.clone());
        }
        self.check_safety()?;
        self.check_linearizable()?;
        self.check_liveness()?;
        self.check_repaired()
    }

    fn check_safety(&self) -> Result<(), String> {
        let correct = self.correct();
        // Admission: no correct replica runs a request from a client the
        // cluster file does not list (a smuggling primary's).
        if self.scenario.admit_clients {
            let stranger = crate::world::stranger().public();
            for &a in &correct {
                for (seq, (_, requests)) in &self.nodes[a].batches {
                    if requests.iter().any(|(client, _, _)| *client == stranger) {
                        return Err(format!(
                            "replica instance {a} executed, at {seq}, a request from a client \
                             the cluster does not admit"
                        ));
                    }
                }
            }
        }
        // Authenticity: no correct replica runs a request in an honest
        // client's name that the client did not send (a primary forging
        // unsigned batches, a client naming another).
        let issued: BTreeMap<PublicKey, &BTreeMap<u64, crate::service::Op>> = self
            .clients
            .iter()
            .filter(|c| c.kind == crate::world::ClientKind::Honest)
            .map(|c| (c.key.public(), &c.issued))
            .collect();
        for &a in &correct {
            for (seq, (_, requests)) in &self.nodes[a].batches {
                for (client, number, op) in requests {
                    if let Some(issued) = issued.get(client)
                        && issued.get(number) != Some(op)
                    {
                        return Err(format!(
                            "replica instance {a} executed, at {seq}, request {number} in the \
                             name of client {client}, which never sent it ({op:?})"
                        ));
                    }
                }
            }
        }
        for (i, &a) in correct.iter().enumerate() {
            for &b in &correct[i + 1..] {
                let (x, y) = (&self.nodes[a], &self.nodes[b]);
                for (seq, digest) in &x.executed {
                    if y.executed.get(seq).is_some_and(|d| d != digest) {
                        return Err(format!(
                            "replica instances {a} and {b} executed different batches at {seq}"
                        ));
                    }
                }
                for (request, result) in &x.replies {
                    if y.replies.get(request).is_some_and(|r| r != result) {
                        return Err(format!(
                            "replica instances {a} and {b} replied differently to request {} of a client",
                            request.2
                        ));
                    }
                }
                for (seq, digest) in &x.checkpoints {
                    if y.checkpoints.get(seq).is_some_and(|d| d != digest) {
                        return Err(format!(
                            "replica instances {a} and {b} disagree on checkpoint {seq}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_linearizable(&self) -> Result<(), String> {
        // The agreed order: every batch some correct instance executed, by
        // sequence number (they agree, as checked above).
        let mut agreed: BTreeMap<u64, &ExecutedBatch> = BTreeMap::new();
        for instance in self.correct() {
            for (seq, batch) in &self.nodes[instance].batches {
                agreed.entry(*seq).or_insert(batch);
            }
        }
        let mut balances = [OPENING; ACCOUNTS as usize];
        let mut clock = 0u64;
        // The bank after each position of the agreed order (the first k
        // requests, executed or skipped), for reads on the fast path.
        let mut states: Vec<([u64; ACCOUNTS as usize], u64)> = vec![(balances, clock)];
        // Which requests run is the client table's to decide (exactly-once,
        // expired sessions): the same table, replayed over the agreed order.
        // (Its cached-reply bound never binds here: replies are a few bytes.)
        let limits = self.protocol.sessions;
        let mut table = ClientTable::new();
        // Each ordered request's position, result and agreed time.
        let mut position: BTreeMap<(PublicKey, u64), (usize, u64, u64)> = BTreeMap::new();
        let mut index = 0;
        let mut expected_seq = 1;
        for (seq, (timestamp, requests)) in agreed {
            if seq != expected_seq {
                // No correct instance executed the batches in between (they
                // were all installed by state transfer): what follows cannot
                // be replayed.
                break;
            }
            expected_seq += 1;
            clock = clock.max(*timestamp);
            table.expire_idle(clock, &limits);
            for (client, number, op) in requests {
                index += 1;
                if table.admit(client, 0, *number, clock, &limits) != Admission::Execute {
                    // Executed once only (later copies are skipped), or
                    // refused: its session expired.
                    states.push((balances, clock));
                    continue;
                }
                if position.contains_key(&(*client, *number)) {
                    return Err(format!(
                        "request {number} of a client was executed twice (at {seq} again)"
                    ));
                }
                let result = model(&mut balances, op, clock);
                position.insert((*client, *number), (index, result, clock));
                states.push((balances, clock));
            }
        }
        if balances.iter().sum::<u64>() != ACCOUNTS * OPENING {
            return Err("money was created or destroyed".into());
        }
        let complete = expected_seq
            > self
                .correct()
                .iter()
                .map(|i| self.nodes[*i].replica.delivered())
                .max()
                .unwrap_or(0);
        // The first correct replica to prepare a proposal found it within
        // twice the skew of its clock (plus what its request timeout had
        // grown by), and its clock may be a skew behind the fastest.
        let skew = u64::try_from(self.protocol.max_clock_skew.as_nanos()).unwrap_or(u64::MAX);
        let base_timeout =
            u64::try_from(self.protocol.request_timeout.as_nanos()).unwrap_or(u64::MAX);
        let lag = skew.saturating_mul(3).saturating_add(
            base_timeout.saturating_mul(self.largest_timeout_scale.saturating_sub(1)),
        );
        let mut finished: Vec<(u64, u64, usize)> = Vec::new();
        let mut fast: Vec<&Done> = Vec::new();
        for client in self.honest_clients() {
            for done in &client.history {
                let Some(number) = done.number else {
                    fast.push(done);
                    continue;
                };
                let (op, result) = (&done.op, done.result);
                let Some((index, expected, agreed_time)) =
                    position.get(&(client.key.public(), number))
                else {
                    if complete {
                        return Err(format!("{op:?} answered but not in the agreed order"));
                    }
                    continue;
                };
                if *expected != result {
                    return Err(format!(
                        "{op:?} returned {result}, the sequential bank says {expected}"
                    ));
                }
                // A proposal is stamped by its primary after the request
                // reached it, and a backup prepares one stamped further
                // behind its clock than it allows only if a correct replica
                // found it fresh: a primary cannot hold the agreed clock
                // still.
                if agreed_time.saturating_add(lag) < done.invoked {
                    return Err(format!(
                        "{op:?}, invoked at {} ms, ran at agreed time {} ms",
                        done.invoked / MS,
                        agreed_time / MS
                    ));
                }
                finished.push((done.invoked, done.responded, *index));
            }
        }
        for a in &finished {
            for b in &finished {
                if a.1 < b.0 && a.2 > b.2 {
                    return Err(format!(
                        "an operation that finished at {} ms is ordered after one invoked at {} ms",
                        a.1 / MS,
                        b.0 / MS
                    ));
                }
            }
        }
        self.check_fast_reads(&finished, fast, &states, complete)
    }

    /// Reads answered on the fast path are not in the agreed order; each
    /// must fit in it somewhere: a position `p` (after the first `p`
    /// requests) where the sequential bank answers what the client got, at
    /// or after every ordered operation that finished before the read was
    /// invoked, before every one invoked after it finished, and not before
    /// the position of a fast read that finished before it was invoked.
    /// Taking each read's earliest such position, in the order they were
    /// invoked, finds positions for all of them if any exist.
    fn check_fast_reads(
        &self,
        finished: &[(u64, u64, usize)],
        mut fast: Vec<&Done>,
        states: &[([u64; ACCOUNTS as usize], u64)],
        complete: bool,
    ) -> Result<(), String> {
        fast.sort_by_key(|done| (done.invoked, done.responded));
        // (responded, position) of the fast reads placed so far.
        let mut placed: Vec<(u64, usize)> = Vec::new();
        let last = states.len() - 1;
        for done in fast {
            let after_ordered = finished
                .iter()
                .filter(|(_, responded, _)| *responded < done.invoked)
                .map(|(_, _, index)| *index)
                .max()
                .unwrap_or(0);
            let after_reads = placed
                .iter()
                .filter(|(responded, _)| *responded < done.invoked)
                .map(|(_, p)| *p)
                .max()
                .unwrap_or(0);
            let low = after_ordered.max(after_reads);
            // Before every ordered operation invoked after it finished.
            let below = finished
                .iter()
                .filter(|(invoked, _, _)| *invoked > done.responded)
                .map(|(_, _, index)| *index)
                .min();
            let high = below.map_or(last, |b| b.saturating_sub(1).min(last));
            let found = (low..=high).find(|p| {
                let (mut balances, clock) = states[*p];
                model(&mut balances, &done.op, clock) == done.result
            });
            match found {
                Some(p) => placed.push((done.responded, p)),
                // The agreed order is known only up to where a replica
                // installed state: what comes after cannot be replayed.
                None if !complete && below.is_none() => {}
                None => {
                    return Err(format!(
                        "{:?} returned {} on the fast path (invoked at {} ms, answered at {} ms), \
                         which the sequential bank answers at no position from {low} to {high} \
                         of the agreed order",
                        done.op,
                        done.result,
                        done.invoked / MS,
                        done.responded / MS
                    ));
                }
            }
        }
        Ok(())
    }

    fn honest_clients(&self) -> impl Iterator<Item = &crate::world::Client> {
        self.clients
            .iter()
            .filter(|c| c.kind == crate::world::ClientKind::Honest)
    }

    fn check_liveness(&self) -> Result<(), String> {
        for (c, client) in self.clients.iter().enumerate() {
            if client.busy() {
                return Err(format!(
                    "client {c} did not finish within {} s of the heal ({} of {} operations done)",
                    self.scenario.liveness / 1_000 / MS,
                    client.history.len(),
                    self.scenario.ops
                ));
            }
        }
        let live = self.live_correct();
        // Few view changes after the heal: every primary gets a few chances
        // at most (timeouts must adapt to a network that is slow but stable).
        // Counted from the views entered or voted for before it: view
        // changes that failed while the network was faulty leave the
        // replicas voting far above the view they work in.
        let heal = self.network.heal;
        let at_heal = live
            .iter()
            .flat_map(|i| &self.nodes[*i].views)
            .filter(|(t, _)| *t <= heal)
            .map(|(_, v)| *v)
            .chain(live.iter().map(|i| self.nodes[*i].voted_before_heal))
            .max()
            .unwrap_or(0);
        let last = live
            .iter()
            .map(|i| self.nodes[*i].replica.view())
            .max()
            .unwrap_or(0);
        if last > at_heal + 3 * self.n as u64 {
            return Err(format!(
                "views kept changing after the heal: from view {at_heal} to view {last}"
            ));
        }
        // Settled: no view entered lately, one view, nobody changing views.
        // (A Byzantine primary can keep up to f correct replicas out of its
        // quorum for good, and they rightly suspect it: with faulty replicas
        // about, up to f correct ones may end still changing views.)
        let since = self.now.saturating_sub(self.settle);
        let faulty = !self.byzantine.is_empty() || !self.twinned.is_empty();
        let changing: Vec<usize> = live
            .iter()
            .copied()
            .filter(|i| self.nodes[*i].replica.changing_to().is_some())
            .collect();
        for &instance in &live {
            let node = &self.nodes[instance];
            if let Some((at, view)) = node.views.iter().rev().find(|(at, _)| *at > since) {
                let before = node
                    .views
                    .iter()
                    .filter(|(t, _)| *t <= since)
                    .map(|(_, v)| *v)
                    .max()
                    .unwrap_or(0);
                let highest = live
                    .iter()
                    .flat_map(|i| &self.nodes[*i].views)
                    .filter(|(t, _)| *t <= since)
                    .map(|(_, v)| *v)
                    .max()
                    .unwrap_or(0);
                if *view > highest {
                    return Err(format!(
                        "views did not settle: correct replica instance {instance} entered view {view} \
                         at {} ms, {} ms before the end (it was in view {before})",
                        at / MS,
                        (self.now - at) / MS
                    ));
                }
            }
        }
        // A vote for a view cannot be taken back, so a correct replica that
        // suspected the primary alone (a lost message, a late new-view) may
        // end still voting; f+1 such votes would have made the others join.
        // It keeps executing what the others commit in its view, and catches
        // up by checkpoints otherwise (checked below with everyone).
        let _ = faulty;
        if changing.len() > self.f {
            let instance = changing[0];
            let node = &self.nodes[instance];
            return Err(format!(
                "correct replica instance {instance} is still changing from view {} to {} at the end",
                node.replica.view(),
                node.replica.changing_to().unwrap_or_default()
            ));
        }
        let views: BTreeSet<View> = live
            .iter()
            .filter(|i| !changing.contains(i))
            .map(|i| self.nodes[*i].replica.view())
            .collect();
        if views.len() > 1 {
            return Err(format!(
                "correct replicas ended in different views {views:?}"
            ));
        }
        // A read parked at a correct replica runs as soon as its execution
        // reaches the read's barrier (what the replica saw prepared). One
        // that lags may end with reads still waiting, but not for a
        // sequence number it executed, nor for one no correct replica
        // executed: a barrier nothing will execute up to would hold every
        // later read there until its client gives up on it.
        let executed = live
            .iter()
            .map(|i| self.nodes[*i].execution.last_executed())
            .max()
            .unwrap_or(0);
        for &instance in &live {
            let node = &self.nodes[instance];
            let own = node.execution.last_executed();
            let first = node.parked_reads.keys().next().map(|(b, _)| *b);
            let last = node.parked_reads.keys().next_back().map(|(b, _)| *b);
            if let Some(barrier) = first
                .filter(|b| *b <= own)
                .or(last.filter(|b| *b > executed))
            {
                return Err(format!(
                    "correct replica instance {instance} still holds a read at the end waiting \
                     for {barrier}; it executed {own}, the correct replicas up to {executed}"
                ));
            }
        }
        // Caught up: at or past the highest stable checkpoint.
        let low = self.highest_stable();
        for &instance in &live {
            let delivered = self.nodes[instance].replica.delivered();
            if delivered < low {
                return Err(format!(
                    "correct replica instance {instance} stayed behind: executed {delivered} < stable checkpoint {low}"
                ));
            }
        }
        Ok(())
    }

    /// A damaged replica found out and replaced its state: it caught up,
    /// and its latest checkpoint matches the correct replicas'.
    fn check_repaired(&self) -> Result<(), String> {
        let Some((instance, _)) = self.corrupt else {
            return Ok(());
        };
        let node = &self.nodes[instance];
        if !node.corrupted {
            return Ok(()); // it never executed past a checkpoint
        }
        let live = self.live_correct();
        let low = self.highest_stable();
        if node.replica.delivered() < low {
            return Err(format!(
                "damaged replica instance {instance} stayed behind: executed {} < stable checkpoint {low}",
                node.replica.delivered()
            ));
        }
        let agreed = |seq: &u64| {
            live.iter()
                .find_map(|i| self.nodes[*i].checkpoints.get(seq))
                .copied()
        };
        let latest = node
            .checkpoints
            .iter()
            .rev()
            .find_map(|(seq, digest)| agreed(seq).map(|a| (*seq, *digest, a)));
        if let Some((seq, own, agreed)) = latest
            && own != agreed
        {
            return Err(format!(
                "damaged replica instance {instance} was not repaired: its checkpoint {seq} \
                     differs from the correct replicas' (diverged at {:?})",
                node.diverged
            ));
        }
        Ok(())
    }
}

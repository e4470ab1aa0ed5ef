//! Byzantine replicas, built by wrapping a correct `Replica`: its outputs
//! are filtered or rewritten on the way out (the harness holds every key, so
//! a rewritten message can be signed again), and some behaviours add
//! traffic of their own on every tick.

use std::collections::{BTreeMap, BTreeSet};

use cbase_core::{ExecError, codec};
use cbase_net::checkpoint::parts::{PartReply, PartRequest};
use cbase_net::config::ReplicaId;
use cbase_net::crypto::Signature;
use cbase_net::message::{
    Checkpoint, ClientBatch, ClientRequest, Commit, NewView, PrePrepare, Prepare, PreparedProof,
    Proposal, ReadReply, ReplicaMessage, RequestBatch, Seq, View, ViewChange, ViewChangeBody,
    domain, pre_prepare_header, prepare_header, view_change_bytes,
};
use cbase_net::protocol::Input;
use rand::Rng;

use crate::network::frame_size;
use crate::scenarios::MS;
use crate::world::{PARTS_ROOM, STATE_CHUNK, World};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// As primary, sends different proposals to different backups.
    Equivocate,
    /// Corrupts digests and the `replica` field, replays old messages,
    /// sends bogus view-changes and new-views, lies in checkpoints, replies
    /// and transferred state; answers reads on the fast path with forged
    /// and stale results (some the same to every client, some not), at once
    /// without waiting for its barrier, or not at all.
    Chaos,
    /// Silent to some peers (drawn from the seed), forever; answers half
    /// the reads on the fast path, and declines some of those.
    Withhold,
    /// Passes the client batches it receives to the other backups only,
    /// never to the primary, and keeps passing on batches it saw before.
    ForwardToBackups,
    /// Floods its peers with pre-prepares, prepares, commits and
    /// view-changes for views far ahead.
    FloodFuture,
    /// Serves state transfers one tiny chunk at a time, each just before
    /// the requester's timeout.
    DripState,
    /// As primary, proposes timestamps far in the future (up to u64::MAX).
    Timestamps,
    /// As primary, proposes timestamps a few seconds ahead: within what
    /// the agreed clock may run ahead, but later than the next primary's.
    NudgeTimestamps,
    /// Its clock stands still at zero, so as primary it stamps every
    /// proposal at time zero, and keeps proposing (its own log agrees with
    /// what it sends): it holds the agreed clock still.
    HoldClock,
    /// As primary, adds to every proposal a request from a client the
    /// cluster does not admit ([`crate::world::stranger`]).
    Smuggle,
    /// As primary, adds to every proposal an old client batch it saw
    /// (executed long ago, perhaps, by a session since evicted). Answers
    /// reads on the fast path with the oldest answer it remembers for the
    /// operation (stale, the same to every client).
    Replay,
    /// Follows the protocol, but answers every read on the fast path at
    /// once, with the answer most other replicas' states give now if that
    /// differs from its own (it knows what the network holds back): what
    /// correct replicas that lag behind would answer if they did not wait
    /// for their barrier.
    StaleReads,
    /// As primary, adds to every proposal an unsigned batch it made up in
    /// an honest client's name (a request that client never sent): no
    /// backup received it from the client, so only f+1 vouchers could get
    /// it prepared, and there are never more than f faulty ones.
    ForgeUnsigned,
    /// Sends its view-changes bloated to nearly a frame, each signed again:
    /// junk checkpoint-proof entries at stable checkpoint 0, its checkpoint
    /// votes or the prepares of its certificates repeated otherwise. It
    /// also sends such a vote to a view's primary as soon as it hears any
    /// vote for that view (before f+1 make the primary join), and for the
    /// next two views unasked: so its vote is among the first quorum a new
    /// primary has. It never starts a view of its own (sends no new-view). A new primary that copied it into its
    /// new-view could not send it (three such votes are over a frame).
    BloatVotes,
    /// As primary, pre-prepares to two backups only (drawn per run); the
    /// network loses those backups' prepares and commits for the slot to
    /// anyone but it (as an asynchronous network may, until the heal), so
    /// it alone assembles a prepared certificate from prepares of backups
    /// that never prepared. Silent otherwise, it votes only in a view change
    /// at least two views after its certificate's, when the backups may
    /// have forgotten the proposal, so a new-view re-issuing it needs them
    /// to have kept it.
    HoardCertificate,
    /// While it is the primary of the next view, sends every peer many
    /// distinct signed pre-prepares for one slot of that view (held until
    /// the view starts, where at most one per slot could ever count).
    FloodNextView,
}

/// What the Byzantine behaviours above remember across messages.
#[derive(Debug, Default)]
pub struct Attacks {
    /// The backup a hoarding primary leaves out of its pre-prepares.
    pub left_out: Option<ReplicaId>,
    /// Slots (view, seq) a hoarding primary pre-prepared to its two
    /// backups: their prepares and commits reach only it until the heal.
    pub hoarded: BTreeSet<(View, Seq)>,
    /// Views a flooding next primary flooded already.
    pub flooded: BTreeSet<View>,
    /// Views a vote-bloating replica sent its early vote for.
    pub voted: BTreeSet<View>,
    /// The vote it bloated last: the signature of the original, and the
    /// bloated vote.
    pub bloated: Option<(Signature, ViewChange)>,
}

/// Most messages a Byzantine replica remembers for replays.
const REMEMBERED: usize = 256;

impl World {
    /// How a Byzantine instance takes a read on the fast path as it
    /// arrives: true if it dealt with it (the rest are parked as a correct
    /// replica parks them, and their answers rewritten on the way out).
    pub fn byzantine_read(&mut self, instance: usize, c: usize, id: u64, operation: &[u8]) -> bool {
        match self.behaviour(instance) {
            Some(Behaviour::Chaos) => match self.rng.gen_range(0..4) {
                // Answers from the state it has now, ignoring its barrier.
                0 => {
                    self.run_reads(instance, vec![(c, id, operation.to_vec())]);
                    true
                }
                _ => false,
            },
            Some(Behaviour::Withhold) => self.rng.gen_bool(0.5),
            Some(Behaviour::StaleReads) => {
                self.run_reads(instance, vec![(c, id, operation.to_vec())]);
                true
            }
            _ => false,
        }
    }

    /// A Byzantine instance's answer to a read in place of the correct one.
    pub fn byzantine_answer(
        &mut self,
        instance: usize,
        operation: &[u8],
        mut reply: ReadReply,
    ) -> ReadReply {
        let forged = |value: u64| Some(codec::encode(&Ok::<u64, ExecError>(value)).unwrap());
        let remembered: Vec<Vec<u8>> = self.nodes[instance]
            .read_answers
            .get(operation)
            .map(|seen| seen.iter().cloned().collect())
            .unwrap_or_default();
        let oldest = remembered.first().cloned();
        // The latest earlier answer that differs from the correct one.
        let previous = remembered
            .iter()
            .rev()
            .find(|answer| Some(*answer) != reply.result.as_ref())
            .cloned();
        match self.behaviour(instance) {
            Some(Behaviour::Chaos) => match self.rng.gen_range(0..9) {
                // The same forgery to every client: a plausible balance.
                0 => reply.result = forged(crate::service::OPENING + 1),
                // A different one to each.
                1 => reply.result = forged(self.rng.gen_range(0..=400)),
                // Stale: its oldest answer (the same to every client) or
                // any earlier one.
                2 => reply.result = oldest.or(reply.result),
                3 if !remembered.is_empty() => {
                    let pick = self.rng.gen_range(0..remembered.len());
                    reply.result = Some(remembered[pick].clone());
                }
                4 => reply.result = previous.or(reply.result),
                5 => reply.result = None,
                // Another replica's name.
                6 => reply.replica = (reply.replica + 1) % self.n as ReplicaId,
                _ => {}
            },
            Some(Behaviour::Withhold) if self.rng.gen_bool(0.25) => reply.result = None,
            Some(Behaviour::Replay) if reply.result.is_some() => {
                reply.result = oldest.or(reply.result)
            }
            Some(Behaviour::StaleReads) if reply.result.is_some() => {
                let mut counts: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
                for other in 0..self.nodes.len() {
                    if other != instance
                        && let Some(answer) = self.peek_read(other, operation)
                        && Some(&answer) != reply.result.as_ref()
                    {
                        *counts.entry(answer).or_default() += 1;
                    }
                }
                if let Some((answer, _)) = counts.into_iter().max_by_key(|(_, count)| *count) {
                    reply.result = Some(answer);
                }
            }
            _ => {}
        }
        reply
    }

    /// Sends a replica instance's message to replica `to`, transformed if
    /// the instance is Byzantine.
    pub fn replica_send(&mut self, from: usize, to: ReplicaId, message: ReplicaMessage) {
        let id = self.nodes[from].id;
        if self.lost_for_hoarder(to, &message) {
            return;
        }
        let message = match self.behaviour(from) {
            None => message,
            Some(Behaviour::Equivocate) => self.equivocate(from, to, message),
            Some(Behaviour::Chaos) => self.corrupt(from, message),
            Some(Behaviour::Withhold) if self.withheld.contains(&to) => return,
            Some(Behaviour::ForwardToBackups) => match message {
                ReplicaMessage::Forward(batch) => {
                    let primary = self.nodes[from].replica.primary();
                    for backup in 0..self.n as ReplicaId {
                        if backup != primary && backup != id {
                            self.transmit(from, backup, ReplicaMessage::Forward(batch.clone()), 0);
                        }
                    }
                    return;
                }
                other => other,
            },
            Some(Behaviour::Timestamps | Behaviour::NudgeTimestamps) => {
                self.push_timestamp(from, message)
            }
            Some(Behaviour::Smuggle) => self.smuggle(from, message),
            Some(Behaviour::Replay) => self.replay(from, message),
            Some(Behaviour::ForgeUnsigned) => self.forge_unsigned(from, message),
            Some(Behaviour::BloatVotes) => match self.bloat(from, message) {
                Some(message) => message,
                None => return,
            },
            Some(Behaviour::HoardCertificate) => match self.hoard(to, message) {
                Some(message) => message,
                None => return,
            },
            Some(_) => message,
        };
        if self.behaviour(from).is_some() {
            let sent = &mut self.nodes[from].sent;
            sent.push_back(message.clone());
            if sent.len() > REMEMBERED {
                sent.pop_front();
            }
        }
        self.transmit(from, to, message, 0);
    }

    /// Answers a peer's state request from the instance's checkpoint.
    pub fn serve_state(&mut self, from: usize, to: ReplicaId, seq: u64, offset: u64, whole: bool) {
        let Some(mut state) = self.encoded_checkpoint(from, seq, whole) else {
            return;
        };
        let queued = self.serving_delay(from, seq);
        let behaviour = self.behaviour(from);
        if behaviour == Some(Behaviour::Chaos) {
            let last = state.len() - 1;
            state[last] ^= 1; // a Byzantine replica serves a bad snapshot
        }
        let (chunk, delay) = if behaviour == Some(Behaviour::DripState) {
            // A byte or few; the first at once, so the requester commits to
            // this transfer, then each just before it would give up on us.
            let timeout = self.protocol.request_timeout.as_nanos() as u64;
            let delay = if offset == 0 {
                0
            } else {
                timeout - self.rng.gen_range(5 * MS..timeout / 10)
            };
            (self.rng.gen_range(1..=4), delay)
        } else {
            (STATE_CHUNK, 0)
        };
        let delay = delay + queued;
        let Some(start) = usize::try_from(offset).ok().filter(|&s| s < state.len()) else {
            return;
        };
        let end = state.len().min(start + chunk);
        let reply = ReplicaMessage::StateReply {
            seq,
            offset,
            total: state.len() as u64,
            chunk: state[start..end].to_vec(),
            whole,
        };
        self.transmit(from, to, reply, delay);
    }

    /// Answers a peer's request for parts of the instance's checkpoint.
    pub fn serve_parts(
        &mut self,
        from: usize,
        to: ReplicaId,
        seq: u64,
        (salt, request): ([u8; 32], u64),
        parts: Vec<PartRequest>,
    ) {
        let Some(index) = self.checkpoint_index(from, seq) else {
            // No longer has it: says so with an empty answer.
            let reply = ReplicaMessage::Parts {
                seq,
                request,
                parts: Vec::new(),
            };
            return self.transmit(from, to, reply, 0);
        };
        let mut answers = index.answer(&salt, &parts, PARTS_ROOM);
        if answers.is_empty() {
            return;
        }
        let mut delay = self.serving_delay(from, seq);
        match self.behaviour(from) {
            Some(Behaviour::Chaos) => {
                // A Byzantine replica serves a part that does not check out.
                match &mut answers[0] {
                    PartReply::Node { children, .. } => children[0][0] ^= 1,
                    PartReply::Bucket { entries, keep, .. } => match entries.first_mut() {
                        Some((_, value)) => value.push(1),
                        None => keep.iter_mut().for_each(|bits| *bits = !*bits),
                    },
                    PartReply::Oversized { .. } => {}
                }
            }
            Some(Behaviour::DripState) => {
                // One part at a time, each just before it would be given up on.
                answers.truncate(1);
                let timeout = self.protocol.request_timeout.as_nanos() as u64;
                delay += timeout - self.rng.gen_range(5 * MS..timeout / 10);
            }
            _ => {}
        }
        let reply = ReplicaMessage::Parts {
            seq,
            request,
            parts: answers,
        };
        self.transmit(from, to, reply, delay);
    }

    /// What a Byzantine instance learns from its inputs.
    pub fn observe(&mut self, instance: usize, input: &Input) {
        if self.behaviour(instance) == Some(Behaviour::BloatVotes)
            && let Input::Replica(_, ReplicaMessage::ViewChange(vote)) = input
        {
            return self.vote_along(instance, vote.body.new_view);
        }
        if !matches!(
            self.behaviour(instance),
            Some(Behaviour::ForwardToBackups | Behaviour::Replay)
        ) {
            return;
        }
        let seen = &mut self.nodes[instance].seen;
        match input {
            Input::Client(batch) => seen.push(batch.clone()),
            Input::Replica(_, ReplicaMessage::PrePrepare(pp)) => {
                seen.extend(pp.proposal.batches.iter().cloned())
            }
            _ => {}
        }
        if seen.len() > REMEMBERED {
            seen.remove(0);
        }
    }

    /// Spontaneous Byzantine traffic, on every tick.
    pub fn misbehave(&mut self, instance: usize) {
        match self.behaviour(instance) {
            Some(Behaviour::Chaos) if self.rng.gen_bool(0.2) => self.chaos(instance),
            Some(Behaviour::FloodFuture) if self.rng.gen_bool(0.3) => self.flood(instance),
            Some(Behaviour::BloatVotes) => self.vote_ahead(instance),
            Some(Behaviour::FloodNextView) => self.flood_next_view(instance),
            Some(Behaviour::ForwardToBackups) if self.rng.gen_bool(0.05) => {
                // An old batch (executed long ago, perhaps), passed on again.
                let seen = &self.nodes[instance].seen;
                if seen.is_empty() {
                    return;
                }
                let batch = seen[self.rng.gen_range(0..seen.len())].clone();
                let (id, primary) = (
                    self.nodes[instance].id,
                    self.nodes[instance].replica.primary(),
                );
                for backup in 0..self.n as ReplicaId {
                    if backup != primary && backup != id {
                        self.transmit(instance, backup, ReplicaMessage::Forward(batch.clone()), 0);
                    }
                }
            }
            _ => {}
        }
    }

    fn equivocate(
        &mut self,
        from: usize,
        to: ReplicaId,
        message: ReplicaMessage,
    ) -> ReplicaMessage {
        match message {
            ReplicaMessage::PrePrepare(pp) if to.is_multiple_of(2) => {
                // Odd backups get the real proposal, even ones an empty one.
                let proposal = Proposal {
                    timestamp: pp.proposal.timestamp,
                    batches: Vec::new(),
                };
                self.resign(from, pp, proposal)
            }
            other => other,
        }
    }

    /// The same pre-prepare with another proposal, signed by `from`.
    fn resign(&self, from: usize, pp: PrePrepare, proposal: Proposal) -> ReplicaMessage {
        let digest = proposal.digest();
        let key = &self.keys[self.nodes[from].id as usize];
        let signature = key.sign(
            domain::PRE_PREPARE,
            &pre_prepare_header(pp.view, pp.seq, &digest),
        );
        ReplicaMessage::PrePrepare(PrePrepare {
            digest,
            proposal,
            signature,
            ..pp
        })
    }

    /// A primary's pre-prepare with its proposal rewritten by `rewrite`
    /// (`None`: left as it is), signed again, and the same for every
    /// backup: the first rewrite of a (view, seq) is kept and sent to all.
    fn forge_once(
        &mut self,
        from: usize,
        message: ReplicaMessage,
        rewrite: impl FnOnce(&mut World, &PrePrepare) -> Option<Proposal>,
    ) -> ReplicaMessage {
        let ReplicaMessage::PrePrepare(pp) = message else {
            return message;
        };
        let key = (pp.view, pp.seq);
        if let Some(forged) = self.nodes[from].forged.get(&key) {
            return ReplicaMessage::PrePrepare(forged.clone());
        }
        let Some(proposal) = rewrite(self, &pp) else {
            return ReplicaMessage::PrePrepare(pp);
        };
        let forged = self.resign(from, pp, proposal);
        if let ReplicaMessage::PrePrepare(pp) = &forged {
            self.nodes[from].forged.insert(key, pp.clone());
        }
        forged
    }

    /// A primary's pre-prepare with its timestamp pushed far ahead, the
    /// same for every backup.
    fn push_timestamp(&mut self, from: usize, message: ReplicaMessage) -> ReplicaMessage {
        if matches!(&message, ReplicaMessage::PrePrepare(pp) if pp.proposal.is_empty()) {
            return message;
        }
        self.forge_once(from, message, |world, pp| {
            let timestamp = match (world.behaviour(from), world.pushed_timestamp) {
                (Some(Behaviour::NudgeTimestamps), _) => pp.proposal.timestamp + 3_000 * MS,
                (_, 0) => pp.proposal.timestamp.saturating_add(3_600_000 * MS),
                (_, pushed) => pushed,
            };
            Some(Proposal {
                timestamp,
                batches: pp.proposal.batches.clone(),
            })
        })
    }

    /// A primary's pre-prepare with a stranger's request added, the same
    /// for every backup.
    fn smuggle(&mut self, from: usize, message: ReplicaMessage) -> ReplicaMessage {
        self.forge_once(from, message, |_, pp| {
            let stranger = crate::world::stranger();
            let request = ClientRequest {
                lane: 0,
                number: pp.seq,
                operation: codec::encode(&crate::service::Op::Stamp).expect("ops encode"),
            };
            let batch = ClientBatch::sign(
                RequestBatch {
                    client: stranger.public(),
                    requests: vec![request],
                },
                &stranger,
            );
            Some(with_batch(pp, batch))
        })
    }

    /// A primary's pre-prepare with an unsigned batch in the first honest
    /// client's name added, the same for every backup.
    fn forge_unsigned(&mut self, from: usize, message: ReplicaMessage) -> ReplicaMessage {
        self.forge_once(from, message, |world, pp| {
            let victim = world.clients[0].key.public();
            let batch = ClientBatch::unsigned(RequestBatch {
                client: victim,
                requests: vec![ClientRequest {
                    lane: 0,
                    // Far above any number the client uses, so the client
                    // table would run it.
                    number: crate::world::FORGED_NUMBERS + pp.seq,
                    operation: codec::encode(&crate::service::Op::Transfer {
                        from: 0,
                        to: 1,
                        amount: 1,
                    })
                    .expect("ops encode"),
                }],
            });
            Some(with_batch(pp, batch))
        })
    }

    /// A primary's pre-prepare with an old client batch added, the same
    /// for every backup.
    fn replay(&mut self, from: usize, message: ReplicaMessage) -> ReplicaMessage {
        self.forge_once(from, message, |world, pp| {
            let seen = &world.nodes[from].seen;
            if seen.is_empty() {
                return None;
            }
            let old = seen[world.rng.gen_range(0..seen.len())].clone();
            Some(with_batch(pp, old))
        })
    }

    fn corrupt(&mut self, from: usize, message: ReplicaMessage) -> ReplicaMessage {
        let roll = self.rng.gen_range(0..4);
        let id = self.nodes[from].id;
        match message {
            ReplicaMessage::Prepare(mut p) if roll == 0 => {
                p.digest[0] ^= 1;
                ReplicaMessage::Prepare(p)
            }
            ReplicaMessage::Prepare(mut p) if roll == 1 => {
                p.replica = (id + 1) % self.n as ReplicaId; // a forged sender inside
                ReplicaMessage::Prepare(p)
            }
            ReplicaMessage::Commit(mut c) if roll == 0 => {
                c.digest[1] ^= 1;
                ReplicaMessage::Commit(c)
            }
            ReplicaMessage::Checkpoint(mut c) if roll < 2 => {
                c.state[2] ^= 1; // a lie (its signature no longer matches)
                ReplicaMessage::Checkpoint(c)
            }
            ReplicaMessage::PrePrepare(mut pp) if roll == 0 => {
                pp.proposal.timestamp ^= 1; // digest mismatch
                ReplicaMessage::PrePrepare(pp)
            }
            ReplicaMessage::Status(mut status) if roll < 2 => {
                // Claims the first view, answers to a restarted replica's
                // probe included: as low a floor as it can give it.
                status.view = 0;
                status.changing_to = None;
                ReplicaMessage::Status(status)
            }
            other => other,
        }
    }

    /// Replays, bogus view-changes and new-views.
    fn chaos(&mut self, from: usize) {
        let to = self.rng.gen_range(0..self.n as ReplicaId);
        if to == self.nodes[from].id {
            return;
        }
        let message = match self.rng.gen_range(0..3) {
            0 => {
                let sent = &self.nodes[from].sent;
                if sent.is_empty() {
                    return;
                }
                sent[self.rng.gen_range(0..sent.len())].clone()
            }
            1 => ReplicaMessage::ViewChange(self.bogus_view_change(from)),
            _ => {
                let view = self.nodes[from].replica.view() + 1;
                ReplicaMessage::NewView(NewView {
                    view,
                    view_changes: vec![self.bogus_view_change(from)],
                    pre_prepares: Vec::new(),
                })
            }
        };
        self.transmit(from, to, message, 0);
    }

    /// A view-change claiming a batch prepared, with prepares it forged.
    fn bogus_view_change(&mut self, from: usize) -> ViewChange {
        let id = self.nodes[from].id;
        let key = &self.keys[id as usize];
        let view = self.nodes[from].replica.view();
        let proposal = Proposal {
            timestamp: 7,
            batches: Vec::new(),
        };
        let digest = proposal.digest();
        let seq = self.nodes[from].replica.low_watermark() + 1;
        let pre_prepare = PrePrepare {
            view,
            seq,
            digest,
            signature: key.sign(domain::PRE_PREPARE, &pre_prepare_header(view, seq, &digest)),
            proposal,
        };
        let prepares = (0..2 * self.f as u32)
            .map(|r| Prepare {
                view,
                seq,
                digest,
                replica: r,
                signature: key.sign(domain::PREPARE, &prepare_header(view, seq, &digest, r)),
            })
            .collect();
        let body = ViewChangeBody {
            new_view: view + 1,
            stable_seq: 0,
            stable_state: [0; 32],
            checkpoint_proof: Vec::new(),
            prepared: vec![PreparedProof {
                pre_prepare: pre_prepare.header(),
                prepares,
            }],
            replica: id,
        };
        let signature = key.sign(domain::VIEW_CHANGE, &view_change_bytes(&body));
        ViewChange { body, signature }
    }

    /// Messages for views far ahead, unverifiable until those views start.
    fn flood(&mut self, from: usize) {
        let id = self.nodes[from].id;
        let low = self.nodes[from].replica.low_watermark();
        for to in 0..self.n as ReplicaId {
            if to == id {
                continue;
            }
            for _ in 0..4 {
                let view = match self.rng.gen_range(0..3) {
                    0 => u64::MAX - self.rng.gen_range(0..1_000),
                    1 => 1_000 + self.rng.gen_range(0..1_000_000),
                    _ => self.nodes[from].replica.view() + 200 + self.rng.gen_range(0..1_000),
                };
                let seq = low + self.rng.gen_range(1..=16);
                let digest: [u8; 32] = self.rng.r#gen();
                let junk = Signature::from_bytes([7; 64]);
                let message = match self.rng.gen_range(0..4) {
                    0 => ReplicaMessage::PrePrepare(PrePrepare {
                        view,
                        seq,
                        digest,
                        proposal: Proposal {
                            timestamp: self.now,
                            batches: Vec::new(),
                        },
                        signature: junk,
                    }),
                    1 => ReplicaMessage::Prepare(Prepare {
                        view,
                        seq,
                        digest,
                        replica: id,
                        signature: junk,
                    }),
                    2 => ReplicaMessage::Commit(Commit {
                        view,
                        seq,
                        digest,
                        replica: id,
                    }),
                    _ => {
                        let key = &self.keys[id as usize];
                        let body = ViewChangeBody {
                            new_view: view,
                            stable_seq: 0,
                            stable_state: [0; 32],
                            checkpoint_proof: Vec::new(),
                            prepared: Vec::new(),
                            replica: id,
                        };
                        let signature = key.sign(domain::VIEW_CHANGE, &view_change_bytes(&body));
                        ReplicaMessage::ViewChange(ViewChange { body, signature })
                    }
                };
                self.transmit(from, to, message, 0);
            }
        }
    }
}

/// `pp`'s proposal with `batch` added at the end.
fn with_batch(pp: &PrePrepare, batch: ClientBatch) -> Proposal {
    let mut batches = pp.proposal.batches.clone();
    batches.push(batch);
    Proposal {
        timestamp: pp.proposal.timestamp,
        batches,
    }
}

impl World {
    /// A message as a vote-bloating replica sends it: its view-changes
    /// bloated, no new-view of its own (a view it is the primary of never
    /// starts, so the view change goes on to one that needs its vote).
    fn bloat(&mut self, from: usize, message: ReplicaMessage) -> Option<ReplicaMessage> {
        match message {
            ReplicaMessage::ViewChange(vote) => {
                // A broadcast vote comes once per peer: bloated once.
                let bloated = match self.attacks.bloated.take() {
                    Some((signature, bloated)) if signature == vote.signature => bloated,
                    _ => self.bloated(from, vote.body),
                };
                self.attacks.bloated = Some((vote.signature, bloated.clone()));
                Some(ReplicaMessage::ViewChange(bloated))
            }
            ReplicaMessage::NewView(_) => None,
            other => Some(other),
        }
    }

    /// `body` filled to within an entry of a frame with entries each of
    /// which a check of one signature at a time takes: junk at stable
    /// checkpoint 0 (where no proof is needed), its checkpoint votes
    /// repeated otherwise, or the prepares of its first certificate
    /// repeated; signed again. Anything more (a new-view quoting it with
    /// other votes) is over a frame.
    fn bloated(&mut self, from: usize, mut body: ViewChangeBody) -> ViewChange {
        if !body.prepared.is_empty() && self.rng.gen_bool(0.5) {
            return self.filled(from, body, |body| &mut body.prepared[0].prepares);
        }
        if body.stable_seq == 0 {
            body.checkpoint_proof = vec![Checkpoint {
                seq: 0,
                state: [0; 32],
                replica: body.replica,
                signature: Signature::from_bytes([0; 64]),
            }];
        }
        self.filled(from, body, |body| &mut body.checkpoint_proof)
    }

    /// `body` with the entries `entries` picks repeated (cycled) until one
    /// more would not fit a frame, signed by `from`.
    fn filled<T: Clone + serde::Serialize>(
        &self,
        from: usize,
        mut body: ViewChangeBody,
        entries: impl Fn(&mut ViewChangeBody) -> &mut Vec<T>,
    ) -> ViewChange {
        let limit = self.network.spec.frame_limit;
        let size = |vote: &ViewChange| frame_size(&ReplicaMessage::ViewChange(vote.clone()));
        let free = limit.saturating_sub(size(&self.signed_vote(from, &body)));
        let list = entries(&mut body);
        let Some(first) = list.first() else {
            return self.signed_vote(from, &body);
        };
        let each = codec::encode(first).map_or(usize::MAX, |b| b.len()).max(1);
        let repeated: Vec<T> = list.iter().cycle().take(free / each).cloned().collect();
        list.extend(repeated);
        loop {
            let vote = self.signed_vote(from, &body);
            // The length prefix may have grown by a byte or two.
            if size(&vote) <= limit || entries(&mut body).pop().is_none() {
                return vote;
            }
        }
    }

    fn signed_vote(&self, from: usize, body: &ViewChangeBody) -> ViewChange {
        let key = &self.keys[self.nodes[from].id as usize];
        let signature = key.sign(domain::VIEW_CHANGE, &view_change_bytes(body));
        ViewChange {
            body: body.clone(),
            signature,
        }
    }

    /// Bloated votes for the two views after the one the instance works in
    /// or moves to, unasked: there before anyone else's.
    fn vote_ahead(&mut self, instance: usize) {
        let replica = &self.nodes[instance].replica;
        let heading = replica.changing_to().unwrap_or(replica.view());
        for view in heading + 1..=heading + 2 {
            self.vote_along(instance, view);
        }
    }

    /// A bloated vote (at stable checkpoint 0) for `new_view`, once, to
    /// that view's primary alone, unless the instance is past it.
    fn vote_along(&mut self, instance: usize, new_view: View) {
        let replica = &self.nodes[instance].replica;
        let id = replica.id();
        let primary = (new_view % self.n as u64) as ReplicaId;
        if new_view <= replica.view() || primary == id || !self.attacks.voted.insert(new_view) {
            return;
        }
        let body = ViewChangeBody {
            new_view,
            stable_seq: 0,
            stable_state: [0; 32],
            checkpoint_proof: Vec::new(),
            prepared: Vec::new(),
            replica: id,
        };
        let vote = self.bloated(instance, body);
        self.transmit(instance, primary, ReplicaMessage::ViewChange(vote), 0);
    }

    /// A hoarding primary's message to `to`: its pre-prepares to its two
    /// backups (their slots noted, for the network to lose the backups'
    /// votes), its votes that carry a certificate at least two views older
    /// than the view they are for; nothing else.
    fn hoard(&mut self, to: ReplicaId, message: ReplicaMessage) -> Option<ReplicaMessage> {
        let left_out = match self.attacks.left_out {
            Some(left_out) => left_out,
            None => {
                let hoarder = self.nodes.iter().find(|node| {
                    self.byzantine.get(&node.id) == Some(&Behaviour::HoardCertificate)
                });
                let id = hoarder.expect("a hoarding replica").id;
                let others: Vec<ReplicaId> =
                    (0..self.n as ReplicaId).filter(|r| *r != id).collect();
                let left_out = others[self.rng.gen_range(0..others.len())];
                *self.attacks.left_out.insert(left_out)
            }
        };
        match &message {
            ReplicaMessage::PrePrepare(pp) if to != left_out => {
                if self.now < self.network.heal {
                    self.attacks.hoarded.insert((pp.view, pp.seq));
                }
                Some(message)
            }
            ReplicaMessage::ViewChange(vote)
                if vote
                    .body
                    .prepared
                    .iter()
                    .any(|proof| proof.pre_prepare.view + 2 <= vote.body.new_view) =>
            {
                Some(message)
            }
            _ => None,
        }
    }

    /// Whether the network loses a message on a hoarding primary's behalf:
    /// until the heal, the prepares and commits of a slot it pre-prepared
    /// to two backups only reach it.
    fn lost_for_hoarder(&self, to: ReplicaId, message: &ReplicaMessage) -> bool {
        if self.attacks.hoarded.is_empty() || self.now >= self.network.heal {
            return false;
        }
        let slot = match message {
            ReplicaMessage::Prepare(p) => (p.view, p.seq),
            ReplicaMessage::Commit(c) => (c.view, c.seq),
            _ => return false,
        };
        self.attacks.hoarded.contains(&slot)
            && self.byzantine.get(&to) != Some(&Behaviour::HoardCertificate)
    }

    /// As the primary of the view after the instance's (or of the view it
    /// is changing to), three windows of distinct signed pre-prepares for
    /// the first slot of that view, to every peer, once per view.
    fn flood_next_view(&mut self, instance: usize) {
        let replica = &self.nodes[instance].replica;
        let id = replica.id();
        let view = replica.changing_to().unwrap_or(replica.view() + 1);
        if view % self.n as u64 != id as u64 || !self.attacks.flooded.insert(view) {
            return;
        }
        let seq = replica.low_watermark() + 1;
        for i in 0..3 * self.protocol.window {
            let proposal = Proposal {
                timestamp: self.now + i,
                batches: Vec::new(),
            };
            let digest = proposal.digest();
            let key = &self.keys[id as usize];
            let pre_prepare = PrePrepare {
                view,
                seq,
                digest,
                signature: key.sign(domain::PRE_PREPARE, &pre_prepare_header(view, seq, &digest)),
                proposal,
            };
            for to in (0..self.n as ReplicaId).filter(|to| *to != id) {
                let message = ReplicaMessage::PrePrepare(pre_prepare.clone());
                self.transmit(instance, to, message, 0);
            }
        }
    }
}

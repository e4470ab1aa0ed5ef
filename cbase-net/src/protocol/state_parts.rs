//! Fetching a checkpoint in parts: the walk down its digest trees.
//!
//! Once a replica has a checkpoint's manifest (checked against the agreed
//! digest), it compares each container's root with the checkpoint it has
//! (its *base*) and walks down where they differ (see
//! [`crate::checkpoint::parts`]). Parts are asked from every peer at once,
//! one request in flight per peer, so several peers share the work and a
//! slow one holds back only what it was asked. Every part is checked against
//! a digest already trusted (the root, from the manifest, or a node checked
//! before it) before it is used: a peer that serves one that does not check
//! out is dropped for the rest of the transfer and its parts go to the
//! others.
//!
//! Silence is not a lie, and is never held against a peer for the rest of
//! the walk: a correct peer's first answer about a checkpoint can take
//! longer than any fixed timeout (it indexes the whole state first), links
//! can be slower than the timeout, and requests get lost. A request not
//! answered within the request timeout loses its parts to the other peers,
//! and its peer is asked again (a little at a time until it answers); its
//! answer is still used if it comes, as long as it is one of the peer's
//! last [`KEPT_PER_PEER`] requests. Each request is numbered and its answer
//! carries the number back, so an answer to a request forgotten, of this
//! walk or of an abandoned one, is told apart from a lie. A peer that no longer has the checkpoint answers nothing and
//! is not asked again. A walk ends, and the transfer starts over, when
//! every peer lied or let the checkpoint go, or when it fetched nothing for
//! its patience.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use cbase_core::merkle::{self, DigestTree, Node};

use crate::checkpoint::parts::{
    BucketId, CheckpointIndex, Entry, EntryRef, Fetched, MAX_PARTS_PER_REQUEST, Manifest,
    PartReply, PartRequest, have_list,
};
use crate::config::ReplicaId;
use crate::message::{Hash, ReplicaMessage, Seq};

use super::Output;

/// The largest part request sent, in (estimated) bytes: short digests are
/// the bulk of it.
const REQUEST_BYTES: usize = 256 << 10;

/// How many of a peer's requests are kept, answered or not in time: an
/// answer to an older one is ignored.
const KEPT_PER_PEER: usize = 4;

/// Parts asked of a peer at first; then twice what it answered last time
/// (within these bounds), so a request asks about what one reply carries.
const FIRST_WINDOW: usize = 256;
const MIN_WINDOW: usize = 16;

/// A part of a checkpoint: a node of one container's tree, or a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Node { container: u16, node: Node },
    Bucket { container: u16, bucket: u16 },
}

/// A part to fetch and the digest it must have.
#[derive(Clone, Copy, Debug)]
struct Wanted {
    part: Part,
    digest: Hash,
}

/// The parts one peer was asked for, and when.
#[derive(Debug)]
struct Asked {
    peer: ReplicaId,
    parts: Vec<Wanted>,
    at: u64,
    /// Not answered within the request timeout: its parts were put back to
    /// be asked of others, its peer is free to be asked again, and a late
    /// answer is still used.
    overdue: bool,
}

/// What a peer's reply did to the walk.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// Not an answer to the request in flight to that peer (to an earlier
    /// one, or to one of an abandoned walk).
    Stale,
    /// Checked and used (possibly nothing, if the peer had nothing to give).
    Used,
    /// The peer no longer has the checkpoint: it is not asked again (the
    /// transfer starts over, with a later checkpoint, once every peer is
    /// gone or lied).
    Gone,
    /// A part did not check out, or was not asked for: the peer is dropped.
    Lie,
    /// A bucket holds an entry too large for any reply: the checkpoint must
    /// be fetched whole.
    Oversized,
}

/// What a walk must keep to.
#[derive(Clone, Copy, Debug)]
pub(super) struct WalkRules {
    /// The most bytes of entries held.
    pub max_bytes: u64,
    /// How many peers may be faulty.
    pub f: usize,
    /// How long a peer has to answer a request before its parts are asked
    /// of others.
    pub timeout: u64,
    /// The most short digests a request lists as had for one bucket
    /// (`checkpoint::parts::MAX_HAVE`, which peers hold requests to; lower
    /// in tests).
    pub max_have: usize,
}

/// A transfer in parts under way.
#[derive(Debug)]
pub(super) struct PartWalk {
    seq: Seq,
    manifest: Manifest,
    base: Option<Arc<CheckpointIndex>>,
    /// For each container of the manifest, the base's of the same name.
    local: Vec<Option<usize>>,
    /// Stands in for a container the base does not have.
    empty: DigestTree,
    salt: Hash,
    /// This walk's number among the replica's walks, the high half of its
    /// requests' numbers; the low half counts the requests sent.
    number: u64,
    sent: u32,
    todo: VecDeque<Wanted>,
    /// Requests kept, by number.
    asked: BTreeMap<u64, Asked>,
    /// Entries received of buckets that did not fit in one reply, each
    /// with the peer that sent it: nothing checks them before the rest of
    /// their bucket arrives.
    partial: BTreeMap<BucketId, Vec<(Entry, ReplicaId)>>,
    /// Buckets fetched and checked: their whole new contents.
    fetched: BTreeMap<BucketId, Vec<Entry>>,
    /// Bytes of entries fetched and checked, bounded by `max_bytes`.
    held: u64,
    /// Bytes of each peer's entries in `partial`, each bounded by
    /// `max_bytes`: what a peer sends unchecked counts against that peer
    /// alone, never against the parts others serve.
    unchecked: BTreeMap<ReplicaId, u64>,
    max_bytes: u64,
    /// Peers not asked again in this transfer: they lied, or no longer
    /// have the checkpoint.
    dropped: BTreeSet<ReplicaId>,
    /// Peers that said they no longer have the checkpoint.
    gone: BTreeSet<ReplicaId>,
    /// When a part was last fetched (or the walk started), checked or
    /// part of a bucket cut.
    progress_at: u64,
    /// When a part was last fetched and checked (or the walk started):
    /// entries of a cut bucket may be garbage, and a faulty peer could send
    /// some for ever.
    checked_at: u64,
    /// Nothing was fetched for the walk's patience.
    stalled: bool,
    /// How many parts to ask of each peer at once.
    windows: BTreeMap<ReplicaId, usize>,
    /// When each peer last answered a request of this walk.
    answered_at: BTreeMap<ReplicaId, u64>,
    /// Peers that said a bucket is too large to send. Only when more than
    /// `f` did (so a correct one among them) is the state fetched whole:
    /// a faulty peer alone cannot make every transfer fetch everything.
    oversized: BTreeSet<ReplicaId>,
    f: usize,
    timeout: u64,
    max_have: usize,
    /// Parts fetched and checked: a part asked of several peers is used
    /// once, and later answers to it are ignored.
    satisfied: BTreeSet<Part>,
}

impl PartWalk {
    /// Starts fetching the checkpoint `seq` described by `manifest`
    /// (already checked), comparing with `base`, at `now`. Salted short
    /// digests use `salt`; `number` must differ from the replica's earlier
    /// walks' (it names their requests).
    pub fn new(
        seq: Seq,
        manifest: Manifest,
        base: Option<Arc<CheckpointIndex>>,
        (salt, number): (Hash, u64),
        rules: WalkRules,
        now: u64,
    ) -> PartWalk {
        let WalkRules {
            max_bytes,
            f,
            timeout,
            max_have,
        } = rules;
        let local: Vec<Option<usize>> = manifest
            .roots
            .iter()
            .map(|(name, _)| base.as_ref().and_then(|b| b.container_named(name)))
            .collect();
        let empty = DigestTree::new();
        let mut todo = VecDeque::new();
        for (container, ((_, root), local)) in manifest.roots.iter().zip(&local).enumerate() {
            let mine = match (local, &base) {
                (Some(at), Some(base)) => base.root(*at),
                _ => empty.root(),
            };
            if mine != *root {
                todo.push_back(Wanted {
                    part: Part::Node {
                        container: container as u16,
                        node: Node::ROOT,
                    },
                    digest: *root,
                });
            }
        }
        PartWalk {
            seq,
            manifest,
            base,
            local,
            empty,
            salt,
            number,
            sent: 0,
            todo,
            asked: BTreeMap::new(),
            partial: BTreeMap::new(),
            fetched: BTreeMap::new(),
            held: 0,
            unchecked: BTreeMap::new(),
            max_bytes,
            dropped: BTreeSet::new(),
            gone: BTreeSet::new(),
            max_have,
            progress_at: now,
            checked_at: now,
            stalled: false,
            windows: BTreeMap::new(),
            answered_at: BTreeMap::new(),
            oversized: BTreeSet::new(),
            f,
            timeout,
            satisfied: BTreeSet::new(),
        }
    }

    /// Whether every differing part has been fetched (parts still asked of
    /// other peers too may be answered late; they are not waited for).
    pub fn done(&self) -> bool {
        let fetched = |w: &Wanted| self.satisfied.contains(&w.part);
        self.todo.iter().all(fetched)
            && self
                .asked
                .values()
                .all(|asked| asked.parts.iter().all(fetched))
    }

    /// How many peers said they no longer have the checkpoint.
    pub fn gone(&self) -> usize {
        self.gone.len()
    }

    /// How long, at `now`, the walk has gone without fetching anything
    /// that checked out.
    pub fn idle(&self, now: u64) -> u64 {
        now.saturating_sub(self.checked_at)
    }

    /// Whether the walk cannot finish and the transfer must start over:
    /// every peer lied, or nothing was fetched for the walk's patience.
    pub fn stuck(&self, peers: &[ReplicaId]) -> bool {
        self.stalled || peers.iter().all(|p| self.dropped.contains(p))
    }

    /// The state fetched, once [`done`](Self::done).
    pub fn finish(self) -> Fetched {
        debug_assert!(self.done());
        Fetched {
            base: self.base,
            manifest: self.manifest,
            buckets: self.fetched,
        }
    }

    fn local_children(&self, container: u16, node: Node) -> [Hash; 16] {
        let local = self.local.get(usize::from(container)).copied().flatten();
        match (local, &self.base) {
            (Some(at), Some(base)) => base.children(at, node),
            _ => self.empty.children(node),
        }
        .expect("the node was checked to be valid")
    }

    /// The entries this replica has in a bucket: its base's, then those
    /// received so far of a bucket cut over several replies.
    fn local_bucket(&self, container: u16, bucket: u16) -> Vec<EntryRef<'_>> {
        let local = self.local.get(usize::from(container)).copied().flatten();
        let mut entries = match (local, &self.base) {
            (Some(at), Some(base)) => base.bucket(at, bucket),
            _ => Vec::new(),
        };
        if let Some(partial) = self.partial.get(&(container, bucket)) {
            entries.extend(
                partial
                    .iter()
                    .map(|((k, v), _)| (k.as_slice(), v.as_slice(), merkle::entry_digest(k, v))),
            );
        }
        entries
    }

    fn request(&self, wanted: &Wanted) -> PartRequest {
        match wanted.part {
            Part::Node { container, node } => PartRequest::Node {
                container,
                level: node.level,
                index: node.index,
            },
            Part::Bucket { container, bucket } => PartRequest::Bucket {
                container,
                bucket,
                have: have_list(
                    &self.salt,
                    self.local_bucket(container, bucket),
                    self.max_have,
                )
                .0,
            },
        }
    }

    /// Asks every peer that has no request in flight (and was not dropped)
    /// for a share of the parts left to fetch.
    ///
    /// A lagging peer (one that let a request go overdue and has not
    /// answered since) gets no share while another peer keeps up: each of
    /// its shares would wait a timeout before going to the others, at every
    /// level of the walk. It is asked a few of the parts others are asked
    /// too, so that it is back in the walk once it answers (a correct peer
    /// indexing a large state lags until its index is built).
    pub fn ask(&mut self, now: u64, peers: &[ReplicaId], out: &mut Vec<Output>) {
        let mut free: Vec<ReplicaId> = peers
            .iter()
            .copied()
            .filter(|p| !self.dropped.contains(p) && !self.busy(*p))
            .collect();
        // A part put back twice (its request overdue, then a check of it
        // failed) is asked once.
        let satisfied = &self.satisfied;
        let mut queued = BTreeSet::new();
        self.todo
            .retain(|w| !satisfied.contains(&w.part) && queued.insert(w.part));
        if free.is_empty() || self.todo.is_empty() {
            return;
        }
        let keeping_up = peers
            .iter()
            .any(|p| !self.dropped.contains(p) && !self.lagging(*p));
        let lagging: Vec<ReplicaId> = if keeping_up {
            let lagging = free.iter().copied().filter(|p| self.lagging(*p)).collect();
            free.retain(|p| !self.lagging(*p));
            lagging
        } else {
            Vec::new()
        };
        for peer in lagging {
            // Copies of the next parts: the others are asked them too.
            let wanted: Vec<Wanted> = self.todo.iter().take(MIN_WINDOW).copied().collect();
            let parts = wanted.iter().map(|w| self.request(w)).collect();
            self.send(peer, wanted, parts, now, out);
        }
        if free.is_empty() {
            return;
        }
        if self.todo.len() < free.len() {
            // Few parts left (the top of a walk, or its end): ask each of
            // them of every free peer, so that one unreachable peer does
            // not hold them up for a timeout.
            let wanted: Vec<Wanted> = self.todo.drain(..).collect();
            for peer in free {
                let parts = wanted.iter().map(|w| self.request(w)).collect();
                self.send(peer, wanted.clone(), parts, now, out);
            }
            return;
        }
        let share = self.todo.len().div_ceil(free.len());
        for peer in free {
            let window = self.windows.get(&peer).copied().unwrap_or(FIRST_WINDOW);
            let limit = share.min(window).min(MAX_PARTS_PER_REQUEST);
            let mut parts = Vec::new();
            let mut wanted = Vec::new();
            let mut bytes = 0;
            while let Some(next) = self.todo.front() {
                let request = self.request(next);
                let size = match &request {
                    PartRequest::Node { .. } => 16,
                    PartRequest::Bucket { have, .. } => 16 + 8 * have.len(),
                };
                if !parts.is_empty() && (bytes + size > REQUEST_BYTES || parts.len() == limit) {
                    break;
                }
                bytes += size;
                parts.push(request);
                wanted.push(self.todo.pop_front().expect("just looked"));
            }
            if parts.is_empty() {
                return;
            }
            self.send(peer, wanted, parts, now, out);
        }
    }

    /// Asks `peer` for `parts` (the requests for `wanted`, in order).
    fn send(
        &mut self,
        peer: ReplicaId,
        wanted: Vec<Wanted>,
        parts: Vec<PartRequest>,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        self.sent = self.sent.wrapping_add(1);
        let request = (self.number << 32) | u64::from(self.sent);
        let kept = self.requests_of(peer);
        if kept.len() >= KEPT_PER_PEER {
            // The oldest is overdue (the peer is free), so its parts were
            // put back already.
            self.asked.remove(&kept[0]);
        }
        self.asked.insert(
            request,
            Asked {
                peer,
                parts: wanted,
                at: now,
                overdue: false,
            },
        );
        out.push(Output::Send(
            peer,
            ReplicaMessage::PartsRequest {
                seq: self.seq,
                salt: self.salt,
                request,
                parts,
            },
        ));
    }

    /// The numbers of the requests kept of `peer`, oldest first.
    fn requests_of(&self, peer: ReplicaId) -> Vec<u64> {
        self.asked
            .iter()
            .filter(|(_, asked)| asked.peer == peer)
            .map(|(number, _)| *number)
            .collect()
    }

    /// Whether `peer` let a request go overdue and has not answered since.
    fn lagging(&self, peer: ReplicaId) -> bool {
        let since = self.answered_at.get(&peer).copied();
        self.asked.values().any(|asked| {
            asked.peer == peer && asked.overdue && since.is_none_or(|at| asked.at >= at)
        })
    }

    /// Whether `peer` has a request in flight that is not overdue.
    fn busy(&self, peer: ReplicaId) -> bool {
        self.asked
            .values()
            .any(|asked| asked.peer == peer && !asked.overdue)
    }

    /// Requests in flight longer than the request timeout lose their parts
    /// to the other peers, and their peers are free to be asked again
    /// (their answers are still used if they come). A walk that fetched
    /// nothing for `patience` is stalled.
    pub fn on_tick(&mut self, now: u64, patience: u64) {
        let mut late = Vec::new();
        let mut slow = Vec::new();
        for asked in self.asked.values_mut() {
            if !asked.overdue && now.saturating_sub(asked.at) >= self.timeout {
                asked.overdue = true;
                late.extend(asked.parts.iter().copied());
                slow.push(asked.peer);
            }
        }
        self.requeue(late);
        for peer in slow {
            // Asked again, but only a little at a time until it answers.
            self.windows.insert(peer, MIN_WINDOW);
        }
        if now.saturating_sub(self.progress_at) >= patience {
            self.stalled = true;
        }
    }

    /// A peer's reply to request `request`, at `now`: checks each part
    /// against the digest it must have and goes down where it differs from
    /// the base.
    pub fn on_parts(
        &mut self,
        from: ReplicaId,
        request: u64,
        replies: Vec<PartReply>,
        now: u64,
    ) -> Answer {
        if self.asked.get(&request).is_none_or(|a| a.peer != from) {
            return Answer::Stale;
        }
        let asked = self.asked.remove(&request).expect("just looked");
        self.answered_at.insert(from, now);
        let fetched_before = self.fetched_so_far();
        let overdue = asked.overdue;
        if replies.is_empty() {
            // A peer that has the checkpoint answers at least part of the
            // first part; one that no longer has it answers nothing.
            self.drop_asked(asked);
            self.drop_peer(from);
            self.gone.insert(from);
            return Answer::Gone;
        }
        let asked_count = asked.parts.len();
        let mut open: Vec<Option<Wanted>> = asked.parts.into_iter().map(Some).collect();
        let mut verdict = Answer::Used;
        for reply in replies {
            let key = match &reply {
                PartReply::Node {
                    container,
                    level,
                    index,
                    ..
                } => Part::Node {
                    container: *container,
                    node: Node {
                        level: *level,
                        index: *index,
                    },
                },
                PartReply::Bucket {
                    container, bucket, ..
                }
                | PartReply::Oversized { container, bucket } => Part::Bucket {
                    container: *container,
                    bucket: *bucket,
                },
            };
            let Some(wanted) = open
                .iter_mut()
                .find(|w| w.is_some_and(|w| w.part == key))
                .and_then(Option::take)
            else {
                verdict = Answer::Lie;
                break;
            };
            if self.satisfied.contains(&wanted.part) {
                // Another peer answered it first.
                continue;
            }
            match self.check(from, wanted, reply) {
                Answer::Used => {}
                other => {
                    // Asked again, of someone else.
                    self.todo.push_front(wanted);
                    verdict = other;
                    break;
                }
            }
        }
        // What was asked and not answered is asked again (of anyone).
        let unanswered: Vec<Wanted> = open.into_iter().flatten().collect();
        let answered = asked_count - unanswered.len();
        let window = if unanswered.is_empty() {
            2 * asked_count
        } else {
            2 * answered
        };
        self.windows
            .insert(from, window.clamp(MIN_WINDOW, MAX_PARTS_PER_REQUEST));
        if !overdue {
            // (An overdue request's parts were put back already.)
            self.requeue(unanswered);
        }
        let fetched = self.fetched_so_far();
        if fetched != fetched_before {
            self.progress_at = now;
        }
        if fetched.0 != fetched_before.0 {
            self.checked_at = now;
        }
        if verdict == Answer::Oversized {
            self.oversized.insert(from);
            if self.oversized.len() <= self.f {
                // Maybe a lie: ask the others, not this peer.
                self.drop_peer(from);
                return Answer::Used;
            }
        }
        if verdict == Answer::Lie {
            self.drop_peer(from);
        }
        verdict
    }

    /// Asks `peer` nothing more in this walk, and forgets what it was asked
    /// (putting back what is not overdue, so put back already).
    fn drop_peer(&mut self, peer: ReplicaId) {
        self.dropped.insert(peer);
        for number in self.requests_of(peer) {
            let asked = self.asked.remove(&number).expect("just found");
            self.drop_asked(asked);
        }
    }

    /// Puts what a peer was asked back to be asked of the others (unless
    /// it was already, when the request became overdue).
    fn drop_asked(&mut self, asked: Asked) {
        if !asked.overdue {
            self.requeue(asked.parts);
        }
    }

    /// Puts `parts` not fetched yet at the front of what is left to ask, in
    /// their order.
    fn requeue(&mut self, parts: Vec<Wanted>) {
        for wanted in parts.into_iter().rev() {
            if !self.satisfied.contains(&wanted.part) {
                self.todo.push_front(wanted);
            }
        }
    }

    /// What the walk holds: parts checked, and bytes (checked or not).
    fn fetched_so_far(&self) -> (usize, u64, u64) {
        (
            self.satisfied.len(),
            self.held,
            self.unchecked.values().sum(),
        )
    }

    fn check(&mut self, from: ReplicaId, wanted: Wanted, reply: PartReply) -> Answer {
        match (wanted.part, reply) {
            (Part::Node { container, node }, PartReply::Node { children, .. }) => {
                if !merkle::children_match(&wanted.digest, &children) {
                    return Answer::Lie;
                }
                self.satisfied.insert(wanted.part);
                let mine = self.local_children(container, node);
                for (child, (theirs, mine)) in children.iter().zip(mine).enumerate() {
                    if *theirs == mine {
                        continue;
                    }
                    let part = match node.child(child) {
                        Some(node) => Part::Node { container, node },
                        None => Part::Bucket {
                            container,
                            bucket: node.child_bucket(child).expect("a bucket below level 3"),
                        },
                    };
                    self.todo.push_back(Wanted {
                        part,
                        digest: *theirs,
                    });
                }
                Answer::Used
            }
            (
                Part::Bucket { container, bucket },
                PartReply::Bucket {
                    keep,
                    entries,
                    complete,
                    ..
                },
            ) => self.check_bucket(from, wanted, (container, bucket), keep, entries, complete),
            (Part::Bucket { .. }, PartReply::Oversized { .. }) => Answer::Oversized,
            _ => Answer::Lie,
        }
    }

    fn check_bucket(
        &mut self,
        from: ReplicaId,
        wanted: Wanted,
        (container, bucket): BucketId,
        keep: Vec<u8>,
        entries: Vec<Entry>,
        complete: bool,
    ) -> Answer {
        let size = |entries: &[Entry]| -> u64 {
            entries
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum()
        };
        let new_bytes = size(&entries);
        if !complete {
            if entries.is_empty() {
                // No progress: a peer that cuts a bucket sends something.
                return Answer::Lie;
            }
            // The rest comes in the next reply, with these listed as had.
            // A request lists at most `max_have` entries of a bucket: past
            // that, what it has of the bucket (its own, and what came cut)
            // cannot all be listed, a peer would send again what is not,
            // and the bucket might never be whole. Such a bucket is too
            // large to fetch in parts: said of more than f peers' replies
            // (so of a correct one's), the state is fetched whole.
            if self.local_bucket(container, bucket).len() + entries.len() > self.max_have {
                return Answer::Oversized;
            }
            // Until then nothing tells these entries from garbage, so they
            // count against their sender alone: more than any state this
            // replica accepts is a lie of its own.
            let unchecked = self.unchecked.get(&from).copied().unwrap_or(0);
            if unchecked.saturating_add(new_bytes) > self.max_bytes {
                return Answer::Lie;
            }
            // A part asked of several peers may come cut from more than one:
            // keep each entry once. Each entry, not each key: one sent
            // first under the same key with another value must not keep
            // the right one out (the bucket's check keeps only the right).
            // Nor an entry this replica has already, which a faulty peer
            // may send back: listed twice, it would drop out of the list of
            // what is had (both copies share a short digest), and the keep
            // bits correct peers answered against that list would be read
            // against the wrong entries, and those peers blamed.
            // (Nor one sent twice in this answer.)
            let mut had: BTreeSet<Entry> = self
                .local_bucket(container, bucket)
                .into_iter()
                .map(|(k, v, _)| (k.to_vec(), v.to_vec()))
                .collect();
            let fresh: Vec<Entry> = entries
                .into_iter()
                .filter(|entry| had.insert(entry.clone()))
                .collect();
            let partial = self.partial.entry((container, bucket)).or_default();
            *self.unchecked.entry(from).or_default() += size(&fresh);
            partial.extend(fresh.into_iter().map(|entry| (entry, from)));
            self.todo.push_front(wanted);
            return Answer::Used;
        }
        if self.held.saturating_add(new_bytes) > self.max_bytes {
            // More than any state this replica accepts.
            return Answer::Lie;
        }
        let (have, listed) = have_list(
            &self.salt,
            self.local_bucket(container, bucket),
            self.max_have,
        );
        if keep.len() != have.len().div_ceil(8) {
            if self.partial.contains_key(&(container, bucket)) {
                // An answer to an earlier request for this bucket, asked of
                // several peers, made before another peer's cut part of it
                // arrived: its list of what this replica had is shorter.
                // Asked again; not a lie.
                self.todo.push_front(wanted);
                return Answer::Used;
            }
            return Answer::Lie;
        }
        let mut contents: Vec<Entry> = listed
            .iter()
            .enumerate()
            .filter(|(at, _)| keep[at / 8] & (1 << (at % 8)) != 0)
            .map(|(_, (k, v, _))| (k.to_vec(), v.to_vec()))
            .collect();
        contents.extend(entries);
        let digests = contents
            .iter()
            .map(|(k, v)| merkle::entry_digest(k, v))
            .collect();
        if merkle::bucket_digest(digests) != wanted.digest {
            // What arrived of this bucket cut, from any peer, stays: the
            // requests for it in flight list those entries as had, and
            // their answers are checked against them.
            return Answer::Lie;
        }
        self.drop_partial(container, bucket);
        self.held += size(&contents);
        self.fetched.insert((container, bucket), contents);
        self.satisfied.insert(wanted.part);
        Answer::Used
    }

    fn drop_partial(&mut self, container: u16, bucket: u16) {
        for ((k, v), peer) in self
            .partial
            .remove(&(container, bucket))
            .unwrap_or_default()
        {
            if let Some(unchecked) = self.unchecked.get_mut(&peer) {
                *unchecked = unchecked.saturating_sub((k.len() + v.len()) as u64);
            }
        }
    }
}

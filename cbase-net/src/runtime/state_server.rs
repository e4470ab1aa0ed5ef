//! Serving this replica's recent checkpoints to peers that fell behind: a
//! checkpoint's manifest (or whole state) one chunk per request, and parts
//! of its digest trees and entries (see the protocol's `state_transfer`
//! module for the receiving side).
//!
//! Answering costs O(state) once per checkpoint served (it is indexed, or
//! encoded, for its first request), so it runs on a thread of its own, not
//! on the protocol's.

use std::sync::Arc;

use crate::checkpoint::parts::{CheckpointIndex, PartRequest};
use crate::message::{Hash, ReplicaMessage, Seq};

use super::checkpoints::CheckpointStore;

/// The most state bytes in one reply: large enough that a reply's fixed
/// costs (a request, a frame, a MAC) are negligible, small enough that one
/// reply does not hold a connection for long.
const STATE_CHUNK: usize = 1 << 20;

/// Room left in a frame for the reply's other fields (message tag, sequence
/// number, offset, total and chunk length, each at most a 10-byte varint).
const REPLY_OVERHEAD: usize = 64;

/// How many indexed checkpoints a server keeps (see `StateServer::index`).
const INDEXES_KEPT: usize = 2;

/// Indexes and encodes checkpoints on demand and cuts them into frame-sized
/// replies.
#[derive(Debug)]
pub(super) struct StateServer {
    chunk: usize,
    /// The checkpoints indexed last, the one used last at the end: a
    /// transfer asks for its manifest and then for many parts of it. Two,
    /// so that a request for a newer stable checkpoint (another lagging
    /// peer's, or a faulty one's) does not take away the one a walk under
    /// way is fetching, which this replica could no longer index.
    index: Vec<(Seq, Arc<CheckpointIndex>)>,
    /// The encoding served last (manifest or whole state), by checkpoint
    /// and kind: every chunk of it is asked for in turn.
    encoded: Option<(Seq, bool, Arc<Vec<u8>>)>,
}

impl StateServer {
    /// A server whose replies fit in frames of `max_frame` bytes.
    pub(super) fn new(max_frame: usize) -> StateServer {
        StateServer {
            chunk: chunk_len(max_frame),
            index: Vec::new(),
            encoded: None,
        }
    }

    /// Forgets the checkpoints it indexed and encoded (after a while with
    /// no requests: they hold a copy of a whole state).
    pub(super) fn forget(&mut self) {
        let held = !std::mem::take(&mut self.index).is_empty() | self.encoded.take().is_some();
        if held {
            super::memory::give_back();
        }
    }

    /// Checkpoint `seq`, indexed: one of the two indexed last, or the
    /// store's stable checkpoint. Replicas fetch stable checkpoints, and
    /// indexing costs O(state): a peer asking for others in turn would make
    /// this replica index one after another. Only the stable checkpoint is
    /// ever indexed anew, so a peer can push out the index least recently
    /// used, never one a walk keeps asking for.
    fn index(&mut self, store: &CheckpointStore, seq: Seq) -> Option<Arc<CheckpointIndex>> {
        if let Some(at) = self.index.iter().position(|(cached, _)| *cached == seq) {
            let used = self.index.remove(at);
            let index = Arc::clone(&used.1);
            self.index.push(used);
            return Some(index);
        }
        // Read back only what can be it: a stored base costs O(state).
        if !store.may_be_base(seq) {
            return None;
        }
        let started = std::time::Instant::now();
        let (stable, state) = store.base()?;
        if stable != seq {
            return None;
        }
        let read = started.elapsed();
        let index = Arc::new(CheckpointIndex::build(state));
        tracing::info!(seq, ?read, took = ?started.elapsed(), "indexed a checkpoint to serve");
        if self.index.len() == INDEXES_KEPT {
            self.index.remove(0);
        }
        self.index.push((seq, Arc::clone(&index)));
        Some(index)
    }

    /// The reply carrying the chunk of checkpoint `seq`'s encoded manifest
    /// (or, with `whole`, state) that starts at `offset`; `None` if this
    /// replica no longer has that checkpoint or the offset is past its end
    /// (a confused or lying peer: nothing to send).
    pub(super) fn reply(
        &mut self,
        store: &CheckpointStore,
        seq: Seq,
        offset: u64,
        whole: bool,
    ) -> Option<ReplicaMessage> {
        let encoded = match &self.encoded {
            Some((cached, kind, bytes)) if *cached == seq && *kind == whole => Arc::clone(bytes),
            _ => {
                let bytes = if whole {
                    // As for the index: the stable checkpoint only.
                    if !store.may_be_base(seq) {
                        return None;
                    }
                    let (stable, state) = store.base()?;
                    if stable != seq {
                        return None;
                    }
                    cbase_core::codec::encode(&*state)
                } else {
                    cbase_core::codec::encode(&self.index(store, seq)?.manifest())
                }
                .expect("checkpoints always encode");
                let bytes = Arc::new(bytes);
                self.encoded = Some((seq, whole, Arc::clone(&bytes)));
                bytes
            }
        };
        let start = usize::try_from(offset)
            .ok()
            .filter(|&s| s < encoded.len())?;
        let end = encoded.len().min(start + self.chunk);
        Some(ReplicaMessage::StateReply {
            seq,
            offset,
            total: encoded.len() as u64,
            chunk: encoded[start..end].to_vec(),
            whole,
        })
    }

    /// The reply answering as many of `parts` of checkpoint `seq` as fit in
    /// a frame. It answers nothing if this replica no longer has that
    /// checkpoint (or the request names nothing in it), so the asker stops
    /// asking this replica rather than wait for it.
    pub(super) fn parts(
        &mut self,
        store: &CheckpointStore,
        seq: Seq,
        salt: &Hash,
        request: u64,
        parts: &[PartRequest],
    ) -> ReplicaMessage {
        let parts = match self.index(store, seq) {
            Some(index) => index.answer(salt, parts, self.chunk),
            None => Vec::new(),
        };
        ReplicaMessage::Parts {
            seq,
            request,
            parts,
        }
    }
}

/// The state bytes per reply for frames of at most `max_frame` bytes.
fn chunk_len(max_frame: usize) -> usize {
    STATE_CHUNK
        .min(max_frame.saturating_sub(REPLY_OVERHEAD))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointState;
    use cbase_core::Snapshot;

    /// A store holding checkpoint `seq`, whose one container holds one
    /// entry of `bytes` bytes.
    fn store(seq: Seq, bytes: usize) -> CheckpointStore {
        let entries = [(vec![1u8], vec![7u8; bytes])].into();
        let snapshot = Snapshot::from_parts(vec![("t".to_owned(), entries)]);
        let state = CheckpointState::new(snapshot, Default::default(), 1_000 + seq);
        CheckpointStore::new(seq, state.digest(), state)
    }

    #[test]
    fn chunks_fit_the_frame_and_reassemble_to_the_checkpoint() {
        let max_frame = 4096;
        let recent = store(8, 20_000);
        let mut server = StateServer::new(max_frame);
        let mut assembled = Vec::new();
        let mut replies = 0;
        loop {
            let message = server
                .reply(&recent, 8, assembled.len() as u64, true)
                .expect("the checkpoint is here");
            let frame = cbase_core::codec::encode(&message).unwrap();
            assert!(frame.len() <= max_frame, "{} > {max_frame}", frame.len());
            let ReplicaMessage::StateReply {
                offset,
                total,
                chunk,
                ..
            } = message
            else {
                panic!("a state reply");
            };
            assert_eq!(offset, assembled.len() as u64);
            assembled.extend_from_slice(&chunk);
            replies += 1;
            if assembled.len() as u64 == total {
                break;
            }
        }
        assert!(replies > 4, "the state spans several chunks");
        let state: CheckpointState = cbase_core::codec::decode(&assembled).unwrap();
        assert_eq!(state.digest(), recent.get(8).unwrap().0);
    }

    #[test]
    fn unknown_checkpoints_and_offsets_past_the_end_get_nothing_or_an_empty_answer() {
        let recent = store(8, 3);
        let mut server = StateServer::new(1 << 20);
        for whole in [false, true] {
            assert!(server.reply(&recent, 16, 0, whole).is_none());
            assert!(server.reply(&recent, 8, 1 << 40, whole).is_none());
            assert!(server.reply(&recent, 8, u64::MAX, whole).is_none());
            assert!(server.reply(&recent, 8, 0, whole).is_some());
        }
        let part = PartRequest::Node {
            container: 0,
            level: 0,
            index: 0,
        };
        let answered = |reply: ReplicaMessage| match reply {
            ReplicaMessage::Parts { parts, .. } => parts.len(),
            other => panic!("{other:?}"),
        };
        // A checkpoint this replica does not have: an empty answer, so the
        // asker stops waiting for this replica.
        let unknown = server.parts(&recent, 16, &[0; 32], 1, std::slice::from_ref(&part));
        assert_eq!(answered(unknown), 0);
        assert_eq!(answered(server.parts(&recent, 8, &[0; 32], 1, &[part])), 1);
    }

    #[test]
    fn parts_fill_but_fit_the_frame() {
        let max_frame = 4096;
        let entries = (0u32..5_000)
            .map(|k| (cbase_core::codec::encode(&k).unwrap(), vec![k as u8; 40]))
            .collect();
        let snapshot = Snapshot::from_parts(vec![("t".to_owned(), entries)]);
        let state = CheckpointState::new(snapshot, Default::default(), 1);
        let store = CheckpointStore::new(8, state.digest(), state);
        let mut server = StateServer::new(max_frame);
        let parts: Vec<PartRequest> = (0..4096)
            .map(|bucket| PartRequest::Bucket {
                container: 0,
                bucket: bucket * 16,
                have: Vec::new(),
            })
            .collect();
        let reply = server.parts(&store, 8, &[1; 32], 77, &parts);
        let frame = cbase_core::codec::encode(&reply).unwrap();
        assert!(frame.len() <= max_frame, "{} > {max_frame}", frame.len());
        let ReplicaMessage::Parts {
            parts: answered,
            request,
            ..
        } = reply
        else {
            panic!("parts");
        };
        assert_eq!(request, 77, "the answer names the request it answers");
        assert!(answered.len() > 10 && answered.len() < parts.len());
    }

    /// Defect: with the stable checkpoint kept on disk, every request for
    /// any checkpoint not indexed already read the whole stable checkpoint
    /// back (O(state)) before finding it was not the one asked for. A peer
    /// asking for checkpoints this replica executed but does not serve
    /// (within its allowance of part requests) kept the serving thread
    /// reading the disk, and the peers that needed the state went unserved.
    #[test]
    fn requests_for_checkpoints_not_held_read_nothing_back_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = crate::storage::Storage::open(dir.path(), &["t"]).unwrap();
        let storage = Arc::new(storage);
        let at_0 = store(0, 3);
        let state = store(8, 300).base().unwrap().1;
        at_0.keep_on(Arc::clone(&storage));
        at_0.install(8, state.digest(), Arc::clone(&state));
        at_0.stabilize(8, state.digest(), &[], Some(&storage))
            .unwrap();
        assert!(!at_0.base_in_memory(), "the stable checkpoint is on disk");
        let reads = at_0.base_reads();
        let mut server = StateServer::new(1 << 20);
        let part = PartRequest::Node {
            container: 0,
            level: 0,
            index: 0,
        };
        for seq in [4, 12, 7] {
            let reply = server.parts(&at_0, seq, &[0; 32], 1, std::slice::from_ref(&part));
            assert!(matches!(reply, ReplicaMessage::Parts { parts, .. } if parts.is_empty()));
            for whole in [false, true] {
                assert!(server.reply(&at_0, seq, 0, whole).is_none());
            }
        }
        assert_eq!(at_0.base_reads(), reads, "nothing read back");
        // The stable checkpoint is served: read once, then indexed.
        for _ in 0..3 {
            let reply = server.parts(&at_0, 8, &[0; 32], 1, std::slice::from_ref(&part));
            assert!(matches!(reply, ReplicaMessage::Parts { parts, .. } if parts.len() == 1));
        }
        assert_eq!(at_0.base_reads(), reads + 1);
    }

    /// Seen in review: the server kept one indexed checkpoint, the one
    /// asked for last, whoever asked. A replica walking checkpoint 8 is served from
    /// it after 12 became stable (the protocol counts on that: a replica
    /// that always chased the newest checkpoint would never finish a large
    /// state under load). But one part request for 12 from any peer, a
    /// faulty one within its allowance, replaced it: the walk's next
    /// request was answered with nothing, which says "no longer have it",
    /// and the walk was abandoned for the later checkpoint. Repeated at
    /// every newly stable checkpoint, against every correct server, this
    /// kept a replica whose walk takes longer than a checkpoint interval
    /// from ever catching up. Now the two used last are kept.
    #[test]
    fn a_request_for_a_later_checkpoint_does_not_take_away_the_one_a_walk_is_fetching() {
        let recent = store(8, 300);
        let mut server = StateServer::new(1 << 20);
        let part = PartRequest::Node {
            container: 0,
            level: 0,
            index: 0,
        };
        let answered = |reply: ReplicaMessage| match reply {
            ReplicaMessage::Parts { parts, .. } => parts.len(),
            other => panic!("{other:?}"),
        };
        // The lagging replica's walk over checkpoint 8 is under way.
        let walk = |server: &mut StateServer| {
            answered(server.parts(&recent, 8, &[1; 32], 1, std::slice::from_ref(&part)))
        };
        assert_eq!(walk(&mut server), 1);
        // Checkpoint 12 becomes stable: the walk is still served.
        let later = store(12, 301).base().unwrap().1;
        recent.install(12, later.digest(), later);
        assert_eq!(walk(&mut server), 1, "the checkpoint served last is kept");
        // Another peer asks for checkpoint 12 once.
        let other = server.parts(&recent, 12, &[2; 32], 1, std::slice::from_ref(&part));
        assert_eq!(answered(other), 1);
        assert_eq!(
            walk(&mut server),
            1,
            "the walk over checkpoint 8 is no longer served"
        );
    }

    #[test]
    fn tiny_frames_still_carry_a_byte() {
        assert_eq!(chunk_len(10), 1);
        assert_eq!(chunk_len(16 << 20), STATE_CHUNK);
    }
}

//! The protocol's records on their way to the data directory.
//!
//! Every burst of the protocol's outputs may ask for records to be on disk
//! before its messages leave ([`Output::Persist`]). Most must be synced
//! first; a [`Durable::Proposal`] need not ([`Durable::must_sync`]): it
//! reaches the disk with the replica's next synced record, in the same
//! commit. Holding it here until then, rather than writing it in a commit
//! of its own that is not synced, keeps the same guarantee (an unsynced
//! commit is lost by a crash just the same) without a commit per batch on
//! the protocol task.

use std::sync::Arc;

use crate::protocol::{Durable, Output};
use crate::storage::{Storage, StorageError};

/// The agreement log of a durable replica.
pub(super) struct AgreementLog {
    storage: Arc<Storage>,
    /// Records that wait for the next synced commit, in the order given.
    waiting: Vec<Durable>,
}

impl AgreementLog {
    pub fn new(storage: Arc<Storage>) -> AgreementLog {
        AgreementLog {
            storage,
            waiting: Vec::new(),
        }
    }

    /// Takes the burst's records out of `outputs` and writes them: with
    /// every record still waiting, in one synced commit, if any of them
    /// must be synced; otherwise they wait. On an error nothing of the
    /// burst may leave.
    pub fn write_burst(&mut self, outputs: &mut Vec<Output>) -> Result<(), StorageError> {
        let mut must_sync = false;
        for output in outputs.extract_if(.., |output| matches!(output, Output::Persist(_))) {
            let Output::Persist(record) = output else {
                unreachable!("only records are taken")
            };
            must_sync |= record.must_sync();
            self.waiting.push(record);
        }
        if must_sync {
            self.storage.persist(&self.waiting)?;
            self.waiting.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Proposal;

    const LAYOUT: &[&str] = &["accounts"];

    fn proposal_record(seq: u64) -> Output {
        let proposal = Proposal {
            timestamp: seq,
            batches: Vec::new(),
        };
        Output::Persist(Durable::Proposal {
            view: 0,
            seq,
            digest: proposal.digest(),
            proposal,
        })
    }

    fn reopened(dir: &std::path::Path) -> crate::protocol::Recovered {
        Storage::open(dir, LAYOUT).unwrap().1.recovered
    }

    #[test]
    fn a_proposal_waits_for_the_next_synced_record_and_goes_in_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        let mut log = AgreementLog::new(Arc::new(storage));
        let mut burst = vec![proposal_record(1), Output::ViewEntered(0)];
        log.write_burst(&mut burst).unwrap();
        assert!(
            matches!(burst[..], [Output::ViewEntered(0)]),
            "the records are taken out of the burst, its messages stay"
        );
        drop(log);
        assert!(
            reopened(dir.path()).proposals.is_empty(),
            "not written on its own"
        );

        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        let mut log = AgreementLog::new(Arc::new(storage));
        log.write_burst(&mut vec![proposal_record(2)]).unwrap();
        log.write_burst(&mut vec![
            proposal_record(3),
            Output::Persist(Durable::View(4)),
        ])
        .unwrap();
        drop(log);
        let recovered = reopened(dir.path());
        assert_eq!(recovered.view, 4);
        let seqs: Vec<u64> = recovered.proposals.iter().map(|p| p.1).collect();
        assert_eq!(seqs, [2, 3], "written with the view, in one commit");
    }
}

//! A replica's data directory: what it needs to restart without contradicting
//! itself and without losing what clients saw complete.
//!
//! Two [redb](https://docs.rs/redb) database files: `replica.redb` holds the
//! state, `log.redb` what the agreement needs. They are separate so that
//! writing a large checkpoint (in the background) never holds up the small
//! commits the protocol waits for: redb lets one transaction write at a time.
//!
//! | file | table | key | value |
//! |---|---|---|---|
//! | `replica.redb` | `meta` | `"stable"` | the stable checkpoint: sequence number, digest, the quorum's proof, client table, agreed clock |
//! | `replica.redb` | `meta` | `"layout"` | the service's container names, in declaration order |
//! | `replica.redb` | `entries` | container index, encoded key | encoded value: the service state as of the last fold |
//! | `replica.redb` | `deltas` | sequence number | the changes of the stable checkpoints written since the last fold, in order |
//! | `log.redb` | `meta` | `"view"` | the highest view the replica voted for or entered |
//! | `log.redb` | `meta` | `"entered"` | the last view it entered, with the highest sequence number that view carried |
//! | `log.redb` | `meta` | `"restored"` | present while a replica started from a restored copy has not ended its recovery |
//! | `log.redb` | `meta` | `"window"` | the last view it wrote its window for, and how far it reached there: it sent no pre-prepare or prepare in that view above it |
//! | `log.redb` | `prepared` | sequence number | the replica's prepared certificate there, with the proposal |
//! | `log.redb` | `executed` | sequence number | each batch executed above the stable checkpoint |
//!
//! Records at or below the stable checkpoint in `log.redb` are pruned after
//! the checkpoint is written, and ignored when read back.
//!
//! A stable checkpoint's changes are appended as one delta record rather
//! than written into `entries` key by key: at a million keys each changed
//! key would cost a B-tree page (read, copied, checksummed, written back),
//! and that was most of a durable replica's time. Once the deltas hold a
//! quarter of the entries' worth of changes they are folded into `entries`
//! in the same commit, touching each page about once. Reading the state
//! back applies the deltas in order over the entries.
//!
//! Every write is one redb transaction, committed durably (fsync) before the
//! runtime acts on it: a prepared certificate (with its proposal) before the
//! commit vote leaves, and so before the batch can execute anywhere or be
//! answered; a view before the vote for it; a stable checkpoint. (The log of
//! executed batches rides along unsynced: see [`Storage::log_executed`].) redb commits atomically and checksums its pages,
//! so a replica killed at any instant reopens to its last commit.
//!
//! What was read back is checked, not trusted: records carry a blake3
//! checksum, the executed batches are replayed only as far as they follow
//! the checkpoint without a gap, and the state is digested again and compared with the checkpoint's agreed
//! digest. A data file that fails any check is refused with an error naming
//! it; moving it away starts the replica empty, and it fetches the state
//! from its peers.

use std::path::{Path, PathBuf};

use cbase_core::{Entries, Snapshot, StateChanges, codec};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointState, ClientTable};
use crate::config::ReplicaId;
use crate::message::{Checkpoint, Hash, PreparedProof, Proposal, Seq, View};
use crate::protocol::{Committed, Durable, Recovered};

/// The state's database file inside a data directory.
pub const DATA_FILE: &str = "replica.redb";
/// The agreement log's database file inside a data directory.
pub const LOG_FILE: &str = "log.redb";

/// redb's page cache for the state file. Its default (1 GiB per file)
/// would let the cache, not the state, decide a replica's memory; the state
/// file is written a checkpoint at a time and read whole only at a restart
/// or to serve a peer, and the operating system's page cache keeps its hot
/// pages anyway. At 10^6 keys, 16 MiB wrote stable checkpoints as fast as
/// 64 MiB did, for 70 MiB less per replica (the state benchmark).
const STATE_CACHE: usize = 16 << 20;
/// redb's page cache for the log file, which holds a window of batches.
const LOG_CACHE: usize = 16 << 20;
/// The most memory a durable replica's page caches (redb's, for its two
/// files) hold: part of its fixed overhead, which the state's size does not
/// raise past this (the caches fill up to it as the files grow).
pub const PAGE_CACHE_BYTES: usize = STATE_CACHE + LOG_CACHE;

/// The layout of what is stored; a file of another format is refused.
/// 2: the client table keeps bounded sessions (per client key, with a
/// floor), not one record per key and lane.
/// 3: client batches in stored proposals may be unsigned (authenticated by
/// their clients' connections and vouched for by a quorum).
/// 4: the state file has a `deltas` table. A format-3 file is the same
/// with no deltas, and is upgraded in place when opened.
const FORMAT: u32 = 4;
/// The earlier format this build reads and upgrades.
const UPGRADABLE: u32 = 3;

/// Changes held as deltas before they are folded into `entries`: a
/// quarter of the entries, and at least this many. Writing a stable
/// checkpoint's changes into `entries` directly costs a B-tree page per
/// changed key (read, copied, checksummed, written), so at a million keys
/// most of a durable replica's time; appended as one delta record it costs
/// a sequential write. Folding a quarter of the entries' worth at once
/// touches each page about once.
const MIN_FOLD: u64 = 1 << 16;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const DELTAS: TableDefinition<u64, &[u8]> = TableDefinition::new("deltas");
const PREPARED: TableDefinition<u64, &[u8]> = TableDefinition::new("prepared");
const EXECUTED: TableDefinition<u64, &[u8]> = TableDefinition::new("executed");
/// Proposals the replica vouched for, by (sequence number, digest): the
/// view it vouched in and the proposal, sealed. Directories written before
/// this table existed have none, and read as holding none.
const PROPOSALS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("proposals");

/// A data directory could not be used. Nothing was acknowledged on the
/// strength of a write that failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database could not be opened, read or written (a full disk, an
    /// I/O error, a file redb does not recognise).
    #[error(
        "the data file {} cannot be used: {source}. If the file is damaged, move it away: the \
         replica then starts empty and fetches the state from its peers",
        file.display()
    )]
    Database {
        /// The file.
        file: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// A write found no room: the disk (or the replica's quota, or its
    /// file-size limit) is full. Nothing is lost: what the replica had
    /// stored is intact, and it acknowledged nothing it could not store.
    #[error(
        "the data file {} cannot grow: {source}. Free space on its disk (or raise the quota or \
         limit) and restart the replica: it keeps everything it had stored and catches up from \
         its peers",
        file.display()
    )]
    Full {
        /// The file.
        file: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// What was read back fails a check.
    #[error(
        "the data file {} is corrupt: {what}. Move it away: the replica then starts empty and \
         fetches the state from its peers",
        file.display()
    )]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Which check failed.
        what: String,
    },
    /// The file belongs to another service (its containers differ) or
    /// another format.
    #[error("the data file {} does not belong to this replica: {what}", file.display())]
    Mismatch {
        /// The file.
        file: PathBuf,
        /// How it differs.
        what: String,
    },
}

/// Whether an I/O error says the file cannot grow: no space left on the
/// device (ENOSPC), over a quota (EDQUOT) or over the process's file-size
/// limit (EFBIG).
fn no_room(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull
            | std::io::ErrorKind::QuotaExceeded
            | std::io::ErrorKind::FileTooLarge
    )
}

/// Whose a data directory is: a replica, by id and public key, of a
/// cluster, by a digest of its replicas' keys and f (see
/// [`Storage::claim`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The replica's id.
    pub replica: ReplicaId,
    /// The replica's public key.
    pub key: [u8; 32],
    /// A digest of the cluster's f and its replicas' ids and public keys.
    pub cluster: Hash,
}

impl Owner {
    /// Replica `replica` of `cluster`.
    pub fn of(cluster: &crate::config::ClusterConfig, replica: ReplicaId) -> Option<Owner> {
        let entry = cluster.replicas.iter().find(|r| r.id == replica)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"cbase/cluster-identity/v1");
        hasher.update(&(cluster.f as u64).to_le_bytes());
        let mut replicas: Vec<_> = cluster.replicas.iter().collect();
        replicas.sort_by_key(|r| r.id);
        for r in replicas {
            hasher.update(&r.id.to_le_bytes());
            hasher.update(r.public_key.as_bytes());
        }
        Some(Owner {
            replica,
            key: *entry.public_key.as_bytes(),
            cluster: *hasher.finalize().as_bytes(),
        })
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replica {} (key {}) of the cluster {}",
            self.replica,
            crate::crypto::short_hex(&self.key),
            crate::crypto::short_hex(&self.cluster)
        )
    }
}

/// Whether `database` has its `meta` table (an unreadable file counts as
/// having one: it is not taken for a new one, and the load that follows
/// reports what is wrong with it).
fn has_meta(database: &Database) -> bool {
    use redb::TableHandle as _;
    let Ok(txn) = database.begin_read() else {
        return true;
    };
    txn.list_tables().map_or(true, |mut tables| {
        tables.any(|table| table.name() == "meta")
    })
}

/// The stable checkpoint as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StableRecord {
    seq: Seq,
    digest: Hash,
    proof: Vec<Checkpoint>,
    clients: ClientTable,
    clock: u64,
}

/// What a data directory held when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The state at the stable checkpoint, checked against its digest, and
    /// the checkpoint's sequence number; `None` if none was ever stored.
    pub state: Option<(Seq, CheckpointState)>,
    /// The batches executed above it, in order, as far as they follow it
    /// without a gap.
    pub executed: Vec<Committed>,
    /// What the protocol restarts from ([`crate::protocol::Replica::recover`]),
    /// its `executed` field still to be set by whoever replays `executed`.
    pub recovered: Recovered,
    /// Whether the directory was empty: nothing was ever written.
    pub fresh: bool,
}

/// A replica's data directory. See the [module documentation](self).
pub struct Storage {
    /// Both always `Some` until dropped (see the `Drop` impl).
    state: Option<Database>,
    log: Option<Database>,
    state_file: PathBuf,
    log_file: PathBuf,
    /// The service's container names, in declaration order.
    layout: Vec<String>,
    /// The fewest delta changes folded into `entries` at once.
    min_fold: u64,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("state", &self.state_file)
            .field("log", &self.log_file)
            .finish()
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        // Closing writes redb's allocator state, and redb panics there on
        // some kinds of damage it did not notice when opening. A replica
        // that stops must not turn that into an abort.
        for db in [self.state.take(), self.log.take()].into_iter().flatten() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(db)));
        }
    }
}

/// Which of the two files.
#[derive(Clone, Copy)]
enum File {
    State,
    Log,
}

thread_local! {
    /// The file this thread last opened or read: what a panic of redb's
    /// while a directory is opened is blamed on (see [`Storage::open`]).
    static TOUCHING: std::cell::Cell<File> = const { std::cell::Cell::new(File::State) };
}

/// A record as stored: its blake3 checksum, then its encoding.
fn seal<T: Serialize>(value: &T) -> Vec<u8> {
    let payload = codec::encode(value).expect("stored records always encode");
    let mut sealed = blake3::hash(&payload).as_bytes().to_vec();
    sealed.extend_from_slice(&payload);
    sealed
}

/// A part's index and an entry's key, as the `entries` table keys them.
fn entry_key(part: u32, key: &[u8]) -> Vec<u8> {
    let mut bytes = part.to_be_bytes().to_vec();
    bytes.extend_from_slice(key);
    bytes
}

/// One delta record: the changes of the stable checkpoints one write
/// covers, in the order they apply, sealed with a blake3 checksum. Each
/// change is its container (`u32`), its key (length-prefixed), then `0` for
/// a removal or `1` and the value (length-prefixed); numbers little-endian.
fn seal_delta(changes: &[&StateChanges]) -> Vec<u8> {
    let mut payload = Vec::new();
    for changes in changes {
        for (part, (_, writes)) in changes.parts().iter().enumerate() {
            for (key, value) in writes {
                payload.extend_from_slice(&(part as u32).to_le_bytes());
                payload.extend_from_slice(&(key.len() as u32).to_le_bytes());
                payload.extend_from_slice(key);
                match value {
                    Some(value) => {
                        payload.push(1);
                        payload.extend_from_slice(&(value.len() as u32).to_le_bytes());
                        payload.extend_from_slice(value);
                    }
                    None => payload.push(0),
                }
            }
        }
    }
    let mut sealed = blake3::hash(&payload).as_bytes().to_vec();
    sealed.extend_from_slice(&payload);
    sealed
}

/// One change read back from a delta record: container, key and new value.
type DeltaChange<'a> = (u32, &'a [u8], Option<&'a [u8]>);

/// The changes of a delta record, if its checksum holds; each is `Err` from
/// where the record is cut short on.
fn unseal_delta(sealed: &[u8]) -> Option<impl Iterator<Item = Result<DeltaChange<'_>, ()>>> {
    let (sum, mut rest) = sealed.split_at_checked(32)?;
    if blake3::hash(rest).as_bytes() != sum {
        return None;
    }
    fn take<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8], ()> {
        let (taken, left) = rest.split_at_checked(len).ok_or(())?;
        *rest = left;
        Ok(taken)
    }
    fn number(rest: &mut &[u8]) -> Result<u32, ()> {
        Ok(u32::from_le_bytes(
            take(rest, 4)?.try_into().map_err(|_| ())?,
        ))
    }
    Some(std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut change = || {
            let part = number(&mut rest)?;
            let len = number(&mut rest)? as usize;
            let key = take(&mut rest, len)?;
            let value = match take(&mut rest, 1)? {
                [0] => None,
                [1] => {
                    let len = number(&mut rest)? as usize;
                    Some(take(&mut rest, len)?)
                }
                _ => return Err(()),
            };
            Ok((part, key, value))
        };
        let change = change();
        if change.is_err() {
            // Nothing after a damaged change can be read.
            rest = &[];
        }
        Some(change)
    }))
}

/// Applies every delta, in order, to `entries` and empties `deltas`. The
/// records were checked when written; one that fails its checksum now is
/// refused, leaving the transaction to be dropped.
fn fold(
    entries: &mut redb::Table<&[u8], &[u8]>,
    deltas: &mut redb::Table<u64, &[u8]>,
) -> Result<(), redb::Error> {
    let damaged = || {
        redb::Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a stored delta of the state is damaged",
        ))
    };
    for item in deltas.iter()? {
        let (_, sealed) = item?;
        for change in unseal_delta(sealed.value()).ok_or_else(damaged)? {
            let (part, key, value) = change.map_err(|()| damaged())?;
            let key = entry_key(part, key);
            match value {
                Some(value) => entries.insert(key.as_slice(), value)?,
                None => entries.remove(key.as_slice())?,
            };
        }
    }
    deltas.retain(|_, _| false)?;
    Ok(())
}

impl Storage {
    /// Opens the data directory `dir`, creating it (and the file) if needed,
    /// and reads back what it holds for a service whose containers are
    /// `layout`.
    pub fn open(dir: &Path, layout: &[&str]) -> Result<(Storage, Loaded), StorageError> {
        // redb refuses most damage with an error, but some damage to its
        // own structures makes it panic; either way the directory is refused.
        // The file redb was in when it panicked is the damaged one: naming
        // the other would have the operator move the intact one away.
        let opened = std::panic::catch_unwind(|| Storage::open_unguarded(dir, layout));
        opened.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let file = match TOUCHING.get() {
                File::State => DATA_FILE,
                File::Log => LOG_FILE,
            };
            Err(StorageError::Corrupt {
                file: dir.join(file),
                what: format!("its internal structure is damaged ({what})"),
            })
        })
    }

    fn open_unguarded(dir: &Path, layout: &[&str]) -> Result<(Storage, Loaded), StorageError> {
        let (state_file, log_file) = (dir.join(DATA_FILE), dir.join(LOG_FILE));
        if let Err(error) = std::fs::create_dir_all(dir) {
            return Err(StorageError::Database {
                file: dir.to_owned(),
                source: redb::Error::Io(error),
            });
        }
        let (state_existed, log_existed) = (state_file.exists(), log_file.exists());
        let open = |file: &Path, cache: usize| {
            TOUCHING.set(if file == state_file {
                File::State
            } else {
                File::Log
            });
            Database::builder()
                .set_cache_size(cache)
                .create(file)
                .map_err(|e| StorageError::Database {
                    file: file.to_owned(),
                    source: e.into(),
                })
        };
        let state = open(&state_file, STATE_CACHE)?;
        let state_marked = state_existed && has_meta(&state);
        if state_marked && !log_existed {
            // A state file set up (its marks are written once both files
            // exist) has lost its log. Refused before the log is created:
            // an empty one made here would pass for a first start cut short
            // on the next try, and the replica would start over in views it
            // voted in. (A state file without marks is a first start killed
            // before it made the log: set up again below.)
            return Err(StorageError::Corrupt {
                file: log_file,
                what: "it is missing beside the state file, and with it what this replica \
                       voted before (restarted from the state alone, it could contradict \
                       those votes)"
                    .to_owned(),
            });
        }
        let log = open(&log_file, LOG_CACHE)?;
        let storage = Storage {
            state: Some(state),
            log: Some(log),
            state_file,
            log_file,
            layout: layout.iter().map(|name| (*name).to_owned()).collect(),
            min_fold: MIN_FOLD,
        };
        let fresh =
            (!state_marked && !log_existed) || storage.first_start_cut_short(log_existed)?;
        if fresh {
            storage.initialize(layout)?;
        }
        let mut loaded = storage.load(layout)?;
        loaded.fresh = fresh;
        Ok((storage, loaded))
    }

    fn db(&self, which: File) -> &Database {
        TOUCHING.set(which);
        match which {
            File::State => self.state.as_ref(),
            File::Log => self.log.as_ref(),
        }
        .expect("open until dropped")
    }

    fn file(&self, which: File) -> &Path {
        match which {
            File::State => &self.state_file,
            File::Log => &self.log_file,
        }
    }

    fn database_error(&self, which: File, source: impl Into<redb::Error>) -> StorageError {
        let file = self.file(which).to_owned();
        match source.into() {
            redb::Error::Io(source) if no_room(&source) => StorageError::Full { file, source },
            source => StorageError::Database { file, source },
        }
    }

    fn corrupt(&self, which: File, what: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            file: self.file(which).to_owned(),
            what: what.into(),
        }
    }

    /// Checks a sealed record from `which` and decodes it.
    fn unseal<T: for<'de> Deserialize<'de>>(
        &self,
        which: File,
        what: &str,
        sealed: &[u8],
    ) -> Result<T, StorageError> {
        if sealed.len() < 32 || blake3::hash(&sealed[32..]).as_bytes() != &sealed[..32] {
            return Err(self.corrupt(which, format!("the checksum of {what} does not match")));
        }
        codec::decode(&sealed[32..])
            .map_err(|e| self.corrupt(which, format!("{what} does not decode: {e}")))
    }

    /// Runs `f` in one write transaction on `which`, committed durably.
    fn write(
        &self,
        which: File,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StorageError> {
        self.write_with(which, redb::Durability::Immediate, f)
    }

    /// Runs `f` in one write transaction on `which`, committed with `durability`.
    fn write_with(
        &self,
        which: File,
        durability: redb::Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StorageError> {
        let error = |e: redb::Error| self.database_error(which, e);
        let mut txn = self.db(which).begin_write().map_err(|e| error(e.into()))?;
        txn.set_durability(durability)
            .map_err(|e| error(e.into()))?;
        f(&txn).map_err(error)?;
        txn.commit().map_err(|e| error(e.into()))
    }

    /// Whether the files are what a first start killed before it finished
    /// [`initialize`](Self::initialize) leaves: the log file (initialized
    /// last, and before anything else is ever written) there but without
    /// its marks, and the state file without marks or with its marks only.
    /// Such a replica never acted; its directory is set up again rather
    /// than refused on every start. (A log file that is missing
    /// altogether, beside a state file, is not this: it was lost, and
    /// with it what the replica voted, so the directory is refused.)
    fn first_start_cut_short(&self, log_existed: bool) -> Result<bool, StorageError> {
        if !log_existed || self.has_table(File::Log, "meta")? {
            return Ok(false);
        }
        if !self.has_table(File::State, "meta")? {
            return Ok(true);
        }
        let only_marks = |txn: redb::ReadTransaction| -> Result<bool, redb::Error> {
            let meta = txn.open_table(META)?;
            let entries = txn.open_table(ENTRIES)?;
            let deltas = txn.open_table(DELTAS)?;
            Ok(meta.len()? == 2 && entries.is_empty()? && deltas.is_empty()?)
        };
        self.db(File::State)
            .begin_read()
            .map_err(redb::Error::from)
            .and_then(only_marks)
            .map_err(|e| self.database_error(File::State, e))
    }

    /// Whether `which` has a table named `name`.
    fn has_table(&self, which: File, name: &str) -> Result<bool, StorageError> {
        use redb::{ReadableDatabase as _, TableHandle as _};
        let txn = self
            .db(which)
            .begin_read()
            .map_err(|e| self.database_error(which, e))?;
        let tables = txn
            .list_tables()
            .map_err(|e| self.database_error(which, e))?;
        Ok(tables.into_iter().any(|table| table.name() == name))
    }

    fn initialize(&self, layout: &[&str]) -> Result<(), StorageError> {
        let layout: Vec<String> = layout.iter().map(|s| (*s).to_owned()).collect();
        self.write(File::State, |txn| {
            let mut meta = txn.open_table(META)?;
            meta.insert("format", FORMAT.to_le_bytes().as_slice())?;
            meta.insert("layout", seal(&layout).as_slice())?;
            txn.open_table(ENTRIES)?;
            txn.open_table(DELTAS)?;
            Ok(())
        })?;
        self.write(File::Log, |txn| {
            let mut meta = txn.open_table(META)?;
            meta.insert("format", FORMAT.to_le_bytes().as_slice())?;
            txn.open_table(PREPARED)?;
            txn.open_table(EXECUTED)?;
            txn.open_table(PROPOSALS)?;
            Ok(())
        })
    }

    /// Checks that the directory belongs to `owner` (this replica of this
    /// cluster), recording it on the first start that names one. A
    /// directory written by another replica, or under another cluster
    /// file, holds votes that are not this replica's: started from it, the
    /// replica could contradict what it voted, or never have its votes
    /// accepted. Refused, naming both.
    pub fn claim(&self, owner: &Owner) -> Result<(), StorageError> {
        match self.meta(File::State, "owner")? {
            Some(sealed) => {
                let recorded: Owner = self.unseal(File::State, "the owner record", &sealed)?;
                if recorded != *owner {
                    return Err(StorageError::Mismatch {
                        file: self.state_file.clone(),
                        what: format!(
                            "it was written by {recorded}, and this is {owner}; start each \
                             replica on its own directory (an empty one fetches the state from \
                             its peers)"
                        ),
                    });
                }
                Ok(())
            }
            None => self.write(File::State, |txn| {
                txn.open_table(META)?
                    .insert("owner", seal(owner).as_slice())?;
                Ok(())
            }),
        }
    }

    /// The `meta` value `key` of `which`.
    fn meta(&self, which: File, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self
            .db(which)
            .begin_read()
            .map_err(|e| self.database_error(which, e))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| self.database_error(which, e))?;
        Ok(meta
            .get(key)
            .map_err(|e| self.database_error(which, e))?
            .map(|v| v.value().to_vec()))
    }

    fn load(&self, layout: &[&str]) -> Result<Loaded, StorageError> {
        for which in [File::State, File::Log] {
            let format = self
                .meta(which, "format")?
                .ok_or_else(|| self.corrupt(which, "it has no format mark"))?;
            if format == UPGRADABLE.to_le_bytes() {
                // The same layout, less the (empty) deltas table.
                self.write(which, |txn| {
                    if let File::State = which {
                        txn.open_table(DELTAS)?;
                    }
                    txn.open_table(META)?
                        .insert("format", FORMAT.to_le_bytes().as_slice())?;
                    Ok(())
                })?;
            } else if format != FORMAT.to_le_bytes() {
                return Err(StorageError::Mismatch {
                    file: self.file(which).to_owned(),
                    what: format!("its format is {format:?}, this build writes {FORMAT}"),
                });
            }
        }
        let stored_layout: Vec<String> = match self.meta(File::State, "layout")? {
            Some(sealed) => self.unseal(File::State, "the layout", &sealed)?,
            None => return Err(self.corrupt(File::State, "it has no layout")),
        };
        if stored_layout != layout {
            return Err(StorageError::Mismatch {
                file: self.state_file.clone(),
                what: format!(
                    "it holds containers [{}], the service has [{}]",
                    stored_layout.join(", "),
                    layout.join(", ")
                ),
            });
        }
        let view: View = match self.meta(File::Log, "view")? {
            Some(sealed) => self.unseal(File::Log, "the view", &sealed)?,
            None => 0,
        };
        let entered: Option<(View, Seq)> = match self.meta(File::Log, "entered")? {
            Some(sealed) => Some(self.unseal(File::Log, "the view entered", &sealed)?),
            None => None,
        };
        let restored = self.meta(File::Log, "restored")?.is_some();
        let window: Option<(View, Seq)> = match self.meta(File::Log, "window")? {
            Some(sealed) => Some(self.unseal(File::Log, "the window", &sealed)?),
            None => None,
        };
        // The state at the stable checkpoint. Its digest is checked as it is
        // installed (restoring the containers builds their digest trees
        // anyway, so hashing it here too would only double the cost).
        let (stable, state) = self.read_stable()?;
        let low = stable.as_ref().map_or(0, |s| s.seq);

        let log_error = |e: redb::Error| self.database_error(File::Log, e);
        let txn = self
            .db(File::Log)
            .begin_read()
            .map_err(|e| log_error(e.into()))?;
        let mut prepared = Vec::new();
        let table = txn.open_table(PREPARED).map_err(|e| log_error(e.into()))?;
        for item in table.range(low + 1..).map_err(|e| log_error(e.into()))? {
            let (seq, sealed) = item.map_err(|e| log_error(e.into()))?;
            let (proof, proposal): (PreparedProof, Option<Proposal>) = self.unseal(
                File::Log,
                &format!("prepared certificate {}", seq.value()),
                sealed.value(),
            )?;
            if proof.pre_prepare.seq != seq.value() {
                return Err(self.corrupt(
                    File::Log,
                    format!("prepared certificate {} is filed elsewhere", seq.value()),
                ));
            }
            prepared.push((proof, proposal));
        }

        let mut proposals = Vec::new();
        if self.has_table(File::Log, redb::TableHandle::name(&PROPOSALS))? {
            let table = txn.open_table(PROPOSALS).map_err(|e| log_error(e.into()))?;
            let from: (u64, &[u8]) = (low + 1, &[]);
            for item in table.range(from..).map_err(|e| log_error(e.into()))? {
                let (key, sealed) = item.map_err(|e| log_error(e.into()))?;
                let (seq, digest) = key.value();
                let what = format!("proposal {seq}");
                let (view, proposal): (View, Proposal) =
                    self.unseal(File::Log, &what, sealed.value())?;
                let digest: Hash = digest.try_into().map_err(|_| {
                    self.corrupt(
                        File::Log,
                        format!("{what} is filed under a malformed digest"),
                    )
                })?;
                if proposal.digest() != digest {
                    return Err(self.corrupt(
                        File::Log,
                        format!("{what} does not match the digest it is filed under"),
                    ));
                }
                proposals.push((view, seq, digest, proposal));
            }
        }

        let mut executed: Vec<Committed> = Vec::new();
        let table = txn.open_table(EXECUTED).map_err(|e| log_error(e.into()))?;
        for item in table.range(low + 1..).map_err(|e| log_error(e.into()))? {
            let (seq, sealed) = item.map_err(|e| log_error(e.into()))?;
            let committed: Committed = self.unseal(
                File::Log,
                &format!("executed batch {}", seq.value()),
                sealed.value(),
            )?;
            if committed.seq != seq.value() {
                return Err(self.corrupt(
                    File::Log,
                    format!("executed batch {} is filed elsewhere", seq.value()),
                ));
            }
            let expected = executed.last().map_or(low, |c| c.seq) + 1;
            if committed.seq != expected {
                // A gap: what follows was executed after a state transfer
                // that did not reach the disk. Those batches are the agreed
                // ones at their sequence numbers, but without the state
                // below them they cannot be replayed; peers have them.
                break;
            }
            if committed.proposal.digest() != committed.digest {
                return Err(self.corrupt(
                    File::Log,
                    format!("executed batch {} does not match its digest", seq.value()),
                ));
            }
            executed.push(committed);
        }

        let recovered = Recovered {
            view,
            entered,
            window,
            restored,
            stable: stable.map(|s| (s.seq, s.digest, s.proof)),
            prepared,
            proposals,
            executed: low,
            executed_proposals: executed
                .iter()
                .map(|c| (c.seq, c.digest, c.proposal.clone()))
                .collect(),
        };
        Ok(Loaded {
            state,
            executed,
            recovered,
            fresh: false,
        })
    }

    /// The stable checkpoint's record and state, read in one transaction so
    /// that they belong together however the file moves on meanwhile.
    #[allow(clippy::type_complexity)]
    fn read_stable(
        &self,
    ) -> Result<(Option<StableRecord>, Option<(Seq, CheckpointState)>), StorageError> {
        let state_error = |e: redb::Error| self.database_error(File::State, e);
        let txn = self
            .db(File::State)
            .begin_read()
            .map_err(|e| state_error(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| state_error(e.into()))?;
        let stable: Option<StableRecord> =
            match meta.get("stable").map_err(|e| state_error(e.into()))? {
                Some(sealed) => {
                    Some(self.unseal(File::State, "the stable checkpoint", sealed.value())?)
                }
                None => None,
            };
        // The table yields each container's entries in key order: gathered
        // in runs and built in bulk, several times faster than inserting
        // millions of keys one at a time.
        let mut runs: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); self.layout.len()];
        let entries = txn.open_table(ENTRIES).map_err(|e| state_error(e.into()))?;
        for item in entries.iter().map_err(|e| state_error(e.into()))? {
            let (key, value) = item.map_err(|e| state_error(e.into()))?;
            let key = key.value();
            let part = key
                .get(..4)
                .map(|b| u32::from_be_bytes(b.try_into().expect("four bytes")) as usize)
                .filter(|p| *p < runs.len())
                .ok_or_else(|| self.corrupt(File::State, "an entry names no container"))?;
            runs[part].push((key[4..].to_vec(), value.value().to_vec()));
        }
        let mut parts: Vec<(String, Entries)> = self
            .layout
            .iter()
            .cloned()
            .zip(runs.into_iter().map(Entries::from_iter))
            .collect();
        // The stable checkpoints written since the last fold, in order.
        let deltas = txn.open_table(DELTAS).map_err(|e| state_error(e.into()))?;
        for item in deltas.iter().map_err(|e| state_error(e.into()))? {
            let (seq, sealed) = item.map_err(|e| state_error(e.into()))?;
            let what = || format!("the changes of checkpoint {}", seq.value());
            if stable.as_ref().is_none_or(|s| seq.value() > s.seq) {
                return Err(self.corrupt(File::State, format!("{} are past it", what())));
            }
            let changes = unseal_delta(sealed.value())
                .ok_or_else(|| self.corrupt(File::State, format!("{} are damaged", what())))?;
            for change in changes {
                let (part, key, value) = change
                    .map_err(|()| self.corrupt(File::State, format!("{} are cut short", what())))?;
                let entries = &mut parts
                    .get_mut(part as usize)
                    .ok_or_else(|| {
                        self.corrupt(File::State, format!("{} name no container", what()))
                    })?
                    .1;
                match value {
                    Some(value) => entries.insert(key.to_vec(), value.to_vec()),
                    None => entries.remove(key),
                };
            }
        }
        let state = match &stable {
            Some(record) => {
                let state = CheckpointState::new(
                    Snapshot::from_parts(parts),
                    record.clients.clone(),
                    record.clock,
                );
                Some((record.seq, state))
            }
            None if parts.iter().any(|(_, e)| !e.is_empty()) => {
                return Err(self.corrupt(File::State, "it holds state but no checkpoint"));
            }
            None => None,
        };
        Ok((stable, state))
    }

    /// The stored stable checkpoint's state and sequence number, read back
    /// whole (O(state)); `None` if none was stored yet. A replica keeps its
    /// stable checkpoint here, not in memory, and reads it back only to
    /// serve it to a peer that fell behind or to compare a fetched one with.
    pub fn stable_state(&self) -> Result<Option<(Seq, CheckpointState)>, StorageError> {
        Ok(self.read_stable()?.1)
    }

    /// Notes, durably, that the replica starts from a restored copy (see
    /// [`Replica::recover_restored`](crate::protocol::Replica::recover_restored)):
    /// until its recovery ends ([`Durable::RestoreOver`]), every start from
    /// this directory is a start from a restored copy, whether or not it is
    /// told so again.
    pub fn mark_restored(&self) -> Result<(), StorageError> {
        self.write(File::Log, |txn| {
            let mut meta = txn.open_table(META)?;
            meta.insert("restored", seal(&true).as_slice())?;
            Ok(())
        })
    }

    /// Writes what the protocol asked to persist, in one durable commit.
    pub fn persist<'a>(
        &self,
        items: impl IntoIterator<Item = &'a Durable>,
    ) -> Result<(), StorageError> {
        let items: Vec<&Durable> = items.into_iter().collect();
        if items.is_empty() {
            return Ok(());
        }
        self.write(File::Log, |txn| {
            let mut prepared = txn.open_table(PREPARED)?;
            let mut proposals = txn.open_table(PROPOSALS)?;
            let mut meta = txn.open_table(META)?;
            for item in items {
                match item {
                    Durable::Prepared { proof, proposal } => {
                        let seq = proof.pre_prepare.seq;
                        prepared.insert(seq, seal(&(proof, proposal)).as_slice())?;
                    }
                    Durable::Proposal {
                        view,
                        seq,
                        digest,
                        proposal,
                    } => {
                        proposals.insert(
                            (*seq, digest.as_slice()),
                            seal(&(view, proposal)).as_slice(),
                        )?;
                    }
                    Durable::View(_) | Durable::Entered { .. } => {
                        let view = item.view().expect("a view record");
                        let stored: View = meta
                            .get("view")?
                            .and_then(|v| codec::decode::<View>(&v.value()[32..]).ok())
                            .unwrap_or(0);
                        if view > stored {
                            meta.insert("view", seal(&view).as_slice())?;
                        }
                        if let Durable::Entered { view, carried } = item {
                            meta.insert("entered", seal(&(*view, *carried)).as_slice())?;
                        }
                    }
                    Durable::RestoreOver => {
                        meta.remove("restored")?;
                    }
                    Durable::Window { view, seq } => {
                        let stored: (View, Seq) = meta
                            .get("window")?
                            .and_then(|v| codec::decode::<(View, Seq)>(&v.value()[32..]).ok())
                            .unwrap_or((0, 0));
                        if (*view, *seq) > stored {
                            meta.insert("window", seal(&(*view, *seq)).as_slice())?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Logs batches about to be executed, in one commit that is not synced
    /// on its own: it reaches the disk with the next durable commit.
    ///
    /// This log only lets a restarted replica replay locally what it can
    /// also get from its peers. Nothing depends on it for safety: a batch
    /// that committed prepared at a quorum first, and each of those
    /// replicas synced its prepared certificate (with the proposal) before
    /// voting to commit, so a view change after any restart re-proposes it.
    /// Syncing here as well would double the syncs for nothing.
    pub fn log_executed(&self, batches: &[&Committed]) -> Result<(), StorageError> {
        if batches.is_empty() {
            return Ok(());
        }
        self.write_with(File::Log, redb::Durability::None, |txn| {
            let mut executed = txn.open_table(EXECUTED)?;
            for committed in batches {
                executed.insert(committed.seq, seal(committed).as_slice())?;
            }
            Ok(())
        })
    }

    /// Moves the stored state to the stable checkpoint `seq` (with `digest`
    /// and its `proof`, the client table and clock there), in one durable
    /// commit: first `whole` replaces the state if given (the stored one is
    /// older than what the changes apply to), then `changes` (of the
    /// checkpoints since, oldest first) are applied. Then the log at or
    /// below `seq` is pruned.
    #[allow(clippy::too_many_arguments)]
    pub fn stabilize(
        &self,
        seq: Seq,
        digest: Hash,
        proof: &[Checkpoint],
        clients: &ClientTable,
        clock: u64,
        whole: Option<&Snapshot>,
        changes: &[&StateChanges],
    ) -> Result<(), StorageError> {
        let record = StableRecord {
            seq,
            digest,
            proof: proof.to_vec(),
            clients: clients.clone(),
            clock,
        };
        self.write(File::State, |txn| {
            let mut entries = txn.open_table(ENTRIES)?;
            let mut deltas = txn.open_table(DELTAS)?;
            let mut meta = txn.open_table(META)?;
            let mut pending = match meta.get("delta_changes")? {
                Some(count) => u64::from_le_bytes(count.value().try_into().unwrap_or([0; 8])),
                None => 0,
            };
            if let Some(snapshot) = whole {
                entries.retain(|_, _| false)?;
                deltas.retain(|_, _| false)?;
                pending = 0;
                for (part, (_, part_entries)) in snapshot.parts().iter().enumerate() {
                    for (key, value) in part_entries {
                        entries.insert(entry_key(part as u32, key).as_slice(), value.as_slice())?;
                    }
                }
            }
            let count: usize = changes.iter().map(|c| c.len()).sum();
            if count > 0 {
                deltas.insert(seq, seal_delta(changes).as_slice())?;
                pending += count as u64;
            }
            if pending >= (entries.len()? / 4).max(self.min_fold) {
                fold(&mut entries, &mut deltas)?;
                pending = 0;
            }
            meta.insert("delta_changes", pending.to_le_bytes().as_slice())?;
            meta.insert("stable", seal(&record).as_slice())?;
            Ok(())
        })?;
        // Unsynced: what is at or below `seq` is ignored when read back
        // anyway; this only gives the space back.
        self.write_with(File::Log, redb::Durability::None, |txn| {
            txn.open_table(PREPARED)?.retain(|at, _| at > seq)?;
            txn.open_table(EXECUTED)?.retain(|at, _| at > seq)?;
            txn.open_table(PROPOSALS)?.retain(|(at, _), _| at > seq)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::message::{ClientBatch, ClientRequest, PrePrepareHeader, RequestBatch};

    const LAYOUT: &[&str] = &["accounts"];

    fn state(entries: &[(u8, u8)]) -> CheckpointState {
        let part: Entries = entries.iter().map(|(k, v)| (vec![*k], vec![*v])).collect();
        CheckpointState::new(
            Snapshot::from_parts(vec![("accounts".to_owned(), part)]),
            ClientTable::new(),
            7,
        )
    }

    /// Stores `base` whole as stable checkpoint 4, at agreed time 7.
    fn store_whole(storage: &Storage, base: &CheckpointState) {
        storage
            .stabilize(
                4,
                base.digest(),
                &[],
                &base.clients,
                7,
                Some(&base.snapshot),
                &[],
            )
            .unwrap();
    }

    fn committed(seq: Seq) -> Committed {
        let client = SecretKey::from_seed([3; 32]);
        let batch = ClientBatch::sign(
            RequestBatch {
                client: client.public(),
                requests: vec![ClientRequest {
                    lane: 0,
                    number: seq,
                    operation: vec![1, 2, 3],
                }],
            },
            &client,
        );
        let proposal = Proposal {
            timestamp: seq,
            batches: vec![batch],
        };
        Committed {
            view: 0,
            seq,
            digest: proposal.digest(),
            proposal,
            checkpoint: false,
        }
    }

    fn prepared(seq: Seq, view: View) -> Durable {
        let signer = SecretKey::from_seed([4; 32]);
        let header = PrePrepareHeader {
            view,
            seq,
            digest: [seq as u8; 32],
            signature: signer.sign("test", b"header"),
        };
        Durable::Prepared {
            proof: PreparedProof {
                pre_prepare: header,
                prepares: Vec::new(),
            },
            proposal: None,
        }
    }

    fn changes(writes: &[(u8, Option<u8>)]) -> StateChanges {
        StateChanges::from_parts(vec![(
            "accounts".to_owned(),
            writes
                .iter()
                .map(|(k, v)| (vec![*k], v.map(|v| vec![v])))
                .collect(),
        )])
    }

    fn deltas_held(dir: &Path) -> u64 {
        let db = Database::create(dir.join(DATA_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        txn.open_table(DELTAS).unwrap().len().unwrap()
    }

    fn stored_state(dir: &Path) -> (Seq, Snapshot) {
        let (_, loaded) = Storage::open(dir, LAYOUT).unwrap();
        let (seq, state) = loaded.state.unwrap();
        (seq, state.snapshot)
    }

    #[test]
    fn changes_are_kept_as_deltas_and_folded_once_they_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let (mut storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        storage.min_fold = 4;
        let base = state(&[(1, 10), (2, 20)]);
        let whole = Some(&base.snapshot);
        let no_clients = ClientTable::new();
        storage
            .stabilize(4, base.digest(), &[], &no_clients, 7, whole, &[])
            .unwrap();
        // Three changes, fewer than four: appended as a delta.
        let eight = changes(&[(1, Some(11)), (2, None), (3, Some(30))]);
        let at_eight = state(&[(1, 11), (3, 30)]);
        storage
            .stabilize(8, at_eight.digest(), &[], &no_clients, 7, None, &[&eight])
            .unwrap();
        drop(storage);
        assert_eq!(deltas_held(dir.path()), 1);
        assert_eq!(stored_state(dir.path()), (8, at_eight.snapshot));

        // Two more make five: all of them are folded into the entries.
        let (mut storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        storage.min_fold = 4;
        let twelve = changes(&[(3, Some(31)), (4, Some(40))]);
        let at_twelve = state(&[(1, 11), (3, 31), (4, 40)]);
        storage
            .stabilize(
                12,
                at_twelve.digest(),
                &[],
                &no_clients,
                7,
                None,
                &[&twelve],
            )
            .unwrap();
        drop(storage);
        assert_eq!(deltas_held(dir.path()), 0);
        assert_eq!(stored_state(dir.path()), (12, at_twelve.snapshot));
    }

    #[test]
    fn a_damaged_delta_is_refused_with_the_files_name() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        let base = state(&[(1, 10)]);
        let no_clients = ClientTable::new();
        store_whole(&storage, &base);
        let eight = changes(&[(1, Some(11))]);
        storage
            .stabilize(8, [0; 32], &[], &no_clients, 7, None, &[&eight])
            .unwrap();
        drop(storage);
        {
            let db = Database::create(dir.path().join(DATA_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut deltas = txn.open_table(DELTAS).unwrap();
                let mut record = deltas.get(8).unwrap().unwrap().value().to_vec();
                *record.last_mut().unwrap() ^= 1;
                deltas.insert(8, record.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let error = Storage::open(dir.path(), LAYOUT).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, StorageError::Corrupt { .. }), "{message}");
        assert!(message.contains(DATA_FILE), "{message}");
        assert!(message.contains("changes of checkpoint 8"), "{message}");
    }

    #[test]
    fn a_directory_of_the_format_before_deltas_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        let base = state(&[(1, 10), (2, 20)]);
        store_whole(&storage, &base);
        drop(storage);
        // What the earlier format wrote: no deltas table, format 3.
        for file in [DATA_FILE, LOG_FILE] {
            let db = Database::create(dir.path().join(file)).unwrap();
            let txn = db.begin_write().unwrap();
            if file == DATA_FILE {
                txn.delete_table(DELTAS).unwrap();
            }
            txn.open_table(META)
                .unwrap()
                .insert("format", UPGRADABLE.to_le_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        assert_eq!(stored_state(dir.path()), (4, base.snapshot));
        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        assert_eq!(
            storage.meta(File::State, "format").unwrap(),
            Some(FORMAT.to_le_bytes().to_vec())
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_a_quota_and_a_file_size_limit_are_told_apart_from_other_errors() {
        for (errno, full) in [(28, true), (122, true), (27, true), (5, false), (13, false)] {
            let error = std::io::Error::from_raw_os_error(errno);
            assert_eq!(no_room(&error), full, "os error {errno}");
        }
    }

    #[test]
    fn a_fresh_directory_is_empty_and_reopens_with_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, loaded) = Storage::open(dir.path(), LAYOUT).unwrap();
        assert!(loaded.fresh);
        assert!(loaded.state.is_none());
        assert_eq!(loaded.recovered, Recovered::default());

        let base = state(&[(1, 10), (2, 20)]);
        store_whole(&storage, &base);
        storage
            .persist([
                &prepared(5, 1),
                &Durable::Entered {
                    view: 2,
                    carried: 5,
                },
                &Durable::View(3),
                &Durable::View(2),
                &Durable::Window { view: 2, seq: 16 },
                &Durable::Window { view: 2, seq: 12 },
            ])
            .unwrap();
        storage
            .log_executed(&[&committed(5), &committed(6)])
            .unwrap();
        drop(storage);

        let (_, loaded) = Storage::open(dir.path(), LAYOUT).unwrap();
        assert!(!loaded.fresh);
        let (seq, restored) = loaded.state.unwrap();
        assert_eq!((seq, restored.digest()), (4, base.digest()));
        assert_eq!(loaded.recovered.view, 3, "the highest view written");
        assert_eq!(loaded.recovered.entered, Some((2, 5)), "the view entered");
        assert_eq!(
            loaded.recovered.window,
            Some((2, 16)),
            "the furthest window written"
        );
        assert_eq!(loaded.recovered.prepared.len(), 1);
        assert_eq!(
            loaded.executed.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [5, 6]
        );
        assert_eq!(loaded.recovered.stable.unwrap().0, 4);
    }

    fn vouched(seq: Seq, view: View) -> Durable {
        let committed = committed(seq);
        Durable::Proposal {
            view,
            seq,
            digest: committed.digest,
            proposal: committed.proposal,
        }
    }

    #[test]
    fn proposals_vouched_for_come_back_until_a_checkpoint_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        let base = state(&[(1, 10)]);
        store_whole(&storage, &base);
        storage
            .persist([&vouched(5, 0), &vouched(6, 1), &vouched(9, 1)])
            .unwrap();
        drop(storage);
        let (storage, loaded) = Storage::open(dir.path(), LAYOUT).unwrap();
        let back: Vec<(View, Seq)> = loaded
            .recovered
            .proposals
            .iter()
            .map(|(view, seq, digest, proposal)| {
                assert_eq!(proposal.digest(), *digest);
                (*view, *seq)
            })
            .collect();
        assert_eq!(back, [(0, 5), (1, 6), (1, 9)]);
        storage
            .stabilize(8, base.digest(), &[], &base.clients, 7, None, &[])
            .unwrap();
        drop(storage);
        let (_, loaded) = Storage::open(dir.path(), LAYOUT).unwrap();
        let seqs: Vec<Seq> = loaded.recovered.proposals.iter().map(|p| p.1).collect();
        assert_eq!(seqs, [9], "what the checkpoint covers is gone");
    }

    #[test]
    fn a_proposal_filed_under_another_digest_is_refused_and_a_log_without_proposals_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        store_whole(&storage, &state(&[(1, 10)]));
        drop(storage);
        // A log file from before the table existed.
        let db = Database::create(dir.path().join(LOG_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(PROPOSALS).unwrap();
        txn.commit().unwrap();
        drop(db);
        let (storage, loaded) = Storage::open(dir.path(), LAYOUT).unwrap();
        assert!(loaded.recovered.proposals.is_empty());
        storage.persist([&vouched(5, 0)]).unwrap();
        drop(storage);
        // Filed under a digest that is not its own.
        let db = Database::create(dir.path().join(LOG_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(PROPOSALS).unwrap();
            let sealed = table
                .get((5u64, committed(5).digest.as_slice()))
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            table
                .insert((6u64, [6u8; 32].as_slice()), sealed.as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        drop(db);
        let error = Storage::open(dir.path(), LAYOUT).err().unwrap().to_string();
        assert!(
            error.contains("proposal 6") && error.contains(LOG_FILE),
            "{error}"
        );
    }

    #[test]
    fn a_restored_mark_lasts_until_the_recovery_is_over() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, loaded) = Storage::open(dir.path(), LAYOUT).unwrap();
        assert!(!loaded.recovered.restored);
        storage.mark_restored().unwrap();
        drop(storage);
        let (storage, loaded) = Storage::open(dir.path(), LAYOUT).unwrap();
        assert!(
            loaded.recovered.restored,
            "a start without the flag is still one from a copy"
        );
        storage.persist([&Durable::RestoreOver]).unwrap();
        drop(storage);
        let (_, loaded) = Storage::open(dir.path(), LAYOUT).unwrap();
        assert!(!loaded.recovered.restored);
    }

    #[test]
    fn a_stable_checkpoint_applies_changes_and_forgets_what_is_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        let base = state(&[(1, 10), (2, 20)]);
        store_whole(&storage, &base);
        storage.persist([&prepared(5, 0), &prepared(9, 0)]).unwrap();
        storage
            .log_executed(&[&committed(5), &committed(6), &committed(7), &committed(8)])
            .unwrap();
        // Checkpoint 8: entry 1 changed, 2 removed, 3 added.
        let next = state(&[(1, 11), (3, 30)]);
        let changes = StateChanges::from_parts(vec![(
            "accounts".to_owned(),
            std::collections::BTreeMap::from([
                (vec![1u8], Some(vec![11u8])),
                (vec![2u8], None),
                (vec![3u8], Some(vec![30u8])),
            ]),
        )]);
        storage
            .stabilize(8, next.digest(), &[], &next.clients, 7, None, &[&changes])
            .unwrap();
        drop(storage);
        let (_, loaded) = Storage::open(dir.path(), LAYOUT).unwrap();
        let (seq, restored) = loaded.state.unwrap();
        assert_eq!(seq, 8);
        assert_eq!(restored.snapshot, next.snapshot);
        assert!(loaded.executed.is_empty());
        let seqs: Vec<Seq> = loaded
            .recovered
            .prepared
            .iter()
            .map(|(p, _)| p.pre_prepare.seq)
            .collect();
        assert_eq!(seqs, [9]);
    }

    #[test]
    fn another_services_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Storage::open(dir.path(), LAYOUT).unwrap());
        let error = Storage::open(dir.path(), &["accounts", "fees"]).unwrap_err();
        assert!(matches!(error, StorageError::Mismatch { .. }), "{error}");
        assert!(error.to_string().contains("replica.redb"), "{error}");
    }

    #[test]
    fn a_directory_records_its_owner_and_refuses_another_replica_or_cluster() {
        let cluster = |seed: u8| crate::config::ClusterConfig {
            f: 1,
            replicas: (0..4u8)
                .map(|i| crate::config::ReplicaEntry {
                    id: u32::from(i),
                    address: format!("127.0.0.1:{}", 7000 + u16::from(i)),
                    public_key: crate::crypto::SecretKey::from_seed([seed + i; 32]).public(),
                })
                .collect(),
            clients: None,
        };
        let ours = Owner::of(&cluster(1), 2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        storage.claim(&ours).unwrap();
        drop(storage);
        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        storage.claim(&ours).unwrap();
        for other in [Owner::of(&cluster(1), 1), Owner::of(&cluster(9), 2)] {
            let error = storage.claim(&other.unwrap()).unwrap_err();
            assert!(matches!(error, StorageError::Mismatch { .. }), "{error}");
            assert!(
                error.to_string().contains("written by replica 2"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_damaged_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        let base = state(&[(1, 10)]);
        store_whole(&storage, &base);
        drop(storage);
        for name in [DATA_FILE, LOG_FILE] {
            let file = dir.path().join(name);
            let bytes = std::fs::read(&file).unwrap();

            // Truncated: redb cannot open it, or finds it damaged.
            std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap();
            let error = Storage::open(dir.path(), LAYOUT).unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
            assert!(error.to_string().contains("move it away"), "{error}");

            // Every single flipped byte is caught (by redb or by our
            // checks), or lands in bytes that do not matter; none yields a
            // wrong state.
            for at in (0..bytes.len()).step_by(97) {
                let mut damaged = bytes.clone();
                damaged[at] ^= 0x40;
                std::fs::write(&file, &damaged).unwrap();
                if let Ok((_, loaded)) = Storage::open(dir.path(), LAYOUT) {
                    let (seq, restored) = loaded.state.expect("the checkpoint is found");
                    assert_eq!(seq, 4);
                    assert_eq!(restored.digest(), base.digest(), "{name} byte {at}");
                }
            }
            std::fs::write(&file, &bytes).unwrap();
        }
    }

    /// A byte of `log.redb` damaged where redb panics on reading it (its
    /// first page after the header) is refused, but the error names
    /// `replica.redb`: `Storage::open` reports every panic as damage to the
    /// state file. Following the message, an operator moves the intact
    /// state file away (so the replica starts over and fetches everything)
    /// and restarts over the same damaged log, which is refused again under
    /// the state file's name.
    #[test]
    fn damage_that_makes_redb_panic_in_the_log_file_is_reported_against_the_log_file() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        let base = state(&[(1, 10)]);
        store_whole(&storage, &base);
        storage.persist([&Durable::View(3)]).unwrap();
        drop(storage);
        let file = dir.path().join(LOG_FILE);
        let bytes = std::fs::read(&file).unwrap();
        let mut refused = 0;
        for at in 4096..4100 {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            std::fs::write(&file, &damaged).unwrap();
            if let Err(error) = Storage::open(dir.path(), LAYOUT) {
                refused += 1;
                let message = error.to_string();
                assert!(
                    message.contains(LOG_FILE) && !message.contains(DATA_FILE),
                    "{LOG_FILE} damaged at byte {at}, but the error says: {message}"
                );
            }
        }
        assert!(refused > 0, "the damage went unnoticed");
    }

    /// A replica killed during its very first start, after `Storage::open`
    /// created the two files and before `initialize` committed the format
    /// marks of both (one fsync each), leaves a directory that holds
    /// nothing it ever acted on. Started again over it, the replica must
    /// start (as from an empty directory); instead it is refused as
    /// unusable ("Table 'meta' does not exist"), on every restart.
    /// A replica killed during its very first start between the two file
    /// creations of `Storage::open` (the state file created, the log file
    /// not yet) leaves a state file that holds no table at all: nothing was
    /// ever committed, let alone voted. Started again over it, the replica
    /// must start as from an empty directory. Instead the missing-log check
    /// refuses it ("missing beside the state file, and with it what this
    /// replica voted"), on every restart, until an operator deletes it.
    /// Schedule: create the state file only (as `Database::create` in
    /// `open_unguarded` does first); open: must succeed, fresh.
    #[test]
    fn a_first_start_killed_after_creating_the_state_file_before_the_log_file_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        drop(Database::create(dir.path().join(DATA_FILE)).unwrap());
        assert!(!dir.path().join(LOG_FILE).exists());
        match Storage::open(dir.path(), LAYOUT) {
            Ok((_, loaded)) => assert!(loaded.fresh, "an empty state file is a fresh start"),
            Err(error) => panic!(
                "a directory whose state file holds nothing (first start killed before the \
                 log file was created) is refused: {error}"
            ),
        }
    }

    #[test]
    fn a_replica_killed_while_its_directory_is_first_initialized_starts_again() {
        // Killed after the files were created, before any commit.
        let dir = tempfile::tempdir().unwrap();
        for name in [DATA_FILE, LOG_FILE] {
            drop(Database::create(dir.path().join(name)).unwrap());
        }
        let mut refused = Vec::new();
        if let Err(error) = Storage::open(dir.path(), LAYOUT) {
            refused.push(format!("files created, nothing committed: {error}"));
        }

        // Killed between the two commits of `initialize`: the state file
        // has its marks, the log file none.
        let dir = tempfile::tempdir().unwrap();
        drop(Storage::open(dir.path(), LAYOUT).unwrap());
        std::fs::remove_file(dir.path().join(LOG_FILE)).unwrap();
        drop(Database::create(dir.path().join(LOG_FILE)).unwrap());
        if let Err(error) = Storage::open(dir.path(), LAYOUT) {
            refused.push(format!("state file initialized, log file not yet: {error}"));
        }
        assert!(refused.is_empty(), "{refused:#?}");
    }

    /// A directory whose log file was lost (deleted by hand, or on a disk
    /// that lost it) after the replica voted and prepared, before its first
    /// stable checkpoint was written. Opening it is refused ("the log was
    /// lost, and with it what the replica voted"), but that refused open
    /// creates an empty log file, and the next open takes the directory
    /// for one cut short at its first start: fresh, view 0, no prepared
    /// certificates. A replica started over it as a new one (`recovering`
    /// unset, as `LocalCluster::start` over an existing root does) votes in
    /// view 0 again, where it prepared before. Schedule: open, persist
    /// `View(2)` and a prepared certificate for 1; remove `log.redb`; open
    /// (refused); open again: it must still be refused.
    #[test]
    fn a_directory_that_lost_its_log_file_is_refused_on_every_start_not_only_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), LAYOUT).unwrap();
        storage
            .persist([&prepared(1, 0), &Durable::View(2)])
            .unwrap();
        drop(storage);
        std::fs::remove_file(dir.path().join(LOG_FILE)).unwrap();

        assert!(
            Storage::open(dir.path(), LAYOUT).is_err(),
            "a lost log file is refused"
        );
        match Storage::open(dir.path(), LAYOUT) {
            Err(_) => {}
            Ok((_, loaded)) => panic!(
                "opened again, the directory that lost its log is taken as {} with view {} \
                 and {} prepared certificates",
                if loaded.fresh { "fresh" } else { "not fresh" },
                loaded.recovered.view,
                loaded.recovered.prepared.len()
            ),
        }
    }
}

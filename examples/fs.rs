//! A replicated file store in the spirit of the paper's CBASE-FS: every replica
//! keeps real files in its own directory, and operations on different files
//! run in parallel.
//!
//! ```text
//! cargo run --release --example fs                        # 4 replicas + client, in this process
//! cargo run --release --example fs -- --workers 1         # the sequential baseline
//! cargo run --release --bin cbase-keygen -- --dir deploy  # cluster file + keys
//! cargo run --release --example fs -- --config deploy/cluster.toml --id 0 --key deploy/replica-0.key [--dir PATH]
//! cargo run --release --example fs -- --config deploy/cluster.toml  # a client
//! ```
//!
//! The client runs a small IOZone-like load over several files from
//! concurrent tasks (sequential writes, sequential reads, random writes,
//! random reads, 4 KiB each; `--ops N` sets the operations per phase, default
//! 2048), checks that every block reads back as written, and prints the
//! throughput of each phase. In local mode it also checks that
//! every replica's checkpoint digests agree and that the replicas' directories
//! end byte-for-byte identical.
//!
//! # The design in brief
//!
//! - Every object (file or directory) has a *handle*, a `u64`, and every table
//!   is keyed by handle: `inodes` (attributes), `dirs` (a directory's entries)
//!   and `files` (a file's contents, on disk). So a bare handle in a rule,
//!   `#[writes(handle)]`, declares that object in every table.
//! - A handle is proposed by the client in `create`/`mkdir` and checked to be
//!   unused by every replica. It cannot come from a counter in the state: a
//!   rule can only name keys computed from the arguments, and `create` must
//!   declare the new file's key before it runs.
//! - Reads and writes name only their handle, so I/O on different files runs
//!   in parallel; `create`, `mkdir`, `remove` and `rename` name the
//!   directories (and handles) they change.
//! - `readdir` reads one directory's entry list, `dirs[dir]`: a per-directory
//!   key, so listing a directory waits only for earlier changes to that
//!   directory, not for file I/O or for changes elsewhere. (Keeping entries in
//!   one table keyed by `(dir, name)` would have made a listing a range of that
//!   table, and a range needs the whole table, `entries[*]`: every `readdir`
//!   would then conflict with every `create` anywhere.)
//! - File contents live on disk in a custom container, [`DiskFiles`]. Each of
//!   its methods checks the access against the running request's rule before
//!   touching the disk, exactly like a [`Table`] does. Like a table it is
//!   atomic (a request's writes reach the disk when it returns, or never),
//!   and its entries for digests and checkpoints are 4 KiB blocks, so a
//!   checkpoint costs the blocks written since the last one, not the files.
//! - Writes are not fsynced, on any replica: durability comes from
//!   replication, not from one disk. A replica's directory is a working copy
//!   that is emptied when the replica starts; a restarted replica gets the
//!   state back from the others.

#[path = "support/args.rs"]
mod args;

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use args::Mode;
use cbase::core_crate::codec::{self, CodecError};
use cbase::core_crate::container::{BindError, Entries, EntryLog};
use cbase::core_crate::{TableId, scope, txn};
use cbase::prelude::*;
use cbase::{AccessKind, ProtocolConfig};
use serde::{Deserialize, Serialize};

// ANCHOR: types
/// The handle of the root directory, which exists from the start.
pub const ROOT: u64 = 1;
/// The most bytes one `read` returns.
pub const MAX_IO: u32 = 1 << 20;
/// The largest file. A bound matters: a faulty client must not be able to
/// make every replica allocate gigabytes (a snapshot holds every file).
pub const MAX_FILE_SIZE: u64 = 64 << 20;
/// The longest name, in bytes.
pub const MAX_NAME: usize = 255;

/// What an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Directory,
}

/// An object's attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub kind: Kind,
    /// Bytes for a file, entries for a directory.
    pub size: u64,
    /// Last modification, at the agreed time of the request that made it
    /// (nanoseconds since the Unix epoch): the same on every replica.
    pub mtime: u64,
}

/// One entry of a directory, as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub handle: u64,
    pub kind: Kind,
}

/// What a directory maps each name to. The kind is kept here too, so
/// `rename` and `remove` know what they move without reading the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub handle: u64,
    pub kind: Kind,
}

/// Why a file system operation was refused. Every refusal changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsError {
    /// No such name in the directory, or no object with this handle.
    NotFound,
    /// The name is taken.
    Exists,
    /// The handle proposed for a new object is taken; propose another.
    HandleInUse(u64),
    /// The handle names no directory (a file, or nothing).
    NotADirectory,
    /// The operation needs a file, and the handle names a directory.
    IsADirectory,
    /// A directory must be empty to be removed.
    NotEmpty,
    /// `remove` was told the name has one handle, and it has another (it was
    /// replaced since the client looked).
    HandleMismatch { found: u64 },
    /// A directory can be renamed within its parent only (see `rename`).
    DirectoryMove,
    /// Empty, too long, `.`, `..`, or containing `/` or NUL.
    InvalidName,
    /// The write would make the file larger than [`MAX_FILE_SIZE`].
    FileTooLarge,
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::NotFound => f.write_str("no such file or directory"),
            FsError::Exists => f.write_str("the name exists"),
            FsError::HandleInUse(h) => write!(f, "handle {h} is in use"),
            FsError::NotADirectory => f.write_str("not a directory"),
            FsError::IsADirectory => f.write_str("is a directory"),
            FsError::NotEmpty => f.write_str("directory not empty"),
            FsError::HandleMismatch { found } => write!(f, "the name now has handle {found}"),
            FsError::DirectoryMove => {
                f.write_str("a directory can only be renamed within its parent")
            }
            FsError::InvalidName => f.write_str("invalid name"),
            FsError::FileTooLarge => write!(f, "files are limited to {MAX_FILE_SIZE} bytes"),
        }
    }
}

impl std::error::Error for FsError {}
// ANCHOR_END: types

// ANCHOR: service
/// A replicated file store.
///
/// Every table is keyed by handle, so a bare handle in a rule declares that
/// object in every table: `#[writes(handle)]` covers its attributes
/// (`inodes[handle]`), its contents (`files[handle]`) and, for a directory,
/// its entries (`dirs[handle]`). I/O on different files is independent;
/// namespace changes conflict only with requests on the same directories.
#[cbase::service]
pub trait Fs {
    /// Creates an empty file `name` in directory `dir`. The client proposes
    /// the new file's `handle` (any unused value, e.g. [`propose_handle`]), so
    /// the rule can name it; every replica checks that it is unused.
    #[writes(dir, handle)]
    fn create(&self, dir: u64, name: String, handle: u64, ctx: &Context) -> Result<(), FsError>;

    /// Creates an empty directory, like `create`.
    #[writes(dir, handle)]
    fn mkdir(&self, dir: u64, name: String, handle: u64, ctx: &Context) -> Result<(), FsError>;

    /// The handle of `name` in `dir`. Reads only the directory's entries.
    #[reads(dirs[dir])]
    fn lookup(&self, dir: u64, name: String) -> Result<u64, FsError>;

    /// Writes `data` at `offset` (a hole before it reads as zeros); returns
    /// the file's new size.
    #[writes(handle)]
    fn write(&self, handle: u64, offset: u64, data: Vec<u8>, ctx: &Context)
    -> Result<u64, FsError>;

    /// Up to `len` bytes (at most [`MAX_IO`]) from `offset`; fewer at the end
    /// of the file.
    #[reads(handle)]
    fn read(&self, handle: u64, offset: u64, len: u32) -> Result<Vec<u8>, FsError>;

    /// Size, kind and modification time. Reads only the attributes.
    #[reads(inodes[handle])]
    fn getattr(&self, handle: u64) -> Result<Attr, FsError>;

    /// Removes `name` from `dir` together with the object it names, which
    /// must be `handle` (else `HandleMismatch`) and, if a directory, empty.
    /// The client names the handle because the rule must declare the object
    /// it deletes, and a name is only resolved to a handle while running.
    #[writes(dir, handle)]
    fn remove(&self, dir: u64, name: String, handle: u64, ctx: &Context) -> Result<(), FsError>;

    /// Moves `from_name` in `from_dir` to `to_name` in `to_dir`, which must
    /// not exist. It changes the two directories only: the object keeps its
    /// handle, so I/O on it runs in parallel with the rename. A directory is
    /// renamed within its parent only: moving it elsewhere would need a walk
    /// up from `to_dir` to rule out a cycle, through directories the rule
    /// cannot name in advance.
    #[writes(from_dir, to_dir)]
    fn rename(
        &self,
        from_dir: u64,
        from_name: String,
        to_dir: u64,
        to_name: String,
        ctx: &Context,
    ) -> Result<(), FsError>;

    /// The entries of `dir`, sorted by name. Reads one directory's entries
    /// (a per-directory key), so it waits only for changes to `dir`.
    #[reads(dirs[dir])]
    fn readdir(&self, dir: u64) -> Result<Vec<DirEntry>, FsError>;
}

/// A handle to propose for `name` in `dir`: derived from them, so a client
/// need not remember anything. If it is taken (say, by a file renamed away
/// from this name), propose the next `attempt`.
pub fn propose_handle(dir: u64, name: &str, attempt: u32) -> u64 {
    cbase::ValueHash::of(&(dir, name, attempt)).0
}
// ANCHOR_END: service

// ANCHOR: state
/// The replicated state: attributes and directory entries in tables, file
/// contents on disk.
#[derive(cbase::State)]
pub struct FileStore {
    inodes: Table<u64, Attr>,
    dirs: Table<u64, BTreeMap<String, Link>>,
    files: DiskFiles,
}
// ANCHOR_END: state

// ANCHOR: disk
/// Bytes per block: a file's contents are digested, checkpointed and
/// transferred block by block, so a 4 KiB write costs one block's hashing,
/// whatever the file's size.
pub const BLOCK: u64 = 4096;

/// File contents, one file per handle, in a directory on this replica's disk.
///
/// Access checks stay honest because the container checks them itself: every
/// method first asks [`scope::check`] whether the running request declared
/// `files[handle]` (the name is the field name, bound by `#[derive(State)]`),
/// and only then touches the disk, exactly as a [`Table`] does. An undeclared
/// access is refused before any byte is read or written.
///
/// Like a table, it is atomic: inside a request, creates, writes and removes
/// are staged in memory (reads see them) and reach the disk only when the
/// request returns. For digests and checkpoints its entries are the files'
/// blocks, keyed `(handle, block number)`, and each file's size, keyed
/// `(handle, u64::MAX)`; an [`EntryLog`] keeps their digest tree up to date
/// as writes commit, so a checkpoint costs the blocks written since the last
/// one, not the files stored.
///
/// A disk error is a local fault (the other replicas' disks are fine): the
/// request panics, and this replica stops agreeing with the others until it
/// is repaired, which BFT tolerates for up to f replicas.
pub struct DiskFiles {
    name: OnceLock<&'static str>,
    root: PathBuf,
    /// Held shared by every disk access and exclusively while a snapshot is
    /// installed, so no access sees the directory half swapped.
    swap: RwLock<()>,
    /// Names the staging and retired directories of snapshot installs.
    generation: AtomicU64,
    /// Whether every write is flushed to the disk before it returns
    /// (`--sync`): local configuration, the same choice on every replica.
    sync: bool,
    /// The digest tree of the blocks and sizes, and their recorded changes.
    log: EntryLog,
}

/// What a request did to one file, in order; applied when it returns.
#[derive(Clone, Debug)]
enum FileOp {
    Create,
    Write { offset: u64, data: Vec<u8> },
    Remove,
}

/// A request's staged operations, by handle.
type StagedOps = std::cell::RefCell<BTreeMap<u64, Vec<FileOp>>>;

/// The index under which a file's size is an entry.
const SIZE_INDEX: u64 = u64::MAX;

fn entry_key(handle: u64, index: u64) -> Vec<u8> {
    codec::encode(&(handle, index)).expect("pairs of integers encode")
}

fn block_value(bytes: &[u8]) -> Vec<u8> {
    codec::encode(&Contents(bytes.to_vec())).expect("byte strings encode")
}

fn size_value(size: u64) -> Vec<u8> {
    codec::encode(&size).expect("integers encode")
}

impl DiskFiles {
    /// Contents under `root/cbase-files`. What an earlier run left there is
    /// removed: the directory is a working copy, not a durable store. Only
    /// the subdirectories this type creates (all named `cbase-...`) are
    /// touched, so a `--dir` shared with other data is safe.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<DiskFiles> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        for entry in std::fs::read_dir(&root)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name == FILES_DIR
                || name.starts_with(STAGING_PREFIX)
                || name.starts_with(RETIRED_PREFIX);
            if ours {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        std::fs::create_dir(root.join(FILES_DIR))?;
        Ok(DiskFiles {
            name: OnceLock::new(),
            root,
            swap: RwLock::new(()),
            generation: AtomicU64::new(0),
            sync: false,
            log: EntryLog::new(),
        })
    }

    /// Flush every write to the disk before it returns (`fsync`): the
    /// disk-bound setting of the paper's file system, where a write waits for
    /// the disk and parallel execution overlaps those waits.
    pub fn with_sync(mut self, sync: bool) -> DiskFiles {
        self.sync = sync;
        self
    }

    /// The directory holding the files, named by handle in hex.
    pub fn dir(&self) -> PathBuf {
        self.root.join(FILES_DIR)
    }

    fn path(&self, handle: u64) -> PathBuf {
        self.dir().join(format!("{handle:016x}"))
    }

    fn id(&self) -> TableId {
        TableId::of(self.name.get().copied().unwrap_or(""))
    }

    /// The access check: the same decision on every replica, made before
    /// the disk is touched.
    fn check(&self, kind: AccessKind, handle: u64) {
        match self.name.get() {
            Some(name) => scope::check(kind, name, &Key::entry(name, &handle), || {
                handle.to_string()
            }),
            None => assert!(
                scope::current_method().is_none(),
                "DiskFiles used in a request before #[derive(State)] named it"
            ),
        }
    }

    /// Stages `op` in the running request, or applies it at once outside one.
    fn perform(&self, handle: u64, op: FileOp) {
        match txn::stage::<StagedOps>(self.id()) {
            Some(staged) => staged.borrow_mut().entry(handle).or_default().push(op),
            None => {
                let _shared = self.swap.read().expect("no panics while swapping");
                self.apply(handle, op);
            }
        }
    }

    /// Creates an empty file (or empties an existing one). Needs write access
    /// to `files[handle]`.
    pub fn create(&self, handle: u64) {
        self.check(AccessKind::Write, handle);
        self.perform(handle, FileOp::Create);
    }

    /// Writes `data` at `offset` of an existing file. Needs write access.
    pub fn write_at(&self, handle: u64, offset: u64, data: &[u8]) {
        self.check(AccessKind::Write, handle);
        self.perform(
            handle,
            FileOp::Write {
                offset,
                data: data.to_vec(),
            },
        );
    }

    /// Exactly `len` bytes from `offset` (the caller knows the size from the
    /// file's attributes), including what the running request wrote. Needs
    /// read access to `files[handle]`.
    pub fn read_at(&self, handle: u64, offset: u64, len: usize) -> Vec<u8> {
        self.check(AccessKind::Read, handle);
        let ops = txn::staged::<StagedOps>(self.id())
            .and_then(|staged| staged.borrow().get(&handle).cloned())
            .unwrap_or_default();
        // Operations after the last create or remove apply on top of it;
        // without one, on top of the file on disk.
        let restart = ops
            .iter()
            .rposition(|op| matches!(op, FileOp::Create | FileOp::Remove));
        let mut data = vec![0; len];
        match restart.map(|at| &ops[at]) {
            Some(FileOp::Remove) => {
                panic!("file {handle} was read after this request removed it")
            }
            Some(_) => {}
            None => {
                let _shared = self.swap.read().expect("no panics while swapping");
                let path = self.path(handle);
                read_up_to(&path, offset, &mut data)
                    .unwrap_or_else(|e| disk_failure("read", &path, e));
            }
        }
        for op in &ops[restart.map_or(0, |at| at + 1)..] {
            if let FileOp::Write {
                offset: at,
                data: written,
            } = op
            {
                overlay(&mut data, offset, *at, written);
            }
        }
        data
    }

    /// Deletes a file. Needs write access to `files[handle]`.
    pub fn remove(&self, handle: u64) {
        self.check(AccessKind::Write, handle);
        self.perform(handle, FileOp::Remove);
    }

    /// The file's size on disk, `None` if it does not exist.
    fn size_on_disk(&self, handle: u64) -> Option<u64> {
        match std::fs::metadata(self.path(handle)) {
            Ok(meta) => Some(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => disk_failure("inspect", &self.path(handle), e),
        }
    }

    /// Block `index` of a file `size` bytes long, read from disk (empty if
    /// the file ends before it).
    fn block_on_disk(&self, handle: u64, index: u64, size: u64) -> Vec<u8> {
        let start = index * BLOCK;
        if start >= size {
            return Vec::new();
        }
        let mut block = vec![0; (size.min(start + BLOCK) - start) as usize];
        let path = self.path(handle);
        read_up_to(&path, start, &mut block).unwrap_or_else(|e| disk_failure("read", &path, e));
        block
    }

    /// Applies one operation to the disk and records the entries it changed
    /// in the digest. The caller holds `swap` shared.
    fn apply(&self, handle: u64, op: FileOp) {
        let path = self.path(handle);
        let old_size = self.size_on_disk(handle);
        match op {
            FileOp::Create | FileOp::Remove => {
                let size = old_size.unwrap_or(0);
                for index in 0..size.div_ceil(BLOCK) {
                    let old = self.block_on_disk(handle, index, size);
                    self.log
                        .change(&entry_key(handle, index), Some(&block_value(&old)), None);
                }
                let new_size = matches!(op, FileOp::Create).then(|| size_value(0));
                self.log.change(
                    &entry_key(handle, SIZE_INDEX),
                    old_size.map(size_value).as_deref(),
                    new_size.as_deref(),
                );
                if matches!(op, FileOp::Create) {
                    File::create(&path).unwrap_or_else(|e| disk_failure("create", &path, e));
                } else {
                    std::fs::remove_file(&path)
                        .unwrap_or_else(|e| disk_failure("remove", &path, e));
                }
            }
            FileOp::Write { offset, data } => {
                let Some(old_size) = old_size else {
                    disk_failure("write", &path, io::ErrorKind::NotFound.into())
                };
                if data.is_empty() {
                    return;
                }
                let new_size = old_size.max(offset + data.len() as u64);
                // The blocks that change: from the old end (a hole fills with
                // zeros) or the write, whichever comes first, to the new end.
                let first = offset.min(old_size) / BLOCK;
                let last = (new_size - 1) / BLOCK;
                let mut changes = Vec::new();
                for index in first..=last {
                    let old = self.block_on_disk(handle, index, old_size);
                    let start = index * BLOCK;
                    let mut new = old.clone();
                    new.resize((new_size.min(start + BLOCK) - start) as usize, 0);
                    overlay(&mut new, start, offset, &data);
                    changes.push((index, old, new));
                }
                // Reported before the file changes: a checkpoint is read
                // from the files and then from what the log kept, while
                // requests run, and must not see a write the log has not.
                for (index, old, new) in changes {
                    let old = (!old.is_empty()).then(|| block_value(&old));
                    self.log.change(
                        &entry_key(handle, index),
                        old.as_deref(),
                        Some(&block_value(&new)),
                    );
                }
                if new_size != old_size {
                    self.log.change(
                        &entry_key(handle, SIZE_INDEX),
                        Some(&size_value(old_size)),
                        Some(&size_value(new_size)),
                    );
                }
                let written = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|mut file| {
                        file.seek(SeekFrom::Start(offset))?;
                        file.write_all(&data)?;
                        if self.sync {
                            file.sync_data()?;
                        }
                        Ok(())
                    });
                written.unwrap_or_else(|e| disk_failure("write", &path, e));
            }
        }
    }
}

/// Fills `buffer` from `path` at `offset`, as far as the file goes (the rest
/// stays as it is: zeros, for a read past a request's own extension).
fn read_up_to(path: &Path, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(())
}

/// Copies the part of `written` (placed at `at`) that falls in `buffer`
/// (placed at `start`).
fn overlay(buffer: &mut [u8], start: u64, at: u64, written: &[u8]) {
    let end = start + buffer.len() as u64;
    let (from, to) = (at.max(start), (at + written.len() as u64).min(end));
    if from < to {
        buffer[(from - start) as usize..(to - start) as usize]
            .copy_from_slice(&written[(from - at) as usize..(to - at) as usize]);
    }
}

const FILES_DIR: &str = "cbase-files";
const STAGING_PREFIX: &str = "cbase-staging-";
const RETIRED_PREFIX: &str = "cbase-retired-";

fn disk_failure(what: &str, path: &Path, error: io::Error) -> ! {
    panic!(
        "local disk failure: cannot {what} {}: {error}; this replica can no longer follow the agreed state",
        path.display()
    )
}

/// Every file in `dir` by handle, sorted: the canonical form of the contents.
/// Anything that is not a file named by a handle is an error, not skipped,
/// so a stray file cannot hide from the digest.
pub fn read_files(dir: &Path) -> io::Result<BTreeMap<u64, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let handle = name
            .to_str()
            .filter(|n| n.len() == 16)
            .and_then(|n| u64::from_str_radix(n, 16).ok())
            .filter(|_| entry.file_type().is_ok_and(|t| t.is_file()))
            .ok_or_else(|| {
                io::Error::other(format!("unexpected entry {name:?} in {}", dir.display()))
            })?;
        files.insert(handle, std::fs::read(entry.path())?);
    }
    Ok(files)
}

/// A block's contents in an entry, encoded as one byte string rather than
/// byte by byte (`codec::bytes`): the same bytes as a `Vec<u8>`'s encoding,
/// many times faster to produce and to read.
#[derive(Serialize, Deserialize)]
struct Contents(#[serde(with = "cbase::core_crate::codec::bytes")] Vec<u8>);

/// A snapshot written to a staging directory, waiting to be installed, with
/// the digest tree of its entries. Removed if dropped uninstalled (another
/// container's part was invalid).
struct Staged {
    dir: Option<PathBuf>,
    tree: Option<cbase::core_crate::merkle::DigestTree>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Reassembles files from snapshot entries, checking that they are exactly
/// what [`DiskFiles::encode_entries`] writes: for each file a size, and every
/// block of it full except the last, in canonical encoding.
fn files_of(entries: &Entries) -> Result<BTreeMap<u64, Vec<u8>>, CodecError> {
    let bad = |what: String| CodecError::Decode(what);
    let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
    let mut blocks: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    for (key, value) in entries {
        let (handle, index): (u64, u64) = codec::decode(key)?;
        if entry_key(handle, index) != *key {
            return Err(bad(format!(
                "file entry key {handle}/{index} is not canonical"
            )));
        }
        if index == SIZE_INDEX {
            let size: u64 = codec::decode(value)?;
            if size_value(size) != *value || size > MAX_FILE_SIZE {
                return Err(bad(format!("file {handle} has an invalid size")));
            }
            sizes.insert(handle, size);
        } else {
            let Contents(bytes) = codec::decode(value)?;
            if block_value(&bytes) != *value {
                return Err(bad(format!(
                    "block {index} of file {handle} is not canonical"
                )));
            }
            blocks.insert((handle, index), bytes);
        }
    }
    let mut files = BTreeMap::new();
    for (handle, size) in sizes {
        let mut data = Vec::with_capacity(size as usize);
        for index in 0..size.div_ceil(BLOCK) {
            let block = blocks
                .remove(&(handle, index))
                .ok_or_else(|| bad(format!("file {handle} lacks block {index}")))?;
            let expected = (size.min((index + 1) * BLOCK) - index * BLOCK) as usize;
            if block.len() != expected {
                return Err(bad(format!(
                    "block {index} of file {handle} has the wrong length"
                )));
            }
            data.extend_from_slice(&block);
        }
        files.insert(handle, data);
    }
    if let Some((handle, index)) = blocks.keys().next() {
        return Err(bad(format!(
            "block {index} of file {handle} is beyond its size"
        )));
    }
    Ok(files)
}

impl Container for DiskFiles {
    fn bind(&self, name: &'static str) -> Result<(), BindError> {
        let existing = *self.name.get_or_init(|| name);
        if existing == name {
            Ok(())
        } else {
            Err(BindError {
                existing,
                requested: name,
            })
        }
    }

    fn name(&self) -> Option<&'static str> {
        self.name.get().copied()
    }

    /// The staged operations, in order; nothing to encode ahead.
    fn prepare(&self, staged: &txn::Staged) -> Result<Box<dyn Any>, CodecError> {
        let staged = staged
            .downcast_ref::<StagedOps>()
            .expect("DiskFiles stages its own operations");
        Ok(Box::new(std::mem::take(&mut *staged.borrow_mut())))
    }

    /// Applies the operations to the disk, file by file.
    fn commit(&self, prepared: Box<dyn Any>) {
        let ops = prepared
            .downcast::<BTreeMap<u64, Vec<FileOp>>>()
            .expect("commit takes what prepare returned");
        let _shared = self.swap.read().expect("no panics while swapping");
        for (handle, ops) in *ops {
            for op in ops {
                self.apply(handle, op);
            }
        }
    }

    fn entry_log(&self) -> &EntryLog {
        &self.log
    }

    /// Every file's size and blocks, read from disk.
    fn encode_entries(&self) -> Result<Entries, CodecError> {
        let _shared = self.swap.read().expect("no panics while swapping");
        let files = read_files(&self.dir())
            .map_err(|e| CodecError::Encode(format!("reading the files: {e}")))?;
        let mut entries = Entries::new();
        for (handle, data) in files {
            entries.insert(entry_key(handle, SIZE_INDEX), size_value(data.len() as u64));
            for (index, block) in data.chunks(BLOCK as usize).enumerate() {
                entries.insert(entry_key(handle, index as u64), block_value(block));
            }
        }
        Ok(entries)
    }

    /// Checks the entries and writes the files to a fresh staging directory
    /// beside the live one, which stays untouched.
    fn decode_entries(&self, entries: &Entries) -> Result<Box<dyn Any + Send>, CodecError> {
        let files = files_of(entries)?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let mut staged = Staged {
            dir: Some(self.root.join(format!("{STAGING_PREFIX}{generation}"))),
            tree: None,
        };
        let dir = staged.dir.as_deref().expect("just set");
        let written = std::fs::create_dir(dir).and_then(|()| {
            files.iter().try_for_each(|(handle, data)| {
                std::fs::write(dir.join(format!("{handle:016x}")), data)
            })
        });
        written.map_err(|e| {
            CodecError::Decode(format!("cannot stage the files in {}: {e}", dir.display()))
        })?;
        staged.tree = Some(EntryLog::tree_of(entries));
        Ok(Box::new(staged))
    }

    /// Swaps the staged directory in with two renames, under the exclusive
    /// lock, so no request sees anything between the old and the new contents.
    fn install(&self, staged: Box<dyn Any + Send>) {
        let mut staged = staged
            .downcast::<Staged>()
            .expect("install takes what decode_entries returned");
        let dir = staged
            .dir
            .take()
            .expect("a staged snapshot is installed once");
        let retired = self.root.join(format!(
            "{RETIRED_PREFIX}{}",
            self.generation.fetch_add(1, Ordering::Relaxed)
        ));
        {
            let _exclusive = self.swap.write().expect("no panics while swapping");
            std::fs::rename(self.dir(), &retired)
                .unwrap_or_else(|e| disk_failure("retire", &self.dir(), e));
            std::fs::rename(&dir, self.dir()).unwrap_or_else(|e| disk_failure("install", &dir, e));
            // Still under the lock that hides the new files from
            // `encode_entries`: a checkpoint read must not see them while
            // the log keeps the old files' versions to put back.
            self.log
                .install(staged.tree.take().expect("decode_entries built the tree"));
        }
        let _ = std::fs::remove_dir_all(retired);
    }
}
// ANCHOR_END: disk

// ANCHOR: impl
impl FileStore {
    /// A store with an empty root directory, keeping contents under `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<FileStore> {
        FileStore::open_with(root, false)
    }

    /// As [`FileStore::open`], flushing every write to the disk when `sync`.
    pub fn open_with(root: impl Into<PathBuf>, sync: bool) -> io::Result<FileStore> {
        let store = FileStore {
            inodes: Table::new(),
            dirs: Table::new(),
            files: DiskFiles::open(root)?.with_sync(sync),
        };
        // Outside any request nothing is checked: this is the initial state,
        // the same on every replica.
        store.inodes.insert(
            ROOT,
            Attr {
                kind: Kind::Directory,
                size: 0,
                mtime: 0,
            },
        );
        store.dirs.insert(ROOT, BTreeMap::new());
        Ok(store)
    }

    /// Where the file contents are on disk.
    pub fn data_dir(&self) -> PathBuf {
        self.files.dir()
    }

    fn is_directory(&self, dir: u64) -> Result<(), FsError> {
        if self.dirs.contains_key(&dir) {
            Ok(())
        } else {
            Err(FsError::NotADirectory)
        }
    }

    fn link_in(&self, dir: u64, name: &str) -> Result<Link, FsError> {
        self.dirs.with(&dir, |entries| {
            entries
                .ok_or(FsError::NotADirectory)?
                .get(name)
                .copied()
                .ok_or(FsError::NotFound)
        })
    }

    /// Records that `dir` changed at `now`, gaining `delta` entries.
    fn touch_dir(&self, dir: u64, delta: i64, now: u64) {
        self.inodes.update(&dir, |attr| {
            attr.size = attr.size.saturating_add_signed(delta);
            attr.mtime = now;
        });
    }

    fn new_object(
        &self,
        dir: u64,
        name: String,
        handle: u64,
        kind: Kind,
        now: u64,
    ) -> Result<(), FsError> {
        check_name(&name)?;
        self.is_directory(dir)?;
        if self.inodes.contains_key(&handle) {
            return Err(FsError::HandleInUse(handle));
        }
        if self.link_in(dir, &name).is_ok() {
            return Err(FsError::Exists);
        }
        // Checked everything: from here on nothing fails.
        match kind {
            Kind::File => self.files.create(handle),
            Kind::Directory => {
                self.dirs.insert(handle, BTreeMap::new());
            }
        }
        self.inodes.insert(
            handle,
            Attr {
                kind,
                size: 0,
                mtime: now,
            },
        );
        self.dirs
            .update(&dir, |entries| entries.insert(name, Link { handle, kind }));
        self.touch_dir(dir, 1, now);
        Ok(())
    }

    fn file(&self, handle: u64) -> Result<Attr, FsError> {
        let attr = self.inodes.get(&handle).ok_or(FsError::NotFound)?;
        if attr.kind == Kind::Directory {
            return Err(FsError::IsADirectory);
        }
        Ok(attr)
    }
}

fn check_name(name: &str) -> Result<(), FsError> {
    let invalid = name.is_empty()
        || name.len() > MAX_NAME
        || name == "."
        || name == ".."
        || name.contains(['/', '\0']);
    if invalid {
        Err(FsError::InvalidName)
    } else {
        Ok(())
    }
}

impl Fs for FileStore {
    fn create(&self, dir: u64, name: String, handle: u64, ctx: &Context) -> Result<(), FsError> {
        self.new_object(dir, name, handle, Kind::File, ctx.timestamp_nanos())
    }

    fn mkdir(&self, dir: u64, name: String, handle: u64, ctx: &Context) -> Result<(), FsError> {
        self.new_object(dir, name, handle, Kind::Directory, ctx.timestamp_nanos())
    }

    fn lookup(&self, dir: u64, name: String) -> Result<u64, FsError> {
        Ok(self.link_in(dir, &name)?.handle)
    }

    fn write(
        &self,
        handle: u64,
        offset: u64,
        data: Vec<u8>,
        ctx: &Context,
    ) -> Result<u64, FsError> {
        let attr = self.file(handle)?;
        if data.is_empty() {
            return Ok(attr.size);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= MAX_FILE_SIZE);
        let size = attr.size.max(end.ok_or(FsError::FileTooLarge)?);
        // `inodes[handle]` was checked by `get` above; `files[handle]` is
        // checked by the container before the disk is touched.
        self.files.write_at(handle, offset, &data);
        self.inodes.insert(
            handle,
            Attr {
                size,
                mtime: ctx.timestamp_nanos(),
                ..attr
            },
        );
        Ok(size)
    }

    fn read(&self, handle: u64, offset: u64, len: u32) -> Result<Vec<u8>, FsError> {
        let attr = self.file(handle)?;
        if offset >= attr.size {
            return Ok(Vec::new());
        }
        let len = u64::from(len.min(MAX_IO)).min(attr.size - offset);
        Ok(self.files.read_at(handle, offset, len as usize))
    }

    fn getattr(&self, handle: u64) -> Result<Attr, FsError> {
        self.inodes.get(&handle).ok_or(FsError::NotFound)
    }

    fn remove(&self, dir: u64, name: String, handle: u64, ctx: &Context) -> Result<(), FsError> {
        let link = self.link_in(dir, &name)?;
        if link.handle != handle {
            return Err(FsError::HandleMismatch { found: link.handle });
        }
        match link.kind {
            Kind::Directory => {
                if self
                    .dirs
                    .with(&handle, |entries| entries.is_some_and(|e| !e.is_empty()))
                {
                    return Err(FsError::NotEmpty);
                }
                self.dirs.remove(&handle);
            }
            Kind::File => self.files.remove(handle),
        }
        self.inodes.remove(&handle);
        self.dirs.update(&dir, |entries| entries.remove(&name));
        self.touch_dir(dir, -1, ctx.timestamp_nanos());
        Ok(())
    }

    fn rename(
        &self,
        from_dir: u64,
        from_name: String,
        to_dir: u64,
        to_name: String,
        ctx: &Context,
    ) -> Result<(), FsError> {
        let link = self.link_in(from_dir, &from_name)?;
        self.is_directory(to_dir)?;
        if from_dir == to_dir && from_name == to_name {
            return Ok(());
        }
        check_name(&to_name)?;
        if link.kind == Kind::Directory && from_dir != to_dir {
            return Err(FsError::DirectoryMove);
        }
        if self.link_in(to_dir, &to_name).is_ok() {
            return Err(FsError::Exists);
        }
        let now = ctx.timestamp_nanos();
        self.dirs
            .update(&from_dir, |entries| entries.remove(&from_name));
        self.dirs
            .update(&to_dir, |entries| entries.insert(to_name, link));
        self.touch_dir(from_dir, -1, now);
        self.touch_dir(to_dir, 1, now);
        Ok(())
    }

    fn readdir(&self, dir: u64) -> Result<Vec<DirEntry>, FsError> {
        self.dirs.with(&dir, |entries| {
            let entries = entries.ok_or(FsError::NotADirectory)?;
            Ok(entries
                .iter()
                .map(|(name, link)| DirEntry {
                    name: name.clone(),
                    handle: link.handle,
                    kind: link.kind,
                })
                .collect())
        })
    }
}
// ANCHOR_END: impl

/// Creates `name` in `dir` (a file or a directory), proposing handles until
/// one is free; returns the handle.
pub async fn create_object<I>(
    fs: &FsClient<I>,
    dir: u64,
    name: &str,
    kind: Kind,
) -> Result<u64, BoxError>
where
    I: cbase::Invoke<FsRequest, FsResponse>,
{
    for attempt in 0..16 {
        let handle = propose_handle(dir, name, attempt);
        let created = match kind {
            Kind::File => fs.create(dir, name.to_owned(), handle).await?,
            Kind::Directory => fs.mkdir(dir, name.to_owned(), handle).await?,
        };
        match created {
            Ok(()) => return Ok(handle),
            Err(FsError::HandleInUse(_)) => continue,
            Err(other) => return Err(format!("cannot create {name}: {other}").into()),
        }
    }
    Err(format!("no free handle for {name}").into())
}

/// Errors of the client side, sendable between tasks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

const FILES: u64 = 8;
/// The load's I/O size.
const IO: usize = 4096;
const IO_BYTES: u64 = IO as u64;
/// Tasks per file: each owns an interleaved share of the file's blocks.
const TASKS_PER_FILE: u64 = 4;

/// A small deterministic generator, so runs are repeatable.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The contents of `block` of `file` as written in `version`: distinct for
/// every triple, so a misplaced or stale block cannot pass for the right one.
fn block_data(file: u64, block: u64, version: u64) -> Vec<u8> {
    let seed = mix((file << 48) ^ (block << 16) ^ version);
    (0..IO as u64 / 8)
        .flat_map(|i| mix(seed.wrapping_add(i)).to_le_bytes())
        .collect()
}

/// One measured phase.
struct Phase {
    name: &'static str,
    operations: u64,
    bytes: u64,
    elapsed: Duration,
}

/// The files of a run and what each block should hold.
struct Run {
    handles: Vec<u64>,
    blocks: u64,
    /// The last version written to each block, per file.
    versions: Vec<Vec<u64>>,
    /// Blocks that read back wrong (should stay 0).
    mismatches: Arc<AtomicU64>,
}

/// Runs `op(task, file, handle, i)` for `per_task` steps in every task
/// (`TASKS_PER_FILE` tasks per file, all concurrent) and times the lot.
async fn phase<I, F, Fut>(
    fs: &FsClient<I>,
    run: &Run,
    name: &'static str,
    per_task: u64,
    bytes_per_op: u64,
    op: F,
) -> Result<Phase, BoxError>
where
    I: cbase::Invoke<FsRequest, FsResponse> + Clone + 'static,
    F: Fn(FsClient<I>, u64, u64, u64, u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (file, &handle) in run.handles.iter().enumerate() {
        for task in 0..TASKS_PER_FILE {
            let steps: Vec<Fut> = (0..per_task)
                .map(|i| op(fs.clone(), task, file as u64, handle, i))
                .collect();
            tasks.push(tokio::spawn(async move {
                for step in steps {
                    step.await?;
                }
                Ok::<(), BoxError>(())
            }));
        }
    }
    for task in tasks {
        task.await??;
    }
    let operations = per_task * TASKS_PER_FILE * run.handles.len() as u64;
    Ok(Phase {
        name,
        operations,
        bytes: operations * bytes_per_op,
        elapsed: start.elapsed(),
    })
}

/// The IOZone-like load: creates `FILES` files of `blocks` blocks under a fresh
/// directory, then writes and reads them sequentially and at random.
async fn workload<I>(fs: FsClient<I>, blocks: u64) -> Result<(Vec<Phase>, Run), BoxError>
where
    I: cbase::Invoke<FsRequest, FsResponse> + Clone + Send + Sync + 'static,
{
    let mut phases = Vec::new();
    let start = Instant::now();
    // A fresh directory per run, so a client of a long-running cluster does
    // not collide with an earlier run (the client may use its own clock).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let top = create_object(&fs, ROOT, &format!("iozone-{nanos}"), Kind::Directory).await?;
    let halves = [
        create_object(&fs, top, "even", Kind::Directory).await?,
        create_object(&fs, top, "odd", Kind::Directory).await?,
    ];
    let mut handles = Vec::new();
    for file in 0..FILES {
        handles.push(
            create_object(
                &fs,
                halves[file as usize % 2],
                &format!("file-{file}"),
                Kind::File,
            )
            .await?,
        );
    }
    phases.push(Phase {
        name: "create",
        operations: 3 + FILES,
        bytes: 0,
        elapsed: start.elapsed(),
    });
    let mut run = Run {
        handles,
        blocks,
        versions: vec![vec![0; blocks as usize]; FILES as usize],
        mismatches: Arc::new(AtomicU64::new(0)),
    };
    let per_task = blocks / TASKS_PER_FILE;

    // Task t of a file owns blocks t, t + T, t + 2T, ...: its writes never
    // race another task's, so the expected contents are known exactly.
    phases.push(
        phase(
            &fs,
            &run,
            "sequential write",
            per_task,
            IO_BYTES,
            |fs, task, file, handle, i| async move {
                let block = i * TASKS_PER_FILE + task;
                fs.write(handle, block * IO_BYTES, block_data(file, block, 0))
                    .await??;
                Ok(())
            },
        )
        .await?,
    );
    let mismatches = Arc::clone(&run.mismatches);
    phases.push(
        phase(
            &fs,
            &run,
            "sequential read",
            per_task,
            IO_BYTES,
            |fs, task, file, handle, i| {
                let mismatches = Arc::clone(&mismatches);
                async move {
                    let block = i * TASKS_PER_FILE + task;
                    let data = fs.read(handle, block * IO_BYTES, IO as u32).await??;
                    if data != block_data(file, block, 0) {
                        mismatches.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                }
            },
        )
        .await?,
    );
    // Random writes: the version is the step, so the last one per block is
    // known from the same generator the tasks use.
    let random_block = move |task: u64, file: u64, i: u64| {
        (mix((file << 40) ^ (task << 32) ^ i) % per_task) * TASKS_PER_FILE + task
    };
    phases.push(
        phase(
            &fs,
            &run,
            "random write",
            per_task,
            IO_BYTES,
            |fs, task, file, handle, i| async move {
                let block = random_block(task, file, i);
                fs.write(handle, block * IO_BYTES, block_data(file, block, i + 1))
                    .await??;
                Ok(())
            },
        )
        .await?,
    );
    for file in 0..FILES {
        for task in 0..TASKS_PER_FILE {
            for i in 0..per_task {
                run.versions[file as usize][random_block(task, file, i) as usize] = i + 1;
            }
        }
    }
    let versions = Arc::new(run.versions.clone());
    phases.push(
        phase(
            &fs,
            &run,
            "random read",
            per_task,
            IO_BYTES,
            |fs, task, file, handle, i| {
                let (mismatches, versions) = (Arc::clone(&mismatches), Arc::clone(&versions));
                async move {
                    let block = mix((file << 40) ^ (task << 32) ^ i ^ 0x5eed) % blocks;
                    let data = fs.read(handle, block * IO_BYTES, IO as u32).await??;
                    if data != block_data(file, block, versions[file as usize][block as usize]) {
                        mismatches.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                }
            },
        )
        .await?,
    );
    Ok((phases, run))
}

/// Reads every file back in full and compares it with what was written;
/// returns the number of wrong blocks (sizes included).
async fn verify<I>(fs: &FsClient<I>, run: &Run) -> Result<u64, BoxError>
where
    I: cbase::Invoke<FsRequest, FsResponse>,
{
    let mut wrong = run.mismatches.load(Ordering::Relaxed);
    let chunk = 64 * IO as u64;
    for (file, &handle) in run.handles.iter().enumerate() {
        let attr = fs.getattr(handle).await??;
        if attr.size != run.blocks * IO as u64 {
            wrong += 1;
        }
        let mut offset = 0;
        while offset < attr.size {
            let data = fs.read(handle, offset, chunk as u32).await??;
            for (k, block) in data.chunks(IO).enumerate() {
                let index = offset / IO as u64 + k as u64;
                if block != block_data(file as u64, index, run.versions[file][index as usize]) {
                    wrong += 1;
                }
            }
            offset += chunk;
        }
    }
    Ok(wrong)
}

/// Prints the result of `verify`: how many blocks read back wrong.
fn print_data_check(wrong: u64) {
    println!(
        "data:     {}",
        if wrong == 0 {
            "every block read back as written".to_owned()
        } else {
            format!("{wrong} blocks WRONG")
        }
    );
}

fn print_phases(phases: &[Phase]) {
    println!(
        "{:<18} {:>7} {:>7} {:>9} {:>10} {:>8}",
        "phase", "ops", "MiB", "time", "ops/s", "MiB/s"
    );
    for p in phases {
        let secs = p.elapsed.as_secs_f64();
        let mib = p.bytes as f64 / (1 << 20) as f64;
        println!(
            "{:<18} {:>7} {:>7.1} {:>7.2} s {:>10.0} {:>8.1}",
            p.name,
            p.operations,
            mib,
            secs,
            p.operations as f64 / secs,
            mib / secs
        );
    }
}

/// Waits until every replica's files on disk are identical (the slowest
/// replicas may still be executing the last requests); returns whether they
/// became so and how many files each holds.
pub async fn disks_converge(dirs: &[PathBuf], within: Duration) -> (bool, usize) {
    let deadline = Instant::now() + within;
    loop {
        let trees: Vec<_> = dirs.iter().map(|d| read_files(d).ok()).collect();
        let same = trees.iter().all(|t| t.is_some() && *t == trees[0]);
        if same || Instant::now() > deadline {
            return (same, trees[0].as_ref().map_or(0, BTreeMap::len));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cbase::logging::init();
    args::report(run().await.map_err(|e| e as Box<dyn std::error::Error>))
}

async fn run() -> Result<(), BoxError> {
    let cli = args::parse_or_exit();
    let workers = cli.workers.unwrap_or(16);
    // `--ops`: block operations per phase, spread over the files.
    let unit = FILES * TASKS_PER_FILE;
    let blocks = (cli.ops.unwrap_or(2048).max(unit) / unit) * TASKS_PER_FILE;
    match cli.mode {
        Mode::Local => {
            let temp: Vec<tempfile::TempDir> = (0..4)
                .map(|_| tempfile::tempdir())
                .collect::<Result<_, _>>()?;
            let stores = temp
                .iter()
                .map(|t| FileStore::open_with(t.path(), cli.sync))
                .collect::<Result<Vec<_>, _>>()?;
            let dirs: Vec<PathBuf> = stores.iter().map(FileStore::data_dir).collect();
            let stores = std::cell::RefCell::new(stores.into_iter());
            // ANCHOR: local
            let cluster = LocalCluster::builder()
                .replicas(4)
                .workers(workers)
                // Checkpoints every 64 batches (not 128), so that even a
                // short run has several digests covering the files.
                .protocol(ProtocolConfig {
                    checkpoint_interval: 64,
                    window: 256,
                    ..ProtocolConfig::default()
                })
                .start(|| FsService(stores.borrow_mut().next().expect("one store per replica")))
                .await?;
            let fs = FsClient::new(cluster.client()?);
            // ANCHOR_END: local
            println!(
                "4 replicas (f = 1), {workers} workers each; {FILES} files of {} KiB, {} concurrent tasks, {} KiB per operation",
                blocks * IO as u64 / 1024,
                FILES * TASKS_PER_FILE,
                IO / 1024
            );
            let (phases, run) = workload(fs.clone(), blocks).await?;
            print_phases(&phases);
            let wrong = verify(&fs, &run).await?;
            print_data_check(wrong);
            let (checkpoints, agree) = args::digests_agree(&cluster);
            println!(
                "digests:  {checkpoints} checkpoints on every replica, {}",
                if agree { "all agree" } else { "DIFFER" }
            );
            let (same, files) = disks_converge(&dirs, Duration::from_secs(10)).await;
            println!(
                "disks:    {files} files per replica, {}",
                if same {
                    "identical on all 4 replicas"
                } else {
                    "DIFFER"
                }
            );
            cluster.shutdown().await;
            if wrong != 0 || !agree || !same {
                return Err("data read back wrong, or the replicas disagree".into());
            }
        }
        Mode::Replica { config, id, key } => {
            let dir = cli
                .dir
                .unwrap_or_else(|| PathBuf::from(format!("./cbase-fs-data/replica-{id}")));
            let store = FileStore::open_with(&dir, cli.sync)?;
            println!(
                "replica {id} keeps its files in {}",
                store.data_dir().display()
            );
            let options = cbase::net::deploy::ReplicaOptions {
                executor: ExecutorBuilder::new().workers(workers),
                data_dir: cli.data.clone(),
                metrics: cli.metrics.clone(),
                listen: cli.listen.clone(),
                ..Default::default()
            };
            let node =
                cbase::net::deploy::start_replica(&config, id, &key, options, FsService(store))
                    .await?;
            args::serve_until_interrupted(node).await;
        }
        Mode::Client { config } => {
            let client = cbase::net::deploy::client_from_file(&config, Default::default())?;
            let fs = FsClient::new(client);
            let (phases, run) = workload(fs.clone(), blocks).await?;
            print_phases(&phases);
            let wrong = verify(&fs, &run).await?;
            print_data_check(wrong);
            if wrong != 0 {
                return Err("data read back wrong".into());
            }
        }
    }
    Ok(())
}

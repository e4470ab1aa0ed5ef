//! The file store of `examples/fs.rs`: its operations on a 4-replica cluster,
//! files read back exactly, namespace semantics, identical directories on
//! every replica, the rules, and the on-disk container's checks and snapshots.

#[allow(dead_code)]
#[path = "../examples/fs.rs"]
mod file_store;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cbase::core_crate::{Entries, codec};
use cbase::prelude::*;
use cbase::{ProtocolConfig, conflicts};
use file_store::{
    DiskFiles, FileStore, FsClient, FsError, FsRequest, FsService, Kind, MAX_FILE_SIZE, ROOT,
    create_object, disks_converge, propose_handle, read_files,
};

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(0x9e37_79b9)) as u8)
        .collect()
}

fn small_checkpoints() -> ProtocolConfig {
    ProtocolConfig {
        checkpoint_interval: 8,
        window: 32,
        ..ProtocolConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_on_four_replicas_reads_back_exactly_and_disks_end_identical() {
    let temp: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let stores: Vec<FileStore> = temp
        .iter()
        .map(|t| FileStore::open(t.path()).unwrap())
        .collect();
    let dirs: Vec<PathBuf> = stores.iter().map(FileStore::data_dir).collect();
    let stores = std::cell::RefCell::new(stores.into_iter());
    let cluster = LocalCluster::builder()
        .replicas(4)
        .workers(4)
        .protocol(small_checkpoints())
        .start(|| FsService(stores.borrow_mut().next().unwrap()))
        .await
        .unwrap();
    let fs = FsClient::new(cluster.client().unwrap());

    // Creating: names, handles and directories are checked.
    let docs = create_object(&fs, ROOT, "docs", Kind::Directory)
        .await
        .unwrap();
    let a = create_object(&fs, docs, "a.txt", Kind::File).await.unwrap();
    assert_eq!(
        fs.create(docs, "a.txt".into(), 77).await.unwrap(),
        Err(FsError::Exists)
    );
    assert_eq!(
        fs.create(docs, "b.txt".into(), a).await.unwrap(),
        Err(FsError::HandleInUse(a))
    );
    assert_eq!(
        fs.create(a, "x".into(), 78).await.unwrap(),
        Err(FsError::NotADirectory)
    );
    for bad in ["", ".", "..", "a/b", "nul\0"] {
        assert_eq!(
            fs.create(ROOT, bad.into(), 79).await.unwrap(),
            Err(FsError::InvalidName),
            "{bad:?}"
        );
    }

    // Writing and reading: holes read as zeros, short reads at the end.
    assert_eq!(fs.write(a, 0, b"hello".to_vec()).await.unwrap(), Ok(5));
    assert_eq!(fs.write(a, 10, b"world".to_vec()).await.unwrap(), Ok(15));
    assert_eq!(
        fs.read(a, 0, 100).await.unwrap().unwrap(),
        b"hello\0\0\0\0\0world"
    );
    assert_eq!(fs.read(a, 13, 10).await.unwrap().unwrap(), b"ld");
    assert_eq!(fs.read(a, 100, 10).await.unwrap().unwrap(), b"");
    assert_eq!(fs.write(a, 3, b"LP".to_vec()).await.unwrap(), Ok(15));
    assert_eq!(fs.read(a, 0, 5).await.unwrap().unwrap(), b"helLP");
    assert_eq!(
        fs.write(docs, 0, b"x".to_vec()).await.unwrap(),
        Err(FsError::IsADirectory)
    );
    assert_eq!(
        fs.write(a, MAX_FILE_SIZE, b"x".to_vec()).await.unwrap(),
        Err(FsError::FileTooLarge)
    );
    assert_eq!(fs.read(999, 0, 1).await.unwrap(), Err(FsError::NotFound));

    // Several files written concurrently, in 4 KiB blocks, read back exactly.
    let mut files = Vec::new();
    for i in 0..4u64 {
        let handle = create_object(&fs, docs, &format!("f{i}"), Kind::File)
            .await
            .unwrap();
        files.push((handle, pattern(i, 40 * 1024 + 123)));
    }
    let mut tasks = Vec::new();
    for (handle, data) in files.clone() {
        let fs = fs.clone();
        tasks.push(tokio::spawn(async move {
            for (k, block) in data.chunks(4096).enumerate() {
                fs.write(handle, k as u64 * 4096, block.to_vec())
                    .await
                    .unwrap()
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for (handle, data) in &files {
        assert_eq!(&fs.read(*handle, 0, 1 << 20).await.unwrap().unwrap(), data);
        let attr = fs.getattr(*handle).await.unwrap().unwrap();
        assert_eq!((attr.kind, attr.size), (Kind::File, data.len() as u64));
        assert!(attr.mtime > 0, "the agreed time, not zero");
    }

    // getattr and readdir.
    let docs_attr = fs.getattr(docs).await.unwrap().unwrap();
    assert_eq!((docs_attr.kind, docs_attr.size), (Kind::Directory, 5));
    let listing = fs.readdir(docs).await.unwrap().unwrap();
    let names: Vec<&str> = listing.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a.txt", "f0", "f1", "f2", "f3"], "sorted by name");
    assert_eq!((listing[0].handle, listing[0].kind), (a, Kind::File));
    assert_eq!(fs.readdir(a).await.unwrap(), Err(FsError::NotADirectory));

    // Rename: the handle (and so the contents) follow the name.
    fs.rename(docs, "a.txt".into(), ROOT, "moved.txt".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fs.lookup(docs, "a.txt".into()).await.unwrap(),
        Err(FsError::NotFound)
    );
    assert_eq!(fs.lookup(ROOT, "moved.txt".into()).await.unwrap(), Ok(a));
    assert_eq!(
        fs.read(a, 0, 5).await.unwrap().unwrap(),
        b"helLP",
        "contents kept"
    );
    assert_eq!(
        fs.rename(ROOT, "moved.txt".into(), docs, "f0".into())
            .await
            .unwrap(),
        Err(FsError::Exists)
    );
    assert_eq!(
        fs.rename(ROOT, "nothing".into(), docs, "x".into())
            .await
            .unwrap(),
        Err(FsError::NotFound)
    );
    assert_eq!(
        fs.rename(ROOT, "docs".into(), docs, "inside".into())
            .await
            .unwrap(),
        Err(FsError::DirectoryMove)
    );
    fs.rename(ROOT, "docs".into(), ROOT, "papers".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fs.lookup(ROOT, "papers".into()).await.unwrap(), Ok(docs));
    // The old name is free again, but its derived handle still belongs to the
    // moved file: the client proposes the next one.
    let again = create_object(&fs, docs, "a.txt", Kind::File).await.unwrap();
    assert_ne!(again, a);
    assert_eq!(fs.read(again, 0, 10).await.unwrap().unwrap(), b"");

    // Remove: the client names the handle it means; directories must be empty.
    assert_eq!(
        fs.remove(ROOT, "moved.txt".into(), again).await.unwrap(),
        Err(FsError::HandleMismatch { found: a })
    );
    fs.remove(ROOT, "moved.txt".into(), a)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fs.read(a, 0, 1).await.unwrap(), Err(FsError::NotFound));
    assert_eq!(fs.getattr(a).await.unwrap(), Err(FsError::NotFound));
    assert_eq!(
        fs.remove(ROOT, "papers".into(), docs).await.unwrap(),
        Err(FsError::NotEmpty)
    );
    let root: Vec<String> = fs
        .readdir(ROOT)
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(root, ["papers"]);
    let removed = files.pop().unwrap();
    fs.remove(docs, "f3".into(), removed.0)
        .await
        .unwrap()
        .unwrap();

    // Every replica ends with the same files, byte for byte, and the same
    // checkpoint digests.
    let (same, count) = disks_converge(&dirs, Duration::from_secs(10)).await;
    assert!(same, "the replicas' directories differ");
    assert_eq!(count, 4, "f0..f2, the new a.txt and nothing else");
    let on_disk = read_files(&dirs[0]).unwrap();
    for (handle, data) in &files {
        assert_eq!(&on_disk[handle], data);
    }
    // Checkpoints compare by sequence number: a replica that caught up by
    // state transfer skipped some, and one that lags behind may still be
    // taking the last ones.
    let deadline = Instant::now() + Duration::from_secs(120);
    let agreement = loop {
        let agreement = cluster.checkpoint_agreement();
        if agreement.common >= 2 || Instant::now() > deadline {
            break agreement;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        agreement.agree(),
        "checkpoint digests differ: {agreement:?}"
    );
    assert!(
        agreement.common >= 2,
        "checkpoints every replica took: {agreement:?}"
    );
    for replica in cluster.replicas() {
        assert_eq!(replica.metrics().diverged.load(Ordering::Relaxed), 0);
    }
    cluster.shutdown().await;
}

#[test]
fn rules_let_io_on_different_files_run_in_parallel() {
    let access = |request: FsRequest| request.access_set();
    let write = |handle| {
        access(FsRequest::Write {
            handle,
            offset: 0,
            data: vec![1],
        })
    };
    let read = |handle| {
        access(FsRequest::Read {
            handle,
            offset: 0,
            len: 1,
        })
    };
    let create = |dir, handle| {
        access(FsRequest::Create {
            dir,
            name: "x".into(),
            handle,
        })
    };
    let readdir = |dir| access(FsRequest::Readdir { dir });
    let rename = |from_dir, to_dir| {
        access(FsRequest::Rename {
            from_dir,
            from_name: "a".into(),
            to_dir,
            to_name: "b".into(),
        })
    };
    let getattr = |handle| access(FsRequest::Getattr { handle });

    assert!(!conflicts(&write(10), &write(11)), "different files");
    assert!(!conflicts(&write(10), &read(11)));
    assert!(conflicts(&write(10), &read(10)), "same file");
    assert!(conflicts(&write(10), &getattr(10)));
    assert!(!conflicts(&read(10), &getattr(10)), "two reads");
    assert!(!conflicts(&create(1, 10), &create(2, 11)), "different dirs");
    assert!(conflicts(&create(1, 10), &create(1, 11)), "same dir");
    assert!(conflicts(&create(1, 10), &write(10)), "the new file");
    assert!(conflicts(&readdir(1), &create(1, 10)), "per-directory key");
    assert!(!conflicts(&readdir(1), &create(2, 10)));
    assert!(!conflicts(&readdir(1), &write(10)), "listing vs file I/O");
    assert!(
        !conflicts(&rename(1, 2), &write(10)),
        "I/O on a file being renamed"
    );
    assert!(conflicts(&rename(1, 2), &readdir(2)));
    assert_eq!(
        access(FsRequest::Read {
            handle: 7,
            offset: 0,
            len: 1
        }),
        AccessSet::none().read(Key::value(&7u64)),
        "a bare handle: the object in every table"
    );
}

/// A service over the bare container, to see its checks from a request.
#[cbase::service]
trait Peek {
    #[reads(files[handle])]
    fn peek(&self, handle: u64) -> Vec<u8>;

    /// Declares one file, reads the next one.
    #[reads(files[handle])]
    fn peek_next(&self, handle: u64) -> Vec<u8>;

    /// Writes a file, reads the write back, then makes an undeclared access.
    #[writes(files[handle])]
    fn scribble_then_fail(&self, handle: u64) -> Vec<u8>;

    /// Writes past the end of a file and reads the whole of it back.
    #[writes(files[handle])]
    fn extend(&self, handle: u64, offset: u64, data: Vec<u8>) -> Vec<u8>;
}

#[derive(cbase::State)]
struct Bare {
    files: DiskFiles,
}

impl Peek for Bare {
    fn peek(&self, handle: u64) -> Vec<u8> {
        self.files.read_at(handle, 0, 2)
    }
    fn peek_next(&self, handle: u64) -> Vec<u8> {
        self.files.read_at(handle + 1, 0, 2)
    }
    fn scribble_then_fail(&self, handle: u64) -> Vec<u8> {
        self.files.write_at(handle, 0, b"XX");
        let seen = self.files.read_at(handle, 0, 2);
        assert_eq!(seen, b"XX", "a request reads its own write");
        // Undeclared: refused, and the write above goes with it.
        self.files.create(handle + 100);
        seen
    }
    fn extend(&self, handle: u64, offset: u64, data: Vec<u8>) -> Vec<u8> {
        self.files.write_at(handle, offset, &data);
        self.files.read_at(handle, 0, offset as usize + data.len())
    }
}

#[tokio::test]
async fn a_failed_request_leaves_no_trace_on_disk() {
    let temp = tempfile::tempdir().unwrap();
    let files = DiskFiles::open(temp.path()).unwrap();
    files.create(1);
    files.write_at(1, 0, b"ok");
    let invoker = LocalInvoker::start(
        ExecutorBuilder::new().workers(2),
        PeekService(Bare { files }),
    )
    .unwrap();
    let digest = invoker.executor().service().0.digest();
    let peek = PeekClient::new(&invoker);
    let error = peek.scribble_then_fail(1).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Exec(ExecError::UndeclaredAccess(refusal)) if refusal.key == "101"),
        "{error:?}"
    );
    assert_eq!(peek.peek(1).await.unwrap(), b"ok");
    let dir = temp.path().join("cbase-files");
    assert_eq!(
        read_files(&dir).unwrap().len(),
        1,
        "file 101 was never created"
    );
    assert_eq!(invoker.executor().service().0.digest(), digest);

    // A write that leaves a hole reads back zeros there, inside the request
    // and after it; the digest kept as blocks commit matches one computed
    // from the files.
    let whole = peek.extend(1, 5000, b"end".to_vec()).await.unwrap();
    assert_eq!(&whole[..2], b"ok");
    assert!(whole[2..5000].iter().all(|b| *b == 0));
    assert_eq!(&whole[5000..], b"end");
    assert_eq!(read_files(&dir).unwrap()[&1], whole);
    let state = &invoker.executor().service().0;
    assert_ne!(state.digest(), digest);
    assert_eq!(state.digest(), state.snapshot().unwrap().digest());
}

#[tokio::test]
async fn an_undeclared_file_access_is_refused_before_the_disk_is_touched() {
    let temp = tempfile::tempdir().unwrap();
    let files = DiskFiles::open(temp.path()).unwrap();
    for handle in [1, 2] {
        files.create(handle);
        files.write_at(handle, 0, b"ok");
    }
    let invoker = LocalInvoker::start(
        ExecutorBuilder::new().workers(2),
        PeekService(Bare { files }),
    )
    .unwrap();
    let peek = PeekClient::new(invoker);
    assert_eq!(peek.peek(1).await.unwrap(), b"ok");
    let error = peek.peek_next(1).await.unwrap_err();
    let ClientError::Exec(ExecError::UndeclaredAccess(refusal)) = error else {
        panic!("expected an undeclared access, got {error:?}");
    };
    assert_eq!(
        (
            refusal.method.as_str(),
            refusal.table.as_str(),
            refusal.key.as_str()
        ),
        ("peek_next", "files", "2")
    );
}

#[test]
fn disk_snapshots_are_canonical_and_restore_into_another_directory() {
    let ctx = Context::new(1_000, [7; 32]);
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = FileStore::open(one.path()).unwrap();
    // Outside a request nothing is checked: drive the store directly.
    use file_store::Fs as _;
    let dir = propose_handle(ROOT, "d", 0);
    source.mkdir(ROOT, "d".into(), dir, &ctx).unwrap();
    // Created in descending handle order: the snapshot is sorted anyway.
    for (i, handle) in [900u64, 500, 100].into_iter().enumerate() {
        source.create(dir, format!("f{i}"), handle, &ctx).unwrap();
        source
            .write(handle, 0, pattern(handle, 5000 + i), &ctx)
            .unwrap();
    }
    let snapshot = source.snapshot().unwrap();

    let target = FileStore::open(two.path()).unwrap();
    target.create(ROOT, "stale".into(), 42, &ctx).unwrap();
    target.write(42, 0, b"old".to_vec(), &ctx).unwrap();
    target.restore(&snapshot).unwrap();
    assert_eq!(target.digest(), source.digest());
    assert_eq!(source.digest(), snapshot.digest());
    assert_eq!(
        read_files(&target.data_dir()).unwrap(),
        read_files(&source.data_dir()).unwrap()
    );
    assert_eq!(target.read(500, 0, 10).unwrap(), pattern(500, 10));
    assert_eq!(target.getattr(42), Err(FsError::NotFound));
    let leftovers: Vec<_> = std::fs::read_dir(two.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        leftovers,
        ["cbase-files"],
        "no staging or retired directories left"
    );

    // A bad snapshot changes nothing and leaves nothing behind.
    let three = tempfile::tempdir().unwrap();
    let bare = DiskFiles::open(three.path()).unwrap();
    bare.bind("files").unwrap();
    let key = |handle: u64, index: u64| codec::encode(&(handle, index)).unwrap();
    let size = |n: u64| codec::encode(&n).unwrap();
    let block = |bytes: &[u8]| codec::encode(&bytes.to_vec()).unwrap();
    let valid: Entries = [(key(1, u64::MAX), size(1)), (key(1, 0), block(&[1]))].into();
    let bad: [Entries; 3] = [
        // A block the size does not cover.
        [
            (key(1, u64::MAX), size(1)),
            (key(1, 0), block(&[1])),
            (key(1, 1), block(&[2])),
        ]
        .into(),
        // A missing block.
        [(key(1, u64::MAX), size(5))].into(),
        // A block of the wrong length.
        [(key(1, u64::MAX), size(1)), (key(1, 0), block(&[1, 2]))].into(),
    ];
    for entries in &bad {
        assert!(bare.decode_entries(entries).is_err());
    }
    let staged = bare.decode_entries(&valid).unwrap();
    drop(staged); // as when another container's part is invalid
    assert!(read_files(&bare.dir()).unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(three.path()).unwrap().count(),
        1,
        "only `cbase-files`: the staging directory went with the dropped value"
    );
}

//! The executor: a worker pool fed by the parallelizer.
//!
//! Requests are submitted in agreed order. The [`Parallelizer`] decides when
//! each may start; ready requests go to a job queue served by `W` worker
//! threads. A worker that finishes a request releases its keys and, if that
//! made other requests ready, runs one of them itself (no hand-off, so a chain
//! of dependent requests stays on one thread) and queues the rest for the
//! other workers. `workers(1)` is the sequential baseline (the paper's BASE): the
//! same code path, with no concurrency.
//!
//! The queue lives under the scheduler's lock, and idle workers wait on their
//! own crossbeam [`Parker`] in a stack: a new job wakes exactly one worker, the
//! one that went idle last (its cache is the warmest), and none if no worker
//! is idle (a busy one takes the job when it finishes). A shared channel
//! instead wakes its longest
//! waiting receiver, and may wake one that then finds the job already taken;
//! on a conflicting workload, where every request waits for the one before,
//! those extra wake-ups were most of the cost of running with more than one
//! worker. A job of reads may also run on the thread that submits it
//! ([`Executor::run_reads`]) when it can start at once: for small reads, a
//! worker's wake-up and the hand-off cost more than the reads.
//!
//! Each request runs in a [transaction](crate::txn): its writes are staged and
//! committed when it returns, before its keys are released, so no other
//! request sees half of it; a request that panics or is refused an access
//! leaves no trace. Each reply goes to the sink as soon as its request
//! finishes, tagged with the caller's sequence tag. A panicking request
//! becomes an [`ExecError`] reply, the same on every replica, and the worker
//! carries on. A [barrier](Executor::barrier)
//! runs a closure at a point in the order where everything submitted before it
//! has finished and nothing after it has started: that is where checkpoints
//! take their snapshot and digest.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;

use crossbeam::sync::{Parker, Unparker};
use parking_lot::{Condvar, Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

use crate::access::AccessSet;
use crate::context::Context;
use crate::key::{Key, TableId};
use crate::parallelizer::{Parallelizer, TaskId};
use crate::scope::{self, UndeclaredAccess};
use crate::service::{self, Request, Service};
use crate::state::StateError;
use crate::txn;

/// The outcome of one request, delivered as soon as it finishes.
#[derive(Debug)]
pub struct Reply<R> {
    /// The tag given to [`Executor::submit`].
    pub tag: u64,
    /// The response, or why there is none.
    pub result: Result<R, ExecError>,
}

/// Why a request produced no response. Deterministic: every correct replica
/// produces the same error for the same request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ExecError {
    /// The request touched state its rule does not declare; the access was
    /// refused before it happened.
    #[error(transparent)]
    UndeclaredAccess(#[from] UndeclaredAccess),
    /// The request panicked.
    #[error("request `{method}` panicked: {message}")]
    Panicked {
        /// The method of the request.
        method: String,
        /// The panic message.
        message: String,
    },
    /// The request returned, but what it wrote could not be committed (a
    /// value that cannot be encoded, say); nothing it wrote was applied.
    #[error("request `{method}` returned but its writes were not committed: {message}")]
    NotCommitted {
        /// The method of the request.
        method: String,
        /// Why.
        message: String,
    },
    /// The replicas refused the request before ordering it: signed with the
    /// requests sent with it, it is larger than any proposal may be, so it
    /// could never be ordered.
    #[error(
        "the request was refused unordered: its signed batch takes {bytes} bytes, more than \
         the replicas' limit of {limit} (ProtocolConfig::max_batch_bytes); send smaller \
         requests, or raise the limit on every replica and lower \
         ClientConfig::max_request_bytes to match"
    )]
    TooLarge {
        /// The encoded size of the signed batch.
        bytes: u64,
        /// The replicas' limit.
        limit: u64,
    },
    /// The request was not executed, and never will be: its number is
    /// below one its client key already used on the same lane, `last`, so
    /// the replicas take it for an old request (each lane's numbers must
    /// grow). `NetClient` numbers its requests above `last` and sends the
    /// call again by itself (a client restarted with its key whose earlier
    /// run numbered above its clock); it fails with this only if that keeps
    /// happening.
    #[error(
        "request {number} on lane {lane} was not executed: this client key has already used \
         {last} on that lane; another client is using the same key, or this client's clock \
         went back since it last ran (clients number their requests from the wall clock)"
    )]
    Superseded {
        /// The lane.
        lane: u32,
        /// The request's number.
        number: u64,
        /// The highest number the key used on the lane.
        last: u64,
    },
    /// The request was not executed: the replicas no longer keep a session
    /// for this client (it was idle too long, or evicted as the least
    /// recently used when their client table was full), and the request's
    /// number is one the old session may have executed. Whether it did is
    /// unknown; it will never execute now. A client's next requests must be
    /// numbered above `floor` (`NetClient` does this by itself).
    #[error(
        "request {number} on lane {lane} was not executed and never will be: the replicas no \
         longer keep this client's session (idle too long, or evicted when the client table \
         was full; see ProtocolConfig::sessions), so they cannot tell whether it ran before. \
         Check whether its effect is there before sending it again; new requests must be \
         numbered above {floor}"
    )]
    SessionExpired {
        /// The lane.
        lane: u32,
        /// The request's number.
        number: u64,
        /// The number the client's next requests must be above.
        floor: u64,
    },
    /// The request was not executed: its number is further ahead of the
    /// replicas' agreed clock (in nanoseconds) than they allow, so the
    /// client's clock is far ahead or its numbers are not from a clock.
    ///
    /// Unlike the other refusals this one is not final: replicas keep no
    /// trace of a number they refused as too far ahead (so that a client
    /// cannot push what they remember to the end of the number space), and
    /// the same request ordered again once the agreed clock has come within
    /// reach of its number (a late retransmission, or a faulty primary
    /// replaying it) executes. Fix the client's clock before calling the
    /// operation again if running it twice would matter.
    #[error(
        "request {number} on lane {lane} was refused: request numbers may be at most {limit} \
         now (the agreed clock plus ProtocolConfig::sessions.max_number_ahead, in nanoseconds); \
         check the client machine's clock"
    )]
    NumberAhead {
        /// The lane.
        lane: u32,
        /// The request's number.
        number: u64,
        /// The highest number allowed when it was ordered.
        limit: u64,
    },
    /// The request was not executed: its client already uses as many
    /// lanes as the replicas allow one client.
    #[error(
        "request {number} on lane {lane} was refused: a client may use at most {limit} lanes \
         (ProtocolConfig::sessions.max_lanes_per_session); lower ClientConfig::lanes"
    )]
    TooManyLanes {
        /// The lane.
        lane: u32,
        /// The request's number.
        number: u64,
        /// The most lanes per client.
        limit: usize,
    },
    /// The replicas refused the request before ordering it: it came in a
    /// batch of more requests than any proposal may carry, so it could never
    /// be ordered.
    #[error(
        "the request was refused unordered: it came in a batch of {requests} requests, more \
         than the replicas' limit of {limit} (ProtocolConfig::max_batch_requests); set \
         ClientConfig::max_batch to at most {limit}"
    )]
    TooManyRequests {
        /// The requests in the batch.
        requests: u64,
        /// The replicas' limit.
        limit: u64,
    },
}

impl ExecError {
    fn from_panic(method: &str, payload: Box<dyn Any + Send>) -> ExecError {
        let payload = match payload.downcast::<UndeclaredAccess>() {
            Ok(refusal) => return ExecError::UndeclaredAccess(*refusal),
            Err(other) => other,
        };
        ExecError::Panicked {
            method: method.to_owned(),
            message: panic_message(&*payload),
        }
    }
}

/// A request's access set, or the error it fails with if its rule panics
/// (a key expression that indexes an argument out of range, say): the
/// same on every replica, which must not go down with it.
fn access_of<R: Request>(request: &R) -> Result<AccessSet, ExecError> {
    catch_unwind(AssertUnwindSafe(|| request.access_set())).map_err(|payload| ExecError::Panicked {
        method: request.method().to_owned(),
        message: format!("its rule panicked: {}", panic_message(&*payload)),
    })
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic payload is not a string".to_owned()
    }
}

/// The executor has been shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the executor has shut down")]
pub struct Closed;

/// Why [`Executor::try_submit`] did not take a request; the request is handed back.
#[derive(Debug, thiserror::Error)]
pub enum TrySubmitError<T> {
    /// The window is full; try again after some requests finish.
    #[error("the executor's window is full")]
    Full(T),
    /// The executor has shut down.
    #[error("the executor has shut down")]
    Closed(T),
}

/// A table no state has: requests that declare nothing read it, so that
/// they finish before a barrier starts, and never wait for each other.
const BARRIER_FENCE: TableId = TableId::of("\0cbase:barrier-fence");

/// Configures and starts an [`Executor`].
#[derive(Clone, Debug)]
pub struct ExecutorBuilder {
    workers: usize,
    window: usize,
}

impl Default for ExecutorBuilder {
    fn default() -> Self {
        ExecutorBuilder {
            workers: 16,
            window: 4096,
        }
    }
}

impl ExecutorBuilder {
    /// A builder with the defaults (16 workers, a window of 4096).
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of worker threads (default 16). `1` is the sequential baseline.
    ///
    /// # Panics
    /// If `workers` is 0.
    pub fn workers(mut self, workers: usize) -> Self {
        assert!(workers >= 1, "an executor needs at least one worker");
        self.workers = workers;
        self
    }

    /// How many requests may be in flight (submitted, not finished) before
    /// [`Executor::submit`] waits (default 4096). Bounds memory whatever the
    /// input rate.
    ///
    /// # Panics
    /// If `window` is 0 or above [`Parallelizer::MAX_CAPACITY`] (32,766).
    pub fn window(mut self, window: usize) -> Self {
        assert!(window >= 1, "the window must hold at least one request");
        assert!(
            window <= Parallelizer::MAX_CAPACITY,
            "the window may hold at most {} requests, not {window}",
            Parallelizer::MAX_CAPACITY
        );
        self.window = window;
        self
    }

    /// Names the service's containers, checks its rules against its tables,
    /// and starts the workers. `sink` receives every reply, on a worker thread.
    pub fn start<S: Service>(
        self,
        service: S,
        sink: impl Fn(Reply<S::Response>) + Send + Sync + 'static,
    ) -> Result<Executor<S>, StateError> {
        service::prepare(&service)?;
        quiet_refusals_in_panic_hook();
        let tables: Vec<_> = service
            .state()
            .table_names()
            .into_iter()
            .map(crate::TableId::of)
            .collect();
        let parkers: Vec<Parker> = (0..self.workers).map(|_| Parker::new()).collect();
        let shared = Arc::new(Shared {
            service,
            sched: Mutex::new(Sched {
                parallelizer: Parallelizer::new(self.window, &tables),
                waiting: (0..self.window).map(|_| None).collect(),
                closed: false,
                ready: Vec::new(),
                jobs: VecDeque::new(),
                idle: Vec::with_capacity(self.workers),
            }),
            changed: Condvar::new(),
            unparkers: parkers.iter().map(|p| p.unparker().clone()).collect(),
            sink: Box::new(sink),
            work: Arc::default(),
        });
        let threads = parkers
            .into_iter()
            .enumerate()
            .map(|(i, parker)| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("cbase-worker-{i}"))
                    .spawn(move || shared.serve(i, &parker))
                    .expect("the OS refused to start a worker thread")
            })
            .collect();
        Ok(Executor {
            shared,
            threads,
            workers: self.workers,
        })
    }
}

/// Runs a service's requests on a worker pool, in an order consistent with
/// their declared access sets. See the [module documentation](self).
pub struct Executor<S: Service> {
    shared: Arc<Shared<S>>,
    threads: Vec<JoinHandle<()>>,
    workers: usize,
}

type BarrierFn<S> = Box<dyn FnOnce(&S) + Send>;

/// A request whose access set only reads, with that set: what
/// [`Executor::submit_reads`] and [`Executor::run_reads`] take.
#[derive(Debug)]
pub struct ReadOnly<R> {
    request: R,
    access: AccessSet,
}

impl<R: Request> ReadOnly<R> {
    /// `request` if its access set writes nothing; handed back if it does.
    /// A request whose rule panics is handed back too: it is not a read.
    pub fn new(request: R) -> Result<ReadOnly<R>, R> {
        match access_of(&request) {
            Ok(access) if access.writes().is_empty() => Ok(ReadOnly { request, access }),
            _ => Err(request),
        }
    }

    /// The request.
    pub fn request(&self) -> &R {
        &self.request
    }
}

enum Work<S: Service> {
    Request {
        tag: u64,
        request: S::Request,
        /// Its access set, or the error it fails with if its rule panicked:
        /// then it runs nothing and locks only what a request that declares
        /// nothing locks.
        access: Result<AccessSet, ExecError>,
        ctx: Context,
    },
    Barrier(BarrierFn<S>),
    /// Read-only requests run one after another as one job (see
    /// [`Executor::submit_reads`]); `access` is the union of theirs.
    Reads {
        reads: Vec<(u64, S::Request, AccessSet, Context)>,
        access: AccessSet,
    },
}

struct Job<S: Service> {
    task: TaskId,
    work: Work<S>,
}

struct Sched<S: Service> {
    parallelizer: Parallelizer,
    /// Work of scheduled tasks that are not ready yet, by task slot.
    waiting: Vec<Option<Work<S>>>,
    /// Set once the executor is idle and stopping: workers then exit.
    closed: bool,
    ready: Vec<TaskId>,
    /// Ready jobs no worker has taken yet, oldest first.
    jobs: VecDeque<Job<S>>,
    /// Workers waiting for a job, the one that went idle last at the end.
    idle: Vec<usize>,
}

/// Queues a ready job; returns the idle worker to wake for it, if any.
fn queue_job<S: Service>(
    jobs: &mut VecDeque<Job<S>>,
    idle: &mut Vec<usize>,
    job: Job<S>,
) -> Option<usize> {
    jobs.push_back(job);
    idle.pop()
}

/// The service of an executor, shared with another thread
/// ([`Executor::service_handle`]).
pub struct ServiceHandle<S: Service>(Arc<Shared<S>>);

impl<S: Service> std::ops::Deref for ServiceHandle<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.0.service
    }
}

struct Shared<S: Service> {
    service: S,
    sched: Mutex<Sched<S>>,
    /// Signalled whenever a request finishes (room in the window, maybe idle)
    /// and when the executor closes.
    changed: Condvar,
    /// Wakes worker `i` from its parker.
    unparkers: Vec<Unparker>,
    sink: Box<dyn Fn(Reply<S::Response>) + Send + Sync>,
    /// What the workers did, for metrics.
    work: Arc<crate::work::WorkCounters>,
}

impl<S: Service> Executor<S> {
    /// Submits the next request in agreed order, waiting while the window is full.
    pub fn submit(&self, tag: u64, ctx: Context, request: S::Request) -> Result<(), Closed> {
        let access = access_of(&request);
        let work = Work::Request {
            tag,
            request,
            access,
            ctx,
        };
        self.shared.queue(work)
    }

    /// Submits the next request in agreed order if the window has room.
    pub fn try_submit(
        &self,
        tag: u64,
        ctx: Context,
        request: S::Request,
    ) -> Result<(), TrySubmitError<S::Request>> {
        let access = access_of(&request);
        let work = Work::Request {
            tag,
            request,
            access,
            ctx,
        };
        self.shared
            .schedule(work, false, false)
            .map(|_| ())
            .map_err(|(work, closed)| match work {
                Work::Request { request, .. } if closed => TrySubmitError::Closed(request),
                Work::Request { request, .. } => TrySubmitError::Full(request),
                Work::Barrier(_) | Work::Reads { .. } => unreachable!("a request was submitted"),
            })
    }

    /// Submits read-only requests (their access sets read, never write) to
    /// run together as one job, one after another, after everything
    /// submitted before that writes what they read, and before anything
    /// submitted after that does. Each runs in its own scope (an access
    /// outside its own rule is refused) and gets its own reply. One job
    /// instead of one per request spares a worker wake-up each: reads on the
    /// fast path arrive many at a time. Waits while the window is full.
    pub fn submit_reads(
        &self,
        reads: Vec<(u64, Context, ReadOnly<S::Request>)>,
    ) -> Result<(), Closed> {
        match Self::reads_work(reads) {
            Some(work) => self.shared.queue(work),
            None => Ok(()),
        }
    }

    /// Runs read-only requests as [`submit_reads`](Self::submit_reads)
    /// does, but on the calling thread if they can start at once (nothing
    /// submitted before them writes what they read and is unfinished):
    /// that spares waking a worker and the hand-off to it, which for small
    /// reads cost more than the reads. Otherwise they are queued as
    /// `submit_reads` queues them, for the worker that finishes the last
    /// conflicting write. Requests that become ready when these finish go
    /// to the workers. Waits while the window is full.
    pub fn run_reads(
        &self,
        reads: Vec<(u64, Context, ReadOnly<S::Request>)>,
    ) -> Result<(), Closed> {
        let Some(work) = Self::reads_work(reads) else {
            return Ok(());
        };
        match self.shared.schedule(work, true, true) {
            Ok(Some(job)) => {
                self.shared.run(job.work);
                self.shared.finish_elsewhere(job.task);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(_) => Err(Closed),
        }
    }

    /// One job for `reads`, whose access set is the union of theirs;
    /// `None` if there are none.
    fn reads_work(reads: Vec<(u64, Context, ReadOnly<S::Request>)>) -> Option<Work<S>> {
        if reads.is_empty() {
            return None;
        }
        let mut union = AccessSet::none();
        let reads = reads
            .into_iter()
            .map(|(tag, ctx, ReadOnly { request, access })| {
                for key in access.reads() {
                    union.push_read(*key);
                }
                (tag, request, access, ctx)
            })
            .collect();
        Some(Work::Reads {
            reads,
            access: union,
        })
    }

    /// Submits a barrier: `f` runs once everything submitted before it has
    /// finished, and nothing submitted after it starts until `f` returns.
    /// Checkpoints use this to snapshot and digest a state that is the same on
    /// every correct replica. Waits while the window is full.
    pub fn barrier(&self, f: impl FnOnce(&S) + Send + 'static) -> Result<(), Closed> {
        self.shared.queue(Work::Barrier(Box::new(f)))
    }

    /// Blocks until every submitted request and barrier has finished.
    pub fn wait_idle(&self) {
        let mut sched = self.shared.sched.lock();
        while sched.parallelizer.in_flight() > 0 {
            self.shared.changed.wait(&mut sched);
        }
    }

    /// The number of requests and barriers submitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.shared.sched.lock().parallelizer.in_flight()
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// A handle on what the workers have done (requests, failures, time
    /// busy, running times), to read while the executor runs.
    pub fn work(&self) -> crate::work::WorkHandle {
        crate::work::WorkHandle {
            counters: Arc::clone(&self.shared.work),
            workers: self.workers,
        }
    }

    /// The service. Reading its state while requests run sees a moving target;
    /// use [`Executor::barrier`] or [`Executor::wait_idle`] first.
    pub fn service(&self) -> &S {
        &self.shared.service
    }

    /// A handle on the service that outlives this borrow, for a thread that
    /// reads its state while requests run (with the same caveat as
    /// [`Executor::service`]: what it reads must be safe to read then, such
    /// as [`State::snapshot_at`](crate::State::snapshot_at)).
    pub fn service_handle(&self) -> ServiceHandle<S> {
        ServiceHandle(Arc::clone(&self.shared))
    }

    /// Finishes everything submitted, then stops the workers.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.wait_idle();
        {
            let mut sched = self.shared.sched.lock();
            sched.closed = true;
            self.shared.changed.notify_all();
        }
        for unparker in &self.shared.unparkers {
            unparker.unpark();
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a cbase worker thread panicked outside a request");
            }
        }
    }
}

impl<S: Service> Drop for Executor<S> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<S: Service> Shared<S> {
    /// Schedules `work`; on refusal hands it back with whether the executor is closed.
    /// Schedules `work`, waiting while the window is full, for the workers.
    fn queue(&self, work: Work<S>) -> Result<(), Closed> {
        self.schedule(work, true, false)
            .map(|_| ())
            .map_err(|_| Closed)
    }

    /// With `inline`, work that is ready at once is handed back for the
    /// caller to run instead of being queued.
    // The refused work goes back to its caller by value: boxing it would
    // allocate on every submission of the hot path to shrink a rare error.
    #[allow(clippy::result_large_err)]
    fn schedule(
        &self,
        work: Work<S>,
        wait_for_room: bool,
        inline: bool,
    ) -> Result<Option<Job<S>>, (Work<S>, bool)> {
        let substitute;
        let access = match &work {
            // A request that touches nothing still must not overlap a
            // barrier: it has a reply, which goes into the exactly-once
            // table that a checkpoint digests. It reads a fence that only
            // barriers (which write everything) conflict with.
            Work::Request {
                access: Ok(access), ..
            }
            | Work::Reads { access, .. }
                if !access.is_empty() =>
            {
                access
            }
            Work::Request { .. } | Work::Reads { .. } => {
                substitute = AccessSet::none().read(Key::Table(BARRIER_FENCE));
                &substitute
            }
            Work::Barrier(_) => {
                substitute = AccessSet::exclusive();
                &substitute
            }
        };
        let mut sched = self.sched.lock();
        loop {
            if sched.closed {
                return Err((work, true));
            }
            if !sched.parallelizer.is_full() {
                break;
            }
            if !wait_for_room {
                return Err((work, false));
            }
            self.changed.wait(&mut sched);
        }
        let scheduled = sched
            .parallelizer
            .schedule(access)
            .expect("the window has room");
        match &work {
            Work::Request { .. } => self.work.submitted(),
            Work::Reads { reads, .. } => {
                for _ in reads {
                    self.work.submitted();
                }
            }
            Work::Barrier(_) => {}
        }
        if scheduled.ready && inline {
            return Ok(Some(Job {
                task: scheduled.task,
                work,
            }));
        }
        if scheduled.ready {
            let Sched { jobs, idle, .. } = &mut *sched;
            let wake = queue_job(
                jobs,
                idle,
                Job {
                    task: scheduled.task,
                    work,
                },
            );
            drop(sched);
            self.wake(wake);
        } else {
            sched.waiting[scheduled.task.index()] = Some(work);
        }
        Ok(None)
    }

    fn wake(&self, worker: Option<usize>) {
        if let Some(worker) = worker {
            self.unparkers[worker].unpark();
        }
    }

    /// Worker `me`'s loop: take a job and run it, and the jobs it makes ready,
    /// until the executor closes.
    fn serve(&self, me: usize, parker: &Parker) {
        while let Some(mut job) = self.next_job(me, parker) {
            loop {
                self.run(job.work);
                match self.finish(job.task) {
                    Some(next) => job = next,
                    None => break,
                }
            }
        }
    }

    /// The oldest queued job, waiting in the idle stack while there is none;
    /// `None` once the executor has closed.
    fn next_job(&self, me: usize, parker: &Parker) -> Option<Job<S>> {
        let mut sched = self.sched.lock();
        loop {
            if let Some(job) = sched.jobs.pop_front() {
                return Some(job);
            }
            if sched.closed {
                return None;
            }
            // Whoever queues the next job pops us and unparks us; a token
            // left by an unpark that came first makes `park` return at once,
            // so no wake-up is lost between unlocking and parking.
            if !sched.idle.contains(&me) {
                sched.idle.push(me);
            }
            MutexGuard::unlocked(&mut sched, || parker.park());
        }
    }

    fn run(&self, work: Work<S>) {
        match work {
            Work::Request {
                tag,
                request,
                access: Ok(access),
                ctx,
            } => self.run_request(tag, request, access, &ctx),
            Work::Request {
                tag,
                access: Err(error),
                ..
            } => {
                self.work.finished(std::time::Duration::ZERO, false);
                self.reply(tag, Err(error));
            }
            Work::Reads { reads, .. } => {
                for (tag, request, access, ctx) in reads {
                    self.run_request(tag, request, access, &ctx);
                }
            }
            Work::Barrier(f) => {
                if catch_unwind(AssertUnwindSafe(|| f(&self.service))).is_err() {
                    tracing::error!("a barrier closure panicked");
                }
            }
        }
    }

    /// Runs one request in its scope, commits what it staged, and replies.
    fn run_request(&self, tag: u64, request: S::Request, access: AccessSet, ctx: &Context) {
        let method = request.method();
        let started = std::time::Instant::now();
        let guard = scope::enter(method, access);
        let transaction = txn::begin();
        let outcome = catch_unwind(AssertUnwindSafe(|| self.service.execute(request, ctx)));
        let refused = guard.finish();
        // A request that returned commits what it staged; one that
        // panicked or was refused (even if it caught the refusal) drops it
        // with the transaction.
        let result = match (outcome, refused) {
            (_, Some(refusal)) => Err(ExecError::UndeclaredAccess(refusal)),
            (Ok(response), None) => self.commit(method, transaction.take()).map(|()| response),
            (Err(payload), None) => Err(ExecError::from_panic(method, payload)),
        };
        self.work.finished(started.elapsed(), result.is_ok());
        self.reply(tag, result);
    }

    /// Hands a request's outcome to the sink.
    fn reply(&self, tag: u64, result: Result<S::Response, ExecError>) {
        if let Err(error) = &result {
            tracing::debug!(tag, %error, "request failed");
        }
        if catch_unwind(AssertUnwindSafe(|| (self.sink)(Reply { tag, result }))).is_err() {
            tracing::error!(tag, "the reply sink panicked; the reply is lost");
        }
    }

    /// Commits what a finished request staged, in every container or none:
    /// all are prepared (encoded, digested) before any is changed.
    fn commit(&self, method: &str, staged: Vec<(TableId, txn::Staged)>) -> Result<(), ExecError> {
        if staged.is_empty() {
            return Ok(());
        }
        let refused = |message: String| ExecError::NotCommitted {
            method: method.to_owned(),
            message,
        };
        let containers = self.service.state().containers();
        let mut prepared = Vec::with_capacity(staged.len());
        for (id, writes) in &staged {
            let Some((name, container)) =
                containers.iter().find(|(name, _)| TableId::of(name) == *id)
            else {
                return Err(refused(
                    "it wrote a container that is not part of the service state".to_owned(),
                ));
            };
            match catch_unwind(AssertUnwindSafe(|| container.prepare(writes))) {
                Ok(Ok(ready)) => prepared.push((*name, *container, ready)),
                Ok(Err(error)) => return Err(refused(format!("container `{name}`: {error}"))),
                Err(payload) => {
                    return Err(refused(format!(
                        "container `{name}` panicked preparing the writes: {}",
                        panic_message(&*payload)
                    )));
                }
            }
        }
        // Containers whose commit may fail (a user's, writing to a disk) go
        // first: should one panic, the tables and cells, which cannot fail
        // once prepared, have none of the request's writes.
        prepared.sort_by_key(|(_, container, _)| container.commit_never_fails());
        let mut kept = Vec::new();
        for (name, container, ready) in prepared {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| container.commit(ready))) {
                let message = format!(
                    "container `{name}` panicked committing the writes: {}{}",
                    panic_message(&*payload),
                    if kept.is_empty() {
                        String::new()
                    } else {
                        format!(" (containers {kept:?} had committed theirs)")
                    }
                );
                tracing::error!(method, "{message}");
                return Err(refused(message));
            }
            kept.push(name);
        }
        Ok(())
    }

    /// Releases `task`'s keys; returns one newly ready job for this worker to
    /// run next and queues the others.
    fn finish(&self, task: TaskId) -> Option<Job<S>> {
        let mut sched = self.sched.lock();
        let Sched {
            parallelizer,
            waiting,
            ready,
            jobs,
            idle,
            ..
        } = &mut *sched;
        parallelizer.complete(task, ready);
        let mut next = None;
        let mut woken = Vec::new();
        for task in ready.drain(..) {
            let work = waiting[task.index()]
                .take()
                .expect("a task becomes ready once");
            let job = Job { task, work };
            if next.is_none() {
                next = Some(job);
            } else if let Some(worker) = queue_job(jobs, idle, job) {
                woken.push(worker);
            }
        }
        self.changed.notify_all();
        drop(sched);
        for worker in woken {
            self.wake(Some(worker));
        }
        next
    }

    /// Releases the keys of `task`, which ran outside the workers, and
    /// queues every job that made ready for them.
    fn finish_elsewhere(&self, task: TaskId) {
        if let Some(job) = self.finish(task) {
            let mut sched = self.sched.lock();
            let Sched { jobs, idle, .. } = &mut *sched;
            let worker = queue_job(jobs, idle, job);
            drop(sched);
            self.wake(worker);
        }
    }
}

/// Refused accesses unwind with an [`UndeclaredAccess`] payload and become
/// error replies; the default panic hook would print each one as if it were a
/// crash. Other panics still reach the previous hook.
fn quiet_refusals_in_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<UndeclaredAccess>() {
                previous(info);
            }
        }));
    });
}

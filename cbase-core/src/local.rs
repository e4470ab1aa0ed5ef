//! An in-process, unreplicated [`Invoke`]r: one executor, no agreement.
//!
//! For tests and examples of a service's logic: the generated typed client
//! talks to it exactly as it talks to a replicated cluster, and every request
//! goes through the real parallelizer and executor. It is not fault tolerant.
//! Its timestamps come from the local clock, or from a clock the test sets
//! ([`LocalInvoker::set_time`], [`LocalInvoker::advance`]), so a test of
//! expiry or deadlines does not have to wait for them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::client::{ClientError, Invoke};
use crate::context::{ClientId, Context};
use crate::executor::{ExecError, Executor, ExecutorBuilder, TrySubmitError};
use crate::service::Service;
use crate::state::StateError;

/// The system clock, in nanoseconds since the Unix epoch.
fn system_nanos() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

type Waiters<R> = Arc<Mutex<BTreeMap<u64, oneshot::Sender<Result<R, ExecError>>>>>;

/// Runs a service on a local executor and answers typed clients.
pub struct LocalInvoker<S: Service> {
    executor: Executor<S>,
    waiters: Waiters<S::Response>,
    next_tag: AtomicU64,
    /// The time requests see, in nanoseconds since the Unix epoch, if the
    /// test set one; the system clock otherwise.
    clock: Mutex<Option<u64>>,
    /// Who requests come from ([`Context::client`]).
    caller: Mutex<ClientId>,
}

impl<S: Service> LocalInvoker<S> {
    /// Starts `service` on an executor configured by `builder`.
    pub fn start(builder: ExecutorBuilder, service: S) -> Result<LocalInvoker<S>, StateError> {
        let waiters: Waiters<S::Response> = Arc::default();
        let routes = Arc::clone(&waiters);
        let executor = builder.start(service, move |reply| {
            if let Some(waiter) = routes.lock().remove(&reply.tag) {
                // The caller may have stopped waiting; nothing to do then.
                let _ = waiter.send(reply.result);
            }
        })?;
        Ok(LocalInvoker {
            executor,
            waiters,
            next_tag: AtomicU64::new(0),
            clock: Mutex::new(None),
            caller: Mutex::new(ClientId::LOCAL),
        })
    }

    /// From now on, requests see `at` as the agreed time
    /// ([`Context::timestamp`]) until the clock is set or advanced again.
    pub fn set_time(&self, at: SystemTime) {
        let nanos = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        *self.clock.lock() = Some(u64::try_from(nanos).unwrap_or(u64::MAX));
    }

    /// Moves the time requests see forward by `by` (from the system clock's
    /// reading, the first time).
    pub fn advance(&self, by: std::time::Duration) {
        let mut clock = self.clock.lock();
        let now = clock.unwrap_or_else(system_nanos);
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        *clock = Some(now.saturating_add(by));
    }

    /// From now on, requests come from `client` ([`Context::client`]): how
    /// a test plays several users (an owner and someone else). Until set,
    /// [`ClientId::LOCAL`].
    pub fn set_client(&self, client: ClientId) {
        *self.caller.lock() = client;
    }

    /// Back to the system clock.
    pub fn use_system_clock(&self) {
        *self.clock.lock() = None;
    }

    /// The executor, for barriers, digests and shutdown.
    pub fn executor(&self) -> &Executor<S> {
        &self.executor
    }

    /// Runs one request and waits for its result.
    pub async fn call(&self, request: S::Request) -> Result<S::Response, ClientError> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.waiters.lock().insert(tag, sender);
        let now = (*self.clock.lock()).unwrap_or_else(system_nanos);
        let seed = *blake3::hash(&tag.to_le_bytes()).as_bytes();
        let ctx = Context::new(now, seed).with_client(*self.caller.lock());
        let mut pending = request;
        // Never block an async runtime thread on a full window: yield and retry.
        loop {
            match self.executor.try_submit(tag, ctx.clone(), pending) {
                Ok(()) => break,
                Err(TrySubmitError::Full(request)) => {
                    pending = request;
                    YieldOnce(false).await;
                }
                Err(TrySubmitError::Closed(_)) => {
                    self.waiters.lock().remove(&tag);
                    return Err(ClientError::Unavailable(
                        "the executor has shut down".into(),
                    ));
                }
            }
        }
        match receiver.await {
            Ok(result) => result.map_err(ClientError::Exec),
            Err(_) => Err(ClientError::Unavailable(
                "the executor dropped the request".into(),
            )),
        }
    }
}

impl<S: Service> Invoke<S::Request, S::Response> for LocalInvoker<S> {
    fn invoke(
        &self,
        request: S::Request,
    ) -> impl std::future::Future<Output = Result<S::Response, ClientError>> + Send {
        self.call(request)
    }
}

/// Returns to the async runtime once, so other tasks (and the executor's
/// workers) can make room in the window before the next try.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::access::AccessSet;
    use crate::container::{Container, Table};
    use crate::service::Request;
    use crate::state::State;

    /// A request that reads the agreed time.
    #[derive(Clone, Debug)]
    struct Now;

    impl Request for Now {
        fn access_set(&self) -> AccessSet {
            AccessSet::none()
        }
        fn method(&self) -> &'static str {
            "now"
        }
    }

    struct Clock(Table<u64, u64>);

    impl State for Clock {
        fn containers(&self) -> Vec<(&'static str, &dyn Container)> {
            vec![("unused", &self.0)]
        }
    }

    impl Service for Clock {
        type Request = Now;
        type Response = SystemTime;
        fn execute(&self, _: Now, ctx: &Context) -> SystemTime {
            ctx.timestamp()
        }
        fn state(&self) -> &dyn State {
            self
        }
    }

    #[test]
    fn a_test_sets_and_advances_the_time_requests_see() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let invoker = LocalInvoker::start(ExecutorBuilder::new(), Clock(Table::new())).unwrap();
        runtime.block_on(async {
            let before = SystemTime::now();
            let seen = invoker.call(Now).await.unwrap();
            assert!(
                seen >= before - Duration::from_secs(1),
                "the system clock by default"
            );

            let new_year = UNIX_EPOCH + Duration::from_secs(1_798_761_600);
            invoker.set_time(new_year);
            assert_eq!(invoker.call(Now).await.unwrap(), new_year);
            assert_eq!(
                invoker.call(Now).await.unwrap(),
                new_year,
                "it stands still"
            );
            invoker.advance(Duration::from_secs(30 * 24 * 3600));
            assert_eq!(
                invoker.call(Now).await.unwrap(),
                new_year + Duration::from_secs(30 * 24 * 3600)
            );

            invoker.use_system_clock();
            assert!(invoker.call(Now).await.unwrap() >= before);
        });
        invoker.executor().wait_idle();
    }
}

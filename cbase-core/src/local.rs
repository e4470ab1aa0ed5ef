//! An in-process, unreplicated [`Invoke`]r: one executor, no agreement.
//!
//! For tests and examples of a service's logic: the generated typed client
//! talks to it exactly as it talks to a replicated cluster, and every request
//! goes through the real parallelizer and executor. It is not fault tolerant
//! and its timestamps come from the local clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::client::{ClientError, Invoke};
use crate::context::Context;
use crate::executor::{ExecError, Executor, ExecutorBuilder, TrySubmitError};
use crate::service::Service;
use crate::state::StateError;

type Waiters<R> = Arc<Mutex<BTreeMap<u64, oneshot::Sender<Result<R, ExecError>>>>>;

/// Runs a service on a local executor and answers typed clients.
pub struct LocalInvoker<S: Service> {
    executor: Executor<S>,
    waiters: Waiters<S::Response>,
    next_tag: AtomicU64,
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
        })
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
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seed = *blake3::hash(&tag.to_le_bytes()).as_bytes();
        let ctx = Context::new(now.as_nanos() as u64, seed);
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

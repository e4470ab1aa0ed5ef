//! How typed clients reach a service: the [`Invoke`] trait and [`ClientError`].
//!
//! `#[cbase::service]` generates a client (`BankClient`) with one async method
//! per trait method. It sends requests through anything that implements
//! [`Invoke`]: the network client of `cbase-net` for a replicated cluster, or
//! [`LocalInvoker`](crate::local::LocalInvoker) for a single in-process
//! executor (tests, examples).

use std::future::Future;

use crate::executor::ExecError;

/// Sends one request and waits for its response.
pub trait Invoke<Req, Resp>: Send + Sync {
    /// Sends `request`; resolves to the service's response or why there is none.
    fn invoke(&self, request: Req) -> impl Future<Output = Result<Resp, ClientError>> + Send;

    /// Tells the invoker which service (and interface version) its requests
    /// are for, so the replicas can refuse it if they run another version.
    /// The generated typed client calls it when it is made; the default
    /// does nothing.
    fn bind_service(&self, fingerprint: crate::service::Fingerprint) {
        let _ = fingerprint;
    }
}

/// Why a client call produced no result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The service ran the request and it failed (an undeclared access or a
    /// panic). Every correct replica reports the same error.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// No result arrived in time: fewer than `f+1` replicas sent matching
    /// replies within the client's timeout.
    #[error("{method}: no result within {after:?}; {seen}")]
    Timeout {
        /// The method called.
        method: String,
        /// How long the client waited.
        after: std::time::Duration,
        /// What the client saw meanwhile, in words: how many replicas
        /// replied and which it was not connected to.
        seen: String,
    },
    /// The service is not reachable or has shut down.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The client is misconfigured (for example, a bad cluster file).
    #[error("bad client configuration: {0}")]
    Config(String),
    /// The request is too large to ever be ordered: even alone, its signed
    /// batch would take `bytes` bytes, over the client's limit of `limit`
    /// (`ClientConfig::max_request_bytes` in `cbase-net`). It was not sent.
    #[error(
        "request too large: its signed batch takes {bytes} bytes, over the limit of {limit} bytes; \
         to send it, raise the replicas' ProtocolConfig::max_batch_bytes and the client's \
         ClientConfig::max_request_bytes (at most max_batch_bytes) above {bytes}"
    )]
    TooLarge {
        /// The encoded size of the request's signed batch.
        bytes: usize,
        /// The most bytes a signed batch may take.
        limit: usize,
    },
    /// A response of the wrong kind came back for this method: the replicas
    /// run a different version of the service.
    #[error("response to `{method}` has the wrong type; client and service versions differ")]
    MismatchedResponse {
        /// The method that was called.
        method: &'static str,
    },
    /// Enough replicas refused this client that no call can complete (the
    /// cluster does not admit it, for example); the reason is theirs.
    #[error("the cluster refused this client: {0}")]
    Refused(String),
}

impl<Req, Resp, T: Invoke<Req, Resp> + ?Sized> Invoke<Req, Resp> for std::sync::Arc<T> {
    fn invoke(&self, request: Req) -> impl Future<Output = Result<Resp, ClientError>> + Send {
        (**self).invoke(request)
    }

    fn bind_service(&self, fingerprint: crate::service::Fingerprint) {
        (**self).bind_service(fingerprint)
    }
}

impl<Req, Resp, T: Invoke<Req, Resp> + ?Sized> Invoke<Req, Resp> for &T {
    fn invoke(&self, request: Req) -> impl Future<Output = Result<Resp, ClientError>> + Send {
        (**self).invoke(request)
    }

    fn bind_service(&self, fingerprint: crate::service::Fingerprint) {
        (**self).bind_service(fingerprint)
    }
}

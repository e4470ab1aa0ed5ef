//! A replica's metrics in the Prometheus text format, and an HTTP endpoint
//! that serves them (`GET /metrics`).
//!
//! Everything is read from [`NodeMetrics`] and the executor's counters when
//! scraped, so exporting costs nothing between scrapes and holds no memory
//! that grows. Encoding is `prometheus-client`'s.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::NodeMetrics;
use crate::config::ReplicaId;

/// The metrics of replica `id`, in the Prometheus text exposition format.
pub fn render(id: ReplicaId, metrics: &NodeMetrics) -> String {
    let mut root = Registry::default();
    let registry = root.sub_registry_with_label(("replica".into(), id.to_string().into()));
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let stats = metrics.protocol.lock().clone();
    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        registry.register(name, help, ConstCounter::new(value));
    };
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        registry.register(
            name,
            help,
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)),
        );
    };

    // Agreement.
    gauge(
        registry,
        "cbase_view",
        "The view this replica is in",
        load(&metrics.view),
    );
    gauge(
        registry,
        "cbase_recovering",
        "1 while this replica recovers from a restart (it counts as one of the f faults: \
         restart the next replica only once this is 0)",
        u64::from(metrics.recovering.load(Ordering::Relaxed)),
    );
    counter(
        registry,
        "cbase_view_changes",
        "View changes this replica started (suspecting the primary)",
        stats.view_changes_started,
    );
    counter(
        registry,
        "cbase_votes_withheld",
        "View-change votes held back after a restart without memory, until enough peers \
         answered where they are",
        stats.votes_withheld,
    );
    gauge(
        registry,
        "cbase_delivered_seq",
        "The highest sequence number agreed and handed to execution",
        load(&metrics.delivered),
    );
    counter(
        registry,
        "cbase_proposals",
        "Proposals (batches of client batches) this replica made as primary",
        stats.proposals,
    );
    counter(
        registry,
        "cbase_proposed_requests",
        "Client requests in this replica's proposals",
        stats.proposed_requests,
    );

    // Checkpoints and state transfer.
    let stable_seq = metrics.stable.lock().back().map_or(0, |(seq, _)| *seq);
    gauge(
        registry,
        "cbase_stable_checkpoint_seq",
        "The sequence number of the latest stable checkpoint",
        stable_seq,
    );
    counter(
        registry,
        "cbase_checkpoints_taken",
        "Checkpoints taken",
        load(&metrics.checkpoints_taken),
    );
    counter(
        registry,
        "cbase_checkpoints_stable",
        "Checkpoints that became stable (2f+1 replicas agree on the digest)",
        load(&metrics.checkpoints_stable),
    );
    counter(
        registry,
        "cbase_checkpoints_stored",
        "Stable checkpoints written to the data directory",
        load(&metrics.checkpoints_stored),
    );
    registry.register(
        "cbase_checkpoint_barrier_seconds",
        "Time execution was held for checkpoints",
        ConstCounter::new(nanos_to_seconds(load(
            &metrics.checkpoint_barrier_total_nanos,
        ))),
    );
    registry.register(
        "cbase_checkpoint_barrier_max_seconds",
        "The longest time execution was held for one checkpoint",
        ConstGauge::new(nanos_to_seconds(load(
            &metrics.checkpoint_barrier_max_nanos,
        ))),
    );
    counter(
        registry,
        "cbase_reads_answered",
        "Read-only requests answered on the fast path, unordered",
        load(&metrics.reads_answered),
    );
    gauge(
        registry,
        "cbase_client_sessions",
        "Client sessions in the client table at the latest checkpoint",
        load(&metrics.client_sessions),
    );
    gauge(
        registry,
        "cbase_client_table_bytes",
        "Encoded size of the client table at the latest checkpoint",
        load(&metrics.client_table_bytes),
    );
    counter(
        registry,
        "cbase_state_transfers",
        "Attempts at fetching a checkpoint's state from peers",
        stats.state_requests,
    );
    counter(
        registry,
        "cbase_states_installed",
        "Fetched states installed",
        load(&metrics.states_installed),
    );
    counter(
        registry,
        "cbase_state_transfer_bytes",
        "Bytes of state received from peers",
        stats.state_bytes,
    );
    counter(
        registry,
        "cbase_diverged",
        "Times a quorum disagreed with this replica's own checkpoint",
        load(&metrics.diverged),
    );

    counter(
        registry,
        "cbase_awaited_vouchers",
        "Pre-prepares this backup prepared only once f+1 replicas vouched for an unsigned client batch it had not received itself",
        stats.awaited_vouchers,
    );

    // What was refused or dropped, by kind.
    let refused = Family::<Vec<(String, String)>, Counter>::default();
    for (kind, value) in [
        ("bad_signature", stats.bad_signature),
        ("bad_digest", stats.bad_digest),
        ("wrong_view", stats.wrong_view),
        ("wrong_sender", stats.wrong_sender),
        ("out_of_window", stats.out_of_window),
        ("equivocation", stats.equivocation),
        ("oversized", stats.oversized),
        ("bad_timestamp", stats.bad_timestamp),
        ("stale_timestamp", stats.stale_timestamp),
        ("bad_certificate", stats.bad_certificate),
        ("bad_state", stats.bad_state),
        ("throttled", stats.throttled),
        ("bad_frame", load(&metrics.bad_frames)),
        ("malformed", load(&metrics.malformed)),
        ("handshake", load(&metrics.handshake_failures)),
        ("impersonation", load(&metrics.impersonations)),
        ("forged_batch", load(&metrics.forged_batches)),
        ("clients_over_limit", load(&metrics.clients_over_limit)),
        (
            "handshakes_over_limit",
            load(&metrics.handshakes_over_limit),
        ),
        ("relayed_unsigned", stats.relayed_unsigned),
        ("unadmitted", stats.unadmitted),
        ("client_full", stats.client_full),
        ("oversized_request", load(&metrics.oversized_requests)),
        ("send_queue_full", load(&metrics.dropped_sends)),
    ] {
        refused
            .get_or_create(&vec![("kind".to_owned(), kind.to_owned())])
            .inc_by(value);
    }
    registry.register(
        "cbase_refused",
        "Messages, connections and requests refused or dropped, by kind",
        refused,
    );

    // Execution.
    if let Some(work) = metrics.work() {
        counter(
            registry,
            "cbase_requests",
            "Requests executed (replied to), failed ones included",
            work.requests,
        );
        counter(
            registry,
            "cbase_requests_failed",
            "Requests that failed (an undeclared access, or a panic)",
            work.failed,
        );
        gauge(
            registry,
            "cbase_executor_queued",
            "Requests submitted to the executor and not finished",
            work.queued,
        );
        gauge(
            registry,
            "cbase_executor_workers",
            "Executor worker threads",
            work.workers as u64,
        );
        registry.register(
            "cbase_executor_busy_seconds",
            "Time workers spent running requests, summed over workers (its rate over \
             cbase_executor_workers is their utilisation)",
            ConstCounter::new(work.busy.as_secs_f64()),
        );
        registry.register(
            "cbase_request_duration_seconds",
            "How long requests ran on a worker",
            ConstHistogram::new(&work.latency, work.busy),
        );
    }

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &root)
        .expect("writing to a String does not fail");
    text
}

fn nanos_to_seconds(nanos: u64) -> f64 {
    Duration::from_nanos(nanos).as_secs_f64()
}

/// A histogram read from counts kept elsewhere (the executor's).
#[derive(Debug)]
struct ConstHistogram {
    sum: f64,
    count: u64,
    /// Count per bucket (not cumulative), by upper bound.
    buckets: Vec<(f64, u64)>,
}

impl ConstHistogram {
    /// From cumulative counts by upper bound, and the sum of observations.
    fn new(cumulative: &[(f64, u64)], sum: Duration) -> ConstHistogram {
        let mut before = 0;
        let buckets = cumulative
            .iter()
            .map(|&(bound, total)| {
                let here = total.saturating_sub(before);
                before = total;
                (bound, here)
            })
            .collect();
        ConstHistogram {
            sum: sum.as_secs_f64(),
            count: before,
            buckets,
        }
    }
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Longest request head read: a scrape is one short GET.
const MAX_REQUEST: usize = 8 << 10;

/// How long a scraper has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Scrapes answered at once. Whoever reaches the port can connect, and each
/// connection holds a task and its request until it sends it or times
/// out, so connections past this many are closed at once: a scraper or two
/// is what the endpoint is for.
const MAX_SCRAPES: usize = 16;

/// Of those, the most one source may hold: one address opening connections
/// and sending nothing would otherwise keep every other scraper out.
const MAX_SCRAPES_PER_SOURCE: usize = 4;

/// Serves `GET /metrics` on `listener` until the task is aborted. A plain
/// HTTP/1.1 exchange, one per connection: a scrape needs nothing more.
pub(super) async fn serve(listener: TcpListener, id: ReplicaId, metrics: Arc<NodeMetrics>) {
    serve_with(listener, id, metrics, MAX_SCRAPES, READ_TIMEOUT).await
}

async fn serve_with(
    listener: TcpListener,
    id: ReplicaId,
    metrics: Arc<NodeMetrics>,
    max_scrapes: usize,
    read_timeout: Duration,
) {
    let scrapes = Arc::new(tokio::sync::Semaphore::new(max_scrapes));
    let per_source = super::sources::PerSource::new(MAX_SCRAPES_PER_SOURCE.min(max_scrapes));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(counted) = per_source.try_count(super::sources::Source::of(peer.ip())) else {
            drop(stream);
            continue;
        };
        let Ok(permit) = Arc::clone(&scrapes).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _ = answer(stream, id, &metrics, read_timeout).await;
            drop((permit, counted));
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    id: ReplicaId,
    metrics: &NodeMetrics,
    read_timeout: Duration,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(read_timeout, read).await.is_err() {
        return Ok(());
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let (status, kind, body) = match line.strip_prefix(b"GET ") {
        Some(rest) if rest.starts_with(b"/metrics ") || rest.starts_with(b"/metrics?") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(id, metrics),
        ),
        Some(_) => ("404 Not Found", "text/plain", "try /metrics\n".to_owned()),
        None => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn scrape(address: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: replica\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        response
    }

    /// Connections that send nothing hold the endpoint's few places; one
    /// more is closed at once, and a scrape is answered again once they go.
    #[tokio::test]
    async fn connections_past_the_limit_are_closed_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // Silent connections would hold their place for a minute.
        let server = tokio::spawn(serve_with(
            listener,
            0,
            Arc::new(NodeMetrics::default()),
            2,
            Duration::from_secs(60),
        ));
        assert!(scrape(address).await.starts_with("HTTP/1.1 200"));
        let silent: Vec<TcpStream> = vec![
            TcpStream::connect(address).await.unwrap(),
            TcpStream::connect(address).await.unwrap(),
        ];
        // Accepted in order: the two silent ones have the places, so this
        // one is closed without an answer.
        assert_eq!(scrape(address).await, "");
        drop(silent);
        let mut answered = String::new();
        // Their tasks end when they see the connections close.
        for _ in 0..1000 {
            answered = scrape(address).await;
            if !answered.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
        server.abort();
    }
}

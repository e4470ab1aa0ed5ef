//! Which clients a replica serves at once.
//!
//! Anyone can be a client, so a replica serves at most
//! `TransportConfig::max_client_connections` at once, one connection per
//! client: a client's new connection (one that reconnects, say after its
//! old connection went half-dead) takes the place of its earlier one,
//! which is closed. When every place is taken, the connection idle longest
//! makes room if it has been idle for `evict_idle_clients_after`: a party
//! that opened connections and left them open cannot keep new clients out,
//! and a client evicted while idle connects again when it next has
//! something to send. Only when every connection was active within that
//! time is a new client refused.
//!
//! The same holds, within each source ([`super::sources`]), for
//! `TransportConfig::max_clients_per_source`: a source at its limit makes
//! room from its own idlest connection or is refused, and never takes
//! another source's place, so one party cannot keep every place busy from
//! one address.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::ClientQueues;
use super::reads::ClientQueue;
use super::sources::Source;
use crate::crypto::PublicKey;

/// Milliseconds since this process first asked: the clock connections'
/// activity is kept on.
pub fn now_millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A connection's place: when it was last active, and how it is told to
/// close.
#[derive(Debug, Default)]
pub struct Place {
    /// When a frame last arrived on the connection ([`now_millis`]).
    last_active: AtomicU64,
    /// Where the connection comes from, once filed.
    source: OnceLock<Source>,
    closing: Notify,
    why: OnceLock<String>,
}

impl Place {
    /// A frame arrived on the connection now.
    pub fn active(&self) {
        self.last_active.store(now_millis(), Ordering::Relaxed);
    }

    /// Tells the connection to close, saying `why` to its client.
    fn close(&self, why: String) {
        let _ = self.why.set(why);
        self.closing.notify_one();
    }

    /// Waits until the connection is told to close; returns why.
    pub async fn closed(&self) -> String {
        self.closing.notified().await;
        self.why.get().cloned().unwrap_or_default()
    }
}

/// What filing a new connection did.
pub enum Filed {
    /// It has a place.
    Placed,
    /// Every place is taken by a connection active within the idle time:
    /// the client is refused.
    Full,
    /// Its source has as many places as it may, each taken by a connection
    /// active within the idle time: the client is refused.
    SourceFull,
}

/// How many clients a replica serves, and when an idle one makes room.
pub struct Limits {
    /// Clients at once (`TransportConfig::max_client_connections`).
    pub clients: usize,
    /// Clients at once from one source
    /// (`TransportConfig::max_clients_per_source`).
    pub per_source: usize,
    /// How long a connection must have been idle to make room
    /// (`TransportConfig::evict_idle_clients_after`).
    pub idle_after: Duration,
}

/// Files `queue` as client `key`'s connection from `source` on replica
/// `replica`, making room as the module documentation says.
pub fn file(
    clients: &ClientQueues,
    key: PublicKey,
    source: Source,
    queue: &ClientQueue,
    limits: &Limits,
    replica: crate::config::ReplicaId,
) -> Filed {
    queue.place.active();
    let _ = queue.place.source.set(source);
    let mut clients = clients.lock();
    // The client's earlier connection, if any, gives its place to this one
    // below, so it is not counted against either limit.
    let from_source = clients
        .iter()
        .filter(|(client, held)| **client != key && held.place.source.get() == Some(&source))
        .count();
    if from_source >= limits.per_source {
        let made_room = make_room(
            &mut clients,
            |held| held.place.source.get() == Some(&source),
            limits.idle_after,
            |idle| {
                format!(
                    "replica {replica} closed this connection, idle for {idle} s, to make room \
                     for another client from {source} (it serves at most {} at once from one \
                     source); connect again to go on",
                    limits.per_source
                )
            },
        );
        if !made_room {
            return Filed::SourceFull;
        }
    }
    if !clients.contains_key(&key) && clients.len() >= limits.clients {
        let made_room = make_room(
            &mut clients,
            |_| true,
            limits.idle_after,
            |idle| {
                format!(
                    "replica {replica} closed this connection, idle for {idle} s, to make room \
                     for another client (it serves at most {} at once); connect again to go on",
                    limits.clients
                )
            },
        );
        if !made_room {
            return Filed::Full;
        }
    }
    if let Some(earlier) = clients.insert(key, queue.clone()) {
        earlier.place.close(format!(
            "replica {replica} took a newer connection of client {key} in place of this one"
        ));
    }
    Filed::Placed
}

/// Closes the connection idle longest among those `among` picks, if it has
/// been idle for `idle_after`, telling it `why` (given its idle seconds).
/// Whether it did.
fn make_room(
    clients: &mut std::collections::BTreeMap<PublicKey, ClientQueue>,
    among: impl Fn(&ClientQueue) -> bool,
    idle_after: Duration,
    why: impl FnOnce(u64) -> String,
) -> bool {
    let now = now_millis();
    let idlest = clients
        .iter()
        .filter(|(_, held)| among(held))
        .map(|(client, held)| (held.place.last_active.load(Ordering::Relaxed), *client))
        .min();
    match idlest {
        Some((since, client)) if now.saturating_sub(since) >= idle_after.as_millis() as u64 => {
            let evicted = clients.remove(&client).expect("just found");
            evicted.place.close(why(now.saturating_sub(since) / 1000));
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::answers::AnswerBudget;

    fn queue() -> ClientQueue {
        let (outgoing, _answers) = tokio::sync::mpsc::channel(1);
        ClientQueue::new(outgoing, AnswerBudget::new(usize::MAX))
    }

    /// Why `queue`'s connection was told to close.
    async fn told(queue: &ClientQueue) -> String {
        tokio::time::timeout(Duration::from_secs(10), queue.place.closed())
            .await
            .expect("told to close")
    }

    fn key(n: u8) -> PublicKey {
        crate::crypto::SecretKey::from_seed([n; 32]).public()
    }

    fn source(n: u8) -> Source {
        Source::of(std::net::IpAddr::from([10, 0, 0, n]))
    }

    fn limits(clients: usize, per_source: usize, idle_after: Duration) -> Limits {
        Limits {
            clients,
            per_source,
            idle_after,
        }
    }

    #[tokio::test]
    async fn a_full_replica_refuses_while_all_are_active_and_evicts_the_idlest_after_the_idle_time()
    {
        let clients = ClientQueues::default();
        let (a, b, c) = (queue(), queue(), queue());
        let hour = limits(2, 2, Duration::from_secs(3600));
        assert!(matches!(
            file(&clients, key(1), source(1), &a, &hour, 0),
            Filed::Placed
        ));
        assert!(matches!(
            file(&clients, key(2), source(2), &b, &hour, 0),
            Filed::Placed
        ));
        assert!(matches!(
            file(&clients, key(3), source(3), &c, &hour, 0),
            Filed::Full
        ));
        // With no idle time to wait, the one active longest ago makes room.
        a.place.last_active.store(0, Ordering::Relaxed);
        b.place.last_active.store(1, Ordering::Relaxed);
        assert!(matches!(
            file(
                &clients,
                key(3),
                source(3),
                &c,
                &limits(2, 2, Duration::ZERO),
                0
            ),
            Filed::Placed
        ));
        assert!(told(&a).await.contains("idle"));
        assert!(clients.lock().contains_key(&key(2)) && clients.lock().contains_key(&key(3)));
        assert!(!clients.lock().contains_key(&key(1)));
        // A client's new connection takes its earlier one's place, even
        // when full, and the earlier one is told.
        let again = queue();
        assert!(matches!(
            file(&clients, key(2), source(2), &again, &hour, 0),
            Filed::Placed
        ));
        assert!(told(&b).await.contains("newer connection"));
    }

    #[tokio::test]
    async fn a_source_at_its_limit_makes_room_from_its_own_connections_only() {
        let clients = ClientQueues::default();
        let hour = limits(10, 2, Duration::from_secs(3600));
        let (a, b, c, other) = (queue(), queue(), queue(), queue());
        // Another source's connection, idle longest of all.
        assert!(matches!(
            file(&clients, key(9), source(9), &other, &hour, 0),
            Filed::Placed
        ));
        other.place.last_active.store(0, Ordering::Relaxed);
        for (n, queue) in [(1, &a), (2, &b)] {
            assert!(matches!(
                file(&clients, key(n), source(1), queue, &hour, 0),
                Filed::Placed
            ));
        }
        // Source 1 has its two places, both active: its third client is
        // refused though the replica has room.
        assert!(matches!(
            file(&clients, key(3), source(1), &c, &hour, 0),
            Filed::SourceFull
        ));
        // A client of source 1 reconnecting takes its own place.
        let again = queue();
        assert!(matches!(
            file(&clients, key(2), source(1), &again, &hour, 0),
            Filed::Placed
        ));
        assert!(told(&b).await.contains("newer connection"));
        // With no idle time to wait, source 1's idlest makes room, not the
        // other source's idler connection.
        a.place.last_active.store(5, Ordering::Relaxed);
        again.place.last_active.store(6, Ordering::Relaxed);
        assert!(matches!(
            file(
                &clients,
                key(3),
                source(1),
                &c,
                &limits(10, 2, Duration::ZERO),
                0
            ),
            Filed::Placed
        ));
        let why = told(&a).await;
        assert!(why.contains("10.0.0.1"), "{why}");
        let held = clients.lock();
        assert!(
            held.contains_key(&key(9)),
            "the other source keeps its place"
        );
        assert!(!held.contains_key(&key(1)));
        assert_eq!(held.len(), 3);
    }
}

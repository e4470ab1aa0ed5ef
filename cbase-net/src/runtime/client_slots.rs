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

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::ClientQueues;
use super::reads::ClientQueue;
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
    Filed,
    /// Every place is taken by a connection active within the idle time:
    /// the client is refused.
    Full,
}

/// Files `queue` as client `key`'s connection on replica `replica`, making
/// room as the module documentation says.
pub fn file(
    clients: &ClientQueues,
    key: PublicKey,
    queue: &ClientQueue,
    limit: usize,
    idle_after: Duration,
    replica: crate::config::ReplicaId,
) -> Filed {
    queue.place.active();
    let mut clients = clients.lock();
    if !clients.contains_key(&key) && clients.len() >= limit {
        let now = now_millis();
        let idle_after = idle_after.as_millis() as u64;
        let idlest = clients
            .iter()
            .map(|(client, queue)| (queue.place.last_active.load(Ordering::Relaxed), *client))
            .min();
        match idlest {
            Some((since, client)) if now.saturating_sub(since) >= idle_after => {
                let evicted = clients.remove(&client).expect("just found");
                evicted.place.close(format!(
                    "replica {replica} closed this connection, idle for {} s, to make room for \
                     another client (it serves at most {limit} at once); connect again to go on",
                    now.saturating_sub(since) / 1000
                ));
            }
            _ => return Filed::Full,
        }
    }
    if let Some(earlier) = clients.insert(key, queue.clone()) {
        earlier.place.close(format!(
            "replica {replica} took a newer connection of client {key} in place of this one"
        ));
    }
    Filed::Filed
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

    #[tokio::test]
    async fn a_full_replica_refuses_while_all_are_active_and_evicts_the_idlest_after_the_idle_time()
    {
        let clients = ClientQueues::default();
        let (a, b, c) = (queue(), queue(), queue());
        let hour = Duration::from_secs(3600);
        assert!(matches!(
            file(&clients, key(1), &a, 2, hour, 0),
            Filed::Filed
        ));
        assert!(matches!(
            file(&clients, key(2), &b, 2, hour, 0),
            Filed::Filed
        ));
        assert!(matches!(
            file(&clients, key(3), &c, 2, hour, 0),
            Filed::Full
        ));
        // With no idle time to wait, the one active longest ago makes room.
        a.place.last_active.store(0, Ordering::Relaxed);
        b.place.last_active.store(1, Ordering::Relaxed);
        assert!(matches!(
            file(&clients, key(3), &c, 2, Duration::ZERO, 0),
            Filed::Filed
        ));
        assert!(told(&a).await.contains("idle"));
        assert!(clients.lock().contains_key(&key(2)) && clients.lock().contains_key(&key(3)));
        assert!(!clients.lock().contains_key(&key(1)));
        // A client's new connection takes its earlier one's place, even
        // when full, and the earlier one is told.
        let again = queue();
        assert!(matches!(
            file(&clients, key(2), &again, 2, hour, 0),
            Filed::Filed
        ));
        assert!(told(&b).await.contains("newer connection"));
    }
}

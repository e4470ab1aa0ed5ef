//! A replica that can no longer store what it must stops, and says why.
//!
//! A replica acknowledges nothing it has not written to its data directory
//! (see the storage module). When a write fails (a full disk, an I/O error,
//! a file-size limit), going on would mean acting on state that a restart
//! would not find, so the replica stops agreeing and executing, and from
//! then on answers every client with the reason ([`Halt`]) instead of
//! leaving it to time out; the other replicas go on without it. A program
//! running it learns the reason from [`ReplicaNode::halted`] and exits.
//!
//! [`ReplicaNode::halted`]: super::ReplicaNode::halted

use tokio::sync::watch;

/// Why a replica stopped, once it has: set once, the first reason wins.
#[derive(Debug)]
pub struct Halt {
    reason: watch::Sender<Option<String>>,
}

impl Default for Halt {
    fn default() -> Self {
        Halt {
            reason: watch::channel(None).0,
        }
    }
}

impl Halt {
    /// Stops the replica for `why` (logged as an error); a later reason is
    /// ignored.
    pub fn stop(&self, why: String) {
        self.reason.send_if_modified(|reason| {
            if reason.is_some() {
                return false;
            }
            tracing::error!("this replica stops: {why}");
            *reason = Some(why);
            true
        });
    }

    /// Why it stopped, if it has.
    pub fn reason(&self) -> Option<String> {
        self.reason.borrow().clone()
    }

    /// Waits until it stops; returns why.
    pub async fn wait(&self) -> String {
        let mut reason = self.reason.subscribe();
        let stopped = reason
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives as long as self");
        stopped.clone().expect("waited for it")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_is_kept_and_waiters_get_it() {
        let halt = std::sync::Arc::new(Halt::default());
        assert_eq!(halt.reason(), None);
        let waiter = tokio::spawn({
            let halt = std::sync::Arc::clone(&halt);
            async move { halt.wait().await }
        });
        halt.stop("the disk is full".into());
        halt.stop("something later".into());
        assert_eq!(waiter.await.unwrap(), "the disk is full");
        assert_eq!(halt.reason().as_deref(), Some("the disk is full"));
        // Asked after it stopped, it answers at once.
        assert_eq!(halt.wait().await, "the disk is full");
    }
}

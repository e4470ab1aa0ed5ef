//! The service of the book's "A crate of your own" chapter, compiled and run
//! here so the chapter stays true: a ticket office whose holds expire.

use std::time::Duration;

use cbase::LocalCluster;
use cbase::prelude::*;

// ANCHOR: service
/// A ticket office: shows with seats; a seat can be held for ten minutes
/// before it is paid for.
#[cbase::service]
pub trait Tickets {
    /// Puts on a show with `seats` seats; false if it exists.
    #[writes(shows[show])]
    fn add_show(&self, show: String, seats: u32) -> bool;

    /// Holds a seat of `show` for `buyer`: the seats left, or why not.
    #[writes(shows[show], holds[(show, buyer)])]
    fn hold(&self, show: String, buyer: String, ctx: &Context) -> Result<u32, String>;

    /// Pays for a held seat, if the hold has not expired.
    #[writes(holds[(show, buyer)])]
    fn pay(&self, show: String, buyer: String, ctx: &Context) -> Result<(), String>;

    /// The seats left of `show`.
    #[reads(shows[show])]
    fn free_seats(&self, show: String) -> Option<u32>;
}

/// How long a hold lasts.
pub const HOLD: Duration = Duration::from_secs(10 * 60);

#[derive(Default, cbase::State)]
pub struct Office {
    shows: Table<String, u32>,
    /// When each (show, buyer) hold was taken; `None` once paid.
    holds: Table<(String, String), Option<std::time::SystemTime>>,
}

impl Tickets for Office {
    fn add_show(&self, show: String, seats: u32) -> bool {
        if self.shows.get(&show).is_some() {
            return false;
        }
        self.shows.insert(show, seats);
        true
    }

    fn hold(&self, show: String, buyer: String, ctx: &Context) -> Result<u32, String> {
        match self.shows.get(&show) {
            None => Err(format!("no show {show}")),
            Some(0) => Err(format!("{show} is sold out")),
            Some(left) => {
                self.shows.insert(show.clone(), left - 1);
                // The agreed time: the same on every replica.
                self.holds.insert((show, buyer), Some(ctx.timestamp()));
                Ok(left - 1)
            }
        }
    }

    fn pay(&self, show: String, buyer: String, ctx: &Context) -> Result<(), String> {
        match self.holds.get(&(show.clone(), buyer.clone())) {
            Some(Some(since)) if ctx.timestamp() <= since + HOLD => {
                self.holds.insert((show, buyer), None);
                Ok(())
            }
            Some(Some(_)) => Err(format!("the hold on {show} expired")),
            Some(None) => Err("already paid".into()),
            None => Err(format!("{buyer} holds no seat of {show}")),
        }
    }

    fn free_seats(&self, show: String) -> Option<u32> {
        self.shows.get(&show)
    }
}
// ANCHOR_END: service

// ANCHOR: unit-test
#[tokio::test]
async fn a_hold_expires_after_ten_minutes_on_1_worker_and_on_8() {
    for workers in [1, 8] {
        let invoker = LocalInvoker::start(
            ExecutorBuilder::new().workers(workers),
            TicketsService(Office::default()),
        )
        .unwrap();
        // The test sets the agreed clock instead of waiting for it.
        let opening = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        invoker.set_time(opening);
        let office = TicketsClient::new(&invoker);
        assert!(office.add_show("hamlet".into(), 2).await.unwrap());
        assert_eq!(
            office.hold("hamlet".into(), "ann".into()).await.unwrap(),
            Ok(1)
        );
        assert_eq!(
            office.hold("hamlet".into(), "bob".into()).await.unwrap(),
            Ok(0)
        );
        assert!(
            office
                .hold("hamlet".into(), "cy".into())
                .await
                .unwrap()
                .is_err()
        );

        invoker.advance(Duration::from_secs(9 * 60));
        assert_eq!(
            office.pay("hamlet".into(), "ann".into()).await.unwrap(),
            Ok(())
        );
        invoker.advance(Duration::from_secs(2 * 60));
        let late = office.pay("hamlet".into(), "bob".into()).await.unwrap();
        assert_eq!(late, Err("the hold on hamlet expired".into()));
    }
}
// ANCHOR_END: unit-test

// ANCHOR: cluster-test
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_catches_up_and_the_office_goes_on() {
    let mut cluster = LocalCluster::builder()
        .replicas(4)
        .start(|| TicketsService(Office::default()))
        .await
        .unwrap();
    let office = TicketsClient::new(cluster.client().unwrap());
    office.add_show("hamlet".into(), 100).await.unwrap();
    cluster.stop_replica(3).await;
    office
        .hold("hamlet".into(), "ann".into())
        .await
        .unwrap()
        .unwrap();
    // Back without its state: it fetches it from the others.
    cluster
        .restart_replica(3, TicketsService(Office::default()))
        .await
        .unwrap();
    for buyer in ["bob", "cy", "dee"] {
        office
            .hold("hamlet".into(), buyer.into())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(office.free_seats("hamlet".into()).await.unwrap(), Some(96));
    cluster.shutdown().await;
}
// ANCHOR_END: cluster-test

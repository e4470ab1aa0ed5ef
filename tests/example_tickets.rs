//! The box office of `examples/tickets.rs`: per-show queries declare a prefix
//! of the `(show, seat)` key, so they are ordered only after bookings of the
//! same show; the operations run under the parallel executor and refuse
//! accesses outside the prefix they declare.

#[allow(dead_code)]
#[path = "../examples/tickets.rs"]
mod tickets;

use cbase::prelude::*;
use cbase::{AccessSet, conflicts};
use tickets::{BookingError, BoxOfficeClient, BoxOfficeRequest, BoxOfficeService, Office};

fn access(request: BoxOfficeRequest) -> AccessSet {
    request.access_set()
}

fn book(show: u64, seat: u32) -> AccessSet {
    access(BoxOfficeRequest::Book {
        show,
        seat,
        holder: "ada".into(),
    })
}

fn free_seats(show: u64) -> AccessSet {
    access(BoxOfficeRequest::FreeSeats { show })
}

// ANCHOR: rules
#[test]
fn a_show_query_waits_only_for_its_own_show() {
    // The rules as the parallelizer sees them.
    assert_eq!(
        free_seats(7),
        AccessSet::none().read(Key::prefix("seats", &(7u64,)))
    );
    assert_eq!(
        book(7, 12),
        AccessSet::none().write(Key::entry("seats", &(7u64, 12u32)))
    );
    // Bookings of other shows, and other seats, are independent.
    assert!(!conflicts(&free_seats(7), &book(8, 12)));
    assert!(!conflicts(&book(7, 12), &book(7, 13)));
    assert!(!conflicts(&free_seats(7), &free_seats(7)));
    // A booking of the same show is ordered with the query; so is anything
    // over the whole table, and a show's opening with its bookings.
    assert!(conflicts(&free_seats(7), &book(7, 12)));
    assert!(conflicts(
        &access(BoxOfficeRequest::TotalSold {}),
        &book(8, 1)
    ));
    let open = access(BoxOfficeRequest::OpenShow { show: 7, seats: 10 });
    assert!(conflicts(&open, &book(7, 1)) && !conflicts(&open, &book(8, 1)));
    let sold = access(BoxOfficeRequest::Sold { shows: vec![1, 2] });
    assert!(conflicts(&sold, &book(2, 5)) && !conflicts(&sold, &book(3, 5)));
}
// ANCHOR_END: rules

#[test]
fn the_parallelizer_lets_other_shows_pass_a_show_query() {
    use cbase::core_crate::parallelizer::Parallelizer;
    let mut parallelizer = Parallelizer::new(8, &[cbase::TableId::of("seats")]);
    let query = parallelizer.schedule(&free_seats(7)).unwrap();
    let other_show = parallelizer.schedule(&book(8, 1)).unwrap();
    let same_show = parallelizer.schedule(&book(7, 1)).unwrap();
    let next_query = parallelizer.schedule(&free_seats(8)).unwrap();
    assert!(query.ready && other_show.ready);
    assert!(!same_show.ready, "a booking of show 7 waits for its query");
    assert!(
        !next_query.ready,
        "show 8's query waits for show 8's booking"
    );
    let mut woken = Vec::new();
    parallelizer.complete(query.task, &mut woken);
    assert_eq!(woken, vec![same_show.task]);
    woken.clear();
    parallelizer.complete(other_show.task, &mut woken);
    assert_eq!(woken, vec![next_query.task]);
}

#[tokio::test]
async fn booking_and_listing_under_eight_workers() {
    let invoker = LocalInvoker::start(
        ExecutorBuilder::new().workers(8),
        BoxOfficeService(Office::default()),
    )
    .unwrap();
    let office = std::sync::Arc::new(BoxOfficeClient::new(invoker));
    for show in 1..=3 {
        assert_eq!(office.open_show(show, 5).await.unwrap(), 5);
    }
    assert_eq!(office.open_show(2, 6).await.unwrap(), 1, "seat 5 is new");
    let mut calls = Vec::new();
    for show in 1..=3u64 {
        for seat in 0..3u32 {
            let office = std::sync::Arc::clone(&office);
            calls.push(tokio::spawn(async move {
                office.book(show, seat, format!("fan-{seat}")).await
            }));
        }
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), Ok(()));
    }
    assert_eq!(
        office.book(1, 0, "late".into()).await.unwrap(),
        Err(BookingError::Taken {
            holder: "fan-0".into()
        })
    );
    assert_eq!(
        office.book(1, 9, "lost".into()).await.unwrap(),
        Err(BookingError::NoSuchSeat { show: 1, seat: 9 })
    );
    assert_eq!(office.free_seats(1).await.unwrap(), vec![3, 4]);
    assert_eq!(office.free_seats(2).await.unwrap(), vec![3, 4, 5]);
    assert_eq!(office.free_seats(4).await.unwrap(), Vec::<u32>::new());
    assert_eq!(office.sold(vec![1, 2, 4]).await.unwrap(), vec![3, 3, 0]);
    assert_eq!(office.total_sold().await.unwrap(), 9);
    assert_eq!(office.cancel_show(3).await.unwrap(), 3);
    assert_eq!(office.free_seats(3).await.unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(office.total_sold().await.unwrap(), 6);
}

/// The same service with a query that reaches outside its prefix.
mod sneaky {
    use cbase::prelude::*;

    #[cbase::service]
    pub trait Peek {
        #[reads(seats[(show, *)])]
        fn next_show(&self, show: u64) -> usize;

        #[reads(seats[(show, *)])]
        fn everything(&self, show: u64) -> usize;
    }

    #[derive(Default, State)]
    pub struct Seats {
        pub seats: Table<(u64, u32), bool>,
    }

    impl Peek for Seats {
        fn next_show(&self, show: u64) -> usize {
            self.seats.prefix((show + 1,)).len()
        }

        fn everything(&self, _show: u64) -> usize {
            self.seats.len()
        }
    }
}

#[tokio::test]
async fn an_access_outside_the_declared_prefix_is_refused() {
    use sneaky::{PeekClient, PeekService, Seats};
    let invoker = LocalInvoker::start(
        ExecutorBuilder::new().workers(2),
        PeekService(Seats::default()),
    )
    .unwrap();
    let peek = PeekClient::new(invoker);
    let refusal = |error: ClientError| match error {
        ClientError::Exec(ExecError::UndeclaredAccess(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let next = refusal(peek.next_show(1).await.unwrap_err());
    assert_eq!(
        (next.method.as_str(), next.table.as_str(), next.key.as_str()),
        ("next_show", "seats", "(2, *)")
    );
    assert!(
        next.to_string()
            .contains("add `#[reads(seats[(2, *)])]` to `next_show`"),
        "{next}"
    );
    let whole = refusal(peek.everything(1).await.unwrap_err());
    assert_eq!(whole.key, "*");
    assert!(
        whole
            .to_string()
            .ends_with("add `#[reads(seats[*])]` to `everything`"),
        "{whole}"
    );
}

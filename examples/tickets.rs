//! A box office: the seats of many shows in one table keyed by
//! `(show, seat)`, with per-show queries that declare a prefix of the key,
//! `seats[(show, *)]`, so they wait only for bookings of the same show.
//!
//! ```text
//! cargo run --release --example tickets -- local                 # 4 replicas; writes cluster.toml
//! cargo run --release --example tickets -- call open_show '{"show": 7, "seats": 100}' --config cluster.toml
//! cargo run --release --example tickets -- call book '{"show": 7, "seat": 12, "holder": "ada"}' --config cluster.toml
//! cargo run --release --example tickets -- call free_seats '7' --config cluster.toml
//! cargo run --release --example tickets -- --help
//! ```

use cbase::prelude::*;
use serde::{Deserialize, Serialize};

// ANCHOR: types
/// One seat of one show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seat {
    /// On sale.
    Free,
    /// Booked by `holder`.
    Taken {
        /// Who booked it.
        holder: String,
    },
}

/// Why a booking was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BookingError {
    /// The show has no such seat on sale.
    NoSuchSeat {
        /// The show asked for.
        show: u64,
        /// The seat asked for.
        seat: u32,
    },
    /// Someone booked the seat first.
    Taken {
        /// Who holds it.
        holder: String,
    },
}
// ANCHOR_END: types

// ANCHOR: service
/// A box office selling numbered seats of many shows.
#[cbase::service]
pub trait BoxOffice {
    /// Puts seats `0..seats` of `show` on sale; returns how many were added.
    #[writes(seats[(show, *)])]
    fn open_show(&self, show: u64, seats: u32) -> u32;

    /// Books one seat: one key, so bookings of different seats run in parallel.
    #[writes(seats[(show, seat)])]
    fn book(&self, show: u64, seat: u32, holder: String) -> Result<(), BookingError>;

    /// The free seats of one show, in order. Its prefix meets only writes of
    /// this show's seats: it never waits for bookings of other shows.
    #[reads(seats[(show, *)])]
    fn free_seats(&self, show: u64) -> Vec<u32>;

    /// How many seats of each of `shows` are sold.
    #[reads(seats[(*show, *)] for show in &shows)]
    fn sold(&self, shows: Vec<u64>) -> Vec<u32>;

    /// Frees every seat of a show.
    #[writes(seats[(show, *)])]
    fn cancel_show(&self, show: u64) -> u32;

    /// Seats sold over all shows: the whole table.
    #[reads(seats[*])]
    fn total_sold(&self) -> u64;
}
// ANCHOR_END: service

// ANCHOR: state
/// The box office's replicated state.
#[derive(Default, cbase::State)]
pub struct Office {
    /// Every seat of every show, keyed by `(show, seat)`: the seats of one
    /// show are a prefix of the table, stored next to each other.
    seats: Table<(u64, u32), Seat>,
}
// ANCHOR_END: state

// ANCHOR: impl
impl BoxOffice for Office {
    fn open_show(&self, show: u64, seats: u32) -> u32 {
        let mut added = 0;
        for seat in 0..seats {
            if !self.seats.contains_key(&(show, seat)) {
                self.seats.insert((show, seat), Seat::Free);
                added += 1;
            }
        }
        added
    }

    fn book(&self, show: u64, seat: u32, holder: String) -> Result<(), BookingError> {
        match self.seats.get(&(show, seat)) {
            None => Err(BookingError::NoSuchSeat { show, seat }),
            Some(Seat::Taken { holder }) => Err(BookingError::Taken { holder }),
            Some(Seat::Free) => {
                self.seats.insert((show, seat), Seat::Taken { holder });
                Ok(())
            }
        }
    }

    fn free_seats(&self, show: u64) -> Vec<u32> {
        self.seats
            .prefix((show,))
            .fold(Vec::new(), |mut free, key, seat| {
                if *seat == Seat::Free {
                    free.push(key.1);
                }
                free
            })
    }

    fn sold(&self, shows: Vec<u64>) -> Vec<u32> {
        shows
            .into_iter()
            .map(|show| {
                let seats = self.seats.prefix((show,));
                seats.fold(0, |sold, _, seat| sold + u32::from(*seat != Seat::Free))
            })
            .collect()
    }

    fn cancel_show(&self, show: u64) -> u32 {
        // Collect first: writing the table while folding it is refused.
        let taken: Vec<(u64, u32)> =
            self.seats
                .prefix((show,))
                .fold(Vec::new(), |mut taken, key, seat| {
                    if *seat != Seat::Free {
                        taken.push(*key);
                    }
                    taken
                });
        for key in &taken {
            self.seats.insert(*key, Seat::Free);
        }
        taken.len() as u32
    }

    fn total_sold(&self) -> u64 {
        self.seats
            .fold(0, |sold, _, seat| sold + u64::from(*seat != Seat::Free))
    }
}
// ANCHOR_END: impl

fn main() {
    cbase::app::run(|| BoxOfficeService(Office::default()))
}

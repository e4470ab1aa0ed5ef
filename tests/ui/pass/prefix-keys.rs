#![deny(warnings)]

use cbase::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Show {
    pub id: u64,
}

#[cbase::service]
pub trait Theatre {
    /// A prefix of one element.
    #[reads(seats[(show, *)])]
    fn free(&self, show: u64) -> usize;

    /// A field path in a prefix, written.
    #[writes(seats[(s.id, *)])]
    fn cancel(&self, s: Show);

    /// A prefix per element of a collection, by reference or dereferenced.
    #[reads(seats[(*show, *)] for show in &shows)]
    fn free_in(&self, shows: Vec<u64>) -> usize;

    /// A written prefix per element, the element bound by reference.
    #[writes(seats[(s, *)] for s in &shows)]
    fn cancel_all(&self, shows: Vec<u64>);

    /// A tuple key (not a prefix), and a prefix of two elements of a 3-tuple key.
    #[reads(rows[(show, row, *)])]
    #[writes(seats[(show, seat)])]
    fn book(&self, show: u64, row: u8, seat: u32) -> bool;

    /// A dereference in a tuple is an expression, not a wildcard.
    #[reads(seats[(*ids.first().unwrap_or(&0), 1)])]
    fn first(&self, ids: Vec<u64>) -> bool;
}

#[derive(Default, State)]
pub struct Hall {
    seats: Table<(u64, u32), bool>,
    rows: Table<(u64, u8, u32), bool>,
}

impl Theatre for Hall {
    fn free(&self, show: u64) -> usize {
        self.seats.prefix((show,)).fold(0, |n, _, taken| n + usize::from(!taken))
    }
    fn cancel(&self, s: Show) {
        for key in self.seats.prefix((s.id,)).keys() {
            self.seats.insert(key, false);
        }
    }
    fn free_in(&self, shows: Vec<u64>) -> usize {
        shows.into_iter().map(|show| self.free(show)).sum()
    }
    fn cancel_all(&self, shows: Vec<u64>) {
        for show in shows {
            self.cancel(Show { id: show });
        }
    }
    fn book(&self, show: u64, row: u8, seat: u32) -> bool {
        let in_row = !self.rows.prefix((show, row)).is_empty();
        self.seats.insert((show, seat), true);
        in_row
    }
    fn first(&self, ids: Vec<u64>) -> bool {
        self.seats.contains_key(&(*ids.first().unwrap_or(&0), 1))
    }
}

fn main() {
    let show = |s: u64| Key::prefix("seats", &(s,));
    assert_eq!(
        TheatreRequest::CancelAll { shows: vec![1, 2] }.access_set(),
        AccessSet::none().write(show(1)).write(show(2))
    );
    assert_eq!(
        TheatreRequest::Cancel { s: Show { id: 3 } }.access_set(),
        AccessSet::none().write(show(3))
    );
    assert_eq!(
        TheatreRequest::Book {
            show: 1,
            row: 2,
            seat: 3
        }
        .access_set(),
        AccessSet::none()
            .read(Key::prefix("rows", &(1u64, 2u8)))
            .write(Key::entry("seats", &(1u64, 3u32)))
    );
    let service = TheatreService(Hall::default());
    let requests = vec![
        TheatreRequest::Free { show: 1 },
        TheatreRequest::Cancel { s: Show { id: 1 } },
        TheatreRequest::FreeIn { shows: vec![1, 2] },
        TheatreRequest::CancelAll { shows: vec![1, 2] },
        TheatreRequest::Book {
            show: 1,
            row: 2,
            seat: 3,
        },
        TheatreRequest::First { ids: vec![1] },
    ];
    for request in requests {
        let _ = request.access_set();
        let _ = service.execute(request, &Context::new(0, [0; 32]));
    }
}

//! Multi-granularity lock modes: the vocabulary the lock nodes speak.
//!
//! A key is a region at one of three granularities (everything, a table, one
//! cell). Locking only at the finest one would make `*` and `table[*]` touch
//! every cell, which the parallelizer cannot enumerate; locking only at the
//! coarsest would serialise everything. The classic answer (Gray et al.,
//! "Granularity of locks", 1975) is to lock the region itself in read (`R`) or
//! write (`W`) mode and every enclosing region in an *intention* mode (`IR`,
//! `IW`) that says "something below me is read/written". Intentions are
//! compatible with each other, so fine-grained requests never block each other
//! on a coarse node, yet a coarse `R`/`W` meets every finer request on the
//! coarse node. `SIX` ("read all of it, write some of it") is the join of `R`
//! and `IW`, needed when one request reads a table and writes an entry of it.

/// A lock mode. The discriminants index the per-mode counters of a node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Mode {
    /// Something below this node is read (`IS` in the literature).
    IntentRead = 0,
    /// Something below this node is written (`IX`).
    IntentWrite = 1,
    /// All of this node is read (`S`).
    Read = 2,
    /// All of this node is read and something below it is written (`SIX`).
    ReadIntentWrite = 3,
    /// All of this node is written (`X`).
    Write = 4,
}

/// The number of modes, the length of per-mode counter arrays.
pub(crate) const MODES: usize = 5;

impl Mode {
    /// Every mode, in discriminant order.
    pub(crate) const ALL: [Mode; MODES] = [
        Mode::IntentRead,
        Mode::IntentWrite,
        Mode::Read,
        Mode::ReadIntentWrite,
        Mode::Write,
    ];

    /// The counter index of this mode.
    #[inline]
    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// This mode as a one-bit set of modes.
    #[inline]
    pub(crate) const fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The set of modes that may be held together with this one, as a bit mask
    /// (the standard matrix: `IR` with all but `W`; `IW` with `IR`, `IW`; `R`
    /// with `IR`, `R`; `SIX` with `IR`; `W` with nothing).
    #[inline]
    pub(crate) const fn compatible_set(self) -> u8 {
        const IR: u8 = Mode::IntentRead.bit();
        const IW: u8 = Mode::IntentWrite.bit();
        const R: u8 = Mode::Read.bit();
        const SIX: u8 = Mode::ReadIntentWrite.bit();
        match self {
            Mode::IntentRead => IR | IW | R | SIX,
            Mode::IntentWrite => IR | IW,
            Mode::Read => IR | R,
            Mode::ReadIntentWrite => IR,
            Mode::Write => 0,
        }
    }

    /// Whether this mode may be granted next to every mode in `present` (a bit
    /// mask of modes).
    #[inline]
    pub(crate) const fn compatible_with_all(self, present: u8) -> bool {
        present & !self.compatible_set() == 0
    }

    /// Whether the two modes may be held at the same time.
    #[cfg(test)]
    pub(crate) const fn compatible(self, other: Mode) -> bool {
        self.compatible_with_all(other.bit())
    }

    /// The weakest mode that grants both: a node a request reaches through
    /// several of its keys is taken once, in the join of their modes, so the
    /// request never queues behind itself. The join is exact: it is compatible
    /// with precisely the modes both operands are compatible with, so joining
    /// loses no concurrency and hides no conflict.
    pub(crate) const fn join(self, other: Mode) -> Mode {
        use Mode::*;
        match (self, other) {
            (Write, _) | (_, Write) => Write,
            (ReadIntentWrite, _) | (_, ReadIntentWrite) => ReadIntentWrite,
            (IntentWrite, Read) | (Read, IntentWrite) => ReadIntentWrite,
            (Read, _) | (_, Read) => Read,
            (IntentWrite, _) | (_, IntentWrite) => IntentWrite,
            (IntentRead, IntentRead) => IntentRead,
        }
    }

    /// The join of every mode in `set` (a bit mask of modes), `None` for the
    /// empty set. A table lookup: requests collect the modes they want on a
    /// node as a set, one `or` per key, and join once.
    #[inline]
    pub(crate) fn join_set(set: u8) -> Option<Mode> {
        JOIN_SET[usize::from(set & ALL_MODES)]
    }

    /// The mode an enclosing node is taken in when this (`R` or `W`) mode is
    /// taken below it.
    #[inline]
    pub(crate) const fn intention(self) -> Mode {
        match self {
            Mode::IntentRead | Mode::Read => Mode::IntentRead,
            Mode::IntentWrite | Mode::ReadIntentWrite | Mode::Write => Mode::IntentWrite,
        }
    }
}

/// Every mode bit.
const ALL_MODES: u8 = (1 << MODES) - 1;

/// `JOIN_SET[set]` is the join of the modes in `set`.
const JOIN_SET: [Option<Mode>; 1 << MODES] = {
    let mut table = [None; 1 << MODES];
    let mut set = 1;
    while set < table.len() {
        let mut joined: Option<Mode> = None;
        let mut i = 0;
        while i < MODES {
            if set & (1 << i) != 0 {
                let mode = Mode::ALL[i];
                joined = match joined {
                    None => Some(mode),
                    Some(m) => Some(m.join(mode)),
                };
            }
            i += 1;
        }
        table[set] = joined;
        set += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::Mode::{self, *};

    #[test]
    fn compatibility_matrix_is_the_standard_one() {
        // Rows and columns in the order IR, IW, R, SIX, W.
        let expected = [
            [true, true, true, true, false],
            [true, true, false, false, false],
            [true, false, true, false, false],
            [true, false, false, false, false],
            [false, false, false, false, false],
        ];
        for a in Mode::ALL {
            for b in Mode::ALL {
                assert_eq!(
                    a.compatible(b),
                    expected[a.index()][b.index()],
                    "{a:?} with {b:?}"
                );
                assert_eq!(a.compatible(b), b.compatible(a), "matrix must be symmetric");
            }
        }
    }

    #[test]
    fn join_is_the_exact_least_upper_bound() {
        for a in Mode::ALL {
            assert_eq!(a.join(a), a, "join is idempotent");
            for b in Mode::ALL {
                let j = a.join(b);
                assert_eq!(j, b.join(a), "join is commutative");
                for x in Mode::ALL {
                    assert_eq!(
                        j.compatible(x),
                        a.compatible(x) && b.compatible(x),
                        "{a:?} join {b:?} = {j:?} against {x:?}"
                    );
                }
                for c in Mode::ALL {
                    assert_eq!(j.join(c), a.join(b.join(c)), "join is associative");
                }
            }
        }
    }

    #[test]
    fn join_table() {
        assert_eq!(IntentRead.join(IntentWrite), IntentWrite);
        assert_eq!(IntentRead.join(Read), Read);
        assert_eq!(IntentWrite.join(Read), ReadIntentWrite);
        for m in Mode::ALL {
            assert_eq!(m.join(Write), Write);
        }
        for m in [IntentRead, IntentWrite, Read] {
            assert_eq!(m.join(ReadIntentWrite), ReadIntentWrite);
        }
    }

    #[test]
    fn join_set_folds_join() {
        assert_eq!(Mode::join_set(0), None);
        for set in 1u8..32 {
            let folded = Mode::ALL
                .into_iter()
                .filter(|m| set & m.bit() != 0)
                .reduce(Mode::join);
            assert_eq!(Mode::join_set(set), folded, "set {set:05b}");
        }
        assert_eq!(
            Mode::join_set(Mode::Read.bit() | Mode::IntentWrite.bit()),
            Some(ReadIntentWrite)
        );
    }

    #[test]
    fn intentions() {
        assert_eq!(Read.intention(), IntentRead);
        assert_eq!(Write.intention(), IntentWrite);
        // Two intentions never conflict: fine-grained requests pass each other
        // on the coarse nodes.
        for a in [IntentRead, IntentWrite] {
            for b in [IntentRead, IntentWrite] {
                assert!(a.compatible(b));
            }
        }
    }
}

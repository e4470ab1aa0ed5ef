//! Where connections come from, and how many one source may have at once.
//!
//! Before a handshake completes a connection is anonymous, and without a
//! list of clients any key is a client, so the only thing that tells one
//! party's connections from another's is the address they come from. The
//! replica-wide limits (`max_handshakes`, `max_client_connections`) bound
//! memory, but one party can fill them alone; limits per source make it
//! need many addresses to do so, while other sources keep their share.
//!
//! A source is an IPv4 address, or an IPv6 address's /64 prefix: a host
//! usually holds a whole /64, so counting IPv6 addresses one by one would
//! give one host 2^64 sources. An IPv4 address mapped into IPv6 counts as
//! the IPv4 address.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use parking_lot::Mutex;

/// The party a connection is counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Prefix([u8; 8]),
}

impl Source {
    /// The source of a connection from `address`.
    pub fn of(address: IpAddr) -> Source {
        match address {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Source::V6Prefix(prefix)
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(v4) => write!(f, "{v4}"),
            Source::V6Prefix(prefix) => {
                let mut octets = [0u8; 16];
                octets[..8].copy_from_slice(prefix);
                write!(f, "{}/64", Ipv6Addr::from(octets))
            }
        }
    }
}

/// Counts of connections by source, each at most a limit.
///
/// The map holds only sources with a connection counted, so its size is
/// bounded by what the replica-wide limit lets in.
#[derive(Debug)]
pub struct PerSource {
    limit: usize,
    counts: Mutex<HashMap<Source, usize>>,
}

/// One counted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Counted {
    counts: Arc<PerSource>,
    source: Source,
}

impl PerSource {
    /// Counts allowing `limit` connections per source.
    pub fn new(limit: usize) -> Arc<PerSource> {
        Arc::new(PerSource {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a connection from `source`, or `None` if it has `limit`
    /// already.
    pub fn try_count(self: &Arc<Self>, source: Source) -> Option<Counted> {
        let mut counts = self.counts.lock();
        let count = counts.entry(source).or_insert(0);
        if *count >= self.limit {
            if *count == 0 {
                counts.remove(&source);
            }
            return None;
        }
        *count += 1;
        Some(Counted {
            counts: Arc::clone(self),
            source,
        })
    }

    /// Connections counted from `source` now.
    #[cfg(test)]
    fn count(&self, source: Source) -> usize {
        self.counts.lock().get(&source).copied().unwrap_or(0)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock();
        if let Some(count) = counts.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_is_one_source_and_a_mapped_ipv4_address_is_its_ipv4_address() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(other));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        let plain: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::of(plain));
        assert_eq!(Source::of(a).to_string(), "2001:db8:1:2::/64");
        assert_eq!(Source::of(plain).to_string(), "10.0.0.7");
    }

    #[test]
    fn a_source_at_its_limit_is_refused_others_are_not_and_places_come_back_on_drop() {
        let counts = PerSource::new(2);
        let one = Source::of("10.0.0.1".parse().unwrap());
        let two = Source::of("10.0.0.2".parse().unwrap());
        let first = counts.try_count(one).unwrap();
        let _second = counts.try_count(one).unwrap();
        assert!(counts.try_count(one).is_none());
        let _other = counts
            .try_count(two)
            .expect("another source has its own places");
        drop(first);
        assert_eq!(counts.count(one), 1);
        assert!(counts.try_count(one).is_some());
    }

    #[test]
    fn sources_with_nothing_counted_are_forgotten() {
        let counts = PerSource::new(1);
        for n in 0..1000u32 {
            let source = Source::of(IpAddr::V4(Ipv4Addr::from(n)));
            drop(counts.try_count(source).unwrap());
        }
        assert!(counts.counts.lock().is_empty());
        // A limit of zero refuses everything and remembers nothing.
        let none = PerSource::new(0);
        assert!(none.try_count(Source::V4(Ipv4Addr::LOCALHOST)).is_none());
        assert!(none.counts.lock().is_empty());
    }
}

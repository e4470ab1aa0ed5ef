//! What each named scenario does: cluster size, clients, the network's
//! faults until the heal time, crashes and restarts, Byzantine replicas and
//! Twins. Everything a scenario leaves random (which replica misbehaves,
//! when, the links of every round) is drawn from the run's seed.

use std::time::Duration;

use cbase_net::checkpoint::SessionLimits;
use cbase_net::config::ReplicaId;
use cbase_net::protocol::ProtocolConfig;

use crate::byzantine::Behaviour;

pub const MS: u64 = 1_000_000;

/// The link model's parameters (see `network.rs`).
#[derive(Clone, Debug)]
pub struct NetSpec {
    /// The length of a round: links change at every round boundary.
    pub round: u64,
    pub drop: f64,
    pub duplicate: f64,
    /// The normal delay range while faulty.
    pub delay: (u64, u64),
    /// The chance that a message is delayed within `long_range` instead.
    pub long_delay: f64,
    /// Delays above the timeouts.
    pub long_range: (u64, u64),
    /// The chance that a round partitions the instances into 2 or 3 sides.
    pub partition: f64,
    /// The chance that a round cuts some links one way.
    pub cuts: f64,
    /// The chance that a round makes some links slow one way.
    pub slow_links: f64,
    /// Replicas cut off from the rest between two times.
    pub fixed_partition: Option<(Vec<ReplicaId>, u64, u64)>,
    /// The delay range after the heal.
    pub stable_delay: (u64, u64),
    /// The largest frame the transport carries.
    pub frame_limit: usize,
    /// Between two times, every pre-prepare and new-view is lost, and every
    /// view-change sent to the primary of the view it votes for.
    pub outage: Option<(u64, u64)>,
}

/// Which replica a fault is given to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Replica(ReplicaId),
    /// Any replica but the first primary, drawn from the seed.
    Backup,
    /// Any replica, drawn from the seed.
    Any,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub n: usize,
    pub f: usize,
    /// Honest clients, and operations in each one's script.
    pub clients: usize,
    pub ops: usize,
    /// Most time an honest client thinks between two operations.
    pub think: u64,
    /// Network faults stop here (Byzantine replicas stay Byzantine).
    pub heal: u64,
    /// Every honest request must be done this long after the heal.
    pub liveness: u64,
    pub net: NetSpec,
    /// A replica that crashes at a time and stays down.
    pub crash: Option<(Who, u64)>,
    /// A replica that crashes at the first time and restarts with empty
    /// memory (a fresh state machine and service) at the second.
    pub restart: Option<(Who, u64, u64)>,
    /// The restart above is from the replica's data directory instead (its
    /// unsynced writes lost or not, drawn from the seed).
    pub restart_from_disk: bool,
    /// With `restart_from_disk`: the replica's directory is copied at this
    /// time, and the restart is from that copy (a backup put back while the
    /// others went on), as a restored replica (`--restored`).
    pub restore_copy_at: Option<u64>,
    /// With `restart` (without memory) of a backup: the primary of view 0
    /// goes down at this time (which makes the restarted replica's view
    /// change), and comes back without its memory once the restarted
    /// replica reports its recovery over, as an operator rolling restarts
    /// waits for.
    pub rolling_restart: Option<u64>,
    /// Every replica crashes at a time drawn between these two and restarts
    /// from its data directory 50 to 500 ms later.
    pub power_cut: Option<(u64, u64)>,
    /// A replica whose service state is rolled back to an older checkpoint
    /// (a lost write) at a time drawn from the range; it counts as faulty
    /// and must have repaired itself by the end.
    pub corrupt: Option<(Who, u64, u64)>,
    pub byzantine: Vec<(Who, Behaviour)>,
    /// Twinned replicas, and the most sides a round's partition has.
    pub twins: Option<(usize, u8)>,
    /// A client that sends requests about as large as the frame limit.
    pub oversized_client: bool,
    /// The cluster file lists its clients (the scenario's own); anyone else
    /// is refused.
    pub admit_clients: bool,
    /// Each replica's clock runs ahead of real time by up to this much.
    pub clock_skew: u64,
    /// The protocol's `max_clock_skew`, if not its default (10 s): how far
    /// a proposal may be stamped ahead of a backup's clock, and (twice
    /// that) behind it. Shorter, for a run of a few seconds to see a
    /// clock held still.
    pub max_clock_skew: Option<u64>,
    /// The client table keeps at most this many sessions, expired after
    /// this idle time: fewer than the clients, so sessions are evicted
    /// all the time. `None`: the defaults (nothing is ever evicted).
    pub sessions: Option<(usize, u64)>,
    /// The request and view-change timeouts, if not the usual 300 and 600
    /// ms: shorter ones go through more views in the same simulated time.
    pub timeouts: Option<(u64, u64)>,
}

/// The frame limit of the simulated transport.
/// (Above the largest new-view of 7 replicas with a window of 16, which the
/// world checks, as a real replica does before it starts.)
pub const FRAME_LIMIT: usize = 128 * 1024;

fn base() -> Scenario {
    Scenario {
        name: "",
        n: 4,
        f: 1,
        clients: 3,
        ops: 8,
        think: 150 * MS,
        heal: 3_000 * MS,
        liveness: 30_000 * MS,
        net: NetSpec {
            round: 300 * MS,
            drop: 0.0,
            duplicate: 0.0,
            delay: (100_000, 2 * MS),
            long_delay: 0.0,
            long_range: (300 * MS, 2_000 * MS),
            partition: 0.0,
            cuts: 0.0,
            slow_links: 0.0,
            fixed_partition: None,
            stable_delay: (100_000, 2 * MS),
            frame_limit: FRAME_LIMIT,
            outage: None,
        },
        crash: None,
        restart: None,
        restart_from_disk: false,
        restore_copy_at: None,
        rolling_restart: None,
        power_cut: None,
        corrupt: None,
        byzantine: Vec::new(),
        twins: None,
        oversized_client: false,
        admit_clients: false,
        clock_skew: 20 * MS,
        max_clock_skew: None,
        sessions: None,
        timeouts: None,
    }
}

/// The agreement protocol's configuration in every scenario. Fields not set
/// here keep their defaults (the struct grows: the update is not needless).
#[allow(clippy::needless_update)]
pub fn protocol_config(scenario: &Scenario) -> ProtocolConfig {
    let mut sessions = SessionLimits::default();
    if let Some((max_sessions, idle)) = scenario.sessions {
        sessions.max_sessions = max_sessions;
        sessions.idle = Duration::from_nanos(idle);
    }
    let (request, view_change) = scenario.timeouts.unwrap_or((300 * MS, 600 * MS));
    ProtocolConfig {
        sessions,
        checkpoint_interval: 4,
        window: 16,
        max_batch_requests: 64,
        pipeline: 2,
        request_timeout: Duration::from_nanos(request),
        view_change_timeout: Duration::from_nanos(view_change),
        max_pending: 1000,
        max_pending_per_client: 64,
        status_interval: Duration::from_millis(100),
        max_state_bytes: 1 << 20,
        // A pre-prepare must fit a frame: the batches, and room for the
        // pre-prepare around them.
        max_batch_bytes: FRAME_LIMIT - 1024,
        max_clock_skew: scenario.max_clock_skew.map_or(
            ProtocolConfig::default().max_clock_skew,
            Duration::from_nanos,
        ),
        ..ProtocolConfig::default()
    }
}

pub fn scenarios() -> Vec<Scenario> {
    let b = base();
    let net = b.net.clone();
    let n7 = Scenario {
        n: 7,
        f: 2,
        ops: 6,
        ..b.clone()
    };
    vec![
        // ------------------------------------------------ the original seven
        Scenario {
            name: "lossy-network",
            net: NetSpec {
                drop: 0.15,
                duplicate: 0.1,
                delay: (100_000, 20 * MS),
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "crashed-primary",
            crash: Some((Who::Replica(0), 200 * MS)),
            net: NetSpec {
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "restarted-replica",
            restart: Some((Who::Replica(2), 30 * MS, 600 * MS)),
            net: NetSpec {
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        // Restarts without memory one after another, the second once the
        // first reports its recovery over: a replica that entered a view
        // but holds none of the certificates it held before must not count
        // as recovered, or the next restart leaves too few holders of a
        // committed batch for a view change to carry it. The primary goes
        // down meanwhile (the view change that ends the first one's
        // learning), and is the second to come back without memory.
        Scenario {
            name: "rolling-restarts",
            restart: Some((Who::Backup, 30 * MS, 600 * MS)),
            rolling_restart: Some(1_200 * MS),
            net: NetSpec {
                drop: 0.15,
                long_delay: 0.05,
                ..net.clone()
            },
            timeouts: Some((150 * MS, 300 * MS)),
            ..b.clone()
        },
        Scenario {
            name: "partitioned-primary",
            net: NetSpec {
                fixed_partition: Some((vec![0], 100 * MS, 1_500 * MS)),
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "equivocating-primary",
            byzantine: vec![(Who::Replica(0), Behaviour::Equivocate)],
            net: NetSpec {
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "byzantine-backup",
            byzantine: vec![(Who::Replica(2), Behaviour::Chaos)],
            net: NetSpec {
                drop: 0.05,
                duplicate: 0.05,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "byzantine-primary",
            byzantine: vec![(Who::Replica(0), Behaviour::Chaos)],
            net: NetSpec {
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        // ------------------------------------------------ the schedule
        Scenario {
            name: "partitioned-backups",
            net: NetSpec {
                partition: 0.5,
                drop: 0.02,
                delay: (100_000, 10 * MS),
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "delays-above-timeouts",
            net: NetSpec {
                partition: 0.3,
                long_delay: 0.15,
                drop: 0.02,
                delay: (100_000, 10 * MS),
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "asymmetric-links",
            net: NetSpec {
                cuts: 0.5,
                slow_links: 0.5,
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "weak-synchrony",
            liveness: 60_000 * MS,
            net: NetSpec {
                long_delay: 1.0,
                long_range: (300 * MS, 1_500 * MS),
                stable_delay: (150 * MS, 200 * MS),
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            // Every message takes longer than twice the allowed clock
            // skew, from the start: a correct primary's pre-prepares reach
            // the backups stamped further behind their clocks than the
            // base lag. The lag must grow with the timeouts, or the
            // cluster deposes every correct primary for good.
            name: "network-slower-than-the-skew",
            liveness: 60_000 * MS,
            clock_skew: 10 * MS,
            max_clock_skew: Some(40 * MS),
            net: NetSpec {
                delay: (150 * MS, 200 * MS),
                stable_delay: (150 * MS, 200 * MS),
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "restart-then-view-change",
            restart: Some((Who::Backup, 30 * MS, 600 * MS)),
            crash: Some((Who::Replica(0), 1_200 * MS)),
            net: NetSpec {
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "slow-network",
            heal: 0,
            liveness: 60_000 * MS,
            net: NetSpec {
                stable_delay: (150 * MS, 200 * MS),
                ..net.clone()
            },
            ..b.clone()
        },
        // ------------------------------------------------ twins
        Scenario {
            name: "twins-n4",
            twins: Some((1, 2)),
            net: NetSpec {
                round: 400 * MS,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "twins-n4-three-sides",
            twins: Some((1, 3)),
            net: NetSpec {
                round: 250 * MS,
                long_delay: 0.05,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "twins-n5",
            n: 5,
            f: 1,
            twins: Some((1, 2)),
            net: NetSpec {
                round: 400 * MS,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "twins-n7",
            twins: Some((2, 2)),
            net: NetSpec {
                round: 400 * MS,
                ..net.clone()
            },
            ..n7.clone()
        },
        // ------------------------------------------------ Byzantine replicas
        Scenario {
            name: "n7-byzantine-partitions",
            byzantine: vec![
                (Who::Backup, Behaviour::Chaos),
                (Who::Any, Behaviour::Withhold),
            ],
            net: NetSpec {
                partition: 0.3,
                drop: 0.03,
                ..net.clone()
            },
            ..n7.clone()
        },
        // A replica restarts without its memory while a faulty one lies
        // about its view in every status (answers to the restarted
        // replica's probe included) and partitions cut it off from some
        // peers: it must hear of every view it may have acted in before it
        // votes again (n = 7: the restarted replica and the liar are f).
        Scenario {
            name: "n7-restarted-beside-a-liar",
            restart: Some((Who::Any, 30 * MS, 600 * MS)),
            byzantine: vec![(Who::Any, Behaviour::Chaos)],
            net: NetSpec {
                partition: 0.3,
                drop: 0.02,
                ..net.clone()
            },
            ..n7.clone()
        },
        Scenario {
            name: "withholding-replica",
            byzantine: vec![(Who::Any, Behaviour::Withhold)],
            net: NetSpec {
                drop: 0.02,
                long_delay: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "forwarding-backup",
            byzantine: vec![(Who::Backup, Behaviour::ForwardToBackups)],
            net: NetSpec {
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "future-view-flood",
            byzantine: vec![(Who::Any, Behaviour::FloodFuture)],
            net: NetSpec {
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "restart-from-disk",
            restart: Some((Who::Any, 300 * MS, 900 * MS)),
            restart_from_disk: true,
            net: NetSpec {
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        // A replica is put back from a copy of its directory taken before
        // the partitioned primary is replaced: the copy's view is below
        // those it voted in since.
        Scenario {
            name: "restored-copy",
            restart: Some((Who::Backup, 1_100 * MS, 1_300 * MS)),
            restart_from_disk: true,
            restore_copy_at: Some(250 * MS),
            net: NetSpec {
                fixed_partition: Some((vec![0], 400 * MS, 1_000 * MS)),
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "power-cut",
            power_cut: Some((200 * MS, 1_800 * MS)),
            think: 100 * MS,
            ..b.clone()
        },
        Scenario {
            name: "dripping-state-transfer",
            restart: Some((Who::Replica(2), 30 * MS, 600 * MS)),
            byzantine: vec![(Who::Replica(3), Behaviour::DripState)],
            ..b.clone()
        },
        Scenario {
            // A primary that stamps its proposals far behind every clock:
            // backups must not prepare them on its word alone, and the
            // request timers must replace it.
            name: "clock-holding-primary",
            byzantine: vec![(Who::Replica(0), Behaviour::HoldClock)],
            clock_skew: 5 * MS,
            max_clock_skew: Some(20 * MS),
            ..b.clone()
        },
        Scenario {
            name: "clock-after-restore",
            byzantine: vec![(Who::Replica(0), Behaviour::NudgeTimestamps)],
            restart: Some((Who::Backup, 900 * MS, 1_100 * MS)),
            think: 400 * MS,
            net: NetSpec {
                fixed_partition: Some((vec![0], 1_200 * MS, 3_000 * MS)),
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            // A primary that adds to every proposal an unsigned batch in an
            // honest client's name; clients' batches go unsigned to every
            // replica (or signed, for half of them) with 2% loss, so some
            // backups miss some and need vouchers.
            name: "forging-unsigned-primary",
            byzantine: vec![(Who::Replica(0), Behaviour::ForgeUnsigned)],
            net: NetSpec {
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "smuggling-primary",
            byzantine: vec![(Who::Replica(0), Behaviour::Smuggle)],
            admit_clients: true,
            ..b.clone()
        },
        Scenario {
            // Four clients, room for two sessions that expire after 400 ms
            // idle: sessions are evicted all the time, and the primary
            // replays old client batches, which must never run twice.
            name: "evicting-sessions",
            clients: 4,
            sessions: Some((2, 400 * MS)),
            byzantine: vec![(Who::Replica(0), Behaviour::Replay)],
            restart: Some((Who::Backup, 500 * MS, 1_500 * MS)),
            net: NetSpec {
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "timestamp-pushing-primary",
            byzantine: vec![(Who::Replica(0), Behaviour::Timestamps)],
            ..b.clone()
        },
        Scenario {
            // For seconds, every proposal and new-view is lost, and every
            // vote sent to the primary of the view it votes for: every view
            // change fails, one after the other (a short view-change
            // timeout makes it more than 4n of them), while the replicas
            // still work in their old view. Checks that once the network
            // heals, they enter a view again (liveness after the heal).
            name: "vote-outages",
            timeouts: Some((30 * MS, MS / 4)),
            ops: 4,
            net: NetSpec {
                outage: Some((200 * MS, 3_000 * MS)),
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            // A backup whose view-changes are signed but bloated to nearly
            // a frame (junk checkpoint proofs at 0, repeated votes), sent
            // early to the next primary too, while the first primary is cut
            // off for a while and partitions force more view changes:
            // checks that a correct primary's new-view still goes out
            // (liveness after the heal).
            name: "bloated-votes",
            byzantine: vec![(Who::Backup, Behaviour::BloatVotes)],
            net: NetSpec {
                fixed_partition: Some((vec![0], 100 * MS, 1_500 * MS)),
                partition: 0.2,
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            // A first primary that pre-prepares to two backups only, keeps
            // the certificate their (otherwise lost) prepares give it, and
            // votes with it only two views later, silent otherwise; with
            // partitions so later views fail too: checks that a proposal a
            // new-view re-issues from its vote is still served by a correct
            // replica (liveness, agreement).
            name: "hoarding-primary",
            byzantine: vec![(Who::Replica(0), Behaviour::HoardCertificate)],
            heal: 4_000 * MS,
            net: NetSpec {
                partition: 0.3,
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            // A backup that, whenever it is the primary of the next view,
            // sends every peer three windows of distinct pre-prepares for
            // one slot of it, with partitions changing views: checks the
            // bound on pre-prepares held for a view not yet entered.
            name: "flooding-next-primary",
            byzantine: vec![(Who::Backup, Behaviour::FloodNextView)],
            net: NetSpec {
                partition: 0.2,
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        // ------------------------------------------------ clients, clocks, state
        Scenario {
            name: "oversized-requests",
            oversized_client: true,
            net: NetSpec {
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "skewed-clocks",
            clock_skew: 150 * MS,
            restart: Some((Who::Backup, 30 * MS, 800 * MS)),
            net: NetSpec {
                partition: 0.3,
                drop: 0.02,
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            // Reads right after writes, while slow links keep some correct
            // replicas behind the others, and a backup answering every read
            // with what the lagging ones would answer: an accepted read
            // that misses a completed write shows a replica answering
            // before its barrier.
            name: "stale-reading-backup",
            clients: 4,
            ops: 12,
            think: 10 * MS,
            byzantine: vec![(Who::Backup, Behaviour::StaleReads)],
            net: NetSpec {
                // Slow, not as slow as the timeouts: replicas lag without
                // suspecting the primary.
                slow_links: 1.0,
                long_range: (10 * MS, 120 * MS),
                drop: 0.02,
                delay: (100_000, 5 * MS),
                ..net.clone()
            },
            ..b.clone()
        },
        Scenario {
            name: "corrupted-replica",
            corrupt: Some((Who::Backup, 300 * MS, 1_500 * MS)),
            net: NetSpec { drop: 0.02, ..net },
            ..b
        },
    ]
}

//! Prometheus metrics, rendered by hand in the text exposition format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::guard::{Fault, Kind};

/// Upper bounds (seconds) of the finality latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, v: f64) {
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }
}

/// The node's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Finalised height.
    pub height: AtomicU64,
    /// Log entries.
    pub log_size: AtomicU64,
    /// Campaign records committed (step, composite, refusal, aggregate).
    pub events_committed: AtomicU64,
    /// Examples committed in step and composite events.
    pub examples_committed: AtomicU64,
    /// Connected peers.
    pub peers: AtomicU64,
    /// Complete entries waiting for a block.
    pub mempool: AtomicU64,
    /// Entries waiting for signatures.
    pub pending: AtomicU64,
    /// Own entries offered again by housekeeping.
    pub reoffers: AtomicU64,
    /// Entries that expired (could no longer commit, or not in time).
    pub expired: AtomicU64,
    /// Connections refused because the peer is not in genesis.
    pub denied_peers: AtomicU64,
    /// Provably invalid messages, by [`Fault`] (in [`Fault::ALL`] order).
    pub faults: [AtomicU64; Fault::ALL.len()],
    /// Messages over their peer's budget, by [`Kind`] (in [`Kind::ALL`]
    /// order).
    pub limited: [AtomicU64; Kind::ALL.len()],
    /// Bans of peers begun.
    pub bans: AtomicU64,
    /// Entries refused because their authority had its cap pending here.
    pub pending_full: AtomicU64,
    /// Training events whose effect this node checked and found as stated.
    pub effects_held: AtomicU64,
    /// Training events refused here because their effect is not as stated.
    pub effects_broken: AtomicU64,
    /// Training records this node replayed (its audit ticket selected them)
    /// and found as stated.
    pub replays_confirmed: AtomicU64,
    /// Training records refused here because this node's replay differs.
    pub replays_failed: AtomicU64,
    /// Peers banned now.
    pub banned: AtomicU64,
    /// Certified checkpoints stored.
    pub checkpoints: AtomicU64,
    /// Current consensus view.
    pub view: AtomicU64,
    /// Requests refused by the API (4xx).
    pub api_refused: AtomicU64,
    /// Traces answered.
    pub traces: AtomicU64,
    /// Submit-to-finality latency of entries submitted here.
    pub finality: Mutex<Histogram>,
}

impl Metrics {
    /// Counts a provably invalid message.
    pub fn fault(&self, f: Fault) {
        if let Some(i) = Fault::ALL.iter().position(|x| *x == f) {
            self.faults[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a message dropped over its peer's budget.
    pub fn limited(&self, k: Kind) {
        if let Some(i) = Kind::ALL.iter().position(|x| *x == k) {
            self.limited[i].fetch_add(1, Relaxed);
        }
    }

    /// Records a finality latency in seconds.
    pub fn observe_finality(&self, seconds: f64) {
        self.finality
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(seconds);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let gauges: [(&str, &str, &str, &AtomicU64); 21] = [
            (
                "govtune_traces_total",
                "counter",
                "Traces answered.",
                &self.traces,
            ),
            ("govtune_height", "gauge", "Finalised block height.", &self.height),
            ("govtune_log_size", "gauge", "Entries in the log.", &self.log_size),
            (
                "govtune_events_committed_total",
                "counter",
                "Campaign records committed.",
                &self.events_committed,
            ),
            (
                "govtune_examples_committed_total",
                "counter",
                "Examples committed in step and composite events.",
                &self.examples_committed,
            ),
            ("govtune_peers", "gauge", "Connected peers.", &self.peers),
            (
                "govtune_mempool_size",
                "gauge",
                "Complete entries waiting for a block.",
                &self.mempool,
            ),
            (
                "govtune_pending_entries",
                "gauge",
                "Entries waiting for co-signatures.",
                &self.pending,
            ),
            (
                "govtune_reoffers_total",
                "counter",
                "Own entries offered again while not committed.",
                &self.reoffers,
            ),
            (
                "govtune_expired_total",
                "counter",
                "Entries that expired without committing.",
                &self.expired,
            ),
            (
                "govtune_p2p_denied_total",
                "counter",
                "Connections refused: peer not in genesis.",
                &self.denied_peers,
            ),
            (
                "govtune_peer_bans_total",
                "counter",
                "Peers disconnected and refused for a provably invalid message.",
                &self.bans,
            ),
            ("govtune_peers_banned", "gauge", "Peers banned now.", &self.banned),
            (
                "govtune_pending_full_total",
                "counter",
                "Entries refused: their authority had its cap pending here.",
                &self.pending_full,
            ),
            (
                "govtune_effects_held_total",
                "counter",
                "Training events whose delta this node checked against their measurement and found as stated.",
                &self.effects_held,
            ),
            (
                "govtune_effects_broken_total",
                "counter",
                "Training events refused here: their delta is not what their measurement states.",
                &self.effects_broken,
            ),
            (
                "govtune_replays_confirmed_total",
                "counter",
                "Training records this node's audit ticket selected, replayed and found as stated.",
                &self.replays_confirmed,
            ),
            (
                "govtune_replays_failed_total",
                "counter",
                "Training records refused here: this node's replay differs from what they state.",
                &self.replays_failed,
            ),
            (
                "govtune_checkpoints_total",
                "counter",
                "Certified checkpoints stored.",
                &self.checkpoints,
            ),
            ("govtune_view", "gauge", "Current consensus view.", &self.view),
            (
                "govtune_api_refused_total",
                "counter",
                "API requests refused with a 4xx.",
                &self.api_refused,
            ),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
        let name = "govtune_misbehaviour_total";
        let _ = writeln!(
            s,
            "# HELP {name} Provably invalid messages from peers, by kind.\n# TYPE {name} counter"
        );
        for (f, v) in Fault::ALL.iter().zip(&self.faults) {
            let _ = writeln!(s, "{name}{{kind=\"{}\"}} {}", f.label(), v.load(Relaxed));
        }
        let name = "govtune_rate_limited_total";
        let _ = writeln!(
            s,
            "# HELP {name} Messages dropped over their peer's budget, by kind.\n# TYPE {name} counter"
        );
        for (k, v) in Kind::ALL.iter().zip(&self.limited) {
            let _ = writeln!(s, "{name}{{kind=\"{}\"}} {}", k.label(), v.load(Relaxed));
        }
        let h = self.finality.lock().unwrap_or_else(|p| p.into_inner());
        let name = "govtune_finality_latency_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Submit-to-finality latency of entries submitted to this node.\n# TYPE {name} histogram"
        );
        for (b, c) in LATENCY_BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(s, "{name}_sum {}", h.sum);
        let _ = writeln!(s, "{name}_count {}", h.count);
        s
    }
}

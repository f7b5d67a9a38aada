//! The data order of a campaign and its accounting.
//!
//! A fine-tune's recipe commits the *considered set*: the candidate sources
//! and each one's example count ([`ConsideredSource`]). The order is a
//! permutation of those examples per epoch, drawn from an [`OrderSeed`]
//! fixed after the campaign commits: the consortium's threshold-BLS
//! signature on the checkpoint of the block that committed the campaign
//! entry, which no operator can compute or grind alone.
//!
//! Positions run across epochs (`epoch * N + i` for `N` examples per
//! epoch). Every step event, refusal and refusal aggregate names the span
//! of positions it draws from ([`OrderSpan`]); [`Accounting`] follows a
//! campaign's records in chain order and checks that every drawn position
//! is accounted for exactly once: trained (in an event), refused by name
//! (in a refusal), or counted by its reason in the next aggregate. An
//! event completes everything drawn before its span's end, so an example
//! skipped without a trace is found at the first event (or aggregate) after
//! it; the close names where the order stopped. A batch all of whose
//! examples are refused under refusal aggregation leaves no record of its
//! own: the next record's span starts after it, and its positions are
//! settled (and must be refused) when the next event completes. Co-signers run it before they sign,
//! verifiers over a closed campaign's record.
//!
//! The permutation, per epoch `e` (a big-endian `u64`) over `N` examples:
//! Fisher–Yates from the last index down, index `i` swapped with
//! `j = uniform(0..=i)`, where `uniform` draws little-endian `u64`s from the
//! stream `SHA3-256("govtune-order/v1 stream" || seed || e || block)` (a
//! big-endian `u64` block counter, four draws per block) and rejects draws
//! at or above the largest multiple of `i + 1` below `2^64`. Flat index
//! `k` is example `k - prefix` of the considered source whose prefix sum of
//! counts is the largest `<= k`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha3::{Digest as _, Sha3_256};

use crate::digest::Digest;
use crate::entry::EntryBody;
use crate::ids::Timestamp;
use crate::refusal::{RefusalCount, RefusalReason};

/// Most examples a considered set may hold (one epoch's positions).
pub const MAX_CONSIDERED_EXAMPLES: u64 = 1 << 22;
/// Most sources a considered set may list.
pub const MAX_CONSIDERED_SOURCES: usize = 1 << 12;

const SEED_TAG: &[u8] = b"govtune-order/v1 seed";
const STREAM_TAG: &[u8] = b"govtune-order/v1 stream";

/// A candidate source of a campaign and its example count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsideredSource {
    /// Source id (manifest digest).
    pub source: Digest,
    /// Examples the source has (its manifest's `example_count`).
    pub examples: u64,
}

/// Positions `start..end` of a campaign's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderSpan {
    /// First position.
    pub start: u64,
    /// One past the last position.
    pub end: u64,
}

impl OrderSpan {
    /// Number of positions.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether it holds no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The randomness a campaign's order is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSeed(pub Digest);

impl OrderSeed {
    /// The seed of `campaign` from the consortium signature on the
    /// checkpoint of the block that committed it.
    pub fn from_checkpoint(campaign: &Digest, signature: &[u8]) -> Self {
        let mut h = Sha3_256::new();
        h.update(SEED_TAG);
        h.update(campaign.0);
        h.update((signature.len() as u64).to_be_bytes());
        h.update(signature);
        Self(Digest(h.finalize().into()))
    }
}

/// Why a considered set or an order is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The considered set is empty, too large or lists a source twice.
    #[error("considered set: {0}")]
    Considered(String),
}

/// A considered set's order under one seed; keeps one epoch's permutation
/// (and its inverse) at a time.
#[derive(Debug, Clone)]
pub struct Order {
    sources: Vec<ConsideredSource>,
    by_id: BTreeMap<Digest, usize>,
    prefix: Vec<u64>,
    n: u64,
    seed: OrderSeed,
    epoch: Option<u64>,
    // Shared, so that a checker clones an order cheaply.
    perm: Arc<Vec<u32>>,
    inv: Arc<Vec<u32>>,
}

impl Order {
    /// The order of `considered` (in the recipe's order) under `seed`.
    pub fn new(considered: &[ConsideredSource], seed: OrderSeed) -> Result<Self, OrderError> {
        let bad = |m: String| Err(OrderError::Considered(m));
        if considered.len() > MAX_CONSIDERED_SOURCES {
            return bad(format!(
                "{} sources, at most {MAX_CONSIDERED_SOURCES}",
                considered.len()
            ));
        }
        let mut prefix = Vec::with_capacity(considered.len());
        let mut by_id = BTreeMap::new();
        let mut n = 0u64;
        for (i, c) in considered.iter().enumerate() {
            if by_id.insert(c.source, i).is_some() {
                return bad(format!("source {} is listed twice", c.source.short()));
            }
            prefix.push(n);
            n = n.saturating_add(c.examples);
        }
        if n == 0 {
            return bad("no example to draw".into());
        }
        if n > MAX_CONSIDERED_EXAMPLES {
            return bad(format!("{n} examples, at most {MAX_CONSIDERED_EXAMPLES}"));
        }
        Ok(Self {
            sources: considered.to_vec(),
            by_id,
            prefix,
            n,
            seed,
            epoch: None,
            perm: Arc::default(),
            inv: Arc::default(),
        })
    }

    /// Examples per epoch.
    pub fn epoch_len(&self) -> u64 {
        self.n
    }

    /// The considered sources, in the recipe's order.
    pub fn sources(&self) -> &[ConsideredSource] {
        &self.sources
    }

    /// The considered-set position of `source`, if considered.
    pub fn source_position(&self, source: &Digest) -> Option<usize> {
        self.by_id.get(source).copied()
    }

    fn load(&mut self, epoch: u64) {
        if self.epoch == Some(epoch) {
            return;
        }
        let perm = permutation(&self.seed, epoch, self.n);
        let mut inv = vec![0; perm.len()];
        for (i, &k) in perm.iter().enumerate() {
            inv[k as usize] = i as u32;
        }
        self.perm = Arc::new(perm);
        self.inv = Arc::new(inv);
        self.epoch = Some(epoch);
    }

    /// The example at `position`: (considered-set position, example index).
    pub fn at(&mut self, position: u64) -> (usize, u64) {
        let (epoch, i) = (position / self.n, position % self.n);
        self.load(epoch);
        let k = u64::from(self.perm[i as usize]);
        let s = self.prefix.partition_point(|&p| p <= k) - 1;
        (s, k - self.prefix[s])
    }

    /// The position of example `index` of considered source `source` in
    /// `epoch`, if it has one.
    pub fn position_of(&mut self, epoch: u64, source: usize, index: u64) -> Option<u64> {
        let c = self.sources.get(source)?;
        if index >= c.examples {
            return None;
        }
        self.load(epoch);
        let k = self.prefix[source] + index;
        Some(epoch * self.n + u64::from(self.inv[k as usize]))
    }
}

/// The permutation of epoch `epoch` over `n` flat indexes (see the module
/// doc).
fn permutation(seed: &OrderSeed, epoch: u64, n: u64) -> Vec<u32> {
    let mut perm: Vec<u32> = (0..n as u32).collect();
    let mut stream = Stream::new(seed, epoch);
    for i in (1..n).rev() {
        let j = stream.uniform(i + 1);
        perm.swap(i as usize, j as usize);
    }
    perm
}

/// The draw stream of one epoch.
struct Stream {
    prefix: Sha3_256,
    block: u64,
    buf: [u64; 4],
    used: usize,
}

impl Stream {
    fn new(seed: &OrderSeed, epoch: u64) -> Self {
        let mut prefix = Sha3_256::new();
        prefix.update(STREAM_TAG);
        prefix.update(seed.0 .0);
        prefix.update(epoch.to_be_bytes());
        Self {
            prefix,
            block: 0,
            buf: [0; 4],
            used: 4,
        }
    }

    fn next(&mut self) -> u64 {
        if self.used == 4 {
            let mut h = self.prefix.clone();
            h.update(self.block.to_be_bytes());
            let out: [u8; 32] = h.finalize().into();
            for (k, w) in self.buf.iter_mut().enumerate() {
                let mut b = [0u8; 8];
                b.copy_from_slice(&out[8 * k..8 * k + 8]);
                *w = u64::from_le_bytes(b);
            }
            self.block += 1;
            self.used = 0;
        }
        self.used += 1;
        self.buf[self.used - 1]
    }

    /// Uniform in `0..bound` (`bound >= 1`), by rejection.
    fn uniform(&mut self, bound: u64) -> u64 {
        // 2^64 mod bound: draws above u64::MAX - rem would bias the result.
        let rem = (u64::MAX % bound + 1) % bound;
        loop {
            let x = self.next();
            if x <= u64::MAX - rem {
                return x % bound;
            }
        }
    }
}

/// Why a campaign's records do not account for its order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderFault {
    /// A span is malformed: empty, across epochs, or behind what is settled.
    #[error("span {start}..{end}: {why}")]
    BadSpan {
        /// Span start.
        start: u64,
        /// Span end.
        end: u64,
        /// What is wrong.
        why: String,
    },
    /// An example is not at a position of the record's span.
    #[error("example {index} of source {} is not in the order at positions {start}..{end}", .source_id.short())]
    NotInSpan {
        /// Source id.
        source_id: Digest,
        /// Example index.
        index: u64,
        /// Span start.
        start: u64,
        /// Span end.
        end: u64,
    },
    /// An example accounted for twice, or out of the order's sequence.
    #[error("example {index} of source {} (position {position}) is accounted for twice or out of order", .source_id.short())]
    Twice {
        /// Source id.
        source_id: Digest,
        /// Example index.
        index: u64,
        /// Its position.
        position: u64,
    },
    /// An admissible example drawn and neither trained nor refused.
    #[error("example {index} of source {} (position {position}) was skipped: admissible, and neither trained nor refused", .source_id.short())]
    Skipped {
        /// Source id.
        source_id: Digest,
        /// Example index.
        index: u64,
        /// Its position.
        position: u64,
    },
    /// A refusal names a reason admission does not give for the example
    /// (a memorisation refusal: an example admission refuses).
    #[error("example {index} of source {} is refused for {claimed}, but admission {}", .source_id.short(), match .actual { Some(r) => format!("refuses it for {r}"), None => "admits it".to_string() })]
    WrongReason {
        /// Source id.
        source_id: Digest,
        /// Example index.
        index: u64,
        /// The refusal's reason.
        claimed: RefusalReason,
        /// Admission's verdict at the refusal's time (`None`: admitted).
        actual: Option<RefusalReason>,
    },
    /// A refusal aggregate's counts are not the refusals it covers.
    #[error("aggregate over positions {start}..{end} counts {claimed} of source {} for {reason}; the order has {actual}", .source_id.short())]
    Miscounted {
        /// Span start.
        start: u64,
        /// Span end.
        end: u64,
        /// Source id.
        source_id: Digest,
        /// Reason.
        reason: RefusalReason,
        /// What the aggregate says.
        claimed: u64,
        /// What the order gives.
        actual: u64,
    },
    /// Refused positions that no aggregate counted.
    #[error("{count} refused positions from {first} on are in no aggregate")]
    Unaggregated {
        /// First such position.
        first: u64,
        /// How many.
        count: u64,
    },
    /// The close names another stop position than the records reached.
    #[error("the close says the order stopped at {claimed}; the records drew up to {drawn}")]
    WrongStop {
        /// The close's position.
        claimed: u64,
        /// Where the records stopped.
        drawn: u64,
    },
}

/// What admission says of a source at a time: `None` admits it, `Some`
/// refuses it with that reason.
pub type ReasonOf<'a> = dyn FnMut(&Digest, Timestamp) -> Option<RefusalReason> + 'a;

/// A campaign's accounting, fed its records in chain order.
#[derive(Debug, Clone)]
pub struct Accounting {
    order: Order,
    drawn: u64,
    done: u64,
    claimed: BTreeSet<u64>,
    awaiting: BTreeMap<u64, (Digest, RefusalReason)>,
}

impl Accounting {
    /// Accounting of `order` from position 0.
    pub fn new(order: Order) -> Self {
        Self {
            order,
            drawn: 0,
            done: 0,
            claimed: BTreeSet::new(),
            awaiting: BTreeMap::new(),
        }
    }

    /// The order followed.
    pub fn order(&mut self) -> &mut Order {
        &mut self.order
    }

    /// One past the last position drawn so far.
    pub fn drawn(&self) -> u64 {
        self.drawn
    }

    /// Whether the next record of the campaign's chain would be taken in
    /// (its first fault if not), without taking it: what a co-signer asks
    /// of an offered record.
    pub fn check(&self, body: &EntryBody, reason_of: &mut ReasonOf<'_>) -> Result<(), OrderFault> {
        let mut probe = self.clone();
        let mut faults = Vec::new();
        probe.take(body, reason_of, &mut faults);
        faults.into_iter().next().map_or(Ok(()), Err)
    }

    /// Checks the next record of the campaign's chain and takes it in.
    /// Records other than events, refusals, aggregates and the close pass.
    /// On `Err` (the record's first fault) the accounting is unchanged: what
    /// a co-signer runs before it signs.
    pub fn record(&mut self, body: &EntryBody, reason_of: &mut ReasonOf<'_>) -> Result<(), OrderFault> {
        let mut next = self.clone();
        let mut faults = Vec::new();
        next.take(body, reason_of, &mut faults);
        if let Some(f) = faults.into_iter().next() {
            return Err(f);
        }
        *self = next;
        Ok(())
    }

    /// Takes in the next record whatever it holds and returns every fault
    /// in it: a verifier reading a committed record goes on past a fault
    /// (a faulty claim is ignored, a skipped position counts as settled, a
    /// miscounted aggregate settles what it covers) to find the next.
    pub fn record_all(&mut self, body: &EntryBody, reason_of: &mut ReasonOf<'_>) -> Vec<OrderFault> {
        let mut faults = Vec::new();
        self.take(body, reason_of, &mut faults);
        faults
    }

    fn take(&mut self, body: &EntryBody, reason_of: &mut ReasonOf<'_>, faults: &mut Vec<OrderFault>) {
        match body {
            EntryBody::Step(_) | EntryBody::Composite(_) => {
                let Some(e) = body.event() else { return };
                let span = *e.order;
                if self.claim(span, e.records.iter().map(|r| (r.source, r.index)), faults) {
                    self.complete(span.end, e.step_time, reason_of, faults);
                }
            }
            EntryBody::Refusal(r) => {
                self.claim(r.order, r.examples.iter().map(|x| (x.source, x.index)), faults);
                // What it refuses, admission must refuse for that reason (a
                // rolled-back step's examples: admission admitted them).
                let mut reasons: BTreeMap<Digest, Option<RefusalReason>> = BTreeMap::new();
                for x in &r.examples {
                    let actual = *reasons
                        .entry(x.source)
                        .or_insert_with(|| reason_of(&x.source, r.time));
                    let expected = (r.reason != RefusalReason::Memorisation).then_some(r.reason);
                    if actual != expected {
                        faults.push(OrderFault::WrongReason {
                            source_id: x.source,
                            index: x.index,
                            claimed: r.reason,
                            actual,
                        });
                    }
                }
            }
            EntryBody::RefusalAggregate(a) => self.aggregate(a.order, &a.counts, a.time, reason_of, faults),
            EntryBody::CampaignClose(c) => {
                if c.order_end != self.drawn {
                    faults.push(OrderFault::WrongStop {
                        claimed: c.order_end,
                        drawn: self.drawn,
                    });
                }
                self.complete(self.drawn, c.time, reason_of, faults);
                if let Some((&first, _)) = self.awaiting.first_key_value() {
                    faults.push(OrderFault::Unaggregated {
                        first,
                        count: self.awaiting.len() as u64,
                    });
                    self.awaiting.clear();
                }
            }
            _ => {}
        }
    }

    fn bad_span(span: OrderSpan, why: impl Into<String>) -> OrderFault {
        OrderFault::BadSpan {
            start: span.start,
            end: span.end,
            why: why.into(),
        }
    }

    /// Draws `span` and claims the listed examples' positions in it; false
    /// if the span itself is unusable (nothing is claimed then).
    fn claim(
        &mut self,
        span: OrderSpan,
        examples: impl Iterator<Item = (Digest, u64)>,
        faults: &mut Vec<OrderFault>,
    ) -> bool {
        let n = self.order.epoch_len();
        let why = if span.is_empty() {
            Some("empty".to_string())
        } else if span.start / n != (span.end - 1) / n {
            Some("crosses an epoch boundary".into())
        } else if span.start < self.done {
            Some(format!("reaches behind position {}, already settled", self.done))
        } else if span.start > self.drawn + n {
            Some(format!(
                "starts more than an epoch past position {}, drawn so far",
                self.drawn
            ))
        } else {
            None
        };
        if let Some(why) = why {
            faults.push(Self::bad_span(span, why));
            return false;
        }
        let epoch = span.start / n;
        let mut last = None;
        for (source, index) in examples {
            let not_in = OrderFault::NotInSpan {
                source_id: source,
                index,
                start: span.start,
                end: span.end,
            };
            let p = self
                .order
                .source_position(&source)
                .and_then(|s| self.order.position_of(epoch, s, index))
                .filter(|p| (span.start..span.end).contains(p));
            let Some(p) = p else {
                faults.push(not_in);
                continue;
            };
            if last.is_some_and(|l| p <= l) || p < self.done || !self.claimed.insert(p) {
                faults.push(OrderFault::Twice {
                    source_id: source,
                    index,
                    position: p,
                });
                continue;
            }
            last = Some(p);
        }
        self.drawn = self.drawn.max(span.end);
        true
    }

    /// Settles every position before `upto`: unclaimed ones must be refused
    /// at `time` and wait for an aggregate.
    fn complete(
        &mut self,
        upto: u64,
        time: Timestamp,
        reason_of: &mut ReasonOf<'_>,
        faults: &mut Vec<OrderFault>,
    ) {
        let mut reasons: BTreeMap<Digest, Option<RefusalReason>> = BTreeMap::new();
        for p in self.done..upto {
            if self.claimed.remove(&p) {
                continue;
            }
            let (s, index) = self.order.at(p);
            let source = self.order.sources[s].source;
            match *reasons.entry(source).or_insert_with(|| reason_of(&source, time)) {
                Some(reason) => {
                    self.awaiting.insert(p, (source, reason));
                }
                None => faults.push(OrderFault::Skipped {
                    source_id: source,
                    index,
                    position: p,
                }),
            }
        }
        self.done = self.done.max(upto);
    }

    fn aggregate(
        &mut self,
        span: OrderSpan,
        counts: &[RefusalCount],
        time: Timestamp,
        reason_of: &mut ReasonOf<'_>,
        faults: &mut Vec<OrderFault>,
    ) {
        if span.start > span.end || span.end > self.drawn + self.order.epoch_len() {
            faults.push(Self::bad_span(
                span,
                format!(
                    "ends more than an epoch past position {}, drawn so far",
                    self.drawn
                ),
            ));
            return;
        }
        let before: Vec<u64> = self.awaiting.range(..span.start).map(|(p, _)| *p).collect();
        if let Some(&first) = before.first() {
            faults.push(OrderFault::Unaggregated {
                first,
                count: before.len() as u64,
            });
            for p in before {
                self.awaiting.remove(&p);
            }
        }
        self.complete(span.end, time, reason_of, faults);
        self.drawn = self.drawn.max(span.end);
        let mut actual: BTreeMap<(Digest, RefusalReason), u64> = BTreeMap::new();
        for (_, key) in self.awaiting.range(span.start..span.end) {
            *actual.entry(*key).or_default() += 1;
        }
        let claimed: BTreeMap<(Digest, RefusalReason), u64> =
            counts.iter().map(|c| ((c.source, c.reason), c.count)).collect();
        let keys: BTreeSet<&(Digest, RefusalReason)> = actual.keys().chain(claimed.keys()).collect();
        for key in keys {
            let (a, c) = (
                actual.get(key).copied().unwrap_or(0),
                claimed.get(key).copied().unwrap_or(0),
            );
            if a != c {
                faults.push(OrderFault::Miscounted {
                    start: span.start,
                    end: span.end,
                    source_id: key.0,
                    reason: key.1,
                    claimed: c,
                    actual: a,
                });
            }
        }
        let settled: Vec<u64> = self
            .awaiting
            .range(span.start..span.end)
            .map(|(p, _)| *p)
            .collect();
        for p in settled {
            self.awaiting.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn considered(counts: &[u64]) -> Vec<ConsideredSource> {
        counts
            .iter()
            .enumerate()
            .map(|(i, &examples)| ConsideredSource {
                source: Digest([i as u8 + 1; 32]),
                examples,
            })
            .collect()
    }

    fn seed(b: u8) -> OrderSeed {
        OrderSeed(Digest([b; 32]))
    }

    #[test]
    fn each_epoch_is_a_permutation_and_position_of_inverts_at() {
        let mut o = Order::new(&considered(&[3, 0, 5, 2]), seed(7)).unwrap();
        assert_eq!(o.epoch_len(), 10);
        for epoch in 0..3 {
            let mut seen = BTreeSet::new();
            for i in 0..10 {
                let p = epoch * 10 + i;
                let (s, idx) = o.at(p);
                assert!(seen.insert((s, idx)));
                assert!(idx < o.sources()[s].examples);
                assert_eq!(o.position_of(epoch, s, idx), Some(p));
            }
        }
        assert_eq!(o.position_of(0, 0, 3), None);
        assert_eq!(o.position_of(0, 9, 0), None);
    }

    #[test]
    fn the_order_depends_on_the_seed_and_the_epoch() {
        let c = considered(&[40, 24]);
        let mut a = Order::new(&c, seed(1)).unwrap();
        let mut b = Order::new(&c, seed(2)).unwrap();
        let ea: Vec<_> = (0..64).map(|p| a.at(p)).collect();
        let eb: Vec<_> = (0..64).map(|p| b.at(p)).collect();
        let ea2: Vec<_> = (64..128).map(|p| a.at(p)).collect();
        assert_ne!(ea, eb);
        assert_ne!(ea, ea2);
        // Deterministic.
        let mut a2 = Order::new(&c, seed(1)).unwrap();
        assert_eq!(ea, (0..64).map(|p| a2.at(p)).collect::<Vec<_>>());
    }

    /// Frozen: a fixed order, as an independent implementation of the
    /// module doc's algorithm (a few lines of Python's hashlib) gives it.
    #[test]
    fn a_frozen_order() {
        let mut o = Order::new(&considered(&[4, 4]), seed(0)).unwrap();
        let first: Vec<(usize, u64)> = (0..8).map(|p| o.at(p)).collect();
        assert_eq!(first, FROZEN);
    }
    const FROZEN: [(usize, u64); 8] = [(0, 2), (1, 2), (0, 1), (0, 0), (0, 3), (1, 0), (1, 1), (1, 3)];

    #[test]
    fn considered_sets_are_checked() {
        assert!(Order::new(&[], seed(0)).is_err());
        assert!(Order::new(&considered(&[0, 0]), seed(0)).is_err());
        let mut twice = considered(&[1, 1]);
        twice[1].source = twice[0].source;
        assert!(Order::new(&twice, seed(0)).is_err());
        assert!(Order::new(&considered(&[MAX_CONSIDERED_EXAMPLES + 1]), seed(0)).is_err());
    }

    #[test]
    fn seeds_differ_by_campaign_and_signature() {
        let c1 = Digest([1; 32]);
        let c2 = Digest([2; 32]);
        assert_ne!(
            OrderSeed::from_checkpoint(&c1, b"sig"),
            OrderSeed::from_checkpoint(&c2, b"sig")
        );
        assert_ne!(
            OrderSeed::from_checkpoint(&c1, b"sig"),
            OrderSeed::from_checkpoint(&c1, b"sih")
        );
    }
}

//! What an operator's tuner hands its own node for governance's replay
//! audits (`tuner::material`): a campaign's audit context (its probe set
//! and canaries) and, per training record, the batch and the optimizer
//! state before it. They reach this node through its admin API and leave
//! it only over the authenticated p2p channel, to governance nodes
//! (`node::runtime`); never through the public API. Held in memory,
//! bounded: the oldest go first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use provenance::Digest;
use serde::{Deserialize, Serialize};

/// Bytes the inbox holds at most.
pub const MAX_INBOX_BYTES: usize = 256 << 20;

/// Which part of a campaign's audit material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AuditPart {
    /// The campaign's audit context (`GTAC`).
    Context,
    /// The material of the training record at this chain position (`GTAM`).
    Record(u64),
}

/// The audit material this node holds for governance.
#[derive(Debug, Default)]
pub struct AuditInbox {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    items: BTreeMap<(Digest, AuditPart), Vec<u8>>,
    arrival: VecDeque<(Digest, AuditPart)>,
    bytes: usize,
}

impl AuditInbox {
    /// Keeps `bytes` as `part` of `campaign`'s material (replacing what was
    /// there), dropping the oldest parts beyond [`MAX_INBOX_BYTES`].
    pub fn put(&self, campaign: Digest, part: AuditPart, bytes: Vec<u8>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (campaign, part);
        g.bytes += bytes.len();
        if let Some(old) = g.items.insert(key, bytes) {
            g.bytes -= old.len();
            g.arrival.retain(|k| k != &key);
        }
        g.arrival.push_back(key);
        while g.bytes > MAX_INBOX_BYTES && g.arrival.len() > 1 {
            let Some(k) = g.arrival.pop_front() else { break };
            if let Some(old) = g.items.remove(&k) {
                g.bytes -= old.len();
            }
        }
    }

    /// `part` of `campaign`'s material, if held.
    pub fn get(&self, campaign: &Digest, part: AuditPart) -> Option<Vec<u8>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.items.get(&(*campaign, part)).cloned()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_drops_the_oldest_beyond_its_bound() {
        let inbox = AuditInbox::default();
        let c = Digest([1; 32]);
        inbox.put(c, AuditPart::Context, vec![1; 10]);
        inbox.put(c, AuditPart::Context, vec![2; 20]);
        assert_eq!(inbox.get(&c, AuditPart::Context), Some(vec![2; 20]));
        assert_eq!(inbox.bytes(), 20);
        let big = MAX_INBOX_BYTES / 2;
        inbox.put(c, AuditPart::Record(0), vec![0; big]);
        inbox.put(c, AuditPart::Record(1), vec![0; big]);
        assert!(inbox.bytes() <= MAX_INBOX_BYTES);
        assert_eq!(inbox.get(&c, AuditPart::Context), None, "the oldest went first");
        assert!(inbox.get(&c, AuditPart::Record(1)).is_some());
        assert_eq!(inbox.get(&Digest([2; 32]), AuditPart::Context), None);
    }
}

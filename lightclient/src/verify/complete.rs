//! A listing checked against the checkpoint's authenticated index
//! ([`provenance::index`]): every page's entries must be, in order, the
//! positions the index proves for the listed source or campaign, and the
//! last page must end where the proven list ends. A node that leaves one
//! entry out, or claims that a named key is absent, is caught without a
//! scan of the log.

use provenance::api::IndexCitation;
use provenance::index::{verify_page, IndexKey, IndexValue, PAGE};
use provenance::Digest;

use crate::light::VerifyError;

/// The walk of one listing under one checkpoint's index root.
#[derive(Debug)]
pub struct Completeness {
    key: IndexKey,
    root: Digest,
    /// What the index says of the key (once the first page is checked).
    value: Option<Option<IndexValue>>,
    /// How many of the key's positions the pages so far listed.
    rank: u64,
}

fn lie(what: String) -> VerifyError {
    VerifyError::BadProof(what)
}

impl Completeness {
    /// A walk for `key` under the index root `root`.
    pub fn new(key: IndexKey, root: Digest) -> Self {
        Self {
            key,
            root,
            value: None,
            rank: 0,
        }
    }

    /// What the index proved of the key: its value, or `None` if absent
    /// (`None` before the first page).
    #[cfg(test)]
    pub fn value(&self) -> Option<IndexValue> {
        self.value.flatten()
    }

    /// Checks one listing page: its citation's proof and pages, and that
    /// `listed` (the page's entries' log indexes) are the key's next
    /// positions. `last`: no page follows, so the list must end here.
    pub fn page(
        &mut self,
        citation: Option<&IndexCitation>,
        listed: &[u64],
        last: bool,
    ) -> Result<(), VerifyError> {
        let what = describe(&self.key);
        let c = citation.ok_or_else(|| {
            lie(format!(
                "the listing of {what} carries no proof from the checkpoint's index"
            ))
        })?;
        let value = c
            .proof
            .verify(&self.key, &self.root)
            .map_err(|e| lie(format!("the index proof of {what}: {e}")))?;
        if self.value.is_some_and(|v| v != value) {
            return Err(lie(format!(
                "two pages of the listing of {what} prove different index values"
            )));
        }
        self.value = Some(value);
        let Some(v) = value else {
            if let Some(i) = listed.first() {
                return Err(lie(format!(
                    "the index proves that no entry names {what}, yet the listing shows entry {i}"
                )));
            }
            return Ok(());
        };
        // The key's positions by rank, from the cited pages.
        let mut known = std::collections::BTreeMap::new();
        for p in &c.pages {
            verify_page(&v, p.page, &p.positions, &p.proof)
                .map_err(|e| lie(format!("the index of {what}: {e}")))?;
            for (k, pos) in p.positions.iter().enumerate() {
                known.insert(p.page * PAGE as u64 + k as u64, *pos);
            }
        }
        let at = |rank: u64| -> Result<u64, VerifyError> {
            known.get(&rank).copied().ok_or_else(|| {
                lie(format!(
                    "the listing of {what} does not cite the index page of its entry number {rank}"
                ))
            })
        };
        for i in listed {
            if self.rank >= v.count {
                return Err(lie(format!(
                    "the listing of {what} shows entry {i} past the {} the index counts",
                    v.count
                )));
            }
            let want = at(self.rank)?;
            if *i != want {
                return Err(lie(if *i > want {
                    format!("the node's listing of {what} omits entry {want}")
                } else {
                    format!("the node's listing of {what} shows entry {i}, which the index does not hold")
                }));
            }
            self.rank += 1;
        }
        if last && self.rank < v.count {
            let missing = at(self.rank)
                .map(|p| format!("entry {p}"))
                .unwrap_or_else(|_| format!("its last {} entries", v.count - self.rank));
            return Err(lie(format!(
                "the node's listing of {what} omits {missing}: it ends after {} of the {} entries the index counts",
                self.rank, v.count
            )));
        }
        Ok(())
    }
}

fn describe(key: &IndexKey) -> String {
    match key {
        IndexKey::Source(d) => format!("the source {}", d.short()),
        IndexKey::Campaign(d) => format!("the campaign {}", d.short()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provenance::api::IndexPage;
    use provenance::index::MemoryIndex;

    fn key(i: u8) -> IndexKey {
        IndexKey::Source(Digest([i; 32]))
    }

    /// An index where source 1 is named at 0, 3, 5, ... (600 positions,
    /// three pages) and source 2 at 1.
    fn index() -> MemoryIndex {
        let mut ix = MemoryIndex::new();
        for n in 0..600u64 {
            ix.add(key(1), n * 2 + 1);
        }
        ix.add(key(2), 1);
        ix.commit();
        ix
    }

    fn citation(ix: &MemoryIndex, k: &IndexKey, pages: &[u64]) -> IndexCitation {
        IndexCitation {
            proof: ix.prove(k),
            pages: pages
                .iter()
                .filter_map(|p| {
                    ix.page(k, *p).map(|(positions, proof)| IndexPage {
                        page: *p,
                        positions,
                        proof,
                    })
                })
                .collect(),
        }
    }

    #[test]
    fn a_listing_that_is_the_proven_list_passes_page_by_page() {
        let ix = index();
        let all = ix.positions(&key(1)).to_vec();
        let mut c = Completeness::new(key(1), ix.root());
        c.page(Some(&citation(&ix, &key(1), &[0, 1])), &all[..300], false)
            .expect("first page");
        c.page(Some(&citation(&ix, &key(1), &[1, 2])), &all[300..], true)
            .expect("last page");
        assert_eq!(c.value().map(|v| v.count), Some(600));
    }

    #[test]
    fn an_omission_a_truncation_or_a_false_absence_is_caught() {
        let ix = index();
        let all = ix.positions(&key(1)).to_vec();
        let cit = citation(&ix, &key(1), &[0, 1, 2]);
        // One entry left out.
        let mut dropped = all.clone();
        dropped.remove(17);
        let e = Completeness::new(key(1), ix.root())
            .page(Some(&cit), &dropped, true)
            .expect_err("omission");
        assert!(e.to_string().contains(&format!("omits entry {}", all[17])), "{e}");
        // The list cut short.
        let e = Completeness::new(key(1), ix.root())
            .page(Some(&cit), &all[..599], true)
            .expect_err("truncation");
        assert!(
            e.to_string().contains(&format!("omits entry {}", all[599])),
            "{e}"
        );
        // No citation at all.
        assert!(Completeness::new(key(1), ix.root())
            .page(None, &all, true)
            .is_err());
        // Absence claimed with another key's proof (source 9 is absent).
        let absent = citation(&ix, &key(9), &[]);
        assert!(Completeness::new(key(1), ix.root())
            .page(Some(&absent), &[], true)
            .is_err());
        // A key truly absent is proven so, with nothing listed.
        let mut c = Completeness::new(key(9), ix.root());
        c.page(Some(&absent), &[], true).expect("absent");
        assert_eq!(c.value(), None);
        // An entry added that the index does not hold.
        let mut extra = all.clone();
        extra.insert(3, all[2] + 1);
        assert!(Completeness::new(key(1), ix.root())
            .page(Some(&cit), &extra, true)
            .is_err());
        // A page's positions changed (its proof no longer verifies).
        let mut forged = cit.clone();
        forged.pages[0].positions[4] += 1;
        assert!(Completeness::new(key(1), ix.root())
            .page(Some(&forged), &all, true)
            .is_err());
    }
}

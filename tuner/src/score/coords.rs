//! Sketch coordinates grouped by parameter block and restricted to routed pieces.

use provenance::RoutingMask;

use crate::lora::AdapterLayout;

use super::inputs::LoggedExample;

/// Coordinates of the layout grouped by parameter block.
#[derive(Debug, Clone)]
pub struct BlockCoords {
    /// Sketch side `s`.
    pub side: usize,
    /// Per block, its pieces (ascending).
    pub pieces: Vec<Vec<usize>>,
    /// Piece → block.
    pub block_of: Vec<u32>,
    /// Per piece, its routing unit at each granularity (block, layer, head).
    units: Vec<[u32; 3]>,
}

impl BlockCoords {
    /// Groups the pieces of `layout` by block, for sketches of side `side`.
    pub fn new(layout: &AdapterLayout, side: usize) -> Self {
        let nb = layout.blocks();
        let heads = layout.model.heads;
        Self {
            side,
            pieces: (0..nb).map(|b| layout.block_pieces(b).collect()).collect(),
            block_of: layout.pieces.iter().map(|p| p.block()).collect(),
            units: layout
                .pieces
                .iter()
                .map(|p| {
                    use provenance::RoutingGranularity as G;
                    [
                        p.unit(G::Block, heads),
                        p.unit(G::Layer, heads),
                        p.unit(G::Head, heads),
                    ]
                })
                .collect(),
        }
    }

    /// Sketch dimension.
    pub fn dim(&self) -> usize {
        self.block_of.len() * self.side * self.side
    }

    /// Number of blocks.
    pub fn blocks(&self) -> usize {
        self.pieces.len()
    }

    /// Which pieces `routing` lets an example reach.
    pub fn piece_mask(&self, routing: Option<&RoutingMask>) -> Vec<bool> {
        match routing {
            None => vec![true; self.block_of.len()],
            Some(m) => {
                let g = match m.granularity {
                    provenance::RoutingGranularity::Block => 0,
                    provenance::RoutingGranularity::Layer => 1,
                    provenance::RoutingGranularity::Head => 2,
                };
                self.units.iter().map(|u| m.allows(u[g])).collect()
            }
        }
    }

    pub(super) fn piece_range(&self, p: usize) -> std::ops::Range<usize> {
        let s2 = self.side * self.side;
        p * s2..(p + 1) * s2
    }

    /// Block-`b` coordinates of `v` over the pieces allowed by `mask`
    /// (zeros elsewhere), in the block's piece order.
    pub(super) fn block_vec(&self, b: usize, v: &[f32], mask: &[bool]) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.pieces[b].len() * self.side * self.side);
        for &p in &self.pieces[b] {
            let r = self.piece_range(p);
            if mask[p] {
                out.extend(v[r].iter().map(|&x| f64::from(x)));
            } else {
                out.extend(std::iter::repeat_n(0.0, r.len()));
            }
        }
        out
    }
}

/// `v` restricted to the pieces allowed by `mask` (zeros elsewhere) and
/// unit-normalised (all zeros if it is zero there).
pub(super) fn unit_routed(coords: &BlockCoords, v: &[f32], mask: &[bool]) -> Vec<f64> {
    let s2 = coords.side * coords.side;
    let mut x: Vec<f64> = v
        .iter()
        .enumerate()
        .map(|(j, &y)| if mask[j / s2] { f64::from(y) } else { 0.0 })
        .collect();
    let n = x.iter().map(|y| y * y).sum::<f64>().sqrt();
    if n > 0.0 {
        x.iter_mut().for_each(|y| *y /= n);
    }
    x
}

/// `1 / ‖v‖` over the pieces allowed by `mask` when `unit` (0 for a zero
/// vector), else 1.
pub(super) fn inv_norm(coords: &BlockCoords, v: &[f32], mask: &[bool], unit: bool) -> f64 {
    inv_norm_scaled(coords, v, mask, unit, None)
}

/// [`inv_norm`] of `v ⊙ scale`.
pub(super) fn inv_norm_scaled(
    coords: &BlockCoords,
    v: &[f32],
    mask: &[bool],
    unit: bool,
    scale: Option<&[f64]>,
) -> f64 {
    if !unit {
        return 1.0;
    }
    let mut sq = 0f64;
    for (p, &m) in mask.iter().enumerate() {
        if m {
            for j in coords.piece_range(p) {
                let x = f64::from(v[j]) * scale.map_or(1.0, |s| s[j]);
                sq += x * x;
            }
        }
    }
    if sq > 0.0 {
        1.0 / sq.sqrt()
    } else {
        0.0
    }
}

/// Piece masks per example, computed once per distinct routing mask.
pub(super) struct MaskCache {
    pub(super) masks: Vec<Vec<bool>>,
    pub(super) of: Vec<usize>,
}

impl MaskCache {
    pub(super) fn new(coords: &BlockCoords, examples: &[LoggedExample]) -> Self {
        let mut keys: Vec<Option<&RoutingMask>> = Vec::new();
        let mut masks = Vec::new();
        let of = examples
            .iter()
            .map(|e| {
                let k = e.routing.as_ref();
                match keys.iter().position(|x| *x == k) {
                    Some(i) => i,
                    None => {
                        keys.push(k);
                        masks.push(coords.piece_mask(k));
                        keys.len() - 1
                    }
                }
            })
            .collect();
        Self { masks, of }
    }
    pub(super) fn get(&self, i: usize) -> &[bool] {
        &self.masks[self.of[i]]
    }
}

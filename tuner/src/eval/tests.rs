//! Tests of the measures and of canary planting.

use std::collections::BTreeSet;

use super::*;

#[test]
fn spearman_matches_hand_values() {
    assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
    assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    // d = (0, 1, -1): 1 - 6·2/(3·8) = 0.5.
    assert!((spearman(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]) - 0.5).abs() < 1e-12);
    assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
}

#[test]
fn planting_is_distinct_and_in_place() {
    let mut texts = vec![vec![b'.'; 65 * 40]; 3];
    let c = plant(&mut texts, 65, 6, 3, 12, None, 1).unwrap();
    let all: BTreeSet<Vec<u8>> = c
        .iter()
        .map(|c| [c.prefix.clone(), c.secret.clone()].concat())
        .collect();
    assert_eq!(all.len(), 6);
    for p in &c {
        let full = [p.prefix.as_slice(), &p.secret].concat();
        for &w in &p.windows {
            let win = &texts[p.source][w as usize * 65..(w as usize + 1) * 65];
            assert!(win.windows(full.len()).any(|x| x == full.as_slice()));
        }
    }
}

#[test]
fn bootstrap_interval_brackets_the_point() {
    let pred: Vec<Vec<f64>> = (0..5)
        .map(|q| (0..10).map(|s| (s * (q + 1)) as f64).collect())
        .collect();
    let actual: Vec<Vec<f64>> = (0..5)
        .map(|q| {
            (0..10)
                .map(|s| s as f64 + if s % 3 == q % 3 { 4.0 } else { 0.0 })
                .collect()
        })
        .collect();
    let (p, (lo, hi)) = lds_with_ci(&pred, &actual, 200, 3);
    assert!(lo <= p && p <= hi && p > 0.5 && p < 1.0, "{lo} {p} {hi}");
}

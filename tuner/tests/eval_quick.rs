//! `eval trace --quick` in CI, trimmed to fit the suite: the evaluation
//! pipeline (planting, governed training, scoring, retraining half-subsets,
//! the n-gram baseline) with 4 subsets instead of 8 and without the example
//! and epoch granularity runs (the whole `--quick` takes about 400 s in the
//! dev profile here), with checks that bite if the tracing signal or the
//! setup breaks.

use std::path::Path;

use tuner::eval::{run_eval, EvalSettings};

#[test]
fn the_quick_tracing_evaluation_finds_canaries_and_reports_every_row() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/campaign.toml");
    let mut s = EvalSettings::quick();
    s.subsets = 4;
    s.granularities = false;
    let r = run_eval(&config, &s).expect("quick evaluation");
    println!("{}", r.table());

    assert_eq!(r.methods.len(), 6, "every method row");
    let ngram = r.methods.last().expect("baseline row");
    assert!(ngram.method.contains("gram"), "{}", ngram.method);
    // Each secret is literally in one source: the baseline must find all,
    // or the canaries were not planted where the evaluation thinks.
    assert_eq!(ngram.top1, 1.0, "8-gram baseline finds every planted canary");

    let default = &r.methods[0];
    assert!(default.method.contains("default"), "{}", default.method);
    // Chance is 1 / 8 sources; the full setting reaches 0.95.
    let recall = default.top1_salient.expect("salient recall");
    assert!(recall >= 0.5, "default TracIn salient top-1 recall {recall}");
    for m in &r.methods {
        assert!(
            m.lds.is_finite() && (-1.0..=1.0).contains(&m.lds),
            "{}: LDS {}",
            m.method,
            m.lds
        );
        assert!(m.lds_ci.0 <= m.lds_ci.1, "{}: interval {:?}", m.method, m.lds_ci);
        for v in [m.top1, m.top3] {
            assert!((0.0..=1.0).contains(&v), "{}: recall {v}", m.method);
        }
        assert!(m.top1 <= m.top3, "{}: top-1 above top-3", m.method);
    }
}

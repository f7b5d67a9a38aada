//! The evaluation's results per method and per event granularity, and their Markdown tables.

use super::settings::EvalSettings;

/// Recall and LDS of one method.
#[derive(Debug, Clone)]
pub struct MethodRow {
    /// Method name.
    pub method: String,
    /// Canary top-1 source recall.
    pub top1: f64,
    /// Canary top-3 source recall.
    pub top3: f64,
    /// Canary top-1 source recall by salient score (None: not defined).
    pub top1_salient: Option<f64>,
    /// Canary top-3 source recall by salient score.
    pub top3_salient: Option<f64>,
    /// Mean LDS over held-out queries.
    pub lds: f64,
    /// 95% bootstrap interval of the LDS.
    pub lds_ci: (f64, f64),
    /// Mean over held-out queries of the Spearman correlation across
    /// sources between a source's score and the query-loss increase when
    /// it is left out (None when not run).
    pub loo: Option<f64>,
}

/// One event granularity's figures.
#[derive(Debug, Clone)]
pub struct GranularityRow {
    /// Granularity.
    pub granularity: &'static str,
    /// Examples per step.
    pub batch: usize,
    /// Committed steps.
    pub steps: u64,
    /// Events with sketches.
    pub events: usize,
    /// Entry bytes per admitted example.
    pub log_per_example: f64,
    /// Sketch bytes per admitted example.
    pub sketch_per_example: f64,
    /// Canary top-1 source recall (TracIn, sum).
    pub top1: f64,
    /// Canary top-1 source recall (TracIn, salient).
    pub top1_salient: f64,
    /// Share of canaries whose top event holds a copy.
    pub event_hit: f64,
    /// Mean fraction of the top event's examples that carry the canary.
    pub event_precision: f64,
    /// Mean fraction of the top `copies` examples that carry the canary.
    pub example_precision: f64,
    /// Governed training seconds.
    pub train_s: f64,
}

/// The evaluation's results.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// Settings used.
    pub settings: EvalSettings,
    /// Sources.
    pub sources: usize,
    /// Training examples.
    pub examples: u64,
    /// Sketch dimension.
    pub sketch_dim: usize,
    /// Steps rolled back for memorisation in the main run.
    pub rolled_back: u64,
    /// TracIn, TRAK, 8-gram rows.
    pub methods: Vec<MethodRow>,
    /// Per granularity.
    pub granularities: Vec<GranularityRow>,
    /// Held-out queries.
    pub queries: usize,
    /// Wall seconds.
    pub seconds: f64,
}

impl EvalReport {
    /// The report as Markdown tables.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let mut o = format!(
            "{} sources, {} training examples, {} canaries x {} copies, {} epochs, batch {}, sketch side {} (dim {}), {} checkpoints + final, {} half-subsets retrained, {} held-out queries, {} steps rolled back; {:.0} s.\n\n",
            self.sources, self.examples, s.canaries, s.canary_copies, s.epochs, s.batch, s.sketch_side,
            self.sketch_dim, s.checkpoints, s.subsets, self.queries, self.rolled_back, self.seconds
        );
        o.push_str("| method | canary top-1 / top-3 source recall (sum) | canary top-1 / top-3 source recall (salient) | source LDS (95% CI) | leave-one-source-out Spearman |\n|---|---|---|---|---|\n");
        for m in &self.methods {
            let sal = match (m.top1_salient, m.top3_salient) {
                (Some(a), Some(b)) => format!("{a:.2} / {b:.2}"),
                _ => "n/a".into(),
            };
            let loo = m.loo.map_or("n/a".to_string(), |x| format!("{x:.2}"));
            o.push_str(&format!(
                "| {} | {:.2} / {:.2} | {} | {:.2} [{:.2}, {:.2}] | {} |\n",
                m.method, m.top1, m.top3, sal, m.lds, m.lds_ci.0, m.lds_ci.1, loo
            ));
        }
        if !self.granularities.is_empty() {
            o.push_str("\n| event granularity | batch | steps | events | log B/example | sketch B/example | top-1 source recall (sum / salient) | top event holds the canary | top event precision | example precision@copies | train s |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
            for g in &self.granularities {
                o.push_str(&format!(
                    "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} / {:.2} | {:.2} | {:.3} | {:.2} | {:.0} |\n",
                    g.granularity,
                    g.batch,
                    g.steps,
                    g.events,
                    g.log_per_example,
                    g.sketch_per_example,
                    g.top1,
                    g.top1_salient,
                    g.event_hit,
                    g.event_precision,
                    g.example_precision,
                    g.train_s
                ));
            }
        }
        o
    }
}

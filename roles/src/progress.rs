//! A live progress bar for a campaign: step, loss, admitted, refused,
//! rolled back, committed entries, their rate and finality latency.

use std::sync::{Arc, Mutex};

use tuner::campaign::{Progress, ProgressInfo};

use crate::campaign::SinkStats;

/// A live progress bar: step, loss, admitted, refused, rolled back,
/// committed entries and their rate. Without a terminal (CI, logs) it
/// prints a line every few seconds instead.
#[derive(Debug)]
pub struct BarProgress {
    bar: Option<indicatif::ProgressBar>,
    last_line: f64,
    stats: Option<Arc<Mutex<SinkStats>>>,
}

impl BarProgress {
    /// A bar over `steps` attempted steps.
    pub fn new(steps: u64) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(steps);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Self {
            bar,
            last_line: 0.0,
            stats: None,
        }
    }

    /// Also shows the median finality latency of the sink's last entries.
    pub fn with_stats(mut self, stats: Arc<Mutex<SinkStats>>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Finishes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

impl Progress for BarProgress {
    fn update(&mut self, i: &ProgressInfo) {
        let finality = self
            .stats
            .as_ref()
            .and_then(|s| s.lock().ok().and_then(|s| s.recent_median(20)))
            .map(|m| format!(" finality {:.2} s", m))
            .unwrap_or_default();
        let msg = format!(
            "step {} loss {:.3} admitted {} refused {} rolled back {} committed {} ({:.1} events/s){finality}",
            i.step,
            i.loss,
            i.admitted,
            i.refused,
            i.rolled_back,
            i.events,
            i.events as f64 / i.elapsed.max(1e-9)
        );
        match &self.bar {
            Some(b) => {
                b.set_position(i.attempts);
                b.set_message(msg);
            }
            None if i.elapsed - self.last_line >= 5.0 => {
                self.last_line = i.elapsed;
                println!("{msg}");
            }
            None => {}
        }
    }
}

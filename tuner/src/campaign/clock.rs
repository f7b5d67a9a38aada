//! The step time source: a simulated clock for tests and the system clock.

use provenance::Timestamp;

/// The step time source. Time is an input: tests use [`SimClock`].
pub trait Clock {
    /// The time of the step about to run.
    fn now(&mut self) -> Timestamp;
}

/// A clock that advances a fixed amount per reading.
#[derive(Debug, Clone)]
pub struct SimClock {
    /// Next reading.
    pub next: u64,
    /// Increment per reading (ms).
    pub step_ms: u64,
}

impl Clock for SimClock {
    fn now(&mut self) -> Timestamp {
        let t = self.next;
        self.next += self.step_ms;
        Timestamp(t)
    }
}

/// The system clock.
#[derive(Debug, Clone, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&mut self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Timestamp(ms)
    }
}

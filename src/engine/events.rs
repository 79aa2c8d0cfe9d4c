//! The one contract between the flash engine and its consumers (line output, `--json`, the
//! console, recordings): [`EngineEvent`].
//!
//! Order, guaranteed by the engine:
//! 1. exactly one [`EngineEvent::Plan`] first;
//! 2. then, for each step in plan order: one [`EngineEvent::StepStarted`], zero or more
//!    [`EngineEvent::Progress`] (throttled: at most every 100 ms or 1 % of the step, plus one at
//!    100 %), then exactly one [`EngineEvent::StepFinished`] or [`EngineEvent::StepFailed`];
//!    after a failure no further step starts;
//! 3. [`EngineEvent::Log`] may appear anywhere after the plan (device logs worth showing);
//! 4. exactly one [`EngineEvent::Done`] last.

use std::time::{Duration, Instant};

use serde::Serialize;

/// What a step does to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Upload the Firehose programmer over Sahara.
    SaharaUpload,
    /// Negotiate the Firehose configuration.
    Configure,
    Erase,
    Program,
    Patch,
    SetBootable,
    Reset,
    /// Read sectors from the device (a backup).
    Read,
    /// Check data already moved: a second read of the device, or a read-back of files.
    Verify,
}

/// One step as announced in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepInfo {
    pub index: usize,
    pub kind: StepKind,
    /// Partition label or a name derived from the file.
    pub name: String,
    /// Bytes this step moves (0 for erase/patch/configure).
    pub bytes: u64,
    /// Physical partition (LUN) and start sector, when the step touches storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lun: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_sector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sectors: Option<u64>,
}

/// An event of a flash run. Serialised with a `"event"` tag, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EngineEvent {
    Plan {
        steps: Vec<StepInfo>,
        total_bytes: u64,
    },
    StepStarted {
        index: usize,
        kind: StepKind,
        name: String,
        bytes: u64,
    },
    Progress {
        index: usize,
        done: u64,
        total: u64,
        bytes_per_s: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        eta_s: Option<f64>,
        /// Overall progress 0..=1, weighted by bytes (steps without bytes count a little).
        overall: f64,
    },
    StepFinished {
        index: usize,
        bytes: u64,
        elapsed_ms: u64,
        bytes_per_s: f64,
    },
    StepFailed {
        index: usize,
        what: String,
        why: String,
        next: String,
    },
    Log {
        message: String,
    },
    Done {
        ok: bool,
        bytes: u64,
        elapsed_ms: u64,
    },
}

/// Weight of a step without bytes in the overall progress, so Sahara/configure/erase/patch are
/// visible but small next to partitions.
const SMALL_STEP_WEIGHT: u64 = 64 * 1024;

/// Computes overall progress weighted by bytes.
#[derive(Debug, Clone)]
pub struct Weights {
    weights: Vec<u64>,
    total: u64,
}

impl Weights {
    pub fn new(steps: &[StepInfo]) -> Self {
        let weights: Vec<u64> = steps
            .iter()
            .map(|s| s.bytes.max(SMALL_STEP_WEIGHT))
            .collect();
        let total = weights.iter().sum::<u64>().max(1);
        Weights { weights, total }
    }

    /// Overall fraction when steps before `index` are done and `index` is `done/total` through.
    pub fn overall(&self, index: usize, done: u64, total: u64) -> f64 {
        let before: u64 = self.weights.iter().take(index).sum();
        let w = self.weights.get(index).copied().unwrap_or(0);
        let frac = if total == 0 {
            0.0
        } else {
            (done.min(total) as f64) / (total as f64)
        };
        ((before as f64 + w as f64 * frac) / self.total as f64).clamp(0.0, 1.0)
    }
}

/// Throttles progress events for one step: emits at most every `interval` or every 1 % of the
/// step, and always at 100 %. Also computes rate and ETA.
#[derive(Debug)]
pub struct ProgressThrottle {
    started: Instant,
    last_emit: Option<Instant>,
    last_done: u64,
    total: u64,
    interval: Duration,
}

impl ProgressThrottle {
    pub fn new(total: u64) -> Self {
        ProgressThrottle {
            started: Instant::now(),
            last_emit: None,
            last_done: 0,
            total,
            interval: Duration::from_millis(100),
        }
    }

    /// Returns `(bytes_per_s, eta_s)` when an event should be emitted for `done` bytes.
    pub fn update(&mut self, done: u64) -> Option<(f64, Option<f64>)> {
        let now = Instant::now();
        let step = (self.total / 100).max(1);
        let due = done >= self.total && self.last_done < self.total
            || done.saturating_sub(self.last_done) >= step
                && self
                    .last_emit
                    .is_none_or(|t| now.duration_since(t) >= self.interval)
            || self
                .last_emit
                .is_none_or(|t| now.duration_since(t) >= self.interval * 5)
                && done > self.last_done;
        if !due {
            return None;
        }
        self.last_emit = Some(now);
        self.last_done = done;
        let secs = now.duration_since(self.started).as_secs_f64().max(1e-6);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 && done < self.total {
            Some((self.total - done) as f64 / rate)
        } else if done >= self.total {
            Some(0.0)
        } else {
            None
        };
        Some((rate, eta))
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(index: usize, bytes: u64) -> StepInfo {
        StepInfo {
            index,
            kind: StepKind::Program,
            name: format!("p{index}"),
            bytes,
            lun: None,
            start_sector: None,
            sectors: None,
        }
    }

    #[test]
    fn weights_are_by_bytes_with_small_steps_visible() {
        let w = Weights::new(&[step(0, 0), step(1, 10 << 20), step(2, 10 << 20)]);
        assert_eq!(w.overall(0, 0, 0), 0.0);
        let after_first = w.overall(1, 0, 10 << 20);
        assert!(after_first > 0.0 && after_first < 0.01);
        let half = w.overall(2, 0, 10 << 20);
        assert!((half - 0.5).abs() < 0.01, "{half}");
        assert_eq!(w.overall(2, 10 << 20, 10 << 20), 1.0);
    }

    #[test]
    fn throttle_emits_final_and_limits_rate() {
        let mut t = ProgressThrottle::new(1000);
        let mut n = 0;
        for done in (0..=1000).step_by(1) {
            if t.update(done).is_some() {
                n += 1;
            }
        }
        // At most one per 1% step while the interval has not passed, plus the final one.
        assert!(n <= 3, "emitted {n}");
        let mut t = ProgressThrottle::new(1000);
        assert!(t.update(1000).is_some());
        assert!(t.update(1000).is_none());
    }

    #[test]
    fn events_serialise_with_an_event_tag() {
        let e = EngineEvent::StepStarted {
            index: 1,
            kind: StepKind::Program,
            name: "boot".into(),
            bytes: 4096,
        };
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["event"], "step_started");
        assert_eq!(j["kind"], "program");
    }
}

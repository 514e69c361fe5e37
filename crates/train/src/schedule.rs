//! Learning-rate schedules: linear warmup, then cosine decay or warmup-stable-decay
//! (constant, then a linear cool-down over the last part of training).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Cosine,
    /// Warmup-stable-decay; decays over the last `decay_frac` of the steps.
    Wsd,
    Constant,
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cosine" => Ok(Self::Cosine),
            "wsd" => Ok(Self::Wsd),
            "constant" => Ok(Self::Constant),
            _ => Err(format!(
                "unknown schedule `{s}`: use cosine, wsd or constant"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub max_lr: f64,
    /// The final learning rate as a fraction of the peak.
    pub min_lr_frac: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// For WSD: the share of steps spent decaying.
    pub decay_frac: f64,
}

impl Schedule {
    /// Learning rate of (0-based) step `step`.
    pub fn lr(&self, step: u64) -> f64 {
        let min = self.max_lr * self.min_lr_frac;
        if step < self.warmup_steps {
            return self.max_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let total = self.total_steps.max(1);
        match self.kind {
            ScheduleKind::Constant => self.max_lr,
            ScheduleKind::Cosine => {
                let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
                let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
                min + 0.5 * (self.max_lr - min) * (1.0 + (std::f64::consts::PI * t).cos())
            }
            ScheduleKind::Wsd => {
                let decay = ((total as f64) * self.decay_frac).round().max(1.0) as u64;
                let start = total.saturating_sub(decay).max(self.warmup_steps);
                if step < start {
                    self.max_lr
                } else {
                    let t = ((step - start) as f64 / decay as f64).min(1.0);
                    self.max_lr + (min - self.max_lr) * t
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind) -> Schedule {
        Schedule {
            kind,
            max_lr: 1.0,
            min_lr_frac: 0.1,
            warmup_steps: 10,
            total_steps: 110,
            decay_frac: 0.2,
        }
    }

    #[test]
    fn warmup_rises_linearly_to_the_peak() {
        let s = sched(ScheduleKind::Cosine);
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn cosine_ends_at_the_floor() {
        let s = sched(ScheduleKind::Cosine);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.55).abs() < 1e-9);
        assert!((s.lr(110) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn wsd_holds_then_decays() {
        let s = sched(ScheduleKind::Wsd);
        assert_eq!(s.lr(50), 1.0);
        assert_eq!(s.lr(87), 1.0);
        assert!(s.lr(99) < 1.0 && s.lr(99) > 0.1);
        assert!((s.lr(110) - 0.1).abs() < 1e-12);
    }
}

//! The accepted range of every numeric setting, in one place: the CLI's flag parsers and the
//! checks of config files (TOML) and plan files use these, so a zero, negative, NaN, infinite
//! or absurdly large value is an error naming the setting before it reaches a division, an
//! index, an allocation or a clock.
use crate::error::TrainError;

/// A whole-number setting: its name (as the flag says it) and inclusive bounds.
#[derive(Clone, Copy, Debug)]
pub struct Whole {
    pub name: &'static str,
    pub min: u64,
    pub max: u64,
}

/// A real-valued setting: finite, and within [min, max] (`open_min`: above min, not at it;
/// `open_max`: below max).
#[derive(Clone, Copy, Debug)]
pub struct Real {
    pub name: &'static str,
    pub min: f64,
    pub max: f64,
    pub open_min: bool,
    pub open_max: bool,
}

const fn whole(name: &'static str, min: u64, max: u64) -> Whole {
    Whole { name, min, max }
}

const fn real(name: &'static str, min: f64, open_min: bool, max: f64, open_max: bool) -> Real {
    Real { name, min, max, open_min, open_max }
}

pub const EPOCHS: Whole = whole("--epochs", 1, 100_000);
pub const BATCH: Whole = whole("--batch", 1, 4096);
pub const WORKERS: Whole = whole("--workers", 0, 256);
pub const THREADS: Whole = whole("--threads", 0, 1024);
pub const LOADER_MEMORY: Whole = whole("--loader-memory", 1, 1 << 40);
pub const GPU_MEMORY_LIMIT: Whole = whole("--gpu-memory-limit", 1 << 20, 1 << 50);
pub const LIMIT_PER_CLASS: Whole = whole("--limit-per-class", 1, 1 << 32);
pub const WARMUP_STEPS: Whole = whole("--warmup-steps", 0, 1 << 32);
pub const NUM_CLASSES: Whole = whole("--num-classes", 1, 100_000);
pub const INPUT: Whole = whole("--input", 1, 2048);
pub const STEPS: Whole = whole("--steps", 1, 1_000_000);
pub const WARMUP: Whole = whole("--warmup", 0, 1_000_000);
pub const ROUNDS: Whole = whole("--rounds", 1, 1000);
pub const GEMM_SIZE: Whole = whole("--sizes", 1, 16_384);
pub const WINDOW: Whole = whole("--window", 1, 1_000_000);
pub const NEIGHBORS: Whole = whole("--neighbors", 0, 1000);
pub const SPLIT: Whole = whole("--split", 1, 1000);
pub const TOP: Whole = whole("--top", 1, 1_000_000);
pub const REPEAT: Whole = whole("--repeat", 1, 1000);
pub const RANKS: Whole = whole("--ranks", 1, 1 << 20);
pub const ALLREDUCE_BYTES: Whole = whole("--sizes", 4, 1 << 30);
pub const ITERS: Whole = whole("--iters", 1, 100_000);
pub const CLASSES: Whole = whole("--classes", 1, crate::tasks::MAX_CLASSES as u64);
pub const TASKS: Whole = whole("--tasks", 1, crate::tasks::MAX_CLASSES as u64);
pub const TASK_INDEX: Whole = whole("--index", 0, crate::tasks::MAX_CLASSES as u64);

pub const LR: Real = real("--lr", 0.0, true, f32::MAX as f64, false);
pub const MOMENTUM: Real = real("--momentum", 0.0, false, 1.0, true);
pub const WEIGHT_DECAY: Real = real("--wd", 0.0, false, 1e6, false);
pub const THRESHOLD: Real = real("--threshold", 0.0, false, 1e12, false);
pub const GAMMA: Real = real("--gamma", 0.0, true, 1e12, false);
pub const NOISE_SCALE: Real = real("--noise-scale", 0.0, false, 1e6, false);
pub const SECONDS: Real = real("--seconds", 0.0, true, 3600.0, false);
/// `--alert-exit`: the loss may rise to this multiple of its running minimum (above 1).
pub const ALERT_EXIT: Real = real("--alert-exit", 1.0, true, 1e12, false);
/// `search --probe-fraction`: the share of the budget the probes take.
pub const PROBE_FRACTION: Real = real("--probe-fraction", 0.0, true, 1.0, true);
/// `random --fraction`: the share of sub-models that trains at a time.
pub const FRACTION: Real = real("--fraction", 0.0, true, 1.0, false);
/// `bench time-to-accuracy --target`: the test accuracy to reach.
pub const TARGET: Real = real("--target", 0.0, true, 1.0, false);
/// `random --period`: steps per draw.
pub const PERIOD: Whole = whole("--period", 1, 1 << 32);
/// `compress --prune`: the fraction of weights or channels removed.
pub const PRUNE: Real = real("--prune", 0.0, false, 1.0, true);
/// `compress --finetune-epochs`: none, or as many as a run may have.
pub const FINETUNE_EPOCHS: Whole = whole("--finetune-epochs", 0, 100_000);
/// `compress --calibrate`: training images that calibrate int8 activation scales.
pub const CALIBRATE: Whole = whole("--calibrate", 1, 1 << 32);
/// Seconds a task may train: up to a year.
pub const TIME_BUDGET: Real = real("--time-budget", 0.0, true, 3.2e7, false);

impl Whole {
    /// `value` if within bounds, else a message naming the setting and its range.
    pub fn check(&self, value: u64) -> Result<u64, String> {
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(format!("{} must be a whole number from {} to {}, got {value}", self.name, self.min, self.max))
        }
    }

    /// Parses flag text (a plain decimal whole number).
    pub fn parse(&self, text: &str) -> Result<u64, String> {
        let value = text.trim().parse::<u64>().map_err(|_| format!("{} must be a whole number from {} to {}, got `{text}`", self.name, self.min, self.max))?;
        self.check(value)
    }

    pub fn check_usize(&self, value: usize) -> Result<usize, TrainError> {
        self.check(value as u64).map(|v| v as usize).map_err(TrainError::Config)
    }
}

impl Real {
    fn range(&self) -> String {
        format!("{}{}, {}{}", if self.open_min { "(" } else { "[" }, self.min, self.max, if self.open_max { ")" } else { "]" })
    }

    pub fn check(&self, value: f64) -> Result<f64, String> {
        let above = if self.open_min { value > self.min } else { value >= self.min };
        let below = if self.open_max { value < self.max } else { value <= self.max };
        if value.is_finite() && above && below {
            Ok(value)
        } else {
            Err(format!("{} must be a finite number in {}, got {value}", self.name, self.range()))
        }
    }

    /// Parses flag text.
    pub fn parse(&self, text: &str) -> Result<f64, String> {
        let value = text.trim().parse::<f64>().map_err(|_| format!("{} must be a finite number in {}, got `{text}`", self.name, self.range()))?;
        self.check(value)
    }

    pub fn check_f32(&self, value: f32) -> Result<f32, TrainError> {
        self.check(value as f64).map(|v| v as f32).map_err(TrainError::Config)
    }
}

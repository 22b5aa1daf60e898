//! The drift probe: a fixed workload at the run's shapes — a 3×3 convolution of one batch of
//! its images and a GEMM of its batch by 512 features — timed before the first turn of
//! `compare` and after every turn (five timings of ~20 ms, their median: ~0.1 s).
//! Its times show how fast the machine was during each turn: how much other tenants, clock
//! changes or thermal limits moved the ground under the strategies' wall times.
use crate::error::TrainError;
use std::time::Instant;

/// The length of one timing of the probe, in seconds.
const TIMING: f64 = 0.02;
use tessera_engine::ops::conv2d::{conv2d, Conv2dOpts};
use tessera_engine::ops::gemm::matmul;
use tessera_engine::{Device, Tensor};

pub struct DriftProbe {
    /// Workloads per timing: enough for one timing to last [`TIMING`], so that the
    /// scheduler's millisecond jitter does not pass for drift.
    reps: usize,
    images: Tensor,
    filters: Tensor,
    rows: Tensor,
    weights: Tensor,
    device: Device,
}

/// Times of the probe over a run.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ProbeTimes {
    /// Seconds of the probe before the first turn and after each turn, in order.
    pub seconds: Vec<f64>,
}

impl ProbeTimes {
    pub fn mean(&self) -> f64 {
        self.seconds.iter().sum::<f64>() / self.seconds.len().max(1) as f64
    }

    /// (max − min) / min: how far apart the machine's slowest and fastest turns were.
    pub fn spread(&self) -> f64 {
        let (lo, hi) = self.seconds.iter().fold((f64::INFINITY, 0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        if lo.is_finite() && lo > 0.0 {
            (hi - lo) / lo
        } else {
            0.0
        }
    }
}

impl DriftProbe {
    /// The probe for `batch` images of `height`×`width` pixels on `device`.
    pub fn new(device: &Device, batch: usize, (height, width): (usize, usize)) -> Result<Self, TrainError> {
        let fixed = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            Tensor::from_vec((0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5).collect(), shape, device)
        };
        let mut probe = Self {
            reps: 1,
            images: fixed(&[batch, 3, height, width])?,
            filters: fixed(&[16, 3, 3, 3])?,
            rows: fixed(&[batch.max(64), 512])?,
            weights: fixed(&[512, 512])?,
            device: device.clone(),
        };
        probe.once()?; // warm-up: kernels compiled, buffers pooled
        let single = probe.once()?.max(1e-6);
        probe.reps = ((TIMING / single).ceil() as usize).clamp(1, 10_000);
        Ok(probe)
    }

    /// One timing: `reps` workloads, in seconds.
    fn once(&self) -> Result<f64, TrainError> {
        let start = Instant::now();
        for _ in 0..self.reps {
            let y = conv2d(&self.images, &self.filters, None, Conv2dOpts { padding: [1, 1], ..Default::default() })?;
            let z = matmul(&self.rows, &self.weights)?;
            self.device.synchronize()?;
            drop((y, z));
        }
        Ok(start.elapsed().as_secs_f64())
    }

    /// The median of five timings, in seconds.
    pub fn measure(&self) -> Result<f64, TrainError> {
        let mut t = (0..5).map(|_| self.once()).collect::<Result<Vec<f64>, _>>()?;
        t.sort_by(f64::total_cmp);
        Ok(t[2])
    }
}

//! The standard run report (`tessera compare`): every strategy trains the same model from the
//! same initial weights on the same data order, and the report puts side by side what each
//! bought and cost. Strategies take their epochs in turns (epoch 1 of each, then epoch 2 of
//! each, …, the order rotated every turn), so the machine's drift falls on all of them alike;
//! a drift probe timed before each turn measures that drift, normalises each strategy's time
//! by it, and a time ratio that its executed FLOPs do not explain is named as such instead of
//! being reported as a saving. `repeat` runs the whole comparison again for mean ± std.
pub mod lane;
pub mod probe;
mod report;

pub use report::{bootstrap_ci, bootstrap_mean_ci, Row, SeedSpread, Stat};

use crate::data::Dataset;
use crate::error::TrainError;
use crate::eval::evaluate;
use crate::run_state::load_weights;
use crate::strategy::{EpochRecord, RunSpec, StrategyOptions, StrategyRun};
use crate::trainer::OptimConfig;
use lane::{Lane, LocalLane};
use probe::{DriftProbe, ProbeTimes};
use std::path::PathBuf;
use tessera_engine::checkpoint::Checkpoint;
use tessera_engine::Device;

#[derive(Clone)]
pub struct CompareConfig {
    pub model: String,
    /// Strategy specs: `NAME` or `NAME@LABEL` (see [`lane::strategy_of`]).
    pub strategies: Vec<String>,
    pub settings: RunSpec,
    pub optim: OptimConfig,
    pub options: StrategyOptions,
    pub device: String,
    /// Start every strategy from this checkpoint's weights (e.g. to fine-tune a trained
    /// backbone) instead of the seed's initialisation.
    pub init: Option<PathBuf>,
    pub out: PathBuf,
    /// Times the whole interleaved comparison runs (≥ 1).
    pub repeat: usize,
    /// One repeat per seed (initial weights, data order, random draws), when given: the
    /// report then gives accuracy over seeds (mean ± std, a bootstrap interval) and marks
    /// differences from `full` beyond the seed-to-seed spread. Empty: every repeat uses
    /// `settings.seed`.
    pub seeds: Vec<u64>,
    /// `test` is the held-out tenth of the training set (`compare --holdout`), not the test set.
    pub holdout: bool,
    /// How finely the model is cut into sub-models (what the strategies schedule).
    pub granularity: tessera_models::Granularity,
    /// Data-parallel (`mpirun -np N tessera compare`): every lane trains on its rank's shard
    /// and sums gradients over the ranks; rank 0 writes the report.
    pub world: std::sync::Arc<crate::distributed::World>,
    /// How the strategies ran, when not in turns in one job (a Slurm sweep: one array task
    /// each); the report says so.
    pub layout: Option<String>,
    /// Live metrics of every lane (labelled by its strategy) and `--alert-exit`.
    pub watch: crate::monitor::WatchSpec,
}

impl CompareConfig {
    /// The comparison's name in metrics and the registry: its report folder's name.
    pub fn run_name(&self) -> String {
        crate::monitor::run_name(&self.out, "compare")
    }

    /// The configuration of repeat `k`: its seed's, when the comparison is over seeds.
    pub fn for_repeat(&self, k: usize) -> CompareConfig {
        let mut cfg = self.clone();
        if let Some(&seed) = self.seeds.get(k) {
            cfg.settings.seed = seed;
        }
        cfg
    }
}

/// One interleaved comparison: each lane's run, and the probe's time before each turn.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Interleaved {
    pub runs: Vec<StrategyRun>,
    pub probe: ProbeTimes,
}

/// Runs `lanes` in turns: turn e is epoch e of every lane, the order rotated by one each turn
/// (lane k goes first in turn k); the probe is timed before the first turn and after every
/// turn. Each epoch record carries the mean of the two probes around its turn
/// (`probe_seconds`), which normalises it.
pub fn interleave<L: Lane + ?Sized>(
    lanes: &mut [Box<L>],
    names: &[String],
    epochs: usize,
    probe: &DriftProbe,
    progress: &mut dyn FnMut(&str, &EpochRecord),
) -> Result<Interleaved, TrainError> {
    let mut times = ProbeTimes::default();
    let n = lanes.len();
    let mut records: Vec<Vec<EpochRecord>> = vec![Vec::new(); n];
    times.seconds.push(probe.measure()?);
    for epoch in 1..=epochs {
        let mut turn = Vec::with_capacity(n);
        for k in 0..n {
            let i = (k + epoch - 1) % n;
            let record = lanes[i].epoch(epoch)?;
            progress(&names[i], &record);
            turn.push((i, record));
        }
        // The turn's speed: the mean of the probes that bracket it.
        times.seconds.push(probe.measure()?);
        let speed = (times.seconds[epoch - 1] + times.seconds[epoch]) / 2.0;
        for (i, mut record) in turn {
            record.probe_seconds = speed;
            records[i].push(record);
        }
    }
    let mut runs = Vec::with_capacity(n);
    for ((lane, epochs), name) in lanes.iter_mut().zip(records).zip(names) {
        let end = lane.finish()?;
        runs.push(StrategyRun {
            strategy: name.clone(),
            epochs,
            test_accuracy: end.test_accuracy,
            sample_correct: end.sample_correct,
            peak_rss_bytes: end.peak_rss_bytes,
            notes: end.notes,
        });
    }
    Ok(Interleaved { runs, probe: times })
}

/// Trains every strategy of `cfg` in turns, in this process, and writes the report into
/// `cfg.out` (the CLI runs each lane in a process of its own through [`compare_lanes`]).
pub fn compare(cfg: &CompareConfig, train: &Dataset, test: &Dataset, progress: &mut dyn FnMut(&str, &EpochRecord)) -> Result<Vec<Row>, TrainError> {
    let init = cfg.init.as_deref().map(Checkpoint::load).transpose()?;
    // Rank 0 reports for every lane.
    let watch = cfg.world.is_root().then(|| cfg.watch.start(&cfg.run_name())).transpose()?;
    let mut lanes = |k: usize| {
        let repeat = cfg.for_repeat(k);
        let lane = |spec: &String| -> Result<Box<dyn Lane>, TrainError> {
            let mut lane = LocalLane::new(spec, &repeat, train, test, init.as_ref())?;
            if let Some(w) = &watch {
                lane.watch(w.monitor(spec, true)?);
            }
            Ok(Box::new(lane))
        };
        cfg.strategies.iter().map(lane).collect()
    };
    compare_lanes(cfg, train, test, &mut lanes, progress)
}

/// [`compare`] over lanes from `make_lanes(k)` (one set per repeat k, in `cfg.strategies`'
/// order, configured by [`CompareConfig::for_repeat`]).
pub fn compare_lanes(
    cfg: &CompareConfig,
    train: &Dataset,
    test: &Dataset,
    make_lanes: &mut dyn FnMut(usize) -> Result<Vec<Box<dyn Lane>>, TrainError>,
    progress: &mut dyn FnMut(&str, &EpochRecord),
) -> Result<Vec<Row>, TrainError> {
    // The report's folder before hours of training: a bad --out fails at once.
    if cfg.world.is_root() {
        std::fs::create_dir_all(&cfg.out).map_err(|error| TrainError::Io { path: cfg.out.clone(), error })?;
    }
    if cfg.repeat == 0 {
        return Err(TrainError::Config("compare needs at least one repeat".into()));
    }
    if !cfg.seeds.is_empty() && cfg.seeds.len() != cfg.repeat {
        return Err(TrainError::Config(format!("{} seeds for {} repeats: a comparison over seeds runs once per seed", cfg.seeds.len(), cfg.repeat)));
    }
    let device = Device::parse(&cfg.device)?;
    let classes = train.classes().len();
    let names: Vec<String> = cfg.strategies.iter().map(|s| lane::strategy_of(s, cfg).map(|(_, name)| name)).collect::<Result<_, _>>()?;
    if let Some(dup) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)).map(|(_, n)| n) {
        return Err(TrainError::Config(format!("strategy `{dup}` is listed twice; name a second run `NAME@LABEL`")));
    }
    // Every strategy starts from the same weights: their measured accuracy is where each
    // curve of report.svg (the last repeat's) starts (t = 0), not an assumed chance level.
    let initial = initial_accuracy(&cfg.for_repeat(cfg.repeat - 1), test, classes)?;
    let probe = DriftProbe::new(&device, cfg.settings.batch, train.dims())?;
    let mut repeats = Vec::with_capacity(cfg.repeat);
    for k in 0..cfg.repeat {
        let mut lanes = make_lanes(k)?;
        repeats.push(interleave(&mut lanes, &names, cfg.settings.epochs, &probe, progress)?);
    }
    if cfg.world.is_root() {
        // The raw runs, for `tessera merge` of a sweep whose strategies ran as separate jobs.
        let path = cfg.out.join("runs.json");
        std::fs::write(&path, serde_json::to_string(&repeats).expect("plain values")).map_err(|error| TrainError::Io { path, error })?;
    }
    report_from_repeats(cfg, train, test, initial, &repeats)
}

/// The report of `repeats` (each holding the lanes in `cfg.strategies`' order) into `cfg.out`;
/// `initial`: (loss, accuracy) of the shared initial weights on the test set.
pub fn report_from_repeats(cfg: &CompareConfig, train: &Dataset, test: &Dataset, initial: (f32, f32), repeats: &[Interleaved]) -> Result<Vec<Row>, TrainError> {
    let per_image = report::full_backward_flops_per_image(&cfg.model, train.classes().len(), train.dims())?;
    // Data-parallel, a rank's backward work is its share of the images'.
    let full_backward = per_image * (train.len() * cfg.settings.epochs) as f64 / cfg.world.size as f64;
    let rows = report::rows(repeats, full_backward, cfg.settings.seed, !cfg.seeds.is_empty());
    if cfg.world.is_root() {
        report::write_report(cfg, train, test, initial, repeats, &rows)?;
    }
    Ok(rows)
}

/// The shared initial weights' (loss, accuracy) on `test`: where every curve starts.
pub fn initial_accuracy(cfg: &CompareConfig, test: &Dataset, classes: usize) -> Result<(f32, f32), TrainError> {
    let device = Device::parse(&cfg.device)?;
    let model = tessera_models::build(&cfg.model, classes, &device, cfg.settings.seed)?;
    if let Some(path) = &cfg.init {
        load_weights(&model, &Checkpoint::load(path)?, &device)?;
    }
    evaluate(&model, test, &cfg.settings.eval_loader(), &device)
}

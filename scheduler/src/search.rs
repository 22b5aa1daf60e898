//! `tessera search`: picks a strategy for a time budget instead of the user. Every candidate
//! is probed for a few epochs (together a fixed fraction of the budget, in turns, as `compare`
//! runs them; the probes' report is the standard compare report), on the training set minus
//! a held-out tenth that scores them, so the test set plays no part in the choice. Each
//! probe's learning curve is fitted with a power law in time, its accuracy at the budget
//! predicted with an interval, and the best prediction trains on from its probe for the rest
//! of the budget; its test accuracy is the search's result.
//!
//! The curve: held-out error e(t) = a · t^(−b), t the strategy's cumulative training seconds,
//! fitted by least squares on (ln t, ln e). Its ±1σ interval is the regression's prediction
//! standard error in log space, s·√(1 + 1/n + (ln t₀ − mean ln t)² / Sxx) with
//! s² = RSS / (n − 2): it needs three probe epochs, and widens the farther the budget lies
//! beyond the probe. Probe times spanning less than 1.5× give no curve (the candidate ranks by
//! its last held-out accuracy). Candidates rank by the interval's lower end (the prediction itself where
//! there is none): a curve extrapolated far beyond its probe does not win on optimism alone.
use crate::compare::lane::{strategy_of, Lane, LocalLane};
use crate::compare::probe::DriftProbe;
use crate::compare::{compare, initial_accuracy, interleave, report_from_repeats, CompareConfig, Row};
use crate::data::{Dataset, Loader, Subset};
use crate::error::TrainError;
use crate::trainer::{OnNan, Trainer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_engine::optim::Constant;
use tessera_engine::Device;

/// A search's settings: the candidates and how they train (`compare`'s settings; the budget
/// sets their epochs), the budget and the share of it the probes take.
#[derive(Clone)]
pub struct SearchConfig {
    pub compare: CompareConfig,
    pub budget_secs: f64,
    pub probe_fraction: f64,
    /// Afterwards, compare every candidate over the budget's epochs and rank them by test
    /// accuracy: how good the search's prediction was (Spearman's ρ).
    pub validate: bool,
}

/// A fitted learning curve: held-out error a · t^(−b).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PowerLaw {
    pub a: f64,
    pub b: f64,
    /// The residual standard deviation in log space (None below three points).
    pub log_sd: Option<f64>,
    n: usize,
    mean_log_t: f64,
    sxx: f64,
}

/// The probe's times must span at least this factor for a curve in time to mean anything: a
/// strategy whose later epochs take no time (fc on cached features) cannot be extrapolated in
/// time, and ranks by its last held-out accuracy instead.
pub const MIN_TIME_SPAN: f64 = 1.5;

/// Fits e(t) = a · t^(−b) to `(t, e)` points (t > 0; errors are floored at 1e-4). None with
/// fewer than two points or times spanning less than [`MIN_TIME_SPAN`].
pub fn fit_power_law(points: &[(f64, f64)]) -> Option<PowerLaw> {
    let pts: Vec<(f64, f64)> = points.iter().filter(|(t, _)| *t > 0.0).map(|(t, e)| (t.ln(), e.max(1e-4).ln())).collect();
    let n = pts.len();
    let mean_x = pts.iter().map(|p| p.0).sum::<f64>() / n.max(1) as f64;
    let mean_y = pts.iter().map(|p| p.1).sum::<f64>() / n.max(1) as f64;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let (lo, hi) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    if n < 2 || hi - lo < MIN_TIME_SPAN.ln() || sxx <= 1e-12 {
        return None;
    }
    let slope = pts.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum::<f64>() / sxx;
    let intercept = mean_y - slope * mean_x;
    let rss: f64 = pts.iter().map(|p| (p.1 - intercept - slope * p.0).powi(2)).sum();
    let log_sd = (n > 2).then(|| (rss / (n - 2) as f64).sqrt());
    Some(PowerLaw { a: intercept.exp(), b: -slope, log_sd, n, mean_log_t: mean_x, sxx })
}

impl PowerLaw {
    /// Predicted accuracy at `t` seconds, with its ±1σ interval (None below three points).
    pub fn predict(&self, t: f64) -> (f64, Option<(f64, f64)>) {
        let x = t.max(1e-9).ln();
        let log_e = self.a.ln() - self.b * x;
        let acc = |log_e: f64| (1.0 - log_e.exp()).clamp(0.0, 1.0);
        let interval = self.log_sd.map(|s| {
            let se = s * (1.0 + 1.0 / self.n as f64 + (x - self.mean_log_t).powi(2) / self.sxx).sqrt();
            (acc(log_e + se), acc(log_e - se))
        });
        (acc(log_e), interval)
    }
}

/// Spearman's rank correlation of two equally long samples (ties get their mean rank).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
                j += 1;
            }
            for k in i..=j {
                r[order[k]] = (i + j) as f64 / 2.0 + 1.0;
            }
            i = j + 1;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let (va, vb) = (ra.iter().map(|x| (x - ma).powi(2)).sum::<f64>(), rb.iter().map(|y| (y - mb).powi(2)).sum::<f64>());
    if va == 0.0 || vb == 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

/// One candidate's probe and prediction.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Candidate {
    pub strategy: String,
    pub probe_epochs: usize,
    pub probe_seconds: f64,
    /// Held-out accuracy after each probe epoch, with the training seconds so far.
    pub curve: Vec<(f64, f32)>,
    pub fit: Option<PowerLaw>,
    /// Training seconds the prediction is for: the probe's plus the rest of the budget.
    pub predicted_at_seconds: f64,
    pub predicted_accuracy: Option<f64>,
    pub interval: Option<(f64, f64)>,
    pub rank: usize,
}

/// What a search did and found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SearchReport {
    pub budget_secs: f64,
    pub probe_fraction: f64,
    /// full's measured throughput, and the epochs it gives the budget (every candidate's
    /// schedule spans them).
    pub images_per_sec: f64,
    pub budget_epochs: usize,
    pub probe_epochs: usize,
    pub train_images: usize,
    pub holdout_images: usize,
    pub candidates: Vec<Candidate>,
    pub chosen: String,
    /// The chosen strategy after the rest of the budget: epochs reached (the last one may be
    /// cut short by the budget), training seconds in all, test accuracy.
    pub final_epochs: usize,
    pub final_train_seconds: f64,
    pub test_accuracy: f32,
    /// Wall seconds from the search's start to its result (start-up included).
    pub wall_seconds: f64,
    pub validation: Option<Validation>,
}

/// The search's predicted ranking against full comparisons over the budget's epochs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Validation {
    /// (strategy, its ranking score — the predicted accuracy's 1σ lower end —, test accuracy
    /// after the full comparison).
    pub strategies: Vec<(String, f64, f32)>,
    pub spearman: f64,
}

/// The training set split into what trains (9 of every 10 images) and a held-out tenth that
/// scores the probes.
pub fn hold_out(train: &Dataset) -> (Dataset, Dataset) {
    let part = |keep: &dyn Fn(usize) -> bool| -> Dataset {
        let indices: Vec<usize> = (0..train.len()).filter(|&i| keep(i)).collect();
        let labels = indices.iter().map(|&i| train.label(i)).collect();
        Arc::new(Subset { base: train.clone(), indices, labels, classes: train.classes().to_vec() })
    };
    (part(&|i| i % 10 != 9), part(&|i| i % 10 == 9))
}

/// Images per second of `full`'s step on `train`: six steps, the first a warm-up.
fn full_throughput(cfg: &CompareConfig, train: &Dataset) -> Result<f64, TrainError> {
    let device = Device::parse(&cfg.device)?;
    let classes = train.classes().len();
    let model = tessera_models::build(&cfg.model, classes, &device, cfg.settings.seed)?;
    let mut t = Trainer::new(model, device, classes, &cfg.optim, Box::new(Constant), OnNan::Stop)?;
    let mut loader = Loader::new(train, &cfg.settings.train_loader(1))?;
    let warm = loader.next().ok_or_else(|| TrainError::Config("the training set is empty".into()))??;
    t.run_epoch(0, 0, std::iter::once(Ok(warm)), 1, &mut |t, x, labels| t.step_from(0, x, labels), &mut |_| {})?;
    let stats = t.run_epoch(0, 0, loader.take(5), 5, &mut |t, x, labels| t.step_from(0, x, labels), &mut |_| {})?;
    Ok(stats.images as f64 / stats.seconds.max(1e-9))
}

/// Sets `flag` after `after`, unless the returned sender is dropped first.
fn alarm(flag: Arc<AtomicBool>, after: Duration) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(after) {
            flag.store(true, Ordering::SeqCst);
        }
    });
    tx
}

/// Runs the search of `cfg` on `train` (a tenth held out) and `test`, from `started` (the
/// budget's clock); `say` hears progress lines. Writes the probes' compare report into
/// `cfg.compare.out`.
pub fn search(cfg: &SearchConfig, train: &Dataset, test: &Dataset, started: Instant, say: &mut dyn FnMut(String)) -> Result<SearchReport, TrainError> {
    crate::settings::TIME_BUDGET.check(cfg.budget_secs).map_err(TrainError::Config)?;
    crate::settings::PROBE_FRACTION.check(cfg.probe_fraction).map_err(TrainError::Config)?;
    let k = cfg.compare.strategies.len();
    if k == 0 {
        return Err(TrainError::Config("search needs at least one strategy".into()));
    }
    let names: Vec<String> = cfg.compare.strategies.iter().map(|s| strategy_of(s, &cfg.compare).map(|(_, name)| name)).collect::<Result<_, _>>()?;
    let (fit_set, holdout) = hold_out(train);
    let ips = full_throughput(&cfg.compare, &fit_set)?;
    let epoch_secs = fit_set.len() as f64 / ips;
    // The chosen strategy trains its probe's share and everything after the probes.
    let (budget, f) = (cfg.budget_secs, cfg.probe_fraction);
    let training = budget * (1.0 - f + f / k as f64);
    let epochs = ((training / epoch_secs).floor() as usize).max(1);
    let probe_epochs = ((f * budget / (k as f64 * epoch_secs)).round() as usize).clamp(3, 1000).min(epochs);
    say(format!(
        "full trains {ips:.0} images/s: {epochs} epochs of {} images fit the budget; probing {} for {probe_epochs} epochs each (held out: {} images)",
        fit_set.len(),
        names.join(", "),
        holdout.len()
    ));
    let sched = CompareConfig { settings: crate::strategy::RunSpec { epochs, ..cfg.compare.settings.clone() }, ..cfg.compare.clone() };
    let init = sched.init.as_deref().map(tessera_engine::checkpoint::Checkpoint::load).transpose()?;
    let mut lanes: Vec<Box<LocalLane>> =
        sched.strategies.iter().map(|s| LocalLane::new(s, &sched, &fit_set, &holdout, init.as_ref()).map(Box::new)).collect::<Result<_, _>>()?;
    let device = Device::parse(&sched.device)?;
    let probe = DriftProbe::new(&device, sched.settings.batch, fit_set.dims())?;
    let classes = fit_set.classes().len();
    let initial = initial_accuracy(&sched, &holdout, classes)?;
    let probes = interleave(&mut lanes, &names, probe_epochs, &probe, &mut |name, e| {
        say(format!("{name:>22}  probe epoch {:>2}  {:>6.1} s  held-out {:.2} %", e.epoch, e.seconds, e.test_accuracy * 100.0))
    })?;
    let report_cfg = CompareConfig { settings: crate::strategy::RunSpec { epochs: probe_epochs, ..sched.settings.clone() }, ..sched.clone() };
    report_from_repeats(&report_cfg, &fit_set, &holdout, initial, std::slice::from_ref(&probes))?;

    // Predictions at the training time each would get if chosen now.
    let final_eval_secs = test.len() as f64 / (3.0 * ips);
    let remaining = (budget - started.elapsed().as_secs_f64() - final_eval_secs).max(0.0);
    let mut candidates: Vec<Candidate> = probes
        .runs
        .iter()
        .map(|run| {
            let curve: Vec<(f64, f32)> = run.epochs.iter().map(|r| (r.elapsed, r.test_accuracy)).collect();
            let probe_seconds = run.epochs.last().map_or(0.0, |r| r.elapsed);
            let fit = fit_power_law(&curve.iter().map(|(t, a)| (*t, 1.0 - *a as f64)).collect::<Vec<_>>());
            let at = probe_seconds + remaining;
            let (predicted, interval) = fit.as_ref().map(|f| f.predict(at)).map_or((None, None), |(p, i)| (Some(p), i));
            Candidate {
                strategy: run.strategy.clone(),
                probe_epochs: run.epochs.len(),
                probe_seconds,
                curve,
                fit,
                predicted_at_seconds: at,
                predicted_accuracy: predicted,
                interval,
                rank: 0,
            }
        })
        .collect();
    // By the interval's lower end; without one, the prediction; without a fit (no progress in
    // time), the last held-out accuracy.
    let score = |c: &Candidate| c.interval.map(|i| i.0).or(c.predicted_accuracy).unwrap_or_else(|| c.curve.last().map_or(0.0, |p| p.1 as f64));
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&i, &j| score(&candidates[j]).total_cmp(&score(&candidates[i])));
    for (rank, &i) in order.iter().enumerate() {
        candidates[i].rank = rank + 1;
    }
    let chosen = order[0];
    let c = &candidates[chosen];
    say(format!(
        "chose {} (predicted {:.2} %, at least {:.2} % at 1σ, after {:.0} s of training); training it for the remaining {remaining:.0} s",
        c.strategy,
        c.predicted_accuracy.unwrap_or(f64::NAN) * 100.0,
        score(c) * 100.0,
        c.predicted_at_seconds
    ));

    // The chosen lane trains on from its probe until the budget's end.
    let lane = &mut lanes[chosen];
    let stop = Arc::new(AtomicBool::new(false));
    lane.stop_with(stop.clone());
    let cancel = alarm(stop, Duration::from_secs_f64(remaining));
    let mut final_epochs = probe_epochs;
    let mut train_seconds = candidates[chosen].probe_seconds;
    for epoch in probe_epochs + 1..=epochs {
        match lane.epoch(epoch) {
            Ok(r) => {
                say(format!("{:>22}  epoch {:>2}  {:>6.1} s  held-out {:.2} %", names[chosen], r.epoch, r.seconds, r.test_accuracy * 100.0));
                (final_epochs, train_seconds) = (epoch, r.elapsed);
            }
            Err(TrainError::Interrupted { batches, .. }) => {
                say(format!("the budget ended epoch {epoch} after {batches} batches"));
                final_epochs = epoch;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    drop(cancel);
    let (_, test_accuracy) = lane.evaluate(test)?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let mut report = SearchReport {
        budget_secs: budget,
        probe_fraction: f,
        images_per_sec: ips,
        budget_epochs: epochs,
        probe_epochs,
        train_images: fit_set.len(),
        holdout_images: holdout.len(),
        candidates,
        chosen: names[chosen].clone(),
        final_epochs,
        final_train_seconds: train_seconds,
        test_accuracy,
        wall_seconds,
        validation: None,
    };
    if cfg.validate {
        drop(lanes);
        let full = CompareConfig { out: cfg.compare.out.join("validation"), ..sched };
        say(format!("validation: comparing every candidate over {epochs} epochs into {}", full.out.display()));
        let rows: Vec<Row> =
            compare(&full, &fit_set, test, &mut |name, e| say(format!("{name:>22}  epoch {:>2}  test {:.2} %", e.epoch, e.test_accuracy * 100.0)))?;
        let strategies: Vec<(String, f64, f32)> =
            report.candidates.iter().zip(&rows).map(|(c, r)| (c.strategy.clone(), score(c), r.run.test_accuracy)).collect();
        let (p, a): (Vec<f64>, Vec<f64>) = strategies.iter().map(|s| (s.1, s.2 as f64)).unzip();
        report.validation = Some(Validation { spearman: spearman(&p, &a), strategies });
    }
    let path = cfg.compare.out.join("search.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&crate::json::shortest_floats(serde_json::to_value(&report).expect("plain values"))).expect("plain values"),
    )
    .map_err(|error| TrainError::Io { path, error })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_power_law_is_recovered_and_its_interval_widens_with_distance() {
        let pts: Vec<(f64, f64)> = [10.0, 20.0, 40.0, 80.0].iter().map(|&t: &f64| (t, 0.9 * t.powf(-0.3))).collect();
        let f = fit_power_law(&pts).unwrap();
        assert!((f.a - 0.9).abs() < 1e-9 && (f.b - 0.3).abs() < 1e-9, "{f:?}");
        let (acc, interval) = f.predict(320.0);
        assert!((acc - (1.0 - 0.9 * 320f64.powf(-0.3))).abs() < 1e-9);
        assert_eq!(interval.map(|(lo, hi)| (lo - acc).abs() < 1e-9 && (hi - acc).abs() < 1e-9), Some(true), "an exact fit has no spread");
        let noisy: Vec<(f64, f64)> = pts.iter().enumerate().map(|(i, (t, e))| (*t, e * if i % 2 == 0 { 1.05 } else { 0.95 })).collect();
        let f = fit_power_law(&noisy).unwrap();
        // The interval in log-error space (2σ wide): it grows away from the probe's times.
        let width = |t: f64| f.predict(t).1.map(|(lo, hi)| ((1.0 - lo) / (1.0 - hi)).ln()).unwrap();
        assert!(width(1000.0) > width(40.0), "{} vs {}", width(1000.0), width(40.0));
        assert!(fit_power_law(&pts[..2]).unwrap().log_sd.is_none());
        assert!(fit_power_law(&[(5.0, 0.5), (5.0, 0.4)]).is_none());
        // Times that hardly move (fc training its head on cached features) give no curve.
        assert!(fit_power_law(&[(3.6, 0.88), (3.62, 0.87), (3.65, 0.84)]).is_none());
    }

    #[test]
    fn spearman_matches_hand_computed_values() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]), 1.0);
        assert_eq!(spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]), -1.0);
        // Ranks (1,2,3,4) against (2,1,4,3): d² = 4, ρ = 1 − 6·4 / (4·15) = 0.6.
        assert!((spearman(&[0.1, 0.2, 0.3, 0.4], &[0.2, 0.1, 0.4, 0.3]) - 0.6).abs() < 1e-12);
    }
}

//! `tessera search`: a strategy chosen for a time budget by probing every candidate and
//! predicting its accuracy from its learning curve (the method: `tessera_scheduler::search`).
use crate::flags::real64;
use crate::table::{note, print_record, Table};
use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use std::time::Instant;
use tessera_scheduler::search::{search, SearchConfig};
use tessera_scheduler::settings;

#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    run: crate::compare::RunArgs,
    /// The candidates, comma-separated (as `compare --strategies`).
    #[arg(long, default_value = "full,fc,local-fc,dynamic")]
    strategies: String,
    /// Wall-clock seconds for the whole search: probes, the chosen strategy's training and its
    /// test evaluation.
    #[arg(long, value_parser = real64(settings::TIME_BUDGET))]
    time_budget: f64,
    /// The share of the budget the probes take together.
    #[arg(long, default_value_t = 0.25, value_parser = real64(settings::PROBE_FRACTION))]
    probe_fraction: f64,
    /// Afterwards, compare every candidate over the budget's epochs and rank them by test
    /// accuracy: the predicted ranking against the measured one (Spearman's ρ).
    #[arg(long)]
    validate: bool,
    /// Where search.json and the probes' report (report.md, report.json, report.svg) go.
    #[arg(long, default_value = "runs/search")]
    out: std::path::PathBuf,
    /// Print `candidate` records and a `search` record as JSON lines.
    #[arg(long)]
    json: bool,
}

pub fn run(a: SearchArgs) -> Result<()> {
    let started = Instant::now();
    let cfg = SearchConfig {
        compare: a.run.config(&a.strategies, 1, 1, &a.out)?,
        budget_secs: a.time_budget,
        probe_fraction: a.probe_fraction,
        validate: a.validate,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let (train, test) = a.run.load()?;
    let r = search(&cfg, &train, &test, started, &mut |line| eprintln!("{line}")).context("searching for a strategy")?;
    let columns = [
        "rank",
        "strategy",
        "probe_epochs",
        "probe_seconds",
        "heldout_accuracy",
        "predicted_accuracy",
        "interval_low",
        "interval_high",
        "predicted_at_seconds",
    ];
    let mut table = Table::new("candidate", &columns);
    let mut ranked = r.candidates.clone();
    ranked.sort_by_key(|c| c.rank);
    for c in &ranked {
        table.push(vec![
            json!(c.rank),
            json!(c.strategy),
            json!(c.probe_epochs),
            json!(c.probe_seconds),
            json!(c.curve.last().map(|p| p.1)),
            json!(c.predicted_accuracy),
            json!(c.interval.map(|i| i.0)),
            json!(c.interval.map(|i| i.1)),
            json!(c.predicted_at_seconds),
        ]);
    }
    table.print(a.json);
    let summary = json!({
        "chosen": r.chosen, "budget_secs": r.budget_secs, "budget_epochs": r.budget_epochs, "probe_epochs": r.probe_epochs,
        "final_epochs": r.final_epochs, "final_train_seconds": r.final_train_seconds, "test_accuracy": r.test_accuracy,
        "wall_seconds": r.wall_seconds, "spearman": r.validation.as_ref().map(|v| v.spearman),
    });
    if a.json {
        print_record("search", &summary);
    } else {
        println!(
            "chose {}: {} epochs ({:.0} s of training), test accuracy {:.2} %, {:.0} s of the {:.0} s budget",
            r.chosen,
            r.final_epochs,
            r.final_train_seconds,
            r.test_accuracy * 100.0,
            r.wall_seconds,
            r.budget_secs
        );
        if let Some(v) = &r.validation {
            for (s, predicted, actual) in &v.strategies {
                println!("  {s:>22}: predicted {:.2} %, after the full comparison {:.2} %", predicted * 100.0, actual * 100.0);
            }
            println!("Spearman's ρ between the predicted and the measured ranking: {:.2}", v.spearman);
        }
    }
    note(a.json, &format!("wrote {}/search.json and the probes' report {}/report.md", a.out.display(), a.out.display()));
    Ok(())
}

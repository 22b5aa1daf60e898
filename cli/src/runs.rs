//! The run registry at the command line: `train`, `compare` and `run-plan` register their
//! runs ([`Registration`]); `tessera runs list|show|diff|tag` reads and tags them; `tessera
//! models promote|versions` names verified checkpoints as model versions.
use crate::table::{print_record, Table};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tessera_registry::{data_fingerprint, default_path, diff, NewRun, Registry};

/// The code version this binary was built from (git commit, `-dirty` with local changes).
pub const CODE_VERSION: &str = env!("TESSERA_CODE_VERSION");

/// The registry flag of `runs` and `models`.
#[derive(Args)]
pub struct RegistryArgs {
    /// The registry file [default: runs/registry.sqlite, where runs in runs/ register].
    #[arg(long, default_value = "runs/registry.sqlite")]
    registry: PathBuf,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum RunsCmd {
    /// Every registered run: id, name, command, status, start, strategy, device, tags.
    List(RegistryArgs),
    /// One run (id or name): its config, code version, data fingerprint, epochs, results and
    /// checkpoints.
    Show {
        run: String,
        #[command(flatten)]
        at: RegistryArgs,
    },
    /// Where two runs differ: command, code, data, config, results, last epochs.
    Diff {
        a: String,
        b: String,
        #[command(flatten)]
        at: RegistryArgs,
    },
    /// Tags a run.
    Tag {
        run: String,
        tag: String,
        #[command(flatten)]
        at: RegistryArgs,
    },
}

pub fn runs(cmd: RunsCmd) -> Result<()> {
    match cmd {
        RunsCmd::List(at) => {
            let reg = open(&at.registry)?;
            let columns = ["id", "name", "command", "status", "started", "strategy", "device", "code_version", "tags"];
            let mut table = Table::new("run", &columns);
            for r in reg.runs()? {
                let v = serde_json::to_value(&r)?;
                table.push(columns.iter().map(|c| v[*c].clone()).collect());
            }
            table.print(at.json);
        }
        RunsCmd::Show { run, at } => {
            let d = open(&at.registry)?.run(&run)?;
            if at.json {
                print_record("run", &serde_json::to_value(&d)?);
                return Ok(());
            }
            let r = &d.run;
            println!("run {} `{}`: {} ({}), started {}, finished {}", r.id, r.name, r.command, r.status, r.started, r.finished.as_deref().unwrap_or("-"));
            println!("code {}, strategy {}, device {}, out {}", r.code_version, r.strategy, r.device, r.out);
            if let (Some(p), Some(n), Some(h)) = (&r.data_path, r.data_files, &r.data_hash) {
                println!("data {p}: {n} files, fingerprint {h}");
            }
            if !r.tags.is_empty() {
                println!("tags: {}", r.tags.join(", "));
            }
            println!("config: {}", d.config);
            for (strategy, epoch, m) in &d.epochs {
                println!("  {strategy} epoch {epoch}: {m}");
            }
            for (strategy, record) in &d.results {
                println!("  {strategy} result: {record}");
            }
            for c in &d.checkpoints {
                println!(
                    "  checkpoint {} ({}, epoch {}, CRC-32 {}, {} bytes)",
                    c.path,
                    c.copy,
                    c.epoch.map_or("-".into(), |e| e.to_string()),
                    c.crc32,
                    c.bytes
                );
            }
        }
        RunsCmd::Diff { a, b, at } => {
            let reg = open(&at.registry)?;
            let (da, db) = (reg.run(&a)?, reg.run(&b)?);
            let mut table = Table::new("difference", &["section", "key", "a", "b"]);
            for d in diff(&da, &db) {
                table.push(vec![json!(d.section), json!(d.key), d.a.unwrap_or(Value::Null), d.b.unwrap_or(Value::Null)]);
            }
            if !at.json {
                println!("a = run {} `{}`, b = run {} `{}`", da.run.id, da.run.name, db.run.id, db.run.name);
            }
            table.print(at.json);
        }
        RunsCmd::Tag { run, tag, at } => {
            let id = open(&at.registry)?.tag(&run, &tag)?;
            crate::table::note(at.json, &format!("run {id} tagged `{tag}`"));
        }
    }
    Ok(())
}

/// `models promote RUN --as NAME[:VERSION]`: a named version pointing at the run's newest
/// checkpoint that verifies.
pub fn promote(run: &str, name: &str, at: &RegistryArgs) -> Result<()> {
    let (name, version) = match name.split_once(':') {
        Some((n, v)) => {
            (n, Some(v.parse::<i64>().ok().filter(|v| *v >= 1).with_context(|| format!("`{name}`: the version after `:` must be a whole number ≥ 1"))?))
        }
        None => (name, None),
    };
    let m = open(&at.registry)?.promote(run, name, version)?;
    if at.json {
        print_record("model_version", &serde_json::to_value(&m)?);
    } else {
        println!("{}:{} → run {}, {} (CRC-32 {})", m.name, m.version, m.run, m.checkpoint, m.crc32);
    }
    Ok(())
}

/// `models versions NAME`: each version, and whether its checkpoint still verifies.
pub fn versions(name: &str, at: &RegistryArgs) -> Result<()> {
    let reg = open(&at.registry)?;
    let versions = reg.versions(name)?;
    if versions.is_empty() {
        bail!("{}: no model `{name}` (`tessera models promote RUN --as {name}` makes one)", at.registry.display());
    }
    let columns = ["name", "version", "run", "checkpoint", "crc32", "promoted", "verifies"];
    let mut table = Table::new("model_version", &columns);
    for m in versions {
        let verifies = match tessera_registry::verified_crc(Path::new(&m.checkpoint)) {
            Ok(crc) if crc == m.crc32 => json!("yes"),
            Ok(crc) => json!(format!("no: CRC {crc}")),
            Err(e) => json!(format!("no: {e}")),
        };
        let mut v = serde_json::to_value(&m)?;
        v["verifies"] = verifies;
        table.push(columns.iter().map(|c| v[*c].clone()).collect());
    }
    table.print(at.json);
    Ok(())
}

fn open(path: &Path) -> Result<Registry> {
    if !path.exists() {
        bail!("{}: no registry there (runs register beside their output folder; pass --registry FILE)", path.display());
    }
    Ok(Registry::open(path)?)
}

/// A run being registered: begun when the command starts, finished with what it left.
pub struct Registration {
    reg: Registry,
    pub id: i64,
}

impl Registration {
    /// Registers `run` (its name, command, config, strategy, device and output folder) in
    /// `registry` (default: beside the output folder), with this binary's code version and
    /// the fingerprint of the data in `data`.
    pub fn begin(registry: Option<&Path>, run: NewRun, data: &Path) -> Result<Self> {
        let path = registry.map_or_else(|| default_path(&run.out), Path::to_path_buf);
        let mut reg = Registry::open(&path)?;
        let run = NewRun { code_version: CODE_VERSION.into(), data: Some((data.to_path_buf(), data_fingerprint(data)?)), ..run };
        let id = reg.begin_run(&run)?;
        Ok(Self { reg, id })
    }

    pub fn registry(&mut self) -> &mut Registry {
        &mut self.reg
    }

    /// Records a checkpoint; one that fails its check is reported, not registered.
    pub fn checkpoint(&mut self, path: &Path, copy: &str, epoch: Option<i64>) {
        if let Err(e) = self.reg.record_checkpoint(self.id, path, copy, epoch) {
            eprintln!("registry: not registering {}: {e}", path.display());
        }
    }

    /// Ends the run with `status` (`ok`, `failed`, `interrupted`, `diverged`).
    pub fn finish(mut self, status: &str) -> Result<()> {
        self.reg.finish_run(self.id, status)?;
        Ok(())
    }
}

/// The status a run's outcome registers.
pub fn status_of<T>(outcome: &Result<T, tessera_scheduler::TrainError>) -> &'static str {
    match outcome {
        Ok(_) => "ok",
        Err(tessera_scheduler::TrainError::Interrupted { .. }) => "interrupted",
        Err(tessera_scheduler::TrainError::Diverged { .. }) => "diverged",
        Err(_) => "failed",
    }
}

/// A run's config as the registry keeps it: `settings` (a JSON object) with the optimizer's
/// settings as keys of their own (`optimizer`, `momentum`, `wd`, …), f32 values at f32
/// precision.
pub fn run_config(mut settings: Value, rule: Option<tessera_engine::optim::Rule>) -> Value {
    use tessera_engine::optim::Rule;
    let optimizer = match rule {
        Some(Rule::Sgd(h)) => json!({"optimizer": "sgd", "momentum": h.momentum, "dampening": h.dampening, "nesterov": h.nesterov, "wd": h.weight_decay}),
        Some(Rule::AdamW(h)) => json!({"optimizer": "adamw", "beta1": h.beta1, "beta2": h.beta2, "eps": h.eps, "wd": h.weight_decay}),
        None => json!({}),
    };
    if let (Some(all), Value::Object(keys)) = (settings.as_object_mut(), optimizer) {
        all.extend(keys);
    }
    tessera_scheduler::json::shortest_floats(settings)
}

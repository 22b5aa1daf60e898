//! Slurm job folders: what `plan`/`compare --emit slurm DIR` write (DIR/tasks.sbatch, a job
//! array; DIR/job.json, what `merge` needs; DIR/logs) and what `tessera merge DIR` opens.
use crate::flags::whole;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use tessera_scheduler::settings;
use tessera_scheduler::slurm::ArrayJob;

/// A Slurm job array instead of running here (`plan` and `compare`).
#[derive(Args)]
pub struct EmitArgs {
    /// `slurm DIR`: write DIR/tasks.sbatch (a job array) and DIR/job.json instead of running;
    /// `tessera merge DIR` combines the finished tasks.
    #[arg(long, num_args = 2, value_names = ["FORMAT", "DIR"])]
    pub emit: Option<Vec<String>>,
    /// With --emit: MPI ranks per array task (each task data-parallel under mpirun).
    #[arg(long, default_value_t = 1, value_parser = whole(settings::RANKS))]
    pub ranks: usize,
}

/// A job folder being written: DIR resolved, with DIR/logs and DIR/<results> created; the
/// tessera binary and the working folder the array tasks run in (relative paths in their
/// flags mean it, as they did where the job was written).
pub struct JobDir {
    pub dir: PathBuf,
    pub exe: String,
    workdir: PathBuf,
    ranks: usize,
}

impl EmitArgs {
    /// The job folder `--emit slurm DIR` names (none without --emit), `results` created in it.
    pub fn job_dir(&self, results: &str) -> Result<Option<JobDir>> {
        let Some(emit) = &self.emit else { return Ok(None) };
        let [format, dir] = &emit[..] else { bail!("--emit takes a format and a folder") };
        if format != "slurm" {
            bail!("--emit {format}: the one format is `slurm`");
        }
        let dir = Path::new(dir);
        for sub in ["logs", results] {
            std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        Ok(Some(JobDir {
            dir: dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?,
            exe: std::env::current_exe().context("locating the tessera binary")?.display().to_string(),
            workdir: std::env::current_dir().context("reading the working directory")?,
            ranks: self.ranks,
        }))
    }
}

impl JobDir {
    /// Writes DIR/tasks.sbatch (array task i runs `command` for `items[i]`, see [`ArrayJob`])
    /// and DIR/job.json (`job` with the ranks and the working folder); returns the script.
    pub fn write(&self, name: &str, items: &[String], command: &[String], mut job: serde_json::Value) -> Result<PathBuf> {
        let array = ArrayJob { name, items, ranks: self.ranks, log_dir: &self.dir.join("logs"), workdir: &self.workdir, command };
        let script = self.dir.join("tasks.sbatch");
        std::fs::write(&script, array.script()).with_context(|| format!("writing {}", script.display()))?;
        job["ranks"] = self.ranks.into();
        job["workdir"] = self.workdir.display().to_string().into();
        let path = self.dir.join("job.json");
        std::fs::write(&path, serde_json::to_string_pretty(&job)?).with_context(|| format!("writing {}", path.display()))?;
        Ok(script)
    }
}

/// The job folder `dir` resolved and its job.json, with the job's working folder entered
/// (the tasks' relative paths meant it).
pub fn open(dir: &Path) -> Result<(PathBuf, serde_json::Value)> {
    let path = dir.join("job.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {} (is {} a folder `--emit slurm` wrote?)", path.display(), dir.display()))?;
    let job: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    if let Some(workdir) = job["workdir"].as_str() {
        std::env::set_current_dir(workdir).with_context(|| format!("entering {workdir}, the job's working folder"))?;
    }
    Ok((dir, job))
}

/// "task T: WHAT; LOG ends: its last line" for an array task that left no result in `dir`.
pub fn unfinished(dir: &Path, t: usize, what: &str) -> String {
    let log = dir.join("logs").join(format!("task-{t}.out"));
    let last = std::fs::read_to_string(&log).ok().and_then(|l| l.lines().rev().find(|l| !l.trim().is_empty()).map(String::from));
    format!("task {t}: {what}; {}", last.map_or(format!("no log at {}", log.display()), |l| format!("{} ends: {l}", log.display())))
}

//! The run registry: one SQLite file (WAL mode, so several runs write at once) that keeps
//! every run's command, config, code version, data fingerprint, strategy and device, its
//! per-epoch metrics and results, its checkpoints with their checksums, tags, and named,
//! versioned models that point at verified checkpoints.
mod diff;
mod fingerprint;

pub use diff::{diff, Difference};
pub use fingerprint::{data_fingerprint, Fingerprint};

use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_engine::checkpoint::{Checkpoint, CHECKSUM_KEY};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {path}: {error}")]
    Sql { path: PathBuf, error: rusqlite::Error },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("registry {path}: no run `{key}` (`tessera runs list` shows the runs)")]
    NoRun { path: PathBuf, key: String },
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, RegistryError>;

/// What a run registers when it starts.
#[derive(Clone, Debug, Default)]
pub struct NewRun {
    pub name: String,
    /// `train`, `compare`, `run-plan`, `run-task`.
    pub command: String,
    pub config: serde_json::Value,
    pub code_version: String,
    pub data: Option<(PathBuf, Fingerprint)>,
    /// The strategies, comma-separated.
    pub strategy: String,
    pub device: String,
    pub out: PathBuf,
}

/// A checkpoint as the registry keeps it: where, which copy, its CRC-32 and size.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CheckpointRecord {
    pub path: String,
    /// `primary` (the run folder) or `backup` (the `--backup-dir` copy).
    pub copy: String,
    pub epoch: Option<i64>,
    pub crc32: String,
    pub bytes: i64,
}

/// A run's row.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Run {
    pub id: i64,
    pub name: String,
    pub command: String,
    pub status: String,
    pub started: String,
    pub finished: Option<String>,
    pub code_version: String,
    pub data_path: Option<String>,
    pub data_files: Option<i64>,
    pub data_hash: Option<String>,
    pub strategy: String,
    pub device: String,
    pub out: String,
    pub tags: Vec<String>,
}

/// Everything the registry holds of a run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub config: serde_json::Value,
    /// `(strategy, epoch, metrics)` in order.
    pub epochs: Vec<(String, i64, serde_json::Value)>,
    /// Each strategy's (or task's) result record.
    pub results: Vec<(String, serde_json::Value)>,
    pub checkpoints: Vec<CheckpointRecord>,
}

/// A named model's version.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: i64,
    pub run: i64,
    pub checkpoint: String,
    pub crc32: String,
    pub promoted: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, command TEXT NOT NULL,
    status TEXT NOT NULL, started TEXT NOT NULL, finished TEXT, config TEXT NOT NULL,
    code_version TEXT NOT NULL, data_path TEXT, data_files INTEGER, data_hash TEXT,
    strategy TEXT NOT NULL, device TEXT NOT NULL, out TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
    run_id INTEGER NOT NULL REFERENCES runs(id), strategy TEXT NOT NULL, epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL, PRIMARY KEY (run_id, strategy, epoch));
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL REFERENCES runs(id), strategy TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (run_id, strategy));
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id INTEGER NOT NULL REFERENCES runs(id), path TEXT NOT NULL, copy TEXT NOT NULL,
    epoch INTEGER, crc32 TEXT NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (run_id, path));
CREATE TABLE IF NOT EXISTS tags (
    run_id INTEGER NOT NULL REFERENCES runs(id), tag TEXT NOT NULL, PRIMARY KEY (run_id, tag));
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL, version INTEGER NOT NULL, run_id INTEGER NOT NULL REFERENCES runs(id),
    checkpoint TEXT NOT NULL, crc32 TEXT NOT NULL, promoted TEXT NOT NULL,
    PRIMARY KEY (name, version));
";

/// UTC now as RFC 3339 (seconds), from SQLite's clock.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')";

/// An open registry.
pub struct Registry {
    conn: Connection,
    path: PathBuf,
}

impl Registry {
    /// Opens the registry at `path`, creating it (and its folder) on first use.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| RegistryError::Io { path: dir.into(), error })?;
        }
        let sql = |error| RegistryError::Sql { path: path.into(), error };
        let conn = Connection::open(path).map_err(sql)?;
        // Writers wait for each other (a run writes a few rows per epoch) instead of failing.
        conn.busy_timeout(Duration::from_secs(30)).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        Ok(Self { conn, path: path.into() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> RegistryError + '_ {
        |error| RegistryError::Sql { path: self.path.clone(), error }
    }

    /// Runs `f` in a write transaction taken at once (`BEGIN IMMEDIATE`: a second writer
    /// waits for the lock instead of failing to upgrade a read).
    fn write<T>(&mut self, f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>) -> Result<T> {
        let path = self.path.clone();
        let sql = |error| RegistryError::Sql { path: path.clone(), error };
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
        let out = f(&tx).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(out)
    }

    /// Registers a run as `running`; returns its id.
    pub fn begin_run(&mut self, run: &NewRun) -> Result<i64> {
        let (data_path, files, hash) = match &run.data {
            Some((p, f)) => (Some(p.display().to_string()), Some(f.files as i64), Some(f.hash.clone())),
            None => (None, None, None),
        };
        self.write(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO runs (name, command, status, started, config, code_version, data_path, data_files, data_hash, strategy, device, out)
                     VALUES (?1, ?2, 'running', {NOW}, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    run.name,
                    run.command,
                    run.config.to_string(),
                    run.code_version,
                    data_path,
                    files,
                    hash,
                    run.strategy,
                    run.device,
                    run.out.display().to_string()
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Records a strategy's epoch (again: replaces it).
    pub fn record_epoch(&mut self, run: i64, strategy: &str, epoch: i64, metrics: &serde_json::Value) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO epochs (run_id, strategy, epoch, metrics) VALUES (?1, ?2, ?3, ?4)",
                params![run, strategy, epoch, metrics.to_string()],
            )
            .map(drop)
        })
    }

    /// Records a strategy's (or task's) result record.
    pub fn record_result(&mut self, run: i64, strategy: &str, record: &serde_json::Value) -> Result<()> {
        self.write(|tx| {
            tx.execute("INSERT OR REPLACE INTO results (run_id, strategy, record) VALUES (?1, ?2, ?3)", params![run, strategy, record.to_string()]).map(drop)
        })
    }

    /// Records checkpoint `path` (`copy`: primary or backup): verifies it (its CRC) and keeps
    /// its absolute path, CRC and size.
    pub fn record_checkpoint(&mut self, run: i64, path: &Path, copy: &str, epoch: Option<i64>) -> Result<CheckpointRecord> {
        let crc32 = verified_crc(path)?;
        let path = &std::fs::canonicalize(path).map_err(|error| RegistryError::Io { path: path.into(), error })?;
        let bytes = std::fs::metadata(path).map_err(|error| RegistryError::Io { path: path.into(), error })?.len() as i64;
        let record = CheckpointRecord { path: path.display().to_string(), copy: copy.into(), epoch, crc32, bytes };
        let r = record.clone();
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO checkpoints (run_id, path, copy, epoch, crc32, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run, r.path, r.copy, r.epoch, r.crc32, r.bytes],
            )
            .map(drop)
        })?;
        Ok(record)
    }

    /// Marks a run finished with `status` (`ok`, `failed`, `interrupted`, `diverged`).
    pub fn finish_run(&mut self, run: i64, status: &str) -> Result<()> {
        self.write(|tx| tx.execute(&format!("UPDATE runs SET status = ?1, finished = {NOW} WHERE id = ?2"), params![status, run]).map(drop))
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<Run>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, command, status, started, finished, code_version, data_path, data_files, data_hash, strategy, device, out FROM runs ORDER BY id")
            .map_err(self.sql())?;
        let rows = stmt.query_map([], run_row).map_err(self.sql())?.collect::<rusqlite::Result<Vec<_>>>().map_err(self.sql())?;
        rows.into_iter().map(|r| self.with_tags(r)).collect()
    }

    fn with_tags(&self, mut run: Run) -> Result<Run> {
        let mut stmt = self.conn.prepare("SELECT tag FROM tags WHERE run_id = ?1 ORDER BY tag").map_err(self.sql())?;
        run.tags = stmt.query_map([run.id], |r| r.get(0)).map_err(self.sql())?.collect::<rusqlite::Result<_>>().map_err(self.sql())?;
        Ok(run)
    }

    /// The id of run `key`: its number, or its name (the newest run of that name).
    pub fn resolve(&self, key: &str) -> Result<i64> {
        let found: Option<i64> = match key.parse::<i64>() {
            Ok(id) => self.conn.query_row("SELECT id FROM runs WHERE id = ?1", [id], |r| r.get(0)).optional(),
            Err(_) => self.conn.query_row("SELECT id FROM runs WHERE name = ?1 ORDER BY id DESC LIMIT 1", [key], |r| r.get(0)).optional(),
        }
        .map_err(self.sql())?;
        found.ok_or_else(|| RegistryError::NoRun { path: self.path.clone(), key: key.into() })
    }

    /// Everything about run `key` (see [`Registry::resolve`]).
    pub fn run(&self, key: &str) -> Result<RunDetail> {
        let id = self.resolve(key)?;
        let sql = self.sql();
        let (run, config): (Run, String) = self
            .conn
            .query_row(
                "SELECT id, name, command, status, started, finished, code_version, data_path, data_files, data_hash, strategy, device, out, config FROM runs WHERE id = ?1",
                [id],
                |r| Ok((run_row(r)?, r.get(13)?)),
            )
            .map_err(&sql)?;
        let json = |text: String| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        let mut stmt = self.conn.prepare("SELECT strategy, epoch, metrics FROM epochs WHERE run_id = ?1 ORDER BY strategy, epoch").map_err(&sql)?;
        let epochs = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, json(r.get(2)?)))).map_err(&sql)?.collect::<rusqlite::Result<_>>().map_err(&sql)?;
        let mut stmt = self.conn.prepare("SELECT strategy, record FROM results WHERE run_id = ?1 ORDER BY rowid").map_err(&sql)?;
        let results = stmt.query_map([id], |r| Ok((r.get(0)?, json(r.get(1)?)))).map_err(&sql)?.collect::<rusqlite::Result<_>>().map_err(&sql)?;
        let mut stmt =
            self.conn.prepare("SELECT path, copy, epoch, crc32, bytes FROM checkpoints WHERE run_id = ?1 ORDER BY epoch, copy, path").map_err(&sql)?;
        let checkpoints = stmt
            .query_map([id], |r| Ok(CheckpointRecord { path: r.get(0)?, copy: r.get(1)?, epoch: r.get(2)?, crc32: r.get(3)?, bytes: r.get(4)? }))
            .map_err(&sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(&sql)?;
        Ok(RunDetail { run: self.with_tags(run)?, config: json(config), epochs, results, checkpoints })
    }

    /// Tags run `key` with `tag` (a tag already there stays once).
    pub fn tag(&mut self, key: &str, tag: &str) -> Result<i64> {
        if tag.trim().is_empty() {
            return Err(RegistryError::Invalid("a tag must not be empty".into()));
        }
        let id = self.resolve(key)?;
        self.write(|tx| tx.execute("INSERT OR IGNORE INTO tags (run_id, tag) VALUES (?1, ?2)", params![id, tag]).map(drop))?;
        Ok(id)
    }

    /// Names run `key`'s newest checkpoint that verifies (the registered copies, primary
    /// before backup, whose CRC still matches the registered one) as model `name`, version
    /// `version` (default: one above the newest).
    pub fn promote(&mut self, key: &str, name: &str, version: Option<i64>) -> Result<ModelVersion> {
        if name.is_empty() || name.contains(':') {
            return Err(RegistryError::Invalid(format!("model name `{name}`: give a non-empty name without `:` (NAME[:VERSION])")));
        }
        let detail = self.run(key)?;
        let mut candidates = detail.checkpoints.clone();
        candidates.sort_by_key(|c| (std::cmp::Reverse(c.epoch), c.copy != "primary"));
        let mut refused = Vec::new();
        let chosen = candidates.into_iter().find(|c| match verified_crc(Path::new(&c.path)) {
            Ok(crc) if crc == c.crc32 => true,
            Ok(crc) => {
                refused.push(format!("{}: CRC {crc}, registered {}", c.path, c.crc32));
                false
            }
            Err(e) => {
                refused.push(e.to_string());
                false
            }
        });
        let Some(chosen) = chosen else {
            let why = if refused.is_empty() { "it registered none".to_string() } else { refused.join("; ") };
            return Err(RegistryError::Invalid(format!("run {} ({}) has no checkpoint that verifies: {why}", detail.run.id, detail.run.name)));
        };
        let (run, path, crc) = (detail.run.id, chosen.path.clone(), chosen.crc32.clone());
        let inserted = self.write(|tx| {
            let next: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) + 1 FROM models WHERE name = ?1", [name], |r| r.get(0))?;
            let v = version.unwrap_or(next);
            tx.execute(
                &format!("INSERT INTO models (name, version, run_id, checkpoint, crc32, promoted) VALUES (?1, ?2, ?3, ?4, ?5, {NOW})"),
                params![name, v, run, path, crc],
            )?;
            Ok(v)
        });
        let version = match inserted {
            Err(RegistryError::Sql { error: rusqlite::Error::SqliteFailure(e, _), .. }) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(RegistryError::Invalid(format!("model {name}:{} exists already: promote to another version", version.unwrap_or_default())));
            }
            other => other?,
        };
        self.versions(name)?.into_iter().find(|m| m.version == version).ok_or_else(|| RegistryError::Invalid(format!("model {name}:{version} vanished")))
    }

    /// Every version of model `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        let mut stmt =
            self.conn.prepare("SELECT name, version, run_id, checkpoint, crc32, promoted FROM models WHERE name = ?1 ORDER BY version").map_err(self.sql())?;
        let rows = stmt
            .query_map([name], |r| {
                Ok(ModelVersion { name: r.get(0)?, version: r.get(1)?, run: r.get(2)?, checkpoint: r.get(3)?, crc32: r.get(4)?, promoted: r.get(5)? })
            })
            .map_err(self.sql())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.sql())
    }
}

fn run_row(r: &rusqlite::Row) -> rusqlite::Result<Run> {
    Ok(Run {
        id: r.get(0)?,
        name: r.get(1)?,
        command: r.get(2)?,
        status: r.get(3)?,
        started: r.get(4)?,
        finished: r.get(5)?,
        code_version: r.get(6)?,
        data_path: r.get(7)?,
        data_files: r.get(8)?,
        data_hash: r.get(9)?,
        strategy: r.get(10)?,
        device: r.get(11)?,
        out: r.get(12)?,
        tags: Vec::new(),
    })
}

/// Loads checkpoint `path` (which checks its CRC-32) and returns that CRC.
pub fn verified_crc(path: &Path) -> Result<String> {
    let ckpt = Checkpoint::load(path).map_err(|e| RegistryError::Invalid(e.to_string()))?;
    ckpt.metadata
        .get(CHECKSUM_KEY)
        .cloned()
        .ok_or_else(|| RegistryError::Invalid(format!("{}: no CRC-32 in its metadata (not a Tessera checkpoint)", path.display())))
}

/// Where a run's registry lives when `--registry` is not given: `registry.sqlite` beside
/// its output folder.
pub fn default_path(out: &Path) -> PathBuf {
    out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("registry.sqlite")
}

#[cfg(test)]
mod tests;

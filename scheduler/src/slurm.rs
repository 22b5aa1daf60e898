//! Slurm job arrays: `tessera plan --emit slurm DIR` and `tessera compare --emit slurm DIR`
//! write an `sbatch` script with one array task per decomposition task (or per strategy), each
//! running `tessera` into DIR's results layout, and `tessera merge DIR` combines what the
//! finished tasks left there. Slurm schedules; Tessera only writes the script and reads the
//! results.
use std::path::Path;

/// One job array: array task i runs `command` in `workdir` with `ranks` MPI ranks (through
/// `mpirun` in the allocation when more than one), where a word `{item}` stands for `items[i]`
/// and `{index}` within a word for i. Logs go to `log_dir/task-<i>.out`.
pub struct ArrayJob<'a> {
    pub name: &'a str,
    pub items: &'a [String],
    pub ranks: usize,
    pub log_dir: &'a Path,
    pub workdir: &'a Path,
    pub command: &'a [String],
}

impl ArrayJob<'_> {
    pub fn script(&self) -> String {
        let words: Vec<String> = self
            .command
            .iter()
            .map(|a| match a.as_str() {
                "{item}" => "\"${ITEMS[$SLURM_ARRAY_TASK_ID]}\"".to_string(),
                _ if a.contains("{index}") => format!("\"{}\"", a.replace(['"', '$', '`', '\\'], "_").replace("{index}", "$SLURM_ARRAY_TASK_ID")),
                _ => quote(a),
            })
            .collect();
        let launcher = if self.ranks > 1 { "mpirun -np \"$SLURM_NTASKS\" " } else { "" };
        format!(
            "#!/bin/bash\n\
             # Written by tessera: one array task per item of the job; `sbatch` this file, then\n\
             # run `tessera merge` on its folder once the tasks have finished.\n\
             #SBATCH --job-name={name}\n\
             #SBATCH --array=0-{last}\n\
             #SBATCH --ntasks={ranks}\n\
             #SBATCH --output={logs}/task-%a.out\n\
             #SBATCH --chdir={workdir}\n\
             set -euo pipefail\n\
             ITEMS=({items})\n\
             exec {launcher}{command}\n",
            name = self.name,
            last = self.items.len().saturating_sub(1),
            ranks = self.ranks.max(1),
            logs = self.log_dir.display(),
            workdir = self.workdir.display(),
            items = self.items.iter().map(|i| quote(i)).collect::<Vec<_>>().join(" "),
            command = words.join(" "),
        )
    }
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_runs_the_command_per_array_item_with_words_quoted() {
        let cmd: Vec<String> =
            ["/opt/tessera", "compare", "--strategies", "{item}", "--out", "/j/strategies/{index}", "--data", "my data/it's"].map(String::from).to_vec();
        let items: Vec<String> = ["full", "fc"].map(String::from).to_vec();
        let job = ArrayJob { name: "tessera-sweep", items: &items, ranks: 2, log_dir: Path::new("/j/logs"), workdir: Path::new("/home/me"), command: &cmd };
        let s = job.script();
        assert!(s.starts_with("#!/bin/bash\n"));
        for line in
            ["#SBATCH --array=0-1\n", "#SBATCH --ntasks=2\n", "#SBATCH --output=/j/logs/task-%a.out\n", "#SBATCH --chdir=/home/me\n", "ITEMS=(full fc)\n"]
        {
            assert!(s.contains(line), "{line} in {s}");
        }
        let exec = r#"exec mpirun -np "$SLURM_NTASKS" /opt/tessera compare --strategies "${ITEMS[$SLURM_ARRAY_TASK_ID]}" --out "/j/strategies/$SLURM_ARRAY_TASK_ID" --data 'my data/it'\''s'"#;
        assert!(s.contains(exec), "{s}");
    }
}

//! Slurm job arrays: `tessera plan --emit slurm DIR` writes an `sbatch` script with one array
//! task per decomposition task, each running `tessera run-task` into DIR's results layout, and
//! `tessera merge DIR` combines what the finished tasks left there. Slurm schedules; Tessera
//! only writes the script and reads the results.
use std::path::Path;

/// An `sbatch` script running `command` in `workdir` once per array index 0..`tasks`, where
/// the argument `{index}` stands for the array task's index; logs go to
/// `log_dir/task-<index>.out`.
pub fn array_script(job_name: &str, tasks: usize, log_dir: &Path, workdir: &Path, command: &[String]) -> String {
    let quoted: Vec<String> = command.iter().map(|a| if a == "{index}" { "\"$SLURM_ARRAY_TASK_ID\"".to_string() } else { quote(a) }).collect();
    format!(
        "#!/bin/bash\n\
         # Written by tessera: one array task per task of the job; `sbatch` this file, then run\n\
         # `tessera merge` on its folder once they have finished.\n\
         #SBATCH --job-name={job_name}\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --ntasks=1\n\
         #SBATCH --output={logs}/task-%a.out\n\
         #SBATCH --chdir={workdir}\n\
         set -euo pipefail\n\
         exec {command}\n",
        last = tasks.saturating_sub(1),
        logs = log_dir.display(),
        workdir = workdir.display(),
        command = quoted.join(" "),
    )
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
    fn the_script_runs_the_command_per_array_index_with_words_quoted() {
        let cmd: Vec<String> = ["/opt/tessera", "run-task", "--index", "{index}", "--data", "my data/it's"].map(String::from).to_vec();
        let s = array_script("tessera-plan", 3, Path::new("/shared/job/logs"), Path::new("/home/me"), &cmd);
        assert!(s.starts_with("#!/bin/bash\n"));
        assert!(
            s.contains("#SBATCH --array=0-2\n") && s.contains("#SBATCH --chdir=/home/me\n") && s.contains("#SBATCH --output=/shared/job/logs/task-%a.out\n"),
            "{s}"
        );
        assert!(s.contains(r#"exec /opt/tessera run-task --index "$SLURM_ARRAY_TASK_ID" --data 'my data/it'\''s'"#), "{s}");
    }
}

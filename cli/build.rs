//! Sets TESSERA_CODE_VERSION, which the run registry records: the git commit this binary is
//! built from (`-dirty` with uncommitted changes), or the package version outside a checkout.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let version = match git(&["rev-parse", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            format!("{commit}{}", if dirty { "-dirty" } else { "" })
        }
        None => format!("{} (not built from a git checkout)", env!("CARGO_PKG_VERSION")),
    };
    println!("cargo:rustc-env=TESSERA_CODE_VERSION={version}");
    // A new commit, a change staged or checked out, or an edit here rebuilds with its version.
    println!("cargo:rerun-if-changed=src");
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for f in ["HEAD", "index", "logs/HEAD"] {
            println!("cargo:rerun-if-changed={dir}/{f}");
        }
    }
}

//! A property test over the whole command line: for every command, generated argument
//! vectors — valid flags with values drawn from edge cases (zero, negative, NaN, infinite,
//! absurdly large, not a number, empty), unknown flags, missing required ones — each run as a
//! child process with a time limit (paths stay inside the test's own folder: as root, an output
//! path such as /dev/null would be replaced). Every run must end in success or a clean error (a message
//! on stderr, exit status 1 or 2): never a panic, a signal or a hang.
mod common;

use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a flag's value is, for drawing edge cases.
#[derive(Clone, Copy)]
enum Kind {
    Count,
    Real,
    Device,
    Path,
    Model,
    Word,
}

fn edge_values(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Count => &["0", "1", "2", "-1", "1e3", "NaN", "18446744073709551616", "99999999999", "abc", ""],
        Kind::Real => &["0", "-1", "NaN", "inf", "-inf", "1e40", "1e-30", "0.5", "abc", ""],
        Kind::Device => &["cpu", "gpu:99", "tpu", "", "auto", "gpu:-1"],
        // Placeholders for paths under the test's own folder: outputs land nowhere else.
        Kind::Path => &["MISSING", "", "DIR", "FILE", "MISSING/deeper"],
        Kind::Model => &["simple-cnn", "nope", "", "resnet20-cifar"],
        Kind::Word => &["x", "", "all", "-1", "nn,zz"],
    }
}

/// A command: its base arguments (a valid, quick invocation) and the flags to vary.
struct Spec {
    name: &'static str,
    base: Vec<String>,
    flags: Vec<(&'static str, Kind)>,
    limit: Duration,
}

fn spec(name: &'static str, base: &[&str], flags: &[(&'static str, Kind)], limit_s: u64) -> Spec {
    Spec { name, base: base.iter().map(|s| s.to_string()).collect(), flags: flags.to_vec(), limit: Duration::from_secs(limit_s) }
}

/// Replaces `flag`'s value in `args` (or appends the flag with `value`).
fn with_value(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut out = args.to_vec();
    match out.iter().position(|a| a == flag) {
        Some(i) if i + 1 < out.len() && !out[i + 1].starts_with("--") => out[i + 1] = value.to_string(),
        _ => out.extend([flag.to_string(), value.to_string()]),
    }
    out
}

/// Removes `flag` and its value.
fn without(args: &[String], flag: &str) -> Vec<String> {
    let mut out = args.to_vec();
    if let Some(i) = out.iter().position(|a| a == flag) {
        let n = if i + 1 < out.len() && !out[i + 1].starts_with("--") { 2 } else { 1 };
        out.drain(i..i + n);
    }
    out
}

/// Argument vectors for one command: the base, an unknown flag, each required flag missing,
/// and `count` seeded mutations of one or two flags.
fn variants(s: &Spec, count: usize, rng: &mut StdRng) -> Vec<Vec<String>> {
    let mut out = vec![s.base.clone(), [s.base.clone(), vec!["--no-such-flag".into(), "1".into()]].concat()];
    let required: Vec<&String> = s.base.iter().filter(|a| a.starts_with("--")).collect();
    if let Some(flag) = required.choose(rng) {
        out.push(without(&s.base, flag));
    }
    if s.flags.is_empty() {
        return out;
    }
    for _ in 0..count {
        let mut args = s.base.clone();
        for _ in 0..rng.gen_range(1..=2) {
            let (flag, kind) = *s.flags.choose(rng).expect("flags");
            args = with_value(&args, flag, edge_values(kind).choose(rng).expect("values"));
        }
        out.push(args);
    }
    out
}

/// How a run ended.
enum Outcome {
    Ok,
    Panic(String),
    Signal,
    Hang,
    Silent(i32),
}

fn run(exe: &Path, args: &[String], limit: Duration, cwd: &Path) -> Outcome {
    let mut child = Command::new(exe).args(args).current_dir(cwd).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawning tessera");
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = reader.join().unwrap_or_default();
    match status {
        None => Outcome::Hang,
        Some(_) if text.contains("panicked") => Outcome::Panic(text.lines().take(3).collect::<Vec<_>>().join(" | ")),
        Some(st) => match st.code() {
            None => Outcome::Signal,
            Some(101) => Outcome::Panic(text),
            Some(0) => Outcome::Ok,
            Some(code) if text.trim().is_empty() => Outcome::Silent(code),
            Some(_) => Outcome::Ok,
        },
    }
}

/// The files the commands read: a tiny CIFAR-binary data set, a trained checkpoint and its
/// run folder, exported weights, an input tensor, a plan.
fn fixtures(root: &Path, exe: &Path) -> HashMap<&'static str, String> {
    let data = root.join("data");
    common::write_coloured_cifar_sized(&data, 4);
    let run = root.join("run");
    let ok = |args: &[&str]| {
        let out = Command::new(exe).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (d, r) = (data.display().to_string(), run.display().to_string());
    ok(&["train", "--model", "simple-cnn", "--data", &d, "--epochs", "1", "--batch", "8", "--out", &r]);
    let ckpt = run.join("epoch-001.safetensors").display().to_string();
    let weights = root.join("w.safetensors").display().to_string();
    ok(&["export", "--checkpoint", &ckpt, "--out", &weights]);
    let plan = root.join("plan.json").display().to_string();
    ok(&["plan", "--classes", "10", "--tasks", "2", "--time-budget", "0.5", "--out", &plan]);
    let input = root.join("x.safetensors");
    let x = tessera_engine::Tensor::zeros(&[2, 3, 32, 32], &tessera_engine::Device::cpu()).unwrap();
    tessera_engine::checkpoint::save(&input, &[("x".into(), x)], &HashMap::new()).unwrap();
    let (dir, file) = (root.join("a-folder"), root.join("a-file.txt"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&file, "not a checkpoint, a plan or an image").unwrap();
    HashMap::from([
        ("DATA", d),
        ("RUN", r),
        ("CKPT", ckpt),
        ("WEIGHTS", weights),
        ("PLAN", plan),
        ("INPUT", input.display().to_string()),
        ("MISSING", root.join("missing").display().to_string()),
        ("MISSING/deeper", root.join("missing/deeper").display().to_string()),
        ("DIR", dir.display().to_string()),
        ("FILE", file.display().to_string()),
    ])
}

#[test]
fn no_generated_invocation_panics_hangs_or_dies_by_a_signal() {
    use Kind::*;
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_tessera"));
    let scratch = common::scratch("tessera-cli-props-");
    let root = scratch.path().to_path_buf();
    std::fs::create_dir_all(&root).unwrap();
    let fx = fixtures(&root, &exe);
    let data_flags = [("--data", Path), ("--limit-per-class", Count), ("--device", Device)];
    let specs = vec![
        spec("devices", &["devices"], &[("--json", Word)], 60),
        spec("models", &["models"], &[("--json", Word)], 30),
        spec("models show", &["models", "show", "simple-cnn", "--input", "32", "--num-classes", "10"], &[("--input", Count), ("--num-classes", Count)], 30),
        spec(
            "train",
            &["train", "--model", "simple-cnn", "--data", "DATA", "--epochs", "1", "--batch", "8", "--limit-per-class", "2", "--out", "OUT"],
            &[
                ("--model", Model),
                ("--epochs", Count),
                ("--batch", Count),
                ("--lr", Real),
                ("--momentum", Real),
                ("--wd", Real),
                ("--optimizer", Word),
                ("--warmup-steps", Count),
                ("--workers", Count),
                ("--loader-memory", Count),
                ("--seed", Count),
                ("--on-nan", Word),
                ("--config", Path),
                data_flags[0],
                data_flags[1],
                data_flags[2],
            ],
            60,
        ),
        spec(
            "eval",
            &["eval", "--checkpoint", "CKPT", "--data", "DATA", "--batch", "64"],
            &[("--checkpoint", Path), ("--batch", Count), data_flags[0], data_flags[2]],
            60,
        ),
        spec(
            "export",
            &["export", "--checkpoint", "CKPT", "--out", "OUT", "--dtype", "f16"],
            &[("--checkpoint", Path), ("--dtype", Word), ("--out", Path)],
            30,
        ),
        spec(
            "forward",
            &["forward", "--model", "simple-cnn", "--num-classes", "10", "--weights", "WEIGHTS", "--input", "INPUT", "--out", "OUT"],
            &[("--model", Model), ("--num-classes", Count), ("--weights", Path), ("--input", Path), ("--device", Device)],
            60,
        ),
        spec(
            "compare",
            &[
                "compare",
                "--model",
                "simple-cnn",
                "--data",
                "DATA",
                "--strategies",
                "full",
                "--epochs",
                "1",
                "--batch",
                "8",
                "--limit-per-class",
                "2",
                "--out",
                "OUT",
            ],
            &[
                ("--strategies", Word),
                ("--epochs", Count),
                ("--batch", Count),
                ("--lr", Real),
                ("--momentum", Real),
                ("--wd", Real),
                ("--threshold", Real),
                ("--window", Count),
                ("--gamma", Real),
                ("--split", Count),
                ("--neighbors", Count),
                ("--order", Word),
                ("--criterion", Word),
                ("--init", Path),
                ("--ranks", Count),
                data_flags[1],
                data_flags[2],
            ],
            90,
        ),
        spec("importance", &["importance", "--checkpoint", "CKPT", "--top", "3", "--out", "OUT"], &[("--checkpoint", Path), ("--top", Count)], 60),
        spec(
            "correlation",
            &["correlation", "--checkpoint", "CKPT", "--data", "DATA", "--limit-per-class", "2", "--out", "OUT"],
            &[("--checkpoint", Path), ("--seed", Count), data_flags[0], data_flags[1], data_flags[2]],
            90,
        ),
        spec(
            "robustness",
            &["robustness", "--run", "RUN", "--data", "DATA", "--limit-per-class", "2", "--no-corruptions", "--out", "OUT"],
            &[("--run", Path), ("--batch", Count), ("--noise-scale", Real), data_flags[0], data_flags[1]],
            90,
        ),
        spec(
            "plan",
            &["plan", "--classes", "10", "--tasks", "2", "--time-budget", "0.5", "--out", "OUT"],
            &[("--classes", Count), ("--tasks", Count), ("--time-budget", Real)],
            30,
        ),
        spec(
            "run-plan",
            &["run-plan", "--plan", "PLAN", "--data", "DATA", "--limit-per-class", "2", "--batch", "8", "--out", "OUT"],
            &[("--plan", Path), ("--batch", Count), ("--lr", Real), ("--workers", Count), ("--threads", Count), ("--model", Model), data_flags[1]],
            90,
        ),
        spec(
            "run-task",
            &["run-task", "--plan", "PLAN", "--data", "DATA", "--index", "0", "--limit-per-class", "2", "--batch", "8", "--out", "OUT"],
            &[("--index", Count), ("--batch", Count), ("--lr", Real), ("--optimizer", Word), ("--threads", Count), ("--plan", Path), data_flags[1]],
            60,
        ),
        spec("check", &["check", "--shaders"], &[("--adapters", Word), ("--json-out", Path)], 120),
        spec(
            "bench gemm",
            &["bench", "gemm", "--device", "cpu", "--sizes", "16", "--seconds", "0.01"],
            &[("--sizes", Count), ("--seconds", Real), ("--threads", Count), ("--trans", Word), ("--kernel", Word), ("--device", Device)],
            60,
        ),
        spec("merge", &["merge", "DIR"], &[("--json", Word)], 30),
        spec("bench allreduce", &["bench", "allreduce", "--sizes", "4096", "--iters", "2"], &[("--sizes", Count), ("--iters", Count)], 30),
        spec("bench kernels", &["bench", "kernels", "--device", "gpu:99", "--seconds", "0.01"], &[("--seconds", Real), ("--device", Device)], 180),
        spec(
            "bench time-to-accuracy",
            &["bench", "time-to-accuracy", "--data", "DATA", "--limit-per-class", "2", "--epochs", "1", "--runs", "1", "--no-torch"],
            &[("--target", Real), ("--runs", Count), ("--epochs", Count), ("--seed", Count), ("--recipe", Word), data_flags[1], data_flags[2]],
            60,
        ),
        spec(
            "bench train",
            &["bench", "train", "--model", "simple-cnn", "--batch", "2", "--input", "32", "--warmup", "0", "--steps", "1", "--no-torch", "--device", "cpu"],
            &[
                ("--model", Model),
                ("--batch", Count),
                ("--input", Count),
                ("--num-classes", Count),
                ("--warmup", Count),
                ("--steps", Count),
                ("--rounds", Count),
            ],
            60,
        ),
    ];
    let mut rng = StdRng::seed_from_u64(17);
    let mut jobs = Vec::new();
    for s in &specs {
        for (i, args) in variants(s, 24, &mut rng).into_iter().enumerate() {
            // Placeholders name the fixtures; each run writes to its own folder.
            let out = root.join(format!("out-{}-{i}", s.name.replace(' ', "-"))).display().to_string();
            let args: Vec<String> = args.into_iter().map(|a| if a == "OUT" { out.clone() } else { fx.get(a.as_str()).cloned().unwrap_or(a) }).collect();
            jobs.push((s.name, args, s.limit));
        }
    }
    // Two at a time: the machine's cores.
    let queue = std::sync::Mutex::new(jobs.into_iter());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let Some((name, args, limit)) = queue.lock().unwrap().next() else { break };
                let outcome = run(&exe, &args, limit, &root);
                results.lock().unwrap().push((name, args, outcome));
            });
        }
    });
    let results = results.into_inner().unwrap();
    let mut counts: Vec<(&str, usize)> = Vec::new();
    let mut failures = Vec::new();
    for (name, args, outcome) in &results {
        match counts.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
        let why = match outcome {
            Outcome::Ok => continue,
            Outcome::Panic(text) => format!("panicked: {text}"),
            Outcome::Signal => "killed by a signal".into(),
            Outcome::Hang => "still running at its time limit".into(),
            Outcome::Silent(code) => format!("exit {code} without a message"),
        };
        failures.push(format!("tessera {}: {why}", args.join(" ")));
    }
    for (name, n) in &counts {
        println!("{name}: {n} invocations");
    }
    println!("{} invocations, {} panics, signals, hangs or silent failures", results.len(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A config file's values are checked against the same ranges as the flags.
#[test]
fn a_config_file_is_checked_like_the_flags() {
    let exe = env!("CARGO_BIN_EXE_tessera");
    let scratch = common::scratch("tessera-cli-config-");
    let root = scratch.path().to_path_buf();
    common::write_coloured_cifar_sized(&root.join("data"), 2);
    for (line, says) in [
        ("epochs = 0", "--epochs must be a whole number from 1 to 100000, got 0"),
        ("lr = nan", "--lr must be a finite number in (0,"),
        ("momentum = 1.5", "--momentum must be a finite number in [0, 1)"),
        ("batch = 100000", "--batch must be a whole number from 1 to 4096"),
        ("workers = 100000", "--workers must be a whole number from 0 to 256"),
    ] {
        let config = root.join("run.toml");
        std::fs::write(&config, format!("model = \"simple-cnn\"\ndata = \"{}\"\n{line}\n", root.join("data").display())).unwrap();
        let out = Command::new(exe).args(["train", "--config"]).arg(&config).current_dir(&root).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{line}: {stderr}");
    }
}

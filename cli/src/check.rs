//! `tessera check`: the conformance suite on every adapter against the CPU backend, as an
//! op × adapter matrix; `--shaders`: naga's validation and translation of every kernel to
//! SPIR-V, MSL, HLSL and GLSL ES (Metal and DX12 compatibility, checked on any OS).
use crate::table::{print_record, Table};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::collections::BTreeSet;
use tessera_engine::conformance::{self, Verdict};
use tessera_engine::gpu::list_adapters;
use tessera_engine::Device;
use tessera_scheduler::json::shortest_floats;
use tessera_shaders::validate::{translate_shader, Outcome, TARGETS};

#[derive(Args)]
pub struct CheckArgs {
    /// `all`, or adapter indices from `tessera devices` (e.g. `0,1`).
    #[arg(long, default_value = "all")]
    adapters: String,
    /// Print the results as JSON lines (`cell`, with `--shaders` `translation` records)
    /// instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the whole matrix as one JSON document to this file (its `cells`, or
    /// `results`, are the records `--json` prints).
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// Check the WGSL kernels with naga (validation and translation per target) instead.
    #[arg(long)]
    shaders: bool,
}

pub fn run(args: CheckArgs) -> Result<()> {
    if args.shaders {
        shaders(args.json, args.json_out.as_deref())
    } else {
        ops(&args.adapters, args.json, args.json_out.as_deref())
    }
}

/// The adapters `spec` names, as (column label, device).
fn adapters(spec: &str) -> Result<Vec<(String, Device)>> {
    let all = list_adapters();
    let chosen: Vec<usize> = if spec == "all" {
        all.iter().map(|a| a.index).collect()
    } else {
        spec.split(',')
            .map(|s| s.trim().trim_start_matches("gpu:").parse::<usize>().with_context(|| format!("--adapters: `{s}` is not an adapter index")))
            .collect::<Result<_>>()?
    };
    if chosen.is_empty() {
        bail!("no GPU adapter found: install a Vulkan or GL driver (on Debian: mesa-vulkan-drivers)");
    }
    chosen
        .into_iter()
        .map(|i| {
            let a = all.iter().find(|a| a.index == i).with_context(|| format!("no adapter {i}: `tessera devices` lists {}", all.len()))?;
            let device = Device::gpu(i).with_context(|| format!("opening adapter {i} ({})", a.name))?;
            Ok((format!("gpu:{i} {}", a.backend), device))
        })
        .collect()
}

fn ops(spec: &str, json: bool, json_out: Option<&std::path::Path>) -> Result<()> {
    if let Some(path) = json_out {
        crate::create_parent(path)?;
    }
    let chosen = adapters(spec)?;
    let (labels, devices): (Vec<String>, Vec<Device>) = chosen.into_iter().unzip();
    let suite = conformance::suite();
    eprintln!("checking {} cases on {} adapter(s) against the CPU backend…", suite.len(), devices.len());
    let report = conformance::check(&suite, &devices, |cell| {
        if matches!(cell.verdict, Verdict::Fail { .. }) {
            eprintln!("  FAIL {} on {}", cell.op, cell.device);
        }
    });

    let mut columns = vec!["op".to_string(), "cases".to_string()];
    columns.extend(labels.iter().cloned());
    let mut table = Table::new("op", &columns);
    let mut reasons = BTreeSet::new();
    for op in &report.ops {
        let mut row = vec![json!(op)];
        for (i, d) in devices.iter().enumerate() {
            let cell = report.cell(op, &d.to_string()).expect("a cell per op and device");
            if i == 0 {
                row.push(json!(cell.cases));
            }
            if let Verdict::Unsupported(why) = &cell.verdict {
                reasons.insert(format!("{} on {}: {why}", op, labels[i]));
            }
            row.push(json!(cell.verdict.to_string()));
        }
        table.push(row);
    }
    let count = |f: fn(&Verdict) -> bool| report.cells.iter().filter(|c| f(&c.verdict)).count();
    let (pass, fail, unsup) =
        (count(|v| matches!(v, Verdict::Pass { .. })), count(|v| matches!(v, Verdict::Fail { .. })), count(|v| matches!(v, Verdict::Unsupported(_))));
    let summary = format!("{} ops × {} adapters: {pass} pass, {fail} fail, {unsup} unsupported", report.ops.len(), devices.len());
    let cells: Vec<_> = report
        .cells
        .iter()
        .map(|c| {
            let (status, err, detail) = match &c.verdict {
                Verdict::Pass { max_err } => ("pass", Some(*max_err), String::new()),
                Verdict::Fail { max_err, shape, detail } => ("fail", max_err.is_finite().then_some(*max_err), format!("{shape}: {detail}")),
                Verdict::Unsupported(why) => ("unsupported", None, why.clone()),
            };
            json!({"op": c.op, "adapter": c.device, "cases": c.cases, "status": status, "max_rel_err": err, "detail": detail})
        })
        .collect();
    if json {
        cells.iter().for_each(|c| print_record("cell", c));
        eprintln!("{summary}");
    } else {
        table.print(false);
        for r in &reasons {
            println!("unsupported: {r}");
        }
        println!("{summary}");
    }
    if let Some(path) = json_out {
        let doc = json!({"reference": "cpu", "adapters": labels, "ops": report.ops, "cells": cells, "passed": report.passed()});
        std::fs::write(path, serde_json::to_string_pretty(&shortest_floats(doc))?).with_context(|| format!("writing {}", path.display()))?;
    }
    if !report.passed() {
        bail!("{fail} op/adapter pairs failed:\n{}", report.failures().join("\n"));
    }
    Ok(())
}

fn shaders(json: bool, json_out: Option<&std::path::Path>) -> Result<()> {
    if let Some(path) = json_out {
        crate::create_parent(path)?;
    }
    let mut columns = vec!["module", "entry point"];
    columns.extend(TARGETS);
    let mut table = Table::new("module", &columns);
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for shader in tessera_shaders::ALL {
        match translate_shader(shader) {
            Err(e) => {
                failures.push(e.to_string());
                table.push(std::iter::once(json!(shader.file)).chain(std::iter::once(json!("-"))).chain(TARGETS.map(|_| json!("INVALID"))).collect());
            }
            Ok(results) => {
                let entries: Vec<String> = results.iter().map(|t| t.entry.clone()).collect::<BTreeSet<_>>().into_iter().collect();
                for entry in entries {
                    let mut row = vec![json!(shader.file), json!(entry)];
                    for target in TARGETS {
                        let t = results.iter().find(|t| t.entry == entry && t.target == target).expect("a result per target");
                        let status = match &t.result {
                            Outcome::Translated(size) => format!("ok ({size})"),
                            Outcome::NotApplicable(_) => "n/a".to_string(),
                            Outcome::Failed(e) => {
                                failures.push(e.to_string());
                                "FAIL".to_string()
                            }
                        };
                        rows.push(json!({"module": shader.file, "entry": entry, "target": target, "status": status}));
                        row.push(json!(status));
                    }
                    table.push(row);
                }
            }
        }
    }
    if json {
        rows.iter().for_each(|r| print_record("translation", r));
    } else {
        table.print(false);
        println!("sizes: bytes of generated source (SPIR-V: words); n/a: the target has no form for the module by design (f16 in GLSL ES: GL adapters use the packed-u32 module)");
    }
    if let Some(path) = json_out {
        let doc = json!({"targets": TARGETS, "results": rows, "failures": failures});
        std::fs::write(path, serde_json::to_string_pretty(&shortest_floats(doc))?).with_context(|| format!("writing {}", path.display()))?;
    }
    if !failures.is_empty() {
        bail!("{} shader failures:\n{}", failures.len(), failures.join("\n"));
    }
    Ok(())
}

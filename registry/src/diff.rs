//! `runs diff A B`: where two runs differ — config keys, then each strategy's results and
//! last epoch — as flat `key: a → b` rows.
use crate::RunDetail;
use serde_json::Value;
use std::collections::BTreeMap;

/// One key whose values differ (`None`: absent in that run).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Difference {
    /// `config`, `run`, `result` or `last_epoch`.
    pub section: String,
    pub key: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
}

/// Every leaf of `v` by its dotted path (array items by index).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| flatten(&key(k), v, out)),
        Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
            items.iter().enumerate().for_each(|(i, v)| flatten(&key(&i.to_string()), v, out))
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn differences(section: &str, a: &Value, b: &Value, out: &mut Vec<Difference>) {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten("", a, &mut fa);
    flatten("", b, &mut fb);
    let keys: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    for k in keys {
        let (va, vb) = (fa.get(k), fb.get(k));
        if va != vb {
            out.push(Difference { section: section.into(), key: k.clone(), a: va.cloned(), b: vb.cloned() });
        }
    }
}

/// Where runs `a` and `b` differ: the command, code version, data fingerprint, strategy and
/// device; the config; each strategy's result record and its last epoch's metrics.
pub fn diff(a: &RunDetail, b: &RunDetail) -> Vec<Difference> {
    let mut out = Vec::new();
    let about = |r: &RunDetail| serde_json::json!({"command": r.run.command, "code_version": r.run.code_version, "data_hash": r.run.data_hash, "data_files": r.run.data_files, "strategy": r.run.strategy, "device": r.run.device});
    differences("run", &about(a), &about(b), &mut out);
    differences("config", &a.config, &b.config, &mut out);
    let by_strategy = |rows: &[(String, Value)]| -> Value { Value::Object(rows.iter().cloned().collect()) };
    differences("result", &by_strategy(&a.results), &by_strategy(&b.results), &mut out);
    let last = |r: &RunDetail| -> Value {
        let mut m = serde_json::Map::new();
        for (strategy, _, metrics) in &r.epochs {
            m.insert(strategy.clone(), metrics.clone());
        }
        Value::Object(m)
    };
    differences("last_epoch", &last(a), &last(b), &mut out);
    out
}

//! JSON output conventions shared by the files the library writes and the CLI's `--json`
//! lines: numbers that are f32 values print as f32's shortest round-trip decimal (`0.05`, not
//! the `0.05000000074505806` of its widening to f64).
use serde_json::Value;

/// `v` with every number that is exactly an f32 written as that f32's shortest decimal.
pub fn shortest_floats(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            let narrow = f as f32;
            if narrow as f64 == f && narrow.is_finite() {
                // f32's Display is its shortest round-trip decimal; as f64 it prints the same.
                let short: f64 = narrow.to_string().parse().unwrap_or(f);
                serde_json::Number::from_f64(short).map_or(Value::Number(n), Value::Number)
            } else {
                Value::Number(n)
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(shortest_floats).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, shortest_floats(v))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::shortest_floats;
    use serde_json::json;

    #[test]
    fn f32_values_print_short_and_f64_values_untouched() {
        let v = shortest_floats(json!({"lr": 0.05f32, "acc": [0.8017f32], "secs": 0.1f64, "n": 3}));
        assert_eq!(v.to_string(), r#"{"acc":[0.8017],"lr":0.05,"n":3,"secs":0.1}"#);
    }
}

//! Output of every table-printing command: an aligned text table, or with `--json` the same
//! rows as JSON lines. Every JSON line is one record: `"record"` names its kind and the other
//! keys are the kind's fields, the same as where the command's file holds that kind (the README
//! lists them); f32 values print at f32 precision. A missing value is `null` in JSON and `-` in
//! text.
use serde_json::{Map, Value};

/// Prints `fields` (a JSON object) as one `--json` line of kind `record`.
pub fn print_record(record: &str, fields: &Value) {
    let mut obj = Map::new();
    obj.insert("record".into(), Value::String(record.into()));
    if let Value::Object(map) = fields {
        obj.extend(map.clone());
    }
    println!("{}", tessera_scheduler::json::shortest_floats(Value::Object(obj)));
}

/// A line for the reader: stdout in text mode, stderr under `--json` (whose stdout holds
/// records only).
pub fn note(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

pub struct Table {
    record: &'static str,
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl Table {
    /// A table whose rows are records of kind `record`, with these columns as their keys.
    pub fn new<S: AsRef<str>>(record: &'static str, columns: &[S]) -> Self {
        Self { record, columns: columns.iter().map(|c| c.as_ref().to_string()).collect(), rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<Value>) {
        assert_eq!(row.len(), self.columns.len(), "row width");
        self.rows.push(row);
    }

    /// Prints the newest row as one JSON line (for commands that stream their results).
    pub fn print_last(&self) {
        if let Some(row) = self.rows.last() {
            self.print_row(row);
        }
    }

    fn print_row(&self, row: &[Value]) {
        print_record(self.record, &Value::Object(self.columns.iter().cloned().zip(row.iter().cloned()).collect()));
    }

    /// Prints the rows accumulated so far, as text or JSON lines.
    pub fn print(&self, json: bool) {
        if json {
            for row in &self.rows {
                self.print_row(row);
            }
            return;
        }
        let cells: Vec<Vec<String>> = self.rows.iter().map(|r| r.iter().map(cell).collect()).collect();
        let widths: Vec<usize> = (0..self.columns.len()).map(|i| cells.iter().map(|r| r[i].len()).chain([self.columns[i].len()]).max().unwrap_or(0)).collect();
        let line = |items: Vec<String>| {
            let padded: Vec<String> =
                items.iter().zip(&widths).enumerate().map(|(i, (s, w))| if i == 0 { format!("{s:<w$}") } else { format!("{s:>w$}") }).collect();
            println!("{}", padded.join("  ").trim_end());
        };
        line(self.columns.clone());
        line(widths.iter().map(|w| "-".repeat(*w)).collect());
        for row in cells {
            line(row);
        }
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

//! Results: one list of figures that both the stdout table and the JSON file are rendered from, so the two
//! can never disagree.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::env::{Result, Tuning};
use crate::machine::Machine;

/// One measured number, optionally compared with another figure of the same run and with a target.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// Stable identifier for tools reading the JSON, e.g. `delivery.one_worker`.
    pub key: String,
    /// Scenario heading it is printed under.
    pub scenario: String,
    /// Human description.
    pub label: String,
    /// The number.
    pub value: f64,
    /// Its unit (`msg/s`, `ms`, `MiB`, …).
    pub unit: String,
    /// This figure divided by another figure of the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<Ratio>,
    /// The brief's target for this figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Anything a reader needs to interpret the number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `value / to_value`, where `to` is the key of another figure in this run.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// Key of the reference figure.
    pub to: String,
    /// Short name of the reference, for the table.
    pub to_label: String,
    /// The quotient.
    pub value: f64,
}

/// A target and whether this run met it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// The target as text, e.g. `>= 10000 msg/s`.
    pub text: String,
    /// Met or not.
    pub pass: bool,
}

/// Everything one run produced.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Worker settings used by every delivery scenario.
    pub tuning: Tuning,
    /// Sizes used (messages, tasks, …).
    pub sizes: serde_json::Value,
    /// The same, as a line for the table.
    #[serde(skip)]
    sizes_summary: String,
    /// All figures, in the order measured.
    pub figures: Vec<Figure>,
    /// Scenarios that failed, with the error.
    pub errors: Vec<String>,
}

impl Report {
    /// An empty report for this machine and settings.
    pub fn new(machine: Machine, tuning: Tuning, sizes: serde_json::Value, sizes_summary: String) -> Self {
        Report {
            machine,
            tuning,
            sizes,
            sizes_summary,
            figures: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Adds a figure and returns it for chaining comparisons.
    pub fn add(&mut self, scenario: &str, key: &str, label: &str, value: f64, unit: &str) -> &mut Figure {
        self.figures.push(Figure {
            key: key.to_owned(),
            scenario: scenario.to_owned(),
            label: label.to_owned(),
            value,
            unit: unit.to_owned(),
            ratio: None,
            target: None,
            note: None,
        });
        self.figures.last_mut().expect("just pushed")
    }

    /// The value of the figure with `key`, if it was measured.
    pub fn value(&self, key: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.key == key).map(|f| f.value)
    }

    /// Sets figure `key`'s ratio to figure `to` (both must exist; silently skipped otherwise, which happens
    /// only when the reference scenario failed and is listed under errors).
    pub fn ratio(&mut self, key: &str, to: &str, to_label: &str) {
        let Some(reference) = self.value(to) else { return };
        if let Some(f) = self.figures.iter_mut().find(|f| f.key == key) {
            f.ratio = Some(Ratio {
                to: to.to_owned(),
                to_label: to_label.to_owned(),
                value: f.value / reference,
            });
        }
    }

    /// Sets figure `key`'s ratio to figure `to` and the target that it be at least `floor` times `to`
    /// (`text` says so in the table); skipped like [`ratio`](Self::ratio) when either is missing.
    pub fn ratio_at_least(&mut self, key: &str, to: &str, to_label: &str, floor: f64, text: &str) {
        self.ratio(key, to, to_label);
        if let (Some(value), Some(reference)) = (self.value(key), self.value(to)) {
            self.target(key, text, value >= floor * reference);
        }
    }

    /// Attaches a target to figure `key` (skipped if it was not measured).
    pub fn target(&mut self, key: &str, text: &str, pass: bool) {
        if let Some(f) = self.figures.iter_mut().find(|f| f.key == key) {
            f.target(text, pass);
        }
    }

    /// Adds a line to figure `key`'s note.
    pub fn append_note(&mut self, key: &str, line: &str) {
        if let Some(f) = self.figures.iter_mut().find(|f| f.key == key) {
            f.note = Some(match f.note.take() {
                Some(note) => format!("{note}\n{line}"),
                None => line.to_owned(),
            });
        }
    }

    /// Records a failed scenario; the run goes on with the next one.
    pub fn error(&mut self, scenario: &str, e: &dyn std::fmt::Display) {
        eprintln!("scenario {scenario} failed: {e}");
        self.errors.push(format!("{scenario}: {e}"));
    }

    /// The table printed on stdout.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "webhooks-dispatch benchmark — {}", m.date);
        let _ = writeln!(
            out,
            "machine: {} cpus ({}), {:.1} GiB RAM, load avg at start {}, {}",
            m.nproc, m.cpu_model, m.memory_gib, m.load_average_at_start, m.postgres_version
        );
        let _ = writeln!(out, "postgres: {}", m.postgres_settings);
        let t = &self.tuning;
        let _ = writeln!(
            out,
            "worker settings: concurrency {}, per-endpoint cap {}, claim_batch {}, poll {} ms, attempt timeout {} ms \
             ({} ms in scenario 5), shutdown grace {} ms, pool {} conns per worker",
            t.concurrency,
            t.per_endpoint,
            t.claim_batch,
            t.poll_interval_ms,
            t.attempt_timeout_ms,
            crate::isolation::ATTEMPT_TIMEOUT_MS,
            t.shutdown_grace_ms,
            t.worker_pool_size
        );
        let _ = writeln!(out, "sizes: {}", self.sizes_summary);
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<58} {:>16}  {:<34} target", "figure", "value", "ratio");
        let mut scenario = "";
        for f in &self.figures {
            if f.scenario != scenario {
                scenario = &f.scenario;
                let _ = writeln!(out, "── {scenario}");
            }
            let value = format!("{} {}", number(f.value), f.unit);
            let ratio = f
                .ratio
                .as_ref()
                .map(|r| format!("{:.2}× {}", r.value, r.to_label))
                .unwrap_or_default();
            let target = f
                .target
                .as_ref()
                .map(|t| format!("{} {}", if t.pass { "PASS" } else { "MISS" }, t.text))
                .unwrap_or_default();
            let row = format!("  {:<56} {:>16}  {:<34} {}", f.label, value, ratio, target);
            let _ = writeln!(out, "{}", row.trim_end());
            for line in f.note.iter().flat_map(|n| n.lines()) {
                let _ = writeln!(out, "      {line}");
            }
        }
        for e in &self.errors {
            let _ = writeln!(out, "FAILED: {e}");
        }
        out
    }

    /// Writes the JSON file, creating its directory.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(())
    }
}

impl Figure {
    /// Attaches a target.
    pub fn target(&mut self, text: impl Into<String>, pass: bool) -> &mut Self {
        self.target = Some(Target {
            text: text.into(),
            pass,
        });
        self
    }

    /// Attaches a note printed under the row.
    pub fn note(&mut self, note: impl Into<String>) -> &mut Self {
        self.note = Some(note.into());
        self
    }
}

/// One run's result: a rate and what to say under it.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Messages per second.
    pub rate: f64,
    /// Details (sizes, connections, CPU).
    pub note: String,
}

/// Repeated runs of one measurement. The machine is shared, and other tenants can only slow a run down, so
/// the best round is the figure; every round's value is kept in the note.
#[derive(Debug, Default)]
pub struct Samples {
    ok: Vec<Sample>,
    errors: Vec<String>,
}

impl Samples {
    /// Adds one round's outcome.
    pub fn push(&mut self, sample: Result<Sample>) {
        match sample {
            Ok(s) => self.ok.push(s),
            Err(e) => self.errors.push(crate::env::chain(&*e)),
        }
    }

    /// Adds the best round as figure `key` (with the other rounds in its note), or an error if every round
    /// failed. Returns whether a figure was added.
    pub fn report(&self, report: &mut Report, scenario: &str, key: &str, label: &str) -> bool {
        let Some(best) = self.ok.iter().max_by(|a, b| a.rate.total_cmp(&b.rate)) else {
            let why = self.errors.first().map_or("not run", String::as_str);
            report.error(&format!("{scenario}: {label}"), &why);
            return false;
        };
        let mut note = best.note.clone();
        if self.ok.len() + self.errors.len() > 1 {
            let rounds: Vec<String> = self.ok.iter().map(|s| format!("{:.0}", s.rate)).collect();
            note.push_str(&format!(
                "\nbest of {} rounds: {} msg/s",
                self.ok.len(),
                rounds.join(", ")
            ));
        }
        for e in &self.errors {
            note.push_str(&format!("\na round failed: {e}"));
        }
        report.add(scenario, key, label, best.rate, "msg/s").note(note);
        true
    }
}

/// Human formatting: thousands separators for big numbers, a few significant digits for small ones.
fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.abs() >= 1000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if v < 0.0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_grouped() {
        assert_eq!(super::number(1_234_567.4), "1,234,567");
        assert_eq!(super::number(999.6), "1000");
        assert_eq!(super::number(12.34), "12.3");
        assert_eq!(super::number(1.234), "1.23");
    }
}

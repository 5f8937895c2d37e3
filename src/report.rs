//! Result tables, data first. Every number a run produces is one [`Measurement`] row of
//! `results_long.csv`; the paper's tables (Table 1 accuracy, Table 2 shift against the original
//! model, Table 3 segmentation, Table 4 ablation) are views over those rows, rendered as CSV,
//! GitHub Markdown or aligned terminal text. Keeping the long file as the source of truth means a
//! table can be rebuilt, re-sliced (per protocol, per dataset list) or merged across runs without
//! rerunning anything.
//!
//! Conventions: accuracies (`top1`, `top5`) and segmentation metrics (`pixel_accuracy`, `miou`,
//! `map`) are stored in percent. Views take `(measurements, datasets, methods, protocol)`, build
//! one table per protocol, keep models in their first appearance order, order rows by the caller's
//! method list, skip a (model, method) with nothing to show, and leave a cell empty when it was not
//! measured. With several seeds a cell is the mean over seeds and a `_std` column (sample standard
//! deviation, n - 1) follows each mean column.
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::atomic_write;

/// Header of `results_long.csv`, in this order.
pub const LONG_HEADER: [&str; 7] = ["model", "method", "seed", "dataset", "protocol", "metric", "value"];
/// The method every shift is measured against.
pub const ORIGINAL: &str = "original";
/// Top-1 accuracy, percent.
pub const TOP1: &str = "top1";
/// Top-5 accuracy, percent.
pub const TOP5: &str = "top5";

/// One measured number: which model, finetuned how, with which seed, evaluated on which dataset
/// under which protocol, and which metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub model: String,
    pub method: String,
    pub seed: u64,
    pub dataset: String,
    pub protocol: String,
    pub metric: String,
    pub value: f64,
}

/// What a group of measurements is of: a model, finetuned by a method with a seed, evaluated under a
/// protocol. Every producer of rows builds them through [`Subject::row`].
#[derive(Clone, Debug, PartialEq)]
pub struct Subject {
    pub model: String,
    pub method: String,
    pub seed: u64,
    pub protocol: String,
}

impl Subject {
    /// The measurement of `metric` on `dataset`.
    pub fn row(&self, dataset: &str, metric: &str, value: f64) -> Measurement {
        Measurement {
            model: self.model.clone(),
            method: self.method.clone(),
            seed: self.seed,
            dataset: dataset.into(),
            protocol: self.protocol.clone(),
            metric: metric.into(),
            value,
        }
    }
}

/// `measurements` as CSV lines (with the header when `header`), values with four decimals so that
/// reruns give byte-identical files.
fn long_bytes(measurements: &[Measurement], header: bool) -> anyhow::Result<Vec<u8>> {
    let mut out = csv::Writer::from_writer(Vec::new());
    if header {
        out.write_record(LONG_HEADER)?;
    }
    for m in measurements {
        let seed = m.seed.to_string();
        let value = format!("{:.4}", m.value);
        out.write_record([&m.model, &m.method, &seed, &m.dataset, &m.protocol, &m.metric, &value])?;
    }
    Ok(out.into_inner().map_err(|e| e.into_error())?)
}

/// Writes `measurements` to `path` (normally `results_long.csv`) atomically, in the given order.
pub fn write_long(path: &Path, measurements: &[Measurement]) -> anyhow::Result<()> {
    atomic_write::write(path, &long_bytes(measurements, true)?)?;
    Ok(())
}

/// A long file that grows as measurements are made: each [`LongLog::append`] is on disk (synced) before it
/// returns, so a crash loses at most the rows being written, never earlier ones.
pub struct LongLog {
    path: PathBuf,
    file: File,
}

impl LongLog {
    /// Opens `path` for appending, creating it with the header, and returns the rows already in it. A
    /// last line cut off by a crash (no newline) is dropped from the file: its measurement is redone.
    pub fn open(path: &Path) -> anyhow::Result<(LongLog, Vec<Measurement>)> {
        let named = |e: std::io::Error| anyhow::anyhow!("{}: {e}", path.display());
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(path).map_err(named)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(named)?;
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            eprintln!("{}: dropping a row cut off by an interrupted run", path.display());
            file.set_len(whole as u64).map_err(named)?;
        }
        let rows = if whole == 0 {
            file.write_all(&long_bytes(&[], true)?).map_err(named)?;
            file.sync_data().map_err(named)?;
            Vec::new()
        } else {
            read_long(path)?
        };
        Ok((LongLog { path: path.to_path_buf(), file }, rows))
    }

    /// Appends `rows` and syncs them to disk.
    pub fn append(&mut self, rows: &[Measurement]) -> anyhow::Result<()> {
        let named = |e: std::io::Error| anyhow::anyhow!("appending to {}: {e}", self.path.display());
        self.file.write_all(&long_bytes(rows, false)?).map_err(named)?;
        self.file.sync_data().map_err(named)
    }
}

/// The rows of several long files as one, each measurement once: a measurement found in two files with
/// the same value is kept once; with different values it is an error naming both files.
pub fn merge(files: &[(PathBuf, Vec<Measurement>)]) -> anyhow::Result<Vec<Measurement>> {
    type Key<'a> = (&'a str, &'a str, u64, &'a str, &'a str, &'a str);
    let mut seen: HashMap<Key, (&Path, &Measurement)> = HashMap::new();
    let mut merged = Vec::new();
    for (path, rows) in files {
        for m in rows {
            let key = (
                m.model.as_str(),
                m.method.as_str(),
                m.seed,
                m.dataset.as_str(),
                m.protocol.as_str(),
                m.metric.as_str(),
            );
            match seen.get(&key) {
                None => {
                    seen.insert(key, (path, m));
                    merged.push(m.clone());
                }
                // Values compared as written (four decimals), as every reader sees them.
                Some((_, first)) if format!("{:.4}", first.value) == format!("{:.4}", m.value) => {}
                Some((other, first)) => bail!(
                    "{} and {} disagree on {} {} seed {} {} {} {}: {} vs {}",
                    other.display(),
                    path.display(),
                    m.model,
                    m.method,
                    m.seed,
                    m.dataset,
                    m.protocol,
                    m.metric,
                    first.value,
                    m.value
                ),
            }
        }
    }
    Ok(merged)
}

/// Reads a file written by [`write_long`] or [`LongLog`]; the header must be exactly [`LONG_HEADER`], so
/// that a file with reordered or renamed columns is rejected rather than misread. A last line without its
/// newline (a row being written, or cut off by a crash) is left out: its value may be incomplete.
pub fn read_long(path: &Path) -> anyhow::Result<Vec<Measurement>> {
    let bytes = std::fs::read(path).with_context(|| format!("opening {}", path.display()))?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut reader = csv::Reader::from_reader(&bytes[..whole]);
    let header = reader.headers().with_context(|| format!("reading {}", path.display()))?;
    if header.iter().ne(LONG_HEADER) {
        bail!("{}: header is {:?}, expected {}", path.display(), header, LONG_HEADER.join(","));
    }
    reader
        .deserialize()
        .enumerate()
        // Line numbers count the header as line 1.
        .map(|(i, row)| row.with_context(|| format!("{}: line {}", path.display(), i + 2)))
        .collect()
}

/// A rendered table: a header and rows of already formatted cells.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    fn to_csv_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(&self.header)?;
        for row in &self.rows {
            out.write_record(row)?;
        }
        Ok(out.into_inner().map_err(|e| e.into_error())?)
    }

    /// Writes the table as CSV, atomically. A row whose length differs from the header's is an
    /// error (CSV readers would misalign it).
    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = self.to_csv_bytes().with_context(|| format!("formatting {}", path.display()))?;
        atomic_write::write(path, &bytes)?;
        Ok(())
    }

    /// GitHub Markdown table. `|` in a cell is escaped and line breaks become spaces, since either
    /// would break the row; short rows are padded with empty cells.
    pub fn to_markdown(&self) -> String {
        let width = self.width();
        let line = |cells: &[String]| {
            let cells = (0..width)
                .map(|i| cells.get(i).map_or(String::new(), |c| c.replace('|', "\\|").replace(['\r', '\n'], " ")));
            format!("| {} |\n", cells.collect::<Vec<_>>().join(" | "))
        };
        let mut out = line(&self.header);
        out.push_str(&format!("|{}\n", "---|".repeat(width)));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }

    /// Aligned columns for a terminal: numeric columns right-aligned so that decimals line up,
    /// text columns left-aligned, two spaces between columns.
    pub fn to_terminal(&self) -> String {
        let width = self.width();
        let cell = |row: &[String], i: usize| row.get(i).map_or("", |c| c.as_str()).to_string();
        let widths: Vec<usize> = (0..width)
            .map(|i| {
                std::iter::once(&self.header).chain(&self.rows).map(|r| cell(r, i).chars().count()).max().unwrap_or(0)
            })
            .collect();
        let numeric: Vec<bool> = (0..width)
            .map(|i| {
                let mut body = self.rows.iter().map(|r| cell(r, i)).filter(|c| !c.is_empty()).peekable();
                body.peek().is_some() && body.all(|c| c.parse::<f64>().is_ok())
            })
            .collect();
        let line = |row: &[String]| {
            let cells = (0..width).map(|i| {
                let text = cell(row, i);
                let pad = " ".repeat(widths[i] - text.chars().count());
                if numeric[i] {
                    format!("{pad}{text}")
                } else {
                    format!("{text}{pad}")
                }
            });
            format!("{}\n", cells.collect::<Vec<_>>().join("  ").trim_end())
        };
        std::iter::once(&self.header).chain(&self.rows).map(|r| line(r)).collect()
    }

    fn width(&self) -> usize {
        self.rows.iter().map(Vec::len).chain([self.header.len()]).max().unwrap_or(0)
    }
}

/// Writes `<dir>/<stem>.csv` and `<dir>/<stem>.md`, each atomically, creating `dir` if needed.
pub fn write_both(table: &Table, dir: &Path, stem: &str) -> anyhow::Result<()> {
    write_csv_and_markdown(table, &table.to_markdown(), dir, stem)
}

fn write_csv_and_markdown(table: &Table, markdown: &str, dir: &Path, stem: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    table.write_csv(&dir.join(format!("{stem}.csv")))?;
    atomic_write::write(&dir.join(format!("{stem}.md")), markdown.as_bytes())?;
    Ok(())
}

/// What a study's tables show, in which order. A study records it in its manifest, so that its tables
/// can be rebuilt from the long file alone (`harness report`) and shards merge into the same bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// Row order of every table: by model, then by method (`control` and `original` included).
    pub models: Vec<String>,
    pub methods: Vec<String>,
    /// The columns of the accuracy and shift tables.
    pub datasets: Vec<String>,
    pub protocol: String,
    /// The segmentation test's dataset and metrics (Table 3), when the study ran it.
    pub segmentation: Option<SegmentationColumns>,
    /// The variants of the ablation table (Table 4), when the study ran them.
    pub ablations: Option<Vec<String>>,
    /// Whether the study measured the finetuning-classes vs other-classes split (Tables 10-11).
    #[serde(default)]
    pub class_split: bool,
    /// Datasets where a lower accuracy is better (the embedded `bg_only`): marked in the Markdown tables.
    #[serde(default)]
    pub lower_is_better: Vec<String>,
    /// The selection rules of the selection table (the embedded benchmark's), when the study reports them.
    #[serde(default)]
    pub selection_rules: Option<Vec<String>>,
    /// Whether the study compared the method with each other method for significance.
    #[serde(default)]
    pub significance: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentationColumns {
    pub dataset: String,
    pub metrics: Vec<String>,
}

/// The tables of a study, as written.
pub struct Tables {
    pub accuracy: Table,
    pub shift: Table,
    pub segmentation: Option<Table>,
    pub ablation: Option<Table>,
    pub class_split: Option<Table>,
    pub selection: Option<Table>,
    pub significance: Option<Table>,
}

impl Tables {
    /// Every table, aligned for a terminal.
    pub fn to_terminal(&self) -> String {
        let all = [
            Some(&self.accuracy),
            Some(&self.shift),
            self.segmentation.as_ref(),
            self.ablation.as_ref(),
            self.class_split.as_ref(),
            self.selection.as_ref(),
            self.significance.as_ref(),
        ];
        all.into_iter().flatten().map(Table::to_terminal).collect::<Vec<_>>().join("\n")
    }
}

impl Layout {
    /// Sorts `rows` by model, method, seed, dataset, protocol and metric, names the layout lists first in
    /// its order and any other after them by name: the order does not depend on which run measured what
    /// first.
    pub fn sort(&self, rows: &mut [Measurement]) {
        let methods: Vec<&String> = self.methods.iter().chain(self.ablations.iter().flatten()).collect();
        let mut datasets: Vec<&String> = self.datasets.iter().collect();
        datasets.extend(self.segmentation.iter().map(|s| &s.dataset));
        fn rank<'a>(list: &[&String], name: &'a str) -> (usize, &'a str) {
            (list.iter().position(|n| n.as_str() == name).unwrap_or(list.len()), name)
        }
        let models: Vec<&String> = self.models.iter().collect();
        rows.sort_by(|a, b| {
            rank(&models, &a.model)
                .cmp(&rank(&models, &b.model))
                .then_with(|| rank(&methods, &a.method).cmp(&rank(&methods, &b.method)))
                .then(a.seed.cmp(&b.seed))
                .then_with(|| rank(&datasets, &a.dataset).cmp(&rank(&datasets, &b.dataset)))
                .then_with(|| a.protocol.cmp(&b.protocol))
                .then_with(|| a.metric.cmp(&b.metric))
        });
    }

    /// Writes `results_long.csv` (in [`Layout::sort`] order) and every table as CSV and Markdown into
    /// `dir`. The tables are computed from the rows as the long file holds them (four decimals), so a
    /// study resumed from its long file and one that ran straight through give the same tables.
    pub fn write(&self, dir: &Path, mut rows: Vec<Measurement>) -> anyhow::Result<Tables> {
        self.sort(&mut rows);
        let long = dir.join("results_long.csv");
        write_long(&long, &rows)?;
        let rows = read_long(&long)?;
        let (datasets, methods, protocol) = (&self.datasets, &self.methods, self.protocol.as_str());
        let tables = Tables {
            accuracy: accuracy_table(&rows, datasets, methods, protocol),
            shift: shift_table(&rows, datasets, methods, protocol),
            segmentation: self.segmentation.as_ref().map(|s| {
                let metrics: Vec<&str> = s.metrics.iter().map(String::as_str).collect();
                segmentation_table(&rows, &s.dataset, &metrics, methods, protocol)
            }),
            ablation: self.ablations.as_ref().map(|variants| ablation_table(&rows, datasets, variants, protocol)),
            class_split: self.class_split.then(|| class_split_table(&rows, datasets, methods, protocol)),
            selection: self.selection_rules.as_ref().map(|rules| selection_table(&rows, rules, methods, protocol)),
            significance: self.significance.then(|| significance_table(&rows, methods, protocol)),
        };
        let both = |table: &Table, stem: &str| self.write_marked(table, dir, stem);
        both(&tables.accuracy, "table_accuracy")?;
        both(&tables.shift, "table_shift")?;
        if let Some(t) = &tables.segmentation {
            both(t, "table_segmentation")?;
        }
        if let Some(t) = &tables.ablation {
            both(t, "table_ablation")?;
        }
        if let Some(t) = &tables.class_split {
            both(t, "table_class_split")?;
        }
        if let Some(t) = &tables.selection {
            both(t, "table_selection")?;
        }
        if let Some(t) = &tables.significance {
            both(t, "table_significance")?;
        }
        Ok(tables)
    }

    /// [`write_both`], the Markdown's columns of [`Layout::lower_is_better`] datasets marked as such.
    fn write_marked(&self, table: &Table, dir: &Path, stem: &str) -> anyhow::Result<()> {
        let mut marked = table.clone();
        for column in &mut marked.header {
            let lower = self.lower_is_better.iter().any(|d| column.starts_with(&format!("{d}_")));
            if lower && !column.ends_with("_std") {
                column.push_str(" (lower is better)");
            }
        }
        write_csv_and_markdown(table, &marked.to_markdown(), dir, stem)
    }
}

/// Paper Table 1: `model,method,<d>_top1,<d>_top5,...` for each dataset in order, the mean over
/// seeds of each (model, method). With more than one seed in any cell of the table every mean
/// column is followed by `<column>_std`, the sample standard deviation (n - 1), empty where a
/// cell has a single seed.
pub fn accuracy_table<D: AsRef<str>, M: AsRef<str>>(
    measurements: &[Measurement],
    datasets: &[D],
    methods: &[M],
    protocol: &str,
) -> Table {
    let columns = dataset_columns(datasets, &[TOP1, TOP5], "");
    view(measurements, protocol, &columns, methods, Reduce::Mean)
}

/// The metrics of the finetuning-classes vs other-classes split, as `harness eval` and the study name them.
pub const CLASS_SPLIT: [&str; 4] =
    ["top1_finetune_classes", "top1_other_classes", "top5_finetune_classes", "top5_other_classes"];

/// Paper Tables 10-11: like [`accuracy_table`], with top-1 and top-5 on the images of the finetuning
/// classes and on the others: `<d>_top1_finetune_classes, <d>_top1_other_classes, <d>_top5_...`.
pub fn class_split_table<D: AsRef<str>, M: AsRef<str>>(
    measurements: &[Measurement],
    datasets: &[D],
    methods: &[M],
    protocol: &str,
) -> Table {
    view(measurements, protocol, &dataset_columns(datasets, &CLASS_SPLIT, ""), methods, Reduce::Mean)
}

/// The dataset of the selection rows: per method, the top-1 that the epoch each selection rule keeps has on
/// the study's probe split (the metric is the rule's name).
pub const SELECTION: &str = "selection";

/// Whether the ranking of the methods depends on the selection rule: `model,method,<rule>,...`, the mean
/// over seeds (and `_std`) of the [`SELECTION`] rows.
pub fn selection_table<R: AsRef<str>, M: AsRef<str>>(
    measurements: &[Measurement],
    rules: &[R],
    methods: &[M],
    protocol: &str,
) -> Table {
    let columns: Vec<Column> = rules
        .iter()
        .map(|r| Column { dataset: SELECTION.into(), metric: r.as_ref().into(), label: r.as_ref().into() })
        .collect();
    view(measurements, protocol, &columns, methods, Reduce::Mean)
}

/// The dataset of the significance rows: one row per method compared with `ours` (seed 0 holds the
/// statistics over all seeds), metrics [`SIGNIFICANCE_METRICS`].
pub const SIGNIFICANCE: &str = "significance_vs_ours";
/// `ours` minus the method in shuffled-background top-1: the mean paired difference over seeds, its
/// standard error (more than one seed), and the bootstrap 95% interval over test images.
pub const SIGNIFICANCE_METRICS: [&str; 4] = ["mean_difference", "se", "ci95_low", "ci95_high"];

/// `model,method,mean_difference,se,ci95_low,ci95_high`: `ours` against each method.
pub fn significance_table<M: AsRef<str>>(measurements: &[Measurement], methods: &[M], protocol: &str) -> Table {
    let columns: Vec<Column> = SIGNIFICANCE_METRICS
        .iter()
        .map(|m| Column { dataset: SIGNIFICANCE.into(), metric: m.to_string(), label: m.to_string() })
        .collect();
    view(measurements, protocol, &columns, methods, Reduce::Mean)
}

/// Paper Table 2: like [`accuracy_table`], but each value is the method's accuracy minus the
/// [`ORIGINAL`] model's for the same model, seed, dataset and metric (paired by seed; a seed
/// without its original is left out), averaged over seeds. Columns are `<d>_top1_delta`,
/// `<d>_top5_delta` (+ `_std`, sample std); `original` itself gets no row.
pub fn shift_table<D: AsRef<str>, M: AsRef<str>>(
    measurements: &[Measurement],
    datasets: &[D],
    methods: &[M],
    protocol: &str,
) -> Table {
    let columns = dataset_columns(datasets, &[TOP1, TOP5], "_delta");
    view(measurements, protocol, &columns, methods, Reduce::DeltaFromOriginal)
}

/// Paper Table 3: `model,method,<metric>...` (+ `_std`, sample std, with several seeds) from the
/// measurements of `metrics` (the segmentation test's, in column order) on the dataset `dataset`.
pub fn segmentation_table<M: AsRef<str>>(
    measurements: &[Measurement],
    dataset: &str,
    metrics: &[&str],
    methods: &[M],
    protocol: &str,
) -> Table {
    let columns: Vec<Column> = metrics
        .iter()
        .map(|&metric| Column { dataset: dataset.to_string(), metric: metric.to_string(), label: metric.to_string() })
        .collect();
    view(measurements, protocol, &columns, methods, Reduce::Mean)
}

/// Paper Table 4: one row per variant (`ours`, `ours_no_cls`, `ours_no_bg`, ... as methods) of
/// each model, columns `<d>_top1` (+ `_std`, sample std, with several seeds).
pub fn ablation_table<D: AsRef<str>, M: AsRef<str>>(
    measurements: &[Measurement],
    datasets: &[D],
    variants: &[M],
    protocol: &str,
) -> Table {
    let columns = dataset_columns(datasets, &[TOP1], "");
    view(measurements, protocol, &columns, variants, Reduce::Mean)
}

/// One value column of a view: which measurements feed it and its header label.
struct Column {
    dataset: String,
    metric: String,
    label: String,
}

fn dataset_columns<D: AsRef<str>>(datasets: &[D], metrics: &[&str], suffix: &str) -> Vec<Column> {
    datasets
        .iter()
        .flat_map(|d| {
            let d = d.as_ref();
            metrics.iter().map(move |&metric| Column {
                dataset: d.to_string(),
                metric: metric.to_string(),
                label: format!("{d}_{metric}{suffix}"),
            })
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Reduce {
    Mean,
    DeltaFromOriginal,
}

/// Mean and, for n > 1, sample standard deviation of one cell's per-seed values.
struct Stats {
    mean: f64,
    std: Option<f64>,
}

impl Stats {
    fn of(values: &[f64]) -> Option<Stats> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
        Some(Stats { mean, std })
    }
}

/// (model, method, column index) -> value per seed.
type Index<'a> = HashMap<(&'a str, &'a str, usize), BTreeMap<u64, f64>>;

fn view<M: AsRef<str>>(
    measurements: &[Measurement],
    protocol: &str,
    columns: &[Column],
    methods: &[M],
    reduce: Reduce,
) -> Table {
    let mut index: Index = HashMap::new();
    let mut models: Vec<&str> = Vec::new();
    for m in measurements.iter().filter(|m| m.protocol == protocol) {
        let matching: Vec<usize> =
            (0..columns.len()).filter(|&i| columns[i].dataset == m.dataset && columns[i].metric == m.metric).collect();
        if matching.is_empty() {
            continue;
        }
        if !models.contains(&m.model.as_str()) {
            models.push(&m.model);
        }
        for column in matching {
            // A repeated (model, method, seed, dataset, metric) is a rerun: the later row wins.
            index.entry((&m.model, &m.method, column)).or_default().insert(m.seed, m.value);
        }
    }

    let mut rows: Vec<(&str, &str, Vec<Option<Stats>>)> = Vec::new();
    for &model in &models {
        for method in methods.iter().map(AsRef::as_ref) {
            if reduce == Reduce::DeltaFromOriginal && method == ORIGINAL {
                continue;
            }
            let seeds = |column: usize| index.get(&(model, method, column));
            // Presence is judged on the method's own measurements, so a shift row whose original is
            // missing still shows up, with empty cells, instead of silently vanishing.
            if !(0..columns.len()).any(|c| seeds(c).is_some()) {
                continue;
            }
            let cells = (0..columns.len())
                .map(|c| {
                    let values: Vec<f64> = match (reduce, seeds(c)) {
                        (_, None) => Vec::new(),
                        (Reduce::Mean, Some(own)) => own.values().copied().collect(),
                        (Reduce::DeltaFromOriginal, Some(own)) => match index.get(&(model, ORIGINAL, c)) {
                            Some(original) => {
                                own.iter().filter_map(|(seed, v)| original.get(seed).map(|o| v - o)).collect()
                            }
                            None => Vec::new(),
                        },
                    };
                    Stats::of(&values)
                })
                .collect();
            rows.push((model, method, cells));
        }
    }

    let with_std = rows.iter().flat_map(|(_, _, cells)| cells).any(|s| matches!(s, Some(Stats { std: Some(_), .. })));
    let mut header = vec!["model".to_string(), "method".to_string()];
    for c in columns {
        header.push(c.label.clone());
        if with_std {
            header.push(format!("{}_std", c.label));
        }
    }
    let rows = rows
        .into_iter()
        .map(|(model, method, cells)| {
            let mut row = vec![model.to_string(), method.to_string()];
            for cell in cells {
                row.push(cell.as_ref().map_or(String::new(), |s| fmt2(s.mean)));
                if with_std {
                    row.push(cell.and_then(|s| s.std).map_or(String::new(), fmt2));
                }
            }
            row
        })
        .collect();
    Table { header, rows }
}

/// Two decimals; a value that rounds to zero prints as `0.00`, never `-0.00`, so that a tiny
/// negative shift does not read as a meaningful sign.
fn fmt2(value: f64) -> String {
    let text = format!("{value:.2}");
    if text == "-0.00" {
        "0.00".to_string()
    } else {
        text
    }
}

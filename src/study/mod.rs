//! `harness compare`: the whole study. Take an original model, finetune it with the method and each
//! baseline, evaluate everything, and write paper-shaped tables. Without `--data` it runs the embedded
//! spurious-background benchmark (embedded.rs); with `--data` a TOML study of real checkpoints and
//! datasets (real.rs).
pub mod embedded;
pub mod real;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tch::Device;

use crate::atomic_write;
use crate::eval::segmentation;
use crate::manifest::Provenance;
use crate::report::{self, Measurement, Table};
use crate::train::methods::MethodKind;

#[derive(Clone, Debug, Serialize)]
pub struct CompareOptions {
    pub out: PathBuf,
    /// `ours` first, then the baselines.
    pub methods: Vec<MethodKind>,
    pub seeds: usize,
    pub ablations: bool,
    pub quick: bool,
    /// Coloured-noise backgrounds instead of stripes: a negative control (no method moves it at this scale).
    pub tint: bool,
    /// The animal-mnist wheel of the embedded benchmark.
    pub objects: PathBuf,
    pub data: Option<PathBuf>,
    #[serde(skip)]
    pub device: Device,
    pub quiet: bool,
    #[serde(skip)]
    pub provenance: Provenance,
}

/// `manifest.json` of a study's output folder.
#[derive(Serialize)]
pub struct StudyManifest {
    #[serde(flatten)]
    pub provenance: Provenance,
    pub options: CompareOptions,
    /// The embedded benchmark's sizes (absent for a study of real data).
    pub budget: Option<embedded::Budget>,
    pub wall_seconds: f64,
}

/// Where `make benchmark-data` puts the animal-mnist wheel.
pub fn default_objects() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/downloads").join(crate::data::animal_mnist::WHEEL)
}

/// The tables of a study and where they were written.
pub struct Tables {
    pub accuracy: Table,
    pub shift: Table,
    pub segmentation: Table,
    pub ablation: Option<Table>,
}

fn method_order(opts: &CompareOptions) -> Vec<&'static str> {
    let mut names = vec!["control", "original"];
    names.extend(opts.methods.iter().map(|m| m.name()));
    names
}

/// Writes `results_long.csv` and every table as CSV and Markdown into `opts.out`; `segmentation` names the
/// dataset of the segmentation test's rows.
pub fn write_tables(
    opts: &CompareOptions,
    datasets: &[&str],
    seg_dataset: &str,
    rows: &[Measurement],
) -> anyhow::Result<Tables> {
    let methods = method_order(opts);
    let protocol = "standard";
    report::write_long(&opts.out.join("results_long.csv"), rows)?;
    let tables = Tables {
        accuracy: report::accuracy_table(rows, datasets, &methods, protocol),
        shift: report::shift_table(rows, datasets, &methods, protocol),
        segmentation: report::segmentation_table(rows, seg_dataset, &segmentation::METRICS, &methods, protocol),
        ablation: opts.ablations.then(|| report::ablation_table(rows, datasets, &embedded::ablation_names(), protocol)),
    };
    report::write_both(&tables.accuracy, &opts.out, "table_accuracy")?;
    report::write_both(&tables.shift, &opts.out, "table_shift")?;
    report::write_both(&tables.segmentation, &opts.out, "table_segmentation")?;
    if let Some(t) = &tables.ablation {
        report::write_both(t, &opts.out, "table_ablation")?;
    }
    Ok(tables)
}

/// Runs the study chosen by `opts` and writes its tables and manifest; prints a summary.
pub fn run(opts: &CompareOptions) -> anyhow::Result<Tables> {
    std::fs::create_dir_all(&opts.out)?;
    let started = Instant::now();
    let (datasets, segmentation, rows): (Vec<&str>, &str, Vec<Measurement>) = match &opts.data {
        None => (
            crate::data::spurious::Split::ALL.iter().map(|s| s.name()).collect(),
            embedded::SEGMENTATION,
            embedded::run(opts)?,
        ),
        Some(config) => {
            let (datasets, rows) = real::run(config, opts)?;
            (datasets, crate::eval::imagenet_segmentation::DATASET, rows)
        }
    };
    let tables = write_tables(opts, &datasets, segmentation, &rows)?;
    let manifest = StudyManifest {
        provenance: opts.provenance.clone(),
        options: opts.clone(),
        budget: opts.data.is_none().then(|| embedded::Budget::new(opts.quick)),
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    atomic_write::write(&opts.out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    println!("{}", tables.accuracy.to_terminal());
    println!("{}", tables.shift.to_terminal());
    println!("{}", tables.segmentation.to_terminal());
    if let Some(t) = &tables.ablation {
        println!("{}", t.to_terminal());
    }
    println!("tables in {} ({:.0} s)", opts.out.display(), started.elapsed().as_secs_f64());
    Ok(tables)
}

//! `harness compare`: the whole study. Take an original model, finetune it with the method and each
//! baseline, evaluate everything, and write paper-shaped tables. Without `--data` it runs the embedded
//! spurious-background benchmark (embedded.rs); with `--data` a study of real checkpoints and datasets
//! (config.rs: the file; plan.rs: checks, jobs, settings; real.rs: the run). `harness report` rebuilds the
//! tables of one or more output folders from their long files ([`report`]).
pub mod config;
pub mod embedded;
pub mod plan;
pub mod real;

use crate::precision::Precision;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::atomic_write;
use crate::manifest::Provenance;
use crate::report::{self, Layout, Measurement, Tables};
use crate::train::methods::MethodKind;

#[derive(Clone, Debug, Serialize)]
pub struct CompareOptions {
    pub out: PathBuf,
    /// `ours` first, then the baselines.
    pub methods: Vec<MethodKind>,
    pub seeds: usize,
    pub study: Study,
    #[serde(skip)]
    pub device: Device,
    /// The arithmetic of every finetuning run (models are evaluated in fp32).
    pub precision: Precision,
    pub quiet: bool,
    #[serde(skip)]
    pub provenance: Provenance,
}

/// Which study, with the options that only it takes.
#[derive(Clone, Debug, Serialize)]
pub enum Study {
    Embedded(embedded::Options),
    Real {
        /// The study file.
        file: PathBuf,
        /// Check and print the plan only.
        plan: bool,
        selection: plan::Selection,
    },
}

/// `manifest.json` of a study's output folder: what ran, and the layout that `harness report` needs to
/// rebuild the tables from the long file.
#[derive(Serialize)]
pub struct StudyManifest<'a> {
    #[serde(flatten)]
    pub provenance: Provenance,
    pub options: &'a CompareOptions,
    pub layout: &'a Layout,
    /// For a study of real data: what a rerun into the same folder must match.
    pub identity: Option<&'a real::Identity>,
    /// The embedded benchmark's sizes.
    pub budget: Option<embedded::Budget>,
    /// Set when the study finished.
    pub wall_seconds: Option<f64>,
    /// For a study of real data: the setting each finetuning job kept (also `table_settings.csv`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<real::Selected>,
}

/// The parts of a manifest that are read back.
#[derive(Deserialize)]
struct ManifestRead {
    layout: Layout,
    identity: Option<real::Identity>,
}

pub const MANIFEST: &str = "manifest.json";

impl<'a> StudyManifest<'a> {
    pub fn started(opts: &'a CompareOptions, layout: &'a Layout, identity: Option<&'a real::Identity>) -> Self {
        let budget = match &opts.study {
            Study::Embedded(e) => Some(embedded::Budget::new(e.quick)),
            Study::Real { .. } => None,
        };
        StudyManifest {
            provenance: opts.provenance.clone(),
            options: opts,
            layout,
            identity,
            budget,
            wall_seconds: None,
            settings: Vec::new(),
        }
    }

    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        atomic_write::write(&out.join(MANIFEST), serde_json::to_string_pretty(self)?.as_bytes())?;
        Ok(())
    }

    fn read(out: &Path) -> anyhow::Result<Option<ManifestRead>> {
        let path = out.join(MANIFEST);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not the manifest of a harness compare folder", path.display()))?;
        Ok(Some(manifest))
    }

    /// The identity a real study recorded in `out`, if one did.
    pub fn read_identity(out: &Path) -> anyhow::Result<Option<real::Identity>> {
        Ok(Self::read(out)?.and_then(|m| m.identity))
    }
}

/// Where `make benchmark-data` puts the animal-mnist wheel.
pub fn default_objects() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/downloads").join(crate::data::animal_mnist::WHEEL)
}

/// Runs the study chosen by `opts`, writes its tables and manifest and prints them; `None` after
/// `--plan`.
pub fn run(opts: &CompareOptions) -> anyhow::Result<Option<Tables>> {
    let started = Instant::now();
    let (layout, rows, identity) = match &opts.study {
        Study::Embedded(e) => {
            let layout = embedded::layout(e, &opts.methods);
            StudyManifest::started(opts, &layout, None).write(&opts.out)?;
            let rows = embedded::run(e, opts)?;
            (layout, rows, None)
        }
        Study::Real { file, plan, selection } => match real::run(file, *selection, *plan, opts)? {
            None => return Ok(None),
            Some((layout, rows)) => {
                let identity = StudyManifest::read_identity(&opts.out)?;
                (layout, rows, identity)
            }
        },
    };
    let (tables, settings) = write(&layout, std::slice::from_ref(&opts.out), &opts.out, rows)?;
    let manifest = StudyManifest {
        wall_seconds: Some(started.elapsed().as_secs_f64()),
        settings,
        ..StudyManifest::started(opts, &layout, identity.as_ref())
    };
    manifest.write(&opts.out)?;
    println!("{}", tables.to_terminal());
    println!("tables in {} ({:.0} s)", opts.out.display(), started.elapsed().as_secs_f64());
    if opts.seeds == 1 {
        println!(
            "one seed is a first look: differences between methods need --seeds 3 or more (standard errors in \
             table_significance.csv)"
        );
    }
    Ok(Some(tables))
}

/// The tables of `rows` in `layout` into `out`, with the settings table of the real-study folders `dirs`;
/// returns the tables and those settings.
fn write(
    layout: &Layout,
    dirs: &[PathBuf],
    out: &Path,
    rows: Vec<Measurement>,
) -> anyhow::Result<(Tables, Vec<real::Selected>)> {
    let tables = layout.write(out, rows)?;
    let selected = real::selections(dirs, layout)?;
    if !selected.is_empty() {
        report::write_both(&real::settings_table(&selected), out, "table_settings")?;
    }
    Ok((tables, selected))
}

/// `harness report`: the tables of the study folders `dirs` (one study, or the shards of one) rebuilt from
/// their long files into `out`. The folders must share one layout; a measurement found in two of them must
/// agree, and shards of a real study must come from the same study file, methods and seeds.
pub fn report(dirs: &[PathBuf], out: &Path) -> anyhow::Result<Tables> {
    let mut first: Option<(ManifestRead, &Path)> = None;
    let mut files = Vec::new();
    for dir in dirs {
        let manifest = StudyManifest::read(dir)?
            .with_context(|| format!("{}: no {MANIFEST} (is it a harness compare folder?)", dir.display()))?;
        let study = |m: &ManifestRead| m.identity.as_ref().map(|i| (i.study.clone(), i.methods.clone(), i.seeds));
        match &first {
            None => first = Some((manifest, dir)),
            Some((f, first_dir)) if f.layout != manifest.layout || study(f) != study(&manifest) => bail!(
                "{} and {} hold different studies (other study files, methods, seeds, or tables); merge only the \
                 shards of one study",
                first_dir.display(),
                dir.display()
            ),
            Some(_) => {}
        }
        let long = dir.join("results_long.csv");
        files.push((long.clone(), report::read_long(&long)?));
    }
    let layout = first.context("harness report: no folder given")?.0.layout;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (tables, settings) = write(&layout, dirs, out, report::merge(&files)?)?;
    // A new folder gets a manifest of its own, so that it can be reported (and merged) again.
    if !dirs.iter().any(|d| d == out) {
        let merged = serde_json::json!({ "layout": layout, "merged_from": dirs, "settings": settings });
        atomic_write::write(&out.join(MANIFEST), serde_json::to_string_pretty(&merged)?.as_bytes())?;
    }
    Ok(tables)
}

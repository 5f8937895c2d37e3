//! `compare --data CONFIG.toml`: the study on real checkpoints and datasets.
//!
//! ```toml
//! [imagenet_s]                       # finetuning data (method.md section 5)
//! images = "/data/imagenet/train"    # <images>/<wnid>/<name>.JPEG
//! masks = "/data/ImageNetS919/train-semi-segmentation"
//! mask_source = "imagenet-s"         # or "binary" (e.g. TokenCut masks)
//! seed = 0
//!
//! [[models]]
//! name = "vit_base_patch16_224"      # timm name
//! checkpoint = "/weights/vit_base"   # timm hub folder, .safetensors or .pth
//! preset = "vit-b"                   # the paper's hyperparameters (default: looked up by name)
//!
//! [[datasets]]                        # evaluation (harness eval kinds)
//! kind = "imagenet-a"
//! path = "/data/imagenet-a"
//!
//! [segmentation]                      # optional: the segmentation test (Table 3)
//! path = "/data/gtsegs_ijcv.mat"
//! limit = 500                        # optional: only the first images (default: all 4276)
//!
//! [finetune]                          # optional: shorter runs than the paper's (every field optional)
//! epochs = 10                        # paper: 50
//! train_classes = 100                # paper: 500
//! per_class = 3                      # paper: 3
//! val_per_class = 1                  # paper: 1
//! ```
//! Every model is finetuned with the method and each baseline at the paper's settings (runs resume), then
//! the original and every finetuned model are evaluated on each dataset (standard protocol) for the
//! accuracy and shift tables, and by the segmentation test for Table 3.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::CompareOptions;
use crate::data::eval_sets::{Kind, Protocol};
use crate::data::imagenet_s::{MaskResize, MaskSource, SplitConfig};
use crate::eval::{accuracy, imagenet_segmentation, PipelineOptions};
use crate::model;
use crate::report::{self, Measurement, Subject};
use crate::train::imagenet_s::{self, DataConfig};
use crate::train::methods::{InputGradient, Method, MethodKind, Relevance};
use crate::train::paper;
use crate::train::{Origin, RunOptions, TrainConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    pub imagenet_s: ImagenetS,
    pub models: Vec<ModelEntry>,
    #[serde(default)]
    pub datasets: Vec<DatasetEntry>,
    pub segmentation: Option<SegmentationEntry>,
    #[serde(default)]
    pub finetune: FinetuneOverrides,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagenetS {
    pub images: PathBuf,
    pub masks: PathBuf,
    #[serde(default = "default_source")]
    pub mask_source: MaskSource,
    #[serde(default)]
    pub seed: u64,
}

fn default_source() -> MaskSource {
    MaskSource::ImagenetS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    pub checkpoint: PathBuf,
    pub preset: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    pub kind: Kind,
    pub path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentationEntry {
    pub path: PathBuf,
    pub limit: Option<usize>,
}

/// Departures from the paper's finetuning protocol, for shorter runs; unset fields keep the paper's value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneOverrides {
    pub epochs: Option<usize>,
    pub train_classes: Option<usize>,
    pub per_class: Option<usize>,
    pub val_per_class: Option<usize>,
}

/// Reads and checks a study config; errors name the file and the entry.
pub fn read(path: &Path) -> anyhow::Result<StudyConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: StudyConfig =
        toml::from_str(&text).with_context(|| format!("{}: not a valid study config", path.display()))?;
    for p in [&config.imagenet_s.images, &config.imagenet_s.masks] {
        if !p.is_dir() {
            bail!("{}: {} is not a folder", path.display(), p.display());
        }
    }
    for m in &config.models {
        if !m.checkpoint.exists() {
            bail!("{}: checkpoint {} of model {} does not exist", path.display(), m.checkpoint.display(), m.name);
        }
        let preset = m.preset.as_deref().unwrap_or(&m.name);
        if paper::lookup(preset).is_none() {
            bail!(
                "{}: model {} has no paper preset {preset:?}; set preset to one of {}",
                path.display(),
                m.name,
                paper::known()
            );
        }
    }
    for d in &config.datasets {
        if !d.path.is_dir() {
            bail!("{}: dataset folder {} ({}) does not exist", path.display(), d.path.display(), d.kind);
        }
    }
    if let Some(seg) = &config.segmentation {
        if !seg.path.is_file() {
            bail!("{}: segmentation file {} does not exist", path.display(), seg.path.display());
        }
    }
    Ok(config)
}

/// The paper's settings of `kind` for a model.
fn paper_method(kind: MethodKind, hp: &paper::PaperHparams) -> anyhow::Result<(Method, f64)> {
    let baseline = |b: Option<paper::BaselineHparams>| {
        b.map(|b| {
            (InputGradient { lambda_bg: b.lambda_bg, lambda_cls: b.lambda_cls, temperature: hp.temperature }, b.lr)
        })
        .with_context(|| format!("the paper gives no {} settings for {}", kind.name(), hp.alias))
    };
    Ok(match kind {
        MethodKind::Ours => {
            (Method::Ours(Relevance { temperature: hp.temperature, ..Relevance::default() }), hp.ours_lr)
        }
        MethodKind::Gradmask => baseline(hp.gradmask).map(|(b, lr)| (Method::Gradmask(b), lr))?,
        MethodKind::Rrr => baseline(hp.rrr).map(|(b, lr)| (Method::Rrr(b), lr))?,
        MethodKind::CrossEntropy => bail!("the paper has no cross-entropy finetuning setting for {}", hp.alias),
    })
}

/// Top-1/top-5 of `loaded` on every dataset of the study, and the segmentation test, as measurements.
fn measure(
    loaded: &model::LoadedModel,
    method: &str,
    seed: u64,
    config: &StudyConfig,
    opts: &CompareOptions,
) -> anyhow::Result<Vec<Measurement>> {
    let pipeline = PipelineOptions { quiet: opts.quiet, ..PipelineOptions::default() };
    let subject =
        Subject { model: loaded.name.clone(), method: method.into(), seed, protocol: Protocol::Standard.name().into() };
    let mut rows = Vec::new();
    for d in &config.datasets {
        let r = accuracy::of_dataset(loaded, d.kind, &d.path, Protocol::Standard, &pipeline)?;
        rows.push(subject.row(d.kind.name(), report::TOP1, r.top1));
        rows.push(subject.row(d.kind.name(), report::TOP5, r.top5));
    }
    if let Some(seg) = &config.segmentation {
        let seg_opts = PipelineOptions { quiet: opts.quiet, ..imagenet_segmentation::default_pipeline() };
        let r = imagenet_segmentation::run(loaded, &seg.path, seg.limit, &seg_opts)?;
        if !r.unreadable.is_empty() {
            eprintln!(
                "segmentation test: {} unreadable entries of {} skipped (harness segtest lists them)",
                r.unreadable.len(),
                seg.path.display()
            );
        }
        let dataset = imagenet_segmentation::DATASET;
        rows.extend(r.metrics.percent().into_iter().map(|(metric, value)| subject.row(dataset, metric, value)));
    }
    Ok(rows)
}

/// Finetunes every model with every method (paper settings, seeds varying the data choice) and
/// evaluates the original and the selected checkpoints; returns the accuracy datasets and the rows.
pub fn run(path: &Path, opts: &CompareOptions) -> anyhow::Result<(Vec<&'static str>, Vec<Measurement>)> {
    let config = read(path)?;
    let source = config.imagenet_s.mask_source;
    let mut rows = Vec::new();
    for m in &config.models {
        let hp = paper::lookup(m.preset.as_deref().unwrap_or(&m.name)).expect("checked by read");
        let original = model::load(Some(&m.name), &m.checkpoint, opts.device)?;
        let original_rows = measure(&original, "original", 0, &config, opts)?;
        for seed in 0..opts.seeds as u64 {
            rows.extend(original_rows.iter().cloned().map(|r| Measurement { seed, ..r }));
            for &kind in &opts.methods {
                let (method, lr) = paper_method(kind, hp)?;
                let short = &config.finetune;
                let paper_run = paper::train_config(method, lr, seed);
                let cfg = TrainConfig { epochs: short.epochs.unwrap_or(paper_run.epochs), ..paper_run };
                let paper_split = SplitConfig::default();
                let split = SplitConfig {
                    seed: config.imagenet_s.seed + seed,
                    source,
                    train_classes: short.train_classes.unwrap_or(paper_split.train_classes),
                    per_class: short.per_class.unwrap_or(paper_split.per_class),
                    val_per_class: short.val_per_class.unwrap_or(paper_split.val_per_class),
                    ..paper_split
                };
                let data = DataConfig {
                    images: config.imagenet_s.images.clone(),
                    masks: config.imagenet_s.masks.clone(),
                    split,
                    mask_resize: MaskResize::Nearest,
                };
                let loaded = model::load(Some(&m.name), &m.checkpoint, opts.device)?;
                let out = opts.out.join("runs").join(&m.name).join(format!("seed{seed}")).join(kind.name());
                let run = RunOptions {
                    resume: true,
                    quiet: opts.quiet,
                    provenance: opts.provenance.clone(),
                    origin: Origin { study: Some(path.display().to_string()), ..Origin::default() },
                    data: None,
                };
                let summary = imagenet_s::run(&loaded, &data, &cfg, &out, run)?;
                let best = model::load(Some(&m.name), &summary.best_dir, opts.device)?;
                rows.extend(measure(&best, kind.name(), seed, &config, opts)?);
            }
        }
    }
    let kinds: Vec<&'static str> = config.datasets.iter().map(|d| d.kind.name()).collect();
    Ok((kinds, rows))
}

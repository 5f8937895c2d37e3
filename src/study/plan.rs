//! Before a study of real data starts: every check that can fail, the jobs it splits into, and an estimate
//! of the time they take from a measured finetuning step.
//!
//! A study is a list of independent jobs, numbered from 1: for each model, the evaluation of the original,
//! then for each seed, mask set (annotated, TokenCut's) and method a finetuning job (its runs, the choice
//! among them, the evaluation of the chosen one). Jobs share nothing but the study file, so any subset can
//! run in its own process and folder (`--job K`, `--shard I/N`) and `harness report` merges the folders.
//!
//! Settings of a method for a model: the study file's (`ours = {..}`, `gradmask = {..}`, `rrr = {..}` in the
//! model's entry), else the paper's for its preset. With `[finetune] grid = [...]` each method also runs at
//! those multiples of its setting (the LR for the method, lambda_bg for the baselines: each one's own
//! penalty scale), and one rule chooses for every method among those whose validation accuracy stays within
//! [`crate::train::ACCURACY_MARGIN`] of the original's: across epochs the lowest validation penalty, across
//! runs the weakest setting tied with the lowest ([`crate::train::choose_setting`]).
//! Without a grid each method runs once at its setting and keeps the epoch of lowest validation loss (the
//! paper's rule).
use std::collections::HashSet;
use std::hash::Hasher;
use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use tch::{Device, Kind, Tensor};

use super::config::{MaskSet, ModelEntry, StudyConfig};
use crate::data::eval_sets;
use crate::data::gtsegs::SegmentationFile;
use crate::data::imagenet;
use crate::data::imagenet_s::{self, MaskResize, MaskSource, SplitConfig};
use crate::data::Batch;
use crate::eval::accuracy;
use crate::model::{self, LoadedModel};
use crate::precision::Precision;
use crate::train::imagenet_s::DataConfig;
use crate::train::methods::{InputGradient, Method, MethodKind, Relevance};
use crate::train::paper;

/// The batch of the paper's finetuning, and of the measured step.
const STEP_BATCH: i64 = 8;

/// One independent part of a study.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Index of the model in the study file.
    pub model: usize,
    pub kind: JobKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Evaluate the original model.
    Original,
    /// Finetune with `method` on the split drawn with `seed` and the masks of `masks`, then evaluate the
    /// chosen run.
    Finetune { method: MethodKind, seed: u64, masks: MaskSet },
}

/// Every job of a study, in the order `--plan` numbers them (from 1).
pub fn jobs(config: &StudyConfig, methods: &[MethodKind], seeds: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    for model in 0..config.models.len() {
        jobs.push(Job { model, kind: JobKind::Original });
        for seed in 0..seeds as u64 {
            for masks in config.mask_sets() {
                let kind = |method| JobKind::Finetune { method, seed, masks };
                jobs.extend(methods.iter().map(|&method| Job { model, kind: kind(method) }));
            }
        }
    }
    jobs
}

impl Job {
    pub fn describe(&self, config: &StudyConfig) -> String {
        let name = &config.models[self.model].name;
        match self.kind {
            JobKind::Original => format!("{name} original"),
            JobKind::Finetune { method, seed, masks } => format!("{name} {} seed {seed}", masks.label(method)),
        }
    }
}

/// Which jobs this process runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Selection {
    #[default]
    All,
    /// Jobs `i, i + n, i + 2n, ...` (numbered from 1), for `--shard i/n`.
    Shard { index: usize, count: usize },
    /// Job `k` (numbered from 1).
    Job(usize),
}

impl Selection {
    /// The selected jobs with their numbers; a shard or job beyond the study is an error.
    pub fn pick<'a>(&self, jobs: &'a [Job]) -> anyhow::Result<Vec<(usize, &'a Job)>> {
        let numbered = jobs.iter().enumerate().map(|(i, j)| (i + 1, j));
        Ok(match *self {
            Selection::All => numbered.collect(),
            Selection::Shard { index, count } => {
                if index == 0 || index > count {
                    bail!("--shard {index}/{count}: the shard must lie in 1..={count}");
                }
                numbered.filter(|(k, _)| (k - 1) % count == index - 1).collect()
            }
            Selection::Job(k) => {
                if k == 0 || k > jobs.len() {
                    bail!("--job {k}: the study has jobs 1 to {} (`--plan` lists them)", jobs.len());
                }
                numbered.filter(|(i, _)| *i == k).collect()
            }
        })
    }
}

/// The settings to try for `kind` on the model of `entry`: its setting times each multiple of `grid`.
pub fn settings(entry: &ModelEntry, kind: MethodKind, grid: &[f64]) -> Result<Vec<(Method, f64)>, String> {
    let preset = paper::lookup(entry.preset.as_deref().unwrap_or(&entry.name));
    let temperature = preset.map_or(1.0, |p| p.temperature);
    let missing = |what: &str| match (preset, &entry.preset) {
        (Some(p), _) => format!(
            "model {}: the paper gives no {kind} setting for {} and the study file none; add `{what}` to its \
             [[models]] entry",
            entry.name, p.alias
        ),
        (None, Some(name)) => format!("model {}: unknown preset {name:?}; use one of {}", entry.name, paper::known()),
        (None, None) => format!(
            "model {}: no paper preset for this name and no {kind} setting in the study file; set `preset` to \
             one of {} or add `{what}` to its [[models]] entry",
            entry.name,
            paper::known()
        ),
    };
    let baseline = |given: Option<super::config::BaselineSettings>, paper: Option<paper::BaselineHparams>| {
        given
            .map(|b| (b.lambda_bg, b.lambda_cls, b.lr))
            .or(paper.map(|b| (b.lambda_bg, b.lambda_cls, b.lr)))
            .ok_or_else(|| missing(&format!("{kind} = {{ lr = .., lambda_bg = .., lambda_cls = .. }}")))
    };
    Ok(match kind {
        MethodKind::Ours => {
            let lr =
                entry.ours.map(|o| o.lr).or(preset.map(|p| p.ours_lr)).ok_or_else(|| missing("ours = { lr = .. }"))?;
            grid.iter().map(|m| (Method::Ours(Relevance { temperature, ..Relevance::default() }), lr * m)).collect()
        }
        MethodKind::Gradmask | MethodKind::Rrr => {
            let (lambda_bg, lambda_cls, lr) = if kind == MethodKind::Gradmask {
                baseline(entry.gradmask, preset.and_then(|p| p.gradmask))?
            } else {
                baseline(entry.rrr, preset.and_then(|p| p.rrr))?
            };
            let method = |m: f64| {
                let b = InputGradient { lambda_bg: lambda_bg * m, lambda_cls, temperature };
                if kind == MethodKind::Gradmask {
                    Method::Gradmask(b)
                } else {
                    Method::Rrr(b)
                }
            };
            grid.iter().map(|&m| (method(m), lr)).collect()
        }
        MethodKind::CrossEntropy => {
            return Err(format!("model {}: the study has no cross-entropy setting", entry.name))
        }
    })
}

/// The finetuning data of `seed` with the masks of `masks`, as a study writing into `out` draws it. The
/// "not annotated" masks beside annotated ones are drawn from the annotated listing (the same images,
/// wherever TokenCut made the mask); alone, from the folder of TokenCut's masks.
pub fn finetuning_data(config: &StudyConfig, seed: u64, masks: MaskSet, out: &Path) -> DataConfig {
    let paper = SplitConfig::default();
    let short = &config.finetune;
    let s = &config.imagenet_s;
    let tokencut = config.tokencut_masks(out);
    let (listing, masks_from, source) = match (masks, config.tokencut_only()) {
        (MaskSet::Annotated, _) => (s.masks.clone(), None, s.mask_source),
        (MaskSet::NotAnnotated, true) => (tokencut, None, MaskSource::Binary),
        (MaskSet::NotAnnotated, false) => (s.masks.clone(), Some(tokencut), MaskSource::Binary),
    };
    let split = SplitConfig {
        seed: s.seed + seed,
        source,
        masks_from,
        train_classes: short.train_classes.unwrap_or(paper.train_classes),
        per_class: short.per_class.unwrap_or(paper.per_class),
        val_per_class: short.val_per_class.unwrap_or(paper.val_per_class),
        ..paper
    };
    DataConfig { images: s.images.clone(), masks: listing, split, mask_resize: MaskResize::Nearest }
}

/// What the checks found, for the plan.
pub struct Checked {
    pub models: Vec<ModelFacts>,
    /// Images of each dataset of the study file, in its order.
    pub dataset_images: Vec<usize>,
    /// Entries the segmentation test scores.
    pub segmentation_images: Option<usize>,
    /// Training and validation images of the split of seed 0 (every seed draws the same numbers).
    pub split_images: (usize, usize),
    /// Each seed's finetuning classes (ImageNet indices), for the class split of Tables 10-11.
    pub train_classes: Vec<HashSet<usize>>,
}

/// One model as loaded, with its measured speed (`None` when the plan is not timed).
pub struct ModelFacts {
    pub num_classes: i64,
    pub speed: Option<Speed>,
}

/// A model's measured speed, in the study's precision.
pub struct Speed {
    /// Seconds of one finetuning step of the method (forward, relevance, backward) on a batch of 8.
    pub step_seconds: f64,
    /// Seconds of a no-grad forward pass, per image.
    pub forward_seconds: f64,
}

/// Runs every check that can fail before any training: each model loads strictly (and is 1000-way when
/// the study evaluates ImageNet datasets), no two models hold the same weights, every (model, method) has
/// settings, every dataset has its layout and images, the segmentation file opens, every seed's split
/// can be drawn. All problems are reported together, each naming its entry. `timing`: the precision in which
/// to measure each model's speed for the plan's estimates, or `None` for an untimed plan.
pub fn check(
    path: &Path,
    config: &StudyConfig,
    methods: &[MethodKind],
    seeds: usize,
    device: Device,
    timing: Option<Precision>,
    out: &Path,
) -> anyhow::Result<Checked> {
    let mut problems = Vec::new();
    let mut models = Vec::new();
    let mut fingerprints: Vec<(u64, &str)> = Vec::new();
    for entry in &config.models {
        for &kind in methods {
            if let Err(e) = settings(entry, kind, config.grid()) {
                problems.push(e);
            }
        }
        match model::load(Some(entry.architecture()), &entry.checkpoint, device) {
            Err(e) => problems.push(format!("model {}: {e}", entry.name)),
            Ok(loaded) => {
                let classes = loaded.model.config().num_classes;
                if !config.datasets.is_empty() && classes != 1000 {
                    problems.push(format!(
                        "model {} ({}) has {classes} classes; the ImageNet evaluation datasets need 1000",
                        entry.name,
                        entry.checkpoint.display()
                    ));
                }
                if let (false, Err(e)) = (config.datasets.is_empty(), accuracy::preprocess(&loaded, config.protocol()))
                {
                    problems.push(e.to_string());
                }
                let fingerprint = fingerprint(&loaded);
                if let Some((_, first)) = fingerprints.iter().find(|(f, _)| *f == fingerprint) {
                    problems.push(format!("models {first} and {} hold the same weights", entry.name));
                }
                fingerprints.push((fingerprint, &entry.name));
                // The measurement only serves the plan, which a study with problems does not get.
                if problems.is_empty() {
                    let speed = timing.map(|precision| precision.run(device, || measure(&loaded))).transpose()?;
                    models.push(ModelFacts { num_classes: classes, speed });
                }
            }
        }
    }
    let mut dataset_images = Vec::new();
    for d in &config.datasets {
        match eval_sets::scan(d.kind, &d.path) {
            Ok(items) => dataset_images.push(items.len()),
            Err(e) => problems.push(format!("dataset {}: {e}", d.kind)),
        }
    }
    let segmentation_images = match &config.segmentation {
        None => None,
        Some(seg) => match SegmentationFile::open(&seg.path) {
            Ok(file) if file.is_empty() => {
                problems.push(format!("segmentation: {} holds no images", seg.path.display()));
                None
            }
            Ok(file) => Some(seg.limit.map_or(file.len(), |n| n.min(file.len()))),
            Err(e) => {
                problems.push(format!("segmentation: {e:#}"));
                None
            }
        },
    };
    let mut split_images = (0, 0);
    let mut train_classes = Vec::new();
    for seed in 0..seeds as u64 {
        for (k, masks) in config.mask_sets().into_iter().enumerate() {
            let data = finetuning_data(config, seed, masks, out);
            let what = format!("imagenet_s (seed {seed}, {} masks)", masks.name());
            match imagenet_s::split(&data.images, &data.masks, &data.split) {
                Ok(split) if split.train.is_empty() || split.val.is_empty() => problems.push(format!(
                    "{what}: the split has {} training and {} validation images",
                    split.train.len(),
                    split.val.len()
                )),
                // Every mask set draws the same classes: the first set's stand for all.
                Ok(split) if k == 0 => {
                    split_images = (split.train.len(), split.val.len());
                    match imagenet::indices_of(&split.train_wnids) {
                        Ok(classes) => train_classes.push(classes),
                        Err(e) => problems.push(format!("{what}: {}: {e}", data.masks.display())),
                    }
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("{what}: {e}")),
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}: the study cannot start:\n  - {}", path.display(), problems.join("\n  - "));
    }
    Ok(Checked { models, dataset_images, segmentation_images, split_images, train_classes })
}

/// A hash of every weight, in key order, to tell identical checkpoints apart from different ones.
fn fingerprint(loaded: &LoadedModel) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    let mut vars = loaded.vs.variables().into_iter().collect::<Vec<_>>();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in vars {
        h.write(name.as_bytes());
        let values = Vec::<f32>::try_from(t.to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1));
        for v in values.unwrap_or_default() {
            h.write_u32(v.to_bits());
        }
    }
    h.finish()
}

/// Seconds of one finetuning step of the method (batch 8) and of a forward pass per image, each the
/// second of two runs (the first pays for allocation).
fn measure(loaded: &LoadedModel) -> anyhow::Result<Speed> {
    let size = loaded.model.config().img_size;
    let options = (Kind::Float, loaded.vs.device());
    let batch = Batch {
        images: Tensor::randn([STEP_BATCH, 3, size, size], options),
        masks: Tensor::rand([STEP_BATCH, 1, size, size], options).ge(0.5).to_kind(Kind::Float),
        labels: Tensor::zeros([STEP_BATCH], (Kind::Int64, loaded.vs.device())),
    };
    let method = Method::Ours(Relevance::default());
    let mut step = 0.0;
    let mut forward = 0.0;
    for _ in 0..2 {
        let started = Instant::now();
        let loss = method.loss(&loaded.model, &batch, true)?;
        loss.total().backward();
        step = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let _ = loaded.model.predict(&batch.images);
        forward = started.elapsed().as_secs_f64() / STEP_BATCH as f64;
    }
    // Gradients of the measurement must not linger in the weights' .grad.
    for mut t in loaded.vs.trainable_variables() {
        t.zero_grad();
    }
    Ok(Speed { step_seconds: step, forward_seconds: forward })
}

/// Estimated seconds of a job on this machine; `None` for an untimed plan.
pub fn estimate(job: &Job, config: &StudyConfig, checked: &Checked) -> Option<f64> {
    let facts = checked.models[job.model].speed.as_ref()?;
    let per_image_step = facts.step_seconds / STEP_BATCH as f64;
    let evaluation = checked.dataset_images.iter().sum::<usize>() as f64 * facts.forward_seconds
        // The segmentation test needs the relevance: a backward pass per image.
        + checked.segmentation_images.unwrap_or(0) as f64 * per_image_step;
    Some(match job.kind {
        JobKind::Original => evaluation,
        JobKind::Finetune { .. } => {
            let epochs = config.finetune.epochs.unwrap_or(paper::EPOCHS);
            let (train, val) = checked.split_images;
            let runs = config.grid().len();
            // Validation computes the loss too (with its relevance), without the update.
            runs as f64 * epochs as f64 * (train + val) as f64 * per_image_step + evaluation
        }
    })
}

/// `1 h 05 min`, `12 min`, `40 s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

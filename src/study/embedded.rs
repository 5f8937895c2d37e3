//! The embedded study: animal-mnist silhouettes on class-specific stripe backgrounds (a spurious cue),
//! an original ViT that learned the shortcut, the method and the baselines finetuned on a few masked images
//! of every class, all evaluated on matched, shuffled, black and background-only test splits and on the
//! segmentation test. Settings follow ../shared/benchmark-notes.md.
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use tch::{nn, Device};

use super::CompareOptions;
use crate::data::animal_mnist::{self, Objects};
use crate::data::spurious::{self, Partition, Split, Texture};
use crate::data::{Batch, Sample};
use crate::eval::segmentation::METRICS;
use crate::eval::{accuracy, segmentation};
use crate::explain;
use crate::image::{denormalize_chw, heatmap, Interpolation, PreprocessConfig};
use crate::model::config::HALF;
use crate::model::{checkpoint, LoadedModel, VisionTransformer, VitConfig};
use crate::report::{self, Measurement, Subject};
use crate::report::{Layout, SegmentationColumns};
use crate::rng::derive_seed;
use crate::train::methods::{ClsTarget, CrossEntropy, InputGradient, Method, MethodKind, Relevance};
use crate::train::{self, paper, EpochMetrics, Origin, RunOptions, Selection, TrainConfig, TrainSet};

pub const MODEL: &str = "vit-p4-32px";
/// The relevance figure `compare` writes into its output folder.
pub const FIGURE: &str = "relevance_shuffled.png";
/// Rows of the figure per case, and the test images searched for them.
const FIGURE_CASES: usize = 3;
const FIGURE_POOL: usize = 300;
/// Enlargement of the 32 px images in the figure.
const FIGURE_ZOOM: u32 = 4;
/// The dataset name of the segmentation test's rows (on shuffled-background images).
pub const SEGMENTATION: &str = "segmentation";
const ARCHITECTURE: &str = "vit_tiny_patch16_224";
const SIZE: u32 = 32;
const BIAS: f64 = 0.95;
const CONTROL_BIAS: f64 = 0.1;
const PARTITION_SEED: u64 = 0;
const RENDER_SEED: u64 = 1000;
/// Epochs whose validation accuracy falls more than this below the original's are not selected.
const ACCURACY_MARGIN: f64 = 0.02;

/// The options only the embedded benchmark takes.
#[derive(Clone, Debug, Serialize)]
pub struct Options {
    /// Also run the ablations of the method.
    pub ablations: bool,
    /// The test-suite budget.
    pub quick: bool,
    /// Coloured-noise backgrounds instead of stripes: a negative control (no method moves it at this scale).
    pub tint: bool,
    /// The animal-mnist wheel.
    pub objects: PathBuf,
}

/// The rows and columns of the benchmark's tables.
pub fn layout(e: &Options, methods: &[MethodKind]) -> Layout {
    let mut names = vec!["control".to_string(), report::ORIGINAL.to_string()];
    names.extend(methods.iter().map(|m| m.name().to_string()));
    Layout {
        models: vec![MODEL.into()],
        methods: names,
        datasets: Split::ALL.iter().map(|s| s.name().to_string()).collect(),
        protocol: "standard".into(),
        segmentation: Some(SegmentationColumns {
            dataset: SEGMENTATION.into(),
            metrics: METRICS.iter().map(|m| m.to_string()).collect(),
        }),
        ablations: e.ablations.then(|| ablation_names().into_iter().map(String::from).collect()),
        class_split: false,
    }
}

/// Sizes of the study; `quick` is the test-suite budget.
#[derive(Clone, Debug, Serialize)]
pub struct Budget {
    pub test_per_class: usize,
    pub val_per_class: usize,
    pub pool_per_class: usize,
    pub finetune_per_class: usize,
    pub pretrain_epochs: usize,
    pub bias_epochs: usize,
    pub pretrain_per_class: Option<usize>,
    pub finetune_epochs: usize,
    /// Multipliers of each method's central setting (LR for the method, lambda for the baselines).
    pub grid: Vec<f64>,
    pub segmentation_images: usize,
}

impl Budget {
    pub fn new(quick: bool) -> Self {
        if quick {
            return Budget {
                test_per_class: 40,
                val_per_class: 10,
                pool_per_class: 10,
                finetune_per_class: 6,
                pretrain_epochs: 3,
                bias_epochs: 1,
                pretrain_per_class: Some(250),
                finetune_epochs: 3,
                grid: vec![1.0],
                segmentation_images: 100,
            };
        }
        Budget {
            test_per_class: 150,
            val_per_class: 15,
            pool_per_class: 30,
            finetune_per_class: 10,
            pretrain_epochs: 8,
            bias_epochs: 2,
            pretrain_per_class: None,
            finetune_epochs: 12,
            grid: vec![0.1, 0.3, 1.0, 3.0, 10.0],
            segmentation_images: 300,
        }
    }
}

fn vit_config() -> VitConfig {
    VitConfig {
        img_size: SIZE as i64,
        patch_size: 4,
        in_chans: 3,
        embed_dim: 64,
        depth: 4,
        num_heads: 4,
        mlp_ratio: 2.0,
        num_classes: 10,
    }
}

fn preprocess() -> PreprocessConfig {
    PreprocessConfig {
        input_size: (SIZE, SIZE),
        crop_pct: 1.0,
        interpolation: Interpolation::Bicubic,
        mean: HALF,
        std: HALF,
    }
}

/// Pretraining images rendered afresh each epoch: a new background draw per (epoch, sample).
struct Rendered<'a> {
    objects: &'a Objects,
    indices: Vec<usize>,
    bias: f64,
    texture: Texture,
}

impl TrainSet for Rendered<'_> {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn sample(&self, index: usize, seed: u64) -> anyhow::Result<Sample> {
        let i = self.indices[index];
        let background = spurious::biased(self.objects.labels[i] as usize, self.bias, self.texture, seed);
        Ok(spurious::render(self.objects, i, background, SIZE, seed))
    }
}

/// A fixed set of samples (the finetuning images).
struct Fixed(Vec<Sample>);

impl TrainSet for Fixed {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn sample(&self, index: usize, _seed: u64) -> anyhow::Result<Sample> {
        Ok(self.0[index].clone())
    }
}

fn texture(e: &Options) -> Texture {
    if e.tint {
        Texture::Tint
    } else {
        Texture::Stripes
    }
}

fn render_split(objects: &Objects, indices: &[usize], split: Split, texture: Texture, salt: u64) -> Vec<Sample> {
    indices
        .iter()
        .map(|&i| {
            let seed = derive_seed(RENDER_SEED, &[salt, i as u64]);
            let background = spurious::background_for(split, objects.labels[i] as usize, BIAS, texture, seed);
            spurious::render(objects, i, background, SIZE, seed)
        })
        .collect()
}

fn quiet_run(opts: &CompareOptions, label: String) -> RunOptions {
    RunOptions {
        quiet: opts.quiet,
        provenance: opts.provenance.clone(),
        origin: Origin { study: Some(format!("embedded {label}")), ..Origin::default() },
        ..RunOptions::default()
    }
}

fn fresh_out(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    Ok(())
}

/// The recipe of the cached original models; a change retrains them.
#[derive(Serialize)]
struct Recipe<'a> {
    model: VitConfig,
    budget: (usize, usize, Option<usize>),
    partition: (usize, usize, usize, u64),
    objects: &'a str,
    tint: bool,
    version: u32,
}

/// Trains (or loads from `out/models`) the unbiased control and the original (control briefly trained on
/// the biased split).
fn originals(
    objects: &Objects,
    part: &Partition,
    val: &[Sample],
    budget: &Budget,
    e: &Options,
    opts: &CompareOptions,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let models = opts.out.join("models");
    let (control, original) = (models.join("control"), models.join("original"));
    let recipe = serde_json::to_string_pretty(&Recipe {
        model: vit_config(),
        budget: (budget.pretrain_epochs, budget.bias_epochs, budget.pretrain_per_class),
        partition: (budget.test_per_class, budget.val_per_class, budget.pool_per_class, PARTITION_SEED),
        objects: animal_mnist::WHEEL,
        tint: e.tint,
        version: 1,
    })?;
    let recipe_path = models.join("recipe.json");
    if std::fs::read_to_string(&recipe_path).ok().as_deref() == Some(recipe.as_str())
        && control.join(checkpoint::WEIGHTS_FILE).is_file()
        && original.join(checkpoint::WEIGHTS_FILE).is_file()
    {
        eprintln!("original models: cached in {}", models.display());
        return Ok((control, original));
    }
    eprintln!("original models: training the control (unbiased) and the original (biased) ViT");
    tch::manual_seed(0);
    let vs = nn::VarStore::new(opts.device);
    let model = VisionTransformer::new(&vs.root(), &vit_config());
    let loaded = LoadedModel { vs, model, name: ARCHITECTURE.into(), preprocess: preprocess() };
    let mut pretrain = part.pretrain.clone();
    if let Some(per_class) = budget.pretrain_per_class {
        let mut taken = [0usize; animal_mnist::CLASSES];
        pretrain.retain(|&i| {
            let c = &mut taken[objects.labels[i] as usize];
            *c += 1;
            *c <= per_class
        });
    }
    let stage = |bias: f64, epochs: usize, dir: &str| -> anyhow::Result<()> {
        let cfg = TrainConfig {
            method: Method::CrossEntropy(CrossEntropy { temperature: 1.0 }),
            lr: 1e-3,
            weight_decay: 0.05,
            lr_decay: 1.0,
            decay_every: 1,
            epochs,
            batch_size: 128,
            seed: 0,
            select: Selection::ValAcc,
            accuracy_floor: None,
        };
        let out = models.join(dir);
        fresh_out(&out)?;
        let set = Rendered { objects, indices: pretrain.clone(), bias, texture: texture(e) };
        train::finetune(&loaded, &set, val, &cfg, &out, &quiet_run(opts, format!("{dir} (bias {bias})")))?;
        Ok(())
    };
    stage(CONTROL_BIAS, budget.pretrain_epochs, "train-control")?;
    checkpoint::save(&control, ARCHITECTURE, &loaded.vs, loaded.model.config(), &loaded.preprocess)?;
    stage(BIAS, budget.bias_epochs, "train-original")?;
    checkpoint::save(&original, ARCHITECTURE, &loaded.vs, loaded.model.config(), &loaded.preprocess)?;
    crate::atomic_write::write(&recipe_path, recipe.as_bytes())?;
    Ok((control, original))
}

fn load(dir: &Path, device: Device) -> anyhow::Result<LoadedModel> {
    Ok(checkpoint::load(None, dir, device)?)
}

/// Mean loss terms of `method` on the original model over the finetuning set, batch by batch as in training.
fn initial_terms(original: &LoadedModel, method: &Method, samples: &[Sample]) -> anyhow::Result<Vec<f64>> {
    Ok(train::evaluate(original, method, samples, 8)?.0)
}

fn baseline(lambda_bg: f64) -> InputGradient {
    InputGradient { lambda_bg, lambda_cls: 1.0, temperature: 1.0 }
}

/// Settings tried for a method: the method's LR around 1e-4; each baseline's lambda_bg around the value
/// that makes its weighted penalty equal the cross-entropy on the original model (its own penalty's scale).
fn grid(
    kind: MethodKind,
    original: &LoadedModel,
    finetune: &[Sample],
    budget: &Budget,
) -> anyhow::Result<Vec<(Method, f64)>> {
    const LR: f64 = 1e-4;
    Ok(match kind {
        MethodKind::Ours => budget.grid.iter().map(|m| (Method::Ours(Relevance::default()), LR * m)).collect(),
        MethodKind::CrossEntropy => {
            budget.grid.iter().map(|m| (Method::CrossEntropy(CrossEntropy { temperature: 1.0 }), LR * m)).collect()
        }
        MethodKind::Gradmask | MethodKind::Rrr => {
            let probe =
                |l| if kind == MethodKind::Gradmask { Method::Gradmask(baseline(l)) } else { Method::Rrr(baseline(l)) };
            let terms = initial_terms(original, &probe(1.0), finetune)?;
            let (penalty, ce) = (terms[1], terms[2]);
            let central = ce / penalty.max(f64::MIN_POSITIVE);
            // Ten times the balance point: the penalty must dominate to move a model that is already fit.
            budget.grid.iter().map(|m| (probe(round_sig(10.0 * central * m)), LR)).collect()
        }
    })
}

fn round_sig(x: f64) -> f64 {
    let e = x.abs().log10().floor();
    (x / 10f64.powf(e)).round() * 10f64.powf(e)
}

/// Ablation variants of the method at a given LR.
fn ablations() -> Vec<(&'static str, Method)> {
    let base = Relevance::default();
    vec![
        ("ours_no_cls", Method::Ours(Relevance { lambda_cls: 0.0, ..base.clone() })),
        ("ours_no_bg", Method::Ours(Relevance { lambda_bg: 0.0, ..base.clone() })),
        ("ours_no_fg", Method::Ours(Relevance { lambda_fg: 0.0, ..base.clone() })),
        ("ours_gt_cls", Method::Ours(Relevance { cls_target: ClsTarget::Gt, ..base })),
    ]
}

struct Finetuned {
    best: EpochMetrics,
    dir: PathBuf,
    cfg: TrainConfig,
}

/// What every finetuning run of one seed shares: the original to start from, the finetuning and
/// validation images, the accuracy floor of the selection rule, and where the runs go.
struct SeedRuns<'a> {
    original_dir: &'a Path,
    set: &'a Fixed,
    val: &'a [Sample],
    floor: f64,
    seed: u64,
    budget: &'a Budget,
    out: PathBuf,
    opts: &'a CompareOptions,
}

impl SeedRuns<'_> {
    /// Finetunes a fresh copy of the original with each setting; returns the selected run.
    fn finetune_grid(&self, label: &str, settings: Vec<(Method, f64)>) -> anyhow::Result<Finetuned> {
        let SeedRuns { original_dir, set, val, floor, seed, budget, ref out, opts } = *self;
        let mut runs = Vec::new();
        for (k, (method, lr)) in settings.into_iter().enumerate() {
            let cfg = TrainConfig {
                epochs: budget.finetune_epochs,
                select: Selection::GuardedPenalty,
                accuracy_floor: Some(floor),
                ..paper::train_config(method, lr, seed)
            };
            let dir = out.join(format!("{label}-{k}"));
            fresh_out(&dir)?;
            let loaded = load(original_dir, opts.device)?;
            eprintln!("seed {seed}: finetuning {label} setting {k} (lr {lr:e})");
            let summary = train::finetune(&loaded, set, val, &cfg, &dir, &quiet_run(opts, format!("{label}-{k}")))?;
            runs.push(Finetuned { best: summary.best, dir: summary.best_dir, cfg });
        }
        // Across settings the same rule as across epochs: lowest penalty among runs that keep accuracy.
        let k = train::choose(&runs.iter().map(|r| (&r.cfg, &r.best)).collect::<Vec<_>>())
            .context("an empty hyperparameter grid")?;
        Ok(runs.swap_remove(k))
    }
}

struct Evaluation<'a> {
    tests: &'a [(Split, Vec<Sample>)],
    segmentation: &'a [Sample],
}

fn measure(
    model: &VisionTransformer,
    method: &str,
    seed: u64,
    eval: &Evaluation,
    rows: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let subject = Subject { model: MODEL.into(), method: method.into(), seed, protocol: "standard".into() };
    for (split, samples) in eval.tests {
        let (top1, top5) = accuracy::of_samples(model, samples, 256);
        rows.push(subject.row(split.name(), report::TOP1, top1));
        rows.push(subject.row(split.name(), report::TOP5, top5));
    }
    let seg = segmentation::of_samples(model, eval.segmentation, 64)?;
    rows.extend(seg.percent().into_iter().map(|(metric, value)| subject.row(SEGMENTATION, metric, value)));
    Ok(())
}

/// Runs the study and returns its measurements.
pub fn run(e: &Options, opts: &CompareOptions) -> anyhow::Result<Vec<Measurement>> {
    let budget = Budget::new(e.quick);
    let objects = animal_mnist::load(&e.objects)
        .context("loading the embedded benchmark's objects; fetch them with `make benchmark-data` or pass --objects")?;
    eprintln!(
        "objects: {} animal-mnist silhouettes ({} duplicates removed)",
        objects.len(),
        objects.duplicates_removed + objects.conflicting_removed
    );
    let part = spurious::partition(
        &objects,
        budget.test_per_class,
        budget.val_per_class,
        budget.pool_per_class,
        PARTITION_SEED,
    )?;
    let val = render_split(&objects, &part.val, Split::Matched, texture(e), 1);
    let tests: Vec<(Split, Vec<Sample>)> =
        Split::ALL.iter().map(|&s| (s, render_split(&objects, &part.test, s, texture(e), 2))).collect();
    let shuffled = &tests.iter().find(|(s, _)| *s == Split::Shuffled).expect("shuffled split").1;
    let segmentation: Vec<Sample> = shuffled.iter().take(budget.segmentation_images).cloned().collect();
    let eval = Evaluation { tests: &tests, segmentation: &segmentation };

    let (control_dir, original_dir) = originals(&objects, &part, &val, &budget, e, opts)?;
    let original = load(&original_dir, opts.device)?;
    let (_, original_val_accuracy) =
        train::evaluate(&original, &Method::CrossEntropy(CrossEntropy { temperature: 1.0 }), &val, 256)?;
    let floor = original_val_accuracy - ACCURACY_MARGIN;
    let mut rows = Vec::new();
    let control = load(&control_dir, opts.device)?;
    for seed in 0..opts.seeds as u64 {
        measure(&control.model, "control", seed, &eval, &mut rows)?;
        measure(&original.model, "original", seed, &eval, &mut rows)?;
        let chosen = spurious::finetune_subset(&part, &objects, budget.finetune_per_class, seed)?;
        let set = Fixed(render_split(&objects, &chosen, Split::Matched, texture(e), 100 + seed));
        let out = opts.out.join("runs").join(format!("seed{seed}"));
        let runs =
            SeedRuns { original_dir: &original_dir, set: &set, val: &val, floor, seed, budget: &budget, out, opts };
        let mut ours_lr = 1e-4;
        let mut ours_dir = None;
        for &kind in &opts.methods {
            let settings = grid(kind, &original, &set.0, &budget)?;
            let picked = runs.finetune_grid(kind.name(), settings)?;
            if kind == MethodKind::Ours {
                ours_lr = picked.cfg.lr;
                ours_dir = Some(picked.dir.clone());
            }
            eprintln!(
                "seed {seed}: {} selected {} (val acc {:.3})",
                kind.name(),
                picked.dir.display(),
                picked.best.val_accuracy
            );
            measure(&load(&picked.dir, opts.device)?.model, kind.name(), seed, &eval, &mut rows)?;
        }
        if let (0, Some(dir)) = (seed, &ours_dir) {
            let path = opts.out.join(FIGURE);
            figure(&original.model, &load(dir, opts.device)?.model, shuffled, &path)?;
            eprintln!("relevance figure: {}", path.display());
        }
        if e.ablations {
            for (name, method) in ablations() {
                let picked = runs.finetune_grid(name, vec![(method, ours_lr)])?;
                measure(&load(&picked.dir, opts.device)?.model, name, seed, &eval, &mut rows)?;
            }
        }
    }
    Ok(rows)
}

/// Paper Figure 2 on shifted data: shuffled-background test images whose prediction the method keeps
/// right, corrects, or breaks (the first [`FIGURE_CASES`] of each, in test order), each with the original's
/// and the method's relevance heatmap of its prediction.
fn figure(
    original: &VisionTransformer,
    ours: &VisionTransformer,
    shuffled: &[Sample],
    path: &Path,
) -> anyhow::Result<()> {
    let pool = &shuffled[..shuffled.len().min(FIGURE_POOL)];
    let images = Batch::new(pool, original.device()).images;
    let (before, after) = (explain::explain(original, &images, None)?, explain::explain(ours, &images, None)?);
    let name = |k: i64| animal_mnist::CLASS_NAMES.get(k as usize).copied().unwrap_or("?").to_string();
    let mut rows = Vec::new();
    for (case, keep) in [("stays right", (true, true)), ("corrected", (false, true)), ("broken", (true, false))] {
        let chosen = (0..pool.len())
            .filter(|&i| (before[i].predicted == pool[i].label, after[i].predicted == pool[i].label) == keep)
            .take(FIGURE_CASES);
        for i in chosen {
            let rgb = denormalize_chw(pool[i].image.view(), HALF, HALF);
            let truth = vec![case.to_string(), format!("truth: {}", name(pool[i].label))];
            rows.push(heatmap::hstack(
                &[
                    explain::captioned(&rgb, &truth, FIGURE_ZOOM),
                    explain::tile(
                        &rgb,
                        before[i].map.view(),
                        &explain::caption("original", &before[i], name),
                        FIGURE_ZOOM,
                    )?,
                    explain::tile(&rgb, after[i].map.view(), &explain::caption("ours", &after[i], name), FIGURE_ZOOM)?,
                ],
                explain::GAP,
            ));
        }
    }
    explain::write_png(path, &heatmap::vstack(&rows, explain::GAP))
}

/// The method names of the ablation table, in order.
pub fn ablation_names() -> Vec<&'static str> {
    std::iter::once("ours").chain(ablations().into_iter().map(|(n, _)| n)).collect()
}

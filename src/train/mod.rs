//! Finetuning: one training loop for every method (here), the methods as loss functions (`methods`),
//! AdamW with saveable state (`optim`), the paper's settings (`paper`) and the ImageNet-S job that feeds
//! the loop (`imagenet_s`).
//!
//! The loop: AdamW with the paper's step decay, validation each epoch with the same loss, best and last
//! checkpoints, per-epoch metrics CSV, a JSON run manifest ([`RunManifest`]), and exact resumption.
//!
//! Output folder: `best/` and `last/` (timm hub layout; `last/` also holds `optimizer.safetensors` and
//! `state.json`), `metrics.csv`, `manifest.json`. Every file is written atomically and `last/` is swapped
//! whole, so a run killed at any point resumes from its last completed epoch. All randomness (data order,
//! crops, flips) derives from (seed, epoch, sample), so a resumed run on CPU ends with the same weights as
//! an uninterrupted one.
pub mod imagenet_s;
pub mod methods;
pub mod optim;
pub mod paper;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::atomic_write;
use crate::data::{Batch, Sample};
use crate::image::PreprocessConfig;
use crate::manifest::Provenance;
use crate::model::{checkpoint, LoadedModel, VisionTransformer, VitConfig};
use crate::precision::Precision;
use crate::rng::{derive_seed, permutation};
use imagenet_s::DataSplit;
use methods::{Loss, Method};
use optim::AdamW;

crate::named_enum! {
    /// How the kept ("best") checkpoint is chosen.
    pub enum Selection("selection rule") {
        /// Lowest validation total loss (the paper's rule).
        ValLoss = "val-loss",
        /// Highest validation accuracy, ties to the lower loss (guards against collapsed low-loss models).
        ValAcc = "val-acc",
        /// Lowest validation value of the method's own penalty (`Method::penalty_term`) among epochs whose
        /// validation accuracy reaches `TrainConfig::accuracy_floor`; the highest accuracy when none does.
        /// Across a grid of settings, the weakest of those tied with the lowest penalty ([`choose_setting`]).
        GuardedPenalty = "guarded-penalty",
    }
}

/// Across a grid's settings, validation penalties within this fraction of the lowest count as tied, and the
/// weakest of the tied settings is kept ([`choose_setting`]).
pub const PENALTY_TIE: f64 = 0.02;

/// The studies' accuracy guard: a setting or epoch whose validation accuracy falls more than this below the
/// original's is not kept (the `accuracy_floor` of [`Selection::GuardedPenalty`]).
pub const ACCURACY_MARGIN: f64 = 0.02;

/// Everything that determines a run's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub method: Method,
    pub lr: f64,
    pub weight_decay: f64,
    /// LR of epoch e is `lr * lr_decay^(e / decay_every)`.
    pub lr_decay: f64,
    pub decay_every: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub select: Selection,
    /// The validation accuracy an epoch needs to be eligible under `Selection::GuardedPenalty`.
    #[serde(default)]
    pub accuracy_floor: Option<f64>,
    /// The arithmetic of the training forward passes (validation runs in fp32).
    #[serde(default)]
    pub precision: Precision,
}

impl TrainConfig {
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * self.lr_decay.powi((epoch / self.decay_every.max(1)) as i32)
    }
}

/// Training examples, drawn with a per-(epoch, sample) seed for their random augmentation.
pub trait TrainSet {
    fn len(&self) -> usize;
    fn sample(&self, index: usize, seed: u64) -> anyhow::Result<Sample>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One epoch's numbers; `train`/`val` hold the method's terms in `Method::term_names` order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub train: Vec<f64>,
    pub val: Vec<f64>,
    pub val_accuracy: f64,
    pub seconds: f64,
    /// Top-1 (percent) on [`RunOptions::probe`] after the epoch, when asked for; never used to select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<f64>,
}

/// Resumption state, saved in `last/state.json` after every epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunState {
    config: TrainConfig,
    completed_epochs: usize,
    best_epoch: Option<usize>,
    history: Vec<EpochMetrics>,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct Summary {
    pub best_epoch: usize,
    pub best: EpochMetrics,
    pub history: Vec<EpochMetrics>,
    pub best_dir: PathBuf,
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub resume: bool,
    /// No progress bars: one log line per epoch only.
    pub quiet: bool,
    pub provenance: Provenance,
    /// Who asked for the run, for the manifest.
    pub origin: Origin,
    /// The data split, for the manifest (set by jobs that draw one, e.g. [`imagenet_s::run`]).
    pub data: Option<DataSplit>,
    /// Images whose top-1 is recorded after every epoch (`EpochMetrics::probe`): a study reports with it
    /// what another selection rule would have kept.
    pub probe: Option<std::sync::Arc<Vec<Sample>>>,
}

/// Who asked for a run: the command line and the checkpoint it started from, or a study and its label
/// for the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    /// The run's place in a study (`embedded ours-2`, a study file's path, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study: Option<String>,
}

/// `manifest.json` of a run: everything that determines its numbers and where they came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    #[serde(flatten)]
    pub provenance: Provenance,
    pub model: String,
    pub model_config: VitConfig,
    /// The model's input transform's settings (mean and std also normalise the training images).
    pub preprocess: PreprocessConfig,
    pub device: String,
    pub train: TrainConfig,
    pub origin: Origin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSplit>,
    /// The selected epoch, once the run has finished.
    pub best: Option<EpochMetrics>,
}

impl RunManifest {
    pub const FILE: &'static str = "manifest.json";

    /// Reads a run's manifest; errors name the file.
    pub fn read(path: &Path) -> anyhow::Result<RunManifest> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a run manifest (written by harness finetune or compare)", path.display()))
    }
}

fn scalar(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// Mean loss terms and top-1 accuracy of `method` over `samples` (no update).
pub fn evaluate(
    loaded: &LoadedModel,
    method: &Method,
    samples: &[Sample],
    batch_size: usize,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let mut sums = vec![0.0; method.term_names().len()];
    let mut correct = 0i64;
    for chunk in samples.chunks(batch_size.max(1)) {
        let b = Batch::new(chunk, loaded.vs.device());
        let loss = method.loss(&loaded.model, &b, false)?;
        for (sum, (_, t)) in sums.iter_mut().zip(&loss.terms) {
            *sum += scalar(t) * chunk.len() as f64;
        }
        correct += loss.logits.argmax(-1, false).eq_tensor(&b.labels).sum(Kind::Int64).int64_value(&[]);
    }
    let n = samples.len().max(1) as f64;
    Ok((sums.iter().map(|s| s / n).collect(), correct as f64 / n))
}

/// Whether `candidate` beats `best` under the run's selection rule.
pub fn better(cfg: &TrainConfig, candidate: &EpochMetrics, best: Option<&EpochMetrics>) -> bool {
    let Some(best) = best else { return true };
    let by_accuracy = |a: &EpochMetrics, b: &EpochMetrics| {
        a.val_accuracy > b.val_accuracy || (a.val_accuracy == b.val_accuracy && a.val[0] < b.val[0])
    };
    match cfg.select {
        Selection::ValLoss => candidate.val[0] < best.val[0],
        Selection::ValAcc => by_accuracy(candidate, best),
        Selection::GuardedPenalty => {
            let k = penalty_index(&cfg.method);
            match (keeps_accuracy(cfg, candidate), keeps_accuracy(cfg, best)) {
                (true, true) => candidate.val[k] < best.val[k],
                (true, false) => true,
                (false, true) => false,
                (false, false) => by_accuracy(candidate, best),
            }
        }
    }
}

/// The candidate the rule keeps among epochs (or runs), each given by its config and metrics: the best
/// under [`better`]. `None` for none.
pub fn choose(candidates: &[(&TrainConfig, &EpochMetrics)]) -> Option<usize> {
    let mut chosen: Option<usize> = None;
    for (i, (cfg, metrics)) in candidates.iter().enumerate() {
        if better(cfg, metrics, chosen.map(|c| candidates[c].1)) {
            chosen = Some(i);
        }
    }
    chosen
}

/// The setting to keep among the finished runs of one method's grid, each given by its config and selected
/// epoch, ordered from the weakest setting (the smallest multiple of the central one) to the strongest.
/// Under [`Selection::GuardedPenalty`]: the weakest run that keeps accuracy and whose penalty lies within
/// [`PENALTY_TIE`] of the lowest. Under Adam a penalty's weight stops mattering once the penalty dominates
/// the loss, so ever larger weights reach one floor: the lowest penalty alone keeps the strongest setting
/// tried, wherever the grid ends, and this rule the first setting on the floor, which a wider grid does not
/// move. Other rules: [`choose`].
pub fn choose_setting(runs: &[(&TrainConfig, &EpochMetrics)]) -> Option<usize> {
    let lowest = choose(runs)?;
    let (cfg, best) = runs[lowest];
    if cfg.select != Selection::GuardedPenalty || !keeps_accuracy(cfg, best) {
        return Some(lowest);
    }
    let k = penalty_index(&cfg.method);
    let within = best.val[k] + best.val[k].abs() * PENALTY_TIE;
    runs.iter().position(|(cfg, run)| keeps_accuracy(cfg, run) && run.val[k] <= within)
}

/// Whether `metrics` reach the validation accuracy `cfg`'s guarded rule asks for.
fn keeps_accuracy(cfg: &TrainConfig, metrics: &EpochMetrics) -> bool {
    metrics.val_accuracy >= cfg.accuracy_floor.unwrap_or(0.0)
}

/// Where `method`'s penalty is among its terms.
fn penalty_index(method: &Method) -> usize {
    method.term_names().iter().position(|n| *n == method.penalty_term()).unwrap_or(0)
}

fn progress(quiet: bool, batches: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(batches as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}").expect("static template"),
    );
    bar.set_prefix(format!("{}/{epochs}", epoch + 1));
    bar
}

fn write_metrics(path: &Path, method: &Method, rows: &[EpochMetrics]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let names = method.term_names();
    let mut header = vec!["epoch".to_string(), "lr".to_string()];
    header.extend(names.iter().map(|n| format!("train_{n}")));
    header.extend(names.iter().map(|n| format!("val_{n}")));
    header.extend(["val_accuracy".to_string(), "seconds".to_string()]);
    w.write_record(&header)?;
    for r in rows {
        let mut rec = vec![r.epoch.to_string(), format!("{:e}", r.lr)];
        rec.extend(r.train.iter().chain(&r.val).map(|v| format!("{v:.8e}")));
        rec.extend([format!("{:.6}", r.val_accuracy), format!("{:.2}", r.seconds)]);
        w.write_record(&rec)?;
    }
    atomic_write::write(path, &w.into_inner().context("finishing metrics CSV")?)?;
    Ok(())
}

fn save_model(dir: &Path, loaded: &LoadedModel) -> anyhow::Result<()> {
    checkpoint::save(dir, &loaded.name, &loaded.vs, loaded.model.config(), &loaded.preprocess)?;
    Ok(())
}

fn write_manifest(
    out: &Path,
    cfg: &TrainConfig,
    loaded: &LoadedModel,
    opts: &RunOptions,
    best: Option<&EpochMetrics>,
) -> anyhow::Result<()> {
    let manifest = RunManifest {
        provenance: opts.provenance.clone(),
        model: loaded.name.clone(),
        model_config: loaded.model.config().clone(),
        preprocess: loaded.preprocess.clone(),
        device: format!("{:?}", loaded.vs.device()),
        train: cfg.clone(),
        origin: opts.origin.clone(),
        data: opts.data.clone(),
        best: best.cloned(),
    };
    atomic_write::write(&out.join(RunManifest::FILE), serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    Ok(())
}

/// Restores `last/` into the model and optimiser; returns the saved state.
fn restore(out: &Path, cfg: &TrainConfig, loaded: &LoadedModel, opt: &mut AdamW) -> anyhow::Result<Option<RunState>> {
    let Some(last) = atomic_write::existing_dir(&out.join("last")) else { return Ok(None) };
    let state_path = last.join("state.json");
    let state: RunState = serde_json::from_str(
        &std::fs::read_to_string(&state_path).with_context(|| format!("reading {}", state_path.display()))?,
    )
    .with_context(|| format!("parsing {}", state_path.display()))?;
    if &state.config != cfg {
        bail!(
            "{}: the run was started with other settings; resume with the same flags or use a new --out\n  saved: {}\n  now:   {}",
            state_path.display(),
            serde_json::to_string(&state.config)?,
            serde_json::to_string(cfg)?
        );
    }
    let weights = last.join(checkpoint::WEIGHTS_FILE);
    checkpoint::load_into(&loaded.vs, checkpoint::read_tensors(&weights)?, &weights)?;
    let opt_path = last.join("optimizer.safetensors");
    let opt_state = Tensor::read_safetensors(&opt_path).with_context(|| format!("reading {}", opt_path.display()))?;
    opt.load_state(opt_state).map_err(|e| anyhow::anyhow!("{}: {e}", opt_path.display()))?;
    Ok(Some(state))
}

/// One optimiser step on `batch`: the loss (forward under `precision`), its backward, the AdamW update.
/// Returns the loss terms.
pub fn step(
    method: &Method,
    precision: Precision,
    model: &VisionTransformer,
    batch: &Batch,
    opt: &mut AdamW,
) -> anyhow::Result<Loss> {
    opt.zero_grad();
    let loss = precision.run(model.device(), || method.loss(model, batch, true))?;
    let total = scalar(loss.total());
    if !total.is_finite() {
        bail!("the loss is {total}; lower --lr or check the data");
    }
    loss.total().backward();
    opt.step()?;
    Ok(loss)
}

/// Finetunes `loaded` in place; at the end the model holds the last epoch's weights and `best/` the
/// selected ones.
pub fn finetune(
    loaded: &LoadedModel,
    train: &dyn TrainSet,
    val: &[Sample],
    cfg: &TrainConfig,
    out: &Path,
    opts: &RunOptions,
) -> anyhow::Result<Summary> {
    if train.is_empty() || val.is_empty() {
        bail!("finetuning needs training and validation samples ({} and {} given)", train.len(), val.len());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut opt = AdamW::new(&loaded.vs, cfg.lr, cfg.weight_decay);
    let mut state = RunState { config: cfg.clone(), completed_epochs: 0, best_epoch: None, history: vec![] };
    if opts.resume {
        if let Some(saved) = restore(out, cfg, loaded, &mut opt)? {
            state = saved;
        }
    } else if out.join("last").exists() {
        bail!("{} already holds a run; pass --resume to continue it or choose another --out", out.display());
    }
    write_manifest(out, cfg, loaded, opts, None)?;
    let method = &cfg.method;
    let names = method.term_names();
    let batches = train.len().div_ceil(cfg.batch_size);
    for epoch in state.completed_epochs..cfg.epochs {
        let started = Instant::now();
        opt.settings.lr = cfg.lr_at(epoch);
        let bar = progress(opts.quiet, batches, epoch, cfg.epochs);
        let mut sums = vec![0.0; names.len()];
        let mut seen = 0usize;
        for (b, chunk) in
            permutation(train.len(), derive_seed(cfg.seed, &[epoch as u64])).chunks(cfg.batch_size).enumerate()
        {
            let samples = chunk
                .iter()
                .map(|&i| train.sample(i, derive_seed(cfg.seed, &[epoch as u64, i as u64])))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let batch = Batch::new(&samples, loaded.vs.device());
            let loss = step(method, cfg.precision, &loaded.model, &batch, &mut opt)
                .with_context(|| format!("epoch {} batch {b}", epoch + 1))?;
            for (sum, (_, t)) in sums.iter_mut().zip(&loss.terms) {
                *sum += scalar(t) * samples.len() as f64;
            }
            seen += samples.len();
            bar.inc(1);
            let rate = seen as f64 / started.elapsed().as_secs_f64();
            let terms: Vec<String> =
                names.iter().zip(&sums).map(|(n, s)| format!("{n} {:.4}", s / seen as f64)).collect();
            bar.set_message(format!("{} | {rate:.1} img/s", terms.join(" ")));
        }
        bar.finish_and_clear();
        let (val_terms, val_accuracy) = evaluate(loaded, method, val, cfg.batch_size)?;
        let row = EpochMetrics {
            epoch: epoch + 1,
            lr: opt.settings.lr,
            train: sums.iter().map(|s| s / seen as f64).collect(),
            val: val_terms,
            val_accuracy,
            seconds: started.elapsed().as_secs_f64(),
            probe: opts.probe.as_ref().map(|p| crate::eval::accuracy::of_samples(&loaded.model, p, 256).0),
        };
        eprintln!(
            "epoch {}/{}: train total {:.5}, val total {:.5}, val acc {:.4}, lr {:.3e}, {:.1} s",
            row.epoch, cfg.epochs, row.train[0], row.val[0], row.val_accuracy, row.lr, row.seconds
        );
        let best_so_far = state.best_epoch.map(|e| &state.history[e - 1]);
        if better(cfg, &row, best_so_far) {
            atomic_write::replace_dir(&out.join("best"), |dir| save_model(dir, loaded))?;
            state.best_epoch = Some(row.epoch);
        }
        state.history.push(row);
        state.completed_epochs = epoch + 1;
        write_metrics(&out.join("metrics.csv"), method, &state.history)?;
        atomic_write::replace_dir(&out.join("last"), |dir| {
            save_model(dir, loaded)?;
            Tensor::write_safetensors(&opt.state(), dir.join("optimizer.safetensors"))?;
            atomic_write::write(&dir.join("state.json"), serde_json::to_string_pretty(&state)?.as_bytes())?;
            Ok(())
        })?;
    }
    let best_epoch = state.best_epoch.context("no epoch was run (epochs = 0?)")?;
    let best = state.history[best_epoch - 1].clone();
    write_manifest(out, cfg, loaded, opts, Some(&best))?;
    Ok(Summary { best_epoch, best, history: state.history, best_dir: out.join("best") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use methods::InputGradient;

    fn run(penalty: f64, accuracy: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: 1,
            lr: 1e-4,
            train: vec![],
            val: vec![penalty + 0.5, penalty, 0.5],
            val_accuracy: accuracy,
            seconds: 0.0,
            probe: None,
        }
    }

    #[test]
    fn the_setting_kept_is_the_weakest_tied_with_the_lowest_penalty() {
        let cfg = TrainConfig {
            select: Selection::GuardedPenalty,
            accuracy_floor: Some(0.9),
            ..paper::train_config(
                Method::Gradmask(InputGradient { lambda_bg: 1.0, lambda_cls: 1.0, temperature: 1.0 }),
                1e-4,
                0,
            )
        };
        // Penalties falling to a floor as the weight grows (GradMask's on the embedded benchmark).
        let runs = [
            run(1.003e-3, 0.95),
            run(9.008e-4, 0.95),
            run(8.537e-4, 0.95),
            run(8.477e-4, 0.95),
            run(8.457e-4, 0.95),
            run(8.451e-4, 0.95),
        ];
        let pairs: Vec<_> = runs.iter().map(|r| (&cfg, r)).collect();
        assert_eq!(choose(&pairs), Some(5), "the lowest penalty");
        assert_eq!(choose_setting(&pairs), Some(2), "the first within 2% of 8.451e-4");
        // A setting below the accuracy floor is passed over, however low its penalty.
        let mut below = runs.clone();
        below[2].val_accuracy = 0.85;
        let pairs: Vec<_> = below.iter().map(|r| (&cfg, r)).collect();
        assert_eq!(choose_setting(&pairs), Some(3));
        // The paper's rule keeps the lowest loss.
        let by_loss = TrainConfig { select: Selection::ValLoss, ..cfg.clone() };
        let pairs: Vec<_> = runs.iter().map(|r| (&by_loss, r)).collect();
        assert_eq!(choose_setting(&pairs), Some(5));
        // Nothing keeps accuracy: the most accurate, as across epochs.
        let mut poor = runs.clone();
        poor.iter_mut().enumerate().for_each(|(i, r)| r.val_accuracy = 0.5 + 0.01 * i as f64);
        poor[1].val_accuracy = 0.8;
        let pairs: Vec<_> = poor.iter().map(|r| (&cfg, r)).collect();
        assert_eq!(choose_setting(&pairs), Some(1));
    }
}

//! Accuracy of a model on an evaluation dataset on disk (method.md section 7): a parallel decode-and-resize
//! pipeline with bounded prefetch feeding batched no-grad inference, scored per protocol. Unreadable images
//! are counted and listed, never dropped silently.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tch::{Kind as TchKind, Tensor};

use crate::data::eval_sets::{self, EvalItem, Kind, Protocol};
use crate::data::preprocess::{self, PreprocessConfig};
use crate::model::LoadedModel;

/// Per-class counts: `(correct top-1, images)`.
pub type PerClass = BTreeMap<usize, (u64, u64)>;

/// What one dataset evaluation measured.
#[derive(Debug)]
pub struct DatasetResult {
    pub top1: f64,
    pub top5: f64,
    /// Images scored.
    pub images: usize,
    /// Images that could not be read, with the reason; they are not in the accuracies.
    pub unreadable: Vec<(PathBuf, String)>,
    pub per_class: PerClass,
    pub images_per_second: f64,
}

/// Pipeline settings.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    pub batch_size: usize,
    /// Decode threads (default: all cores).
    pub workers: usize,
    /// Decoded images waiting for the model, at most.
    pub prefetch: usize,
    pub quiet: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PipelineOptions { batch_size: 64, workers: cores, prefetch: 256, quiet: false }
    }
}

/// Decodes and preprocesses `paths` on `workers` threads, handing `(index, tensor data or error)` to
/// `consume` in index order, with at most `prefetch` decoded images held.
pub fn decode_in_order(
    paths: &[&Path],
    cfg: &PreprocessConfig,
    opts: &PipelineOptions,
    mut consume: impl FnMut(usize, Result<Vec<f32>, String>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::sync_channel::<(usize, Result<Vec<f32>, String>)>(opts.prefetch.max(1));
    std::thread::scope(|scope| {
        for _ in 0..opts.workers.max(1) {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= paths.len() {
                    break;
                }
                let decoded = preprocess::load_rgb(paths[i]).map(|img| preprocess::eval_transform(&img, cfg));
                if tx.send((i, decoded.map_err(|e| e.to_string()))).is_err() {
                    break; // the consumer stopped
                }
            });
        }
        drop(tx);
        // Workers finish out of order; hold early arrivals until their turn.
        let mut waiting = BTreeMap::new();
        let mut want = 0;
        for (i, item) in rx {
            waiting.insert(i, item);
            while let Some(item) = waiting.remove(&want) {
                consume(want, item)?;
                want += 1;
            }
        }
        Ok(())
    })
}

/// A bar over `len` images labelled `prefix` (hidden when `quiet`); callers put the rate in its message.
pub fn progress_bar(len: usize, prefix: &'static str, quiet: bool) -> ProgressBar {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(len as u64) };
    bar.set_style(ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}").expect("static template"));
    bar.set_prefix(prefix);
    bar
}

/// Evaluates `loaded` on the dataset `kind` in `dir` under `protocol`.
pub fn evaluate(loaded: &LoadedModel, kind: Kind, dir: &Path, protocol: Protocol, opts: &PipelineOptions)
    -> anyhow::Result<DatasetResult> {
    let items = eval_sets::scan(kind, dir)?;
    let paths: Vec<&Path> = items.iter().map(|i| i.path.as_path()).collect();
    let (h, w) = loaded.preprocess.input_size;
    let bar = progress_bar(items.len(), kind.name(), opts.quiet);
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut pending: Vec<(usize, Vec<f32>)> = Vec::with_capacity(opts.batch_size);
    let run_batch = |pending: &mut Vec<(usize, Vec<f32>)>, tally: &mut Tally| -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let data: Vec<f32> = pending.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        let images = Tensor::from_slice(&data).view([pending.len() as i64, 3, h as i64, w as i64]);
        let logits = tch::no_grad(|| loaded.model.forward(&images.to_device(loaded.vs.device())))
            .to_device(tch::Device::Cpu)
            .to_kind(TchKind::Float);
        for (row, (index, _)) in pending.iter().enumerate() {
            let logits = Vec::<f32>::try_from(logits.get(row as i64))?;
            tally.add(kind, protocol, &items[*index], &logits);
        }
        pending.clear();
        Ok(())
    };
    decode_in_order(&paths, &loaded.preprocess, opts, |index, decoded| {
        match decoded {
            Ok(data) => pending.push((index, data)),
            Err(reason) => tally.unreadable.push((items[index].path.clone(), reason)),
        }
        if pending.len() >= opts.batch_size {
            run_batch(&mut pending, &mut tally)?;
        }
        bar.inc(1);
        bar.set_message(format!("{:.1} img/s", (index + 1) as f64 / started.elapsed().as_secs_f64()));
        Ok(())
    })?;
    run_batch(&mut pending, &mut tally)?;
    bar.finish_and_clear();
    let n = tally.images.max(1) as f64;
    Ok(DatasetResult {
        top1: 100.0 * tally.top1 as f64 / n,
        top5: 100.0 * tally.top5 as f64 / n,
        images: tally.images,
        unreadable: tally.unreadable,
        per_class: tally.per_class,
        images_per_second: items.len() as f64 / started.elapsed().as_secs_f64(),
    })
}

#[derive(Default)]
struct Tally {
    top1: u64,
    top5: u64,
    images: usize,
    unreadable: Vec<(PathBuf, String)>,
    per_class: PerClass,
}

impl Tally {
    fn add(&mut self, kind: Kind, protocol: Protocol, item: &EvalItem, logits: &[f32]) {
        let (top1, top5) = eval_sets::score(kind, protocol, logits, &item.target);
        self.top1 += top1 as u64;
        self.top5 += top5 as u64;
        self.images += 1;
        let entry = self.per_class.entry(item.target.class()).or_default();
        entry.0 += top1 as u64;
        entry.1 += 1;
    }
}

/// Top-1 accuracy (percent) over the classes in `classes` and over the others, from per-class counts:
/// the paper's finetuning-classes vs other-classes split (Tables 10-11).
pub fn split_by_classes(per_class: &PerClass, classes: &std::collections::HashSet<usize>) -> (Option<f64>, Option<f64>) {
    let (mut inside, mut outside) = ((0u64, 0u64), (0u64, 0u64));
    for (class, (correct, total)) in per_class {
        let bucket = if classes.contains(class) { &mut inside } else { &mut outside };
        bucket.0 += correct;
        bucket.1 += total;
    }
    let pct = |(c, t): (u64, u64)| (t > 0).then(|| 100.0 * c as f64 / t as f64);
    (pct(inside), pct(outside))
}

//! Top-1/top-5 accuracy: of samples held in memory, and of an evaluation dataset on disk (method.md
//! section 7), decoded ahead of the model by the pipeline (bounded prefetch), batched no-grad inference,
//! scored per protocol. Unreadable images are counted and listed, never dropped silently.
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use ndarray::Array3;
use tch::Kind as TchKind;

use super::{progress_bar, PipelineOptions};
use crate::data::eval_sets::{self, EvalItem, Kind, Protocol, Target};
use crate::data::{pipeline, stack, Batch, Sample};
use crate::image::{eval_transform, load_rgb, PreprocessConfig};
use crate::model::{LoadedModel, VisionTransformer};

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
    /// Every scored image's target with its top-1 and top-5 hit, for the class split of Tables 10-11.
    pub hits: Vec<(Target, bool, bool)>,
    pub images_per_second: f64,
}

/// An image file decoded and transformed for the model, or why it could not be.
pub fn decode(path: &Path, cfg: &PreprocessConfig) -> Result<Array3<f32>, String> {
    load_rgb(path).map(|img| eval_transform(&img, cfg)).map_err(|e| e.to_string())
}

/// Per sample held in memory: whether it is right at top-1 and at top-5.
pub fn hits(model: &VisionTransformer, samples: &[Sample], batch_size: usize) -> Vec<(bool, bool)> {
    let mut out = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(batch_size.max(1)) {
        let b = Batch::new(chunk, model.device());
        let logits = model.predict(&b.images);
        let k = logits.size()[1].min(5);
        let (_, best) = logits.topk(k, -1, true, true);
        let right = best.eq_tensor(&b.labels.unsqueeze(1)).to_device(tch::Device::Cpu);
        let column = |t: tch::Tensor| Vec::<bool>::try_from(t).expect("a bool vector of the batch");
        let (top1, top5) = (column(right.select(1, 0)), column(right.any_dim(1, false)));
        out.extend(top1.into_iter().zip(top5));
    }
    out
}

/// Top-1 and top-5 accuracy (percent) of per-sample `hits`.
pub fn percent(hits: &[(bool, bool)]) -> (f64, f64) {
    let n = hits.len().max(1) as f64;
    let count = |pick: fn(&(bool, bool)) -> bool| hits.iter().filter(|h| pick(h)).count() as f64;
    (100.0 * count(|h| h.0) / n, 100.0 * count(|h| h.1) / n)
}

/// Top-1 and top-5 accuracy (percent) of `samples` held in memory.
pub fn of_samples(model: &VisionTransformer, samples: &[Sample], batch_size: usize) -> (f64, f64) {
    percent(&hits(model, samples, batch_size))
}

/// The preprocessing of `protocol`: the checkpoint's own (standard) or the reference code's.
pub fn preprocess(loaded: &LoadedModel, protocol: Protocol) -> anyhow::Result<&PreprocessConfig> {
    match protocol {
        Protocol::Standard => Ok(&loaded.preprocess),
        Protocol::Reference if loaded.model.config().img_size == 224 => Ok(&PreprocessConfig::REFERENCE),
        Protocol::Reference => bail!(
            "model {} takes {size}x{size} inputs; the reference protocol's transform makes 224x224 ones (use \
             --protocol standard)",
            loaded.name,
            size = loaded.model.config().img_size
        ),
    }
}

/// Evaluates `loaded` on the dataset `kind` in `dir` under `protocol`: the images transformed as the
/// protocol says, the 1000 ImageNet logits scored. A model of another number of classes is refused.
pub fn of_dataset(
    loaded: &LoadedModel,
    kind: Kind,
    dir: &Path,
    protocol: Protocol,
    opts: &PipelineOptions,
) -> anyhow::Result<DatasetResult> {
    let classes = loaded.model.config().num_classes;
    if classes != eval_sets::NUM_CLASSES as i64 {
        bail!(
            "model {} has {classes} classes; {kind} is scored on the 1000 ImageNet-1k classes, so it needs a \
             1000-way checkpoint",
            loaded.name
        );
    }
    let cfg = preprocess(loaded, protocol)?;
    let items = eval_sets::scan(kind, dir)?;
    let bar = progress_bar(items.len(), kind.name(), opts.quiet);
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut pending: Vec<(usize, Array3<f32>)> = Vec::with_capacity(opts.batch_size);
    let run_batch = |pending: &mut Vec<(usize, Array3<f32>)>, tally: &mut Tally| -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let views: Vec<_> = pending.iter().map(|(_, image)| image.view()).collect();
        let images = stack(&views);
        let device = loaded.vs.device();
        let logits = opts
            .precision
            .run(device, || loaded.model.predict(&images.to_device(device)))
            .to_device(tch::Device::Cpu)
            .to_kind(TchKind::Float);
        for (row, (index, _)) in pending.iter().enumerate() {
            let logits = Vec::<f32>::try_from(logits.get(row as i64))?;
            tally.add(kind, protocol, &items[*index], &logits);
        }
        pending.clear();
        Ok(())
    };
    let work = |item: &EvalItem| decode(&item.path, cfg);
    pipeline::ordered(&items, opts.workers, opts.prefetch, work, |index, decoded| {
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
        hits: tally.hits,
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
    hits: Vec<(Target, bool, bool)>,
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
        self.hits.push((item.target.clone(), top1, top5));
    }
}

/// Images and their top-1 and top-5 hits on one side of the class split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitCounts {
    pub images: u64,
    pub top1: u64,
    pub top5: u64,
}

impl SplitCounts {
    /// Top-1 and top-5 in percent; None without images.
    pub fn percent(&self) -> Option<(f64, f64)> {
        let pct = |hits: u64| 100.0 * hits as f64 / self.images as f64;
        (self.images > 0).then(|| (pct(self.top1), pct(self.top5)))
    }
}

/// The paper's finetuning-classes vs other-classes split (Tables 10-11): `[inside, outside]` counts of
/// `hits`. An image is inside when one of its ImageNet classes (for ObjectNet: the classes its label maps
/// to) is among the finetuning classes `classes` (ImageNet indices).
pub fn split_by_classes(hits: &[(Target, bool, bool)], classes: &HashSet<usize>) -> [SplitCounts; 2] {
    let mut sides = [SplitCounts::default(); 2];
    for (target, top1, top5) in hits {
        let side = &mut sides[usize::from(!target.imagenet().iter().any(|c| classes.contains(c)))];
        side.images += 1;
        side.top1 += u64::from(*top1);
        side.top5 += u64::from(*top5);
    }
    sides
}

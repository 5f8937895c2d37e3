//! The segmentation test of paper Table 3 on ImageNet-segmentation (method.md section 7), run as the
//! reference's `imagenet_seg_eval.py` runs it: each image squashed to the model's input size (PIL
//! bilinear; its mask PIL nearest), normalised with the model's own mean/std (the reference's 0.5 is
//! `--reference-norm`), the GAE relevance of the predicted class, scored by [`SegmentationMetrics`].
//! The pipeline reads and transforms entries ahead of the model (bounded prefetch); an entry that cannot
//! be read is listed and skipped, never scored and never fatal.
use std::path::Path;
use std::time::Instant;

use anyhow::ensure;
use image::{GrayImage, RgbImage};

use super::segmentation::{add_samples, SegmentationMetrics};
use super::{progress_bar, PipelineOptions};
use crate::data::gtsegs::SegmentationFile;
use crate::data::{pipeline, Sample};
use crate::image::{gray_view, normalize_chw, on_mask, resize_exact, Interpolation, PreprocessConfig};
use crate::model::LoadedModel;

/// The dataset name of the test's rows in `results_long.csv`.
pub const DATASET: &str = "imagenet-segmentation";

/// The test's pipeline settings: the relevance needs a backward pass, so smaller batches than accuracy.
pub fn default_pipeline() -> PipelineOptions {
    PipelineOptions { batch_size: 16, prefetch: 64, ..PipelineOptions::default() }
}

#[derive(Debug)]
pub struct SegtestResult {
    pub metrics: SegmentationMetrics,
    /// Entries that could not be read (index in the file, reason); they are not in the metrics.
    pub unreadable: Vec<(usize, String)>,
    pub images_per_second: f64,
}

/// Runs the test of `loaded` on the `gtsegs_ijcv.mat` at `path`, on its first `limit` images or all of them
/// (the paper's 4276).
pub fn run(
    loaded: &LoadedModel,
    path: &Path,
    limit: Option<usize>,
    opts: &PipelineOptions,
) -> anyhow::Result<SegtestResult> {
    let file = SegmentationFile::open(path)?;
    let total = limit.map_or(file.len(), |n| n.min(file.len()));
    ensure!(total > 0, "{}: no images to test", path.display());
    let bar = progress_bar(total, "segmentation", opts.quiet);
    let started = Instant::now();
    let mut metrics = SegmentationMetrics::new();
    let mut unreadable = Vec::new();
    let batch_size = opts.batch_size.max(1);
    let mut pending: Vec<Sample> = Vec::with_capacity(batch_size);
    let indices: Vec<usize> = (0..total).collect();
    let cfg = &loaded.preprocess;
    let read = |&index: &usize| file.read(index).map(|(image, mask)| to_sample(&image, &mask, cfg));
    pipeline::ordered(&indices, opts.workers, opts.prefetch, read, |index, sample| {
        match sample {
            Ok(s) => pending.push(s),
            Err(e) => unreadable.push((index, format!("{e:#}"))),
        }
        if pending.len() >= batch_size || (index + 1 == total && !pending.is_empty()) {
            opts.precision.run(loaded.vs.device(), || add_samples(&loaded.model, &pending, &mut metrics))?;
            pending.clear();
        }
        bar.inc(1);
        bar.set_message(format!("{:.1} img/s", (index + 1) as f64 / started.elapsed().as_secs_f64()));
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(SegtestResult { metrics, unreadable, images_per_second: total as f64 / started.elapsed().as_secs_f64() })
}

/// The readable entries of the file's first `limit` (or all), transformed as the test transforms them, in
/// memory: what a loop of the relevance alone runs over (`harness bench-eval --segtest`).
pub fn preload(loaded: &LoadedModel, path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<Sample>> {
    let file = SegmentationFile::open(path)?;
    let total = limit.map_or(file.len(), |n| n.min(file.len()));
    Ok((0..total)
        .filter_map(|i| file.read(i).ok())
        .map(|(image, mask)| to_sample(&image, &mask, &loaded.preprocess))
        .collect())
}

/// The reference's transforms: `Resize((S, S))` (bilinear) on the image, `Resize((S, S), NEAREST)` on the
/// mask, then the model's normalisation.
fn to_sample(image: &RgbImage, mask: &GrayImage, cfg: &PreprocessConfig) -> Sample {
    let (h, w) = cfg.input_size;
    let image = resize_exact(image, w, h, Interpolation::Bilinear);
    let mask = on_mask(mask, |m| resize_exact(m, w, h, Interpolation::Nearest));
    Sample {
        image: normalize_chw(&image, cfg.mean, cfg.std),
        mask: gray_view(&mask).mapv(|v| f32::from(v != 0)),
        label: 0,
    }
}

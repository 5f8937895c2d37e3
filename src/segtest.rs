//! The segmentation test of paper Table 3 on ImageNet-segmentation (method.md section 7), run as the
//! reference's `imagenet_seg_eval.py` runs it: each image squashed to the model's input size (PIL
//! bilinear; its mask PIL nearest), normalised with the model's own mean/std (the reference's 0.5 is
//! `--reference-norm`), the GAE relevance of the predicted class, scored by [`SegmentationMetrics`].
//! A reader thread decodes ahead of the model with bounded prefetch; an entry that cannot be read is
//! listed and skipped, never scored and never fatal.
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::ensure;
use image::{GrayImage, RgbImage};

use crate::data::imagenet_seg::SegmentationFile;
use crate::data::preprocess::{self, Interpolation, PreprocessConfig};
use crate::data::Sample;
use crate::evaluate;
use crate::model::LoadedModel;
use crate::robustness;
use crate::segmentation::SegmentationMetrics;

/// The dataset name of the test's rows in `results_long.csv`.
pub const DATASET: &str = "imagenet-segmentation";

#[derive(Clone, Debug)]
pub struct SegtestOptions {
    pub batch_size: usize,
    /// Only the first `limit` images (a quick look; the paper uses all 4276).
    pub limit: Option<usize>,
    /// Decoded images waiting for the model, at most.
    pub prefetch: usize,
    pub quiet: bool,
}

impl Default for SegtestOptions {
    fn default() -> Self {
        SegtestOptions { batch_size: 16, limit: None, prefetch: 64, quiet: false }
    }
}

#[derive(Debug)]
pub struct SegtestResult {
    pub metrics: SegmentationMetrics,
    /// Entries that could not be read (index in the file, reason); they are not in the metrics.
    pub unreadable: Vec<(usize, String)>,
    pub images_per_second: f64,
}

/// Runs the test of `loaded` on the `gtsegs_ijcv.mat` at `path`.
pub fn run(loaded: &LoadedModel, path: &Path, opts: &SegtestOptions) -> anyhow::Result<SegtestResult> {
    let file = SegmentationFile::open(path)?;
    let total = opts.limit.map_or(file.len(), |n| n.min(file.len()));
    ensure!(total > 0, "{}: no images to test", path.display());
    let bar = robustness::progress_bar(total, "segmentation", opts.quiet);
    let started = Instant::now();
    let mut metrics = SegmentationMetrics::new();
    let mut unreadable = Vec::new();
    let (tx, rx) = mpsc::sync_channel(opts.prefetch.max(1));
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let (file, pre) = (&file, &loaded.preprocess);
        scope.spawn(move || {
            for index in 0..total {
                let sample = file.read(index).map(|(image, mask)| to_sample(&image, &mask, pre));
                if tx.send((index, sample)).is_err() {
                    break; // the model side stopped
                }
            }
        });
        let mut pending: Vec<Sample> = Vec::with_capacity(opts.batch_size.max(1));
        for (index, sample) in rx {
            match sample {
                Ok(s) => pending.push(s),
                Err(e) => unreadable.push((index, format!("{e:#}"))),
            }
            if pending.len() >= opts.batch_size.max(1) || (index + 1 == total && !pending.is_empty()) {
                evaluate::add_segmentation(&loaded.model, &pending, &mut metrics)?;
                pending.clear();
            }
            bar.inc(1);
            bar.set_message(format!("{:.1} img/s", (index + 1) as f64 / started.elapsed().as_secs_f64()));
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(SegtestResult { metrics, unreadable, images_per_second: total as f64 / started.elapsed().as_secs_f64() })
}

/// The reference's transforms: `Resize((S, S))` (bilinear) on the image, `Resize((S, S), NEAREST)` on the
/// mask, then the model's normalisation.
fn to_sample(image: &RgbImage, mask: &GrayImage, cfg: &PreprocessConfig) -> Sample {
    let (h, w) = cfg.input_size;
    let image = preprocess::resize_exact(image, w, h, Interpolation::Bilinear);
    let mask = preprocess::on_mask(mask, |m| preprocess::resize_exact(m, w, h, Interpolation::Nearest));
    Sample {
        image: preprocess::normalize_chw(&image, cfg.mean, cfg.std),
        mask: mask.as_raw().iter().map(|&v| f32::from(v != 0)).collect(),
        label: 0,
    }
}

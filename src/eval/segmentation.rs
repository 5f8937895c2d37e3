//! The segmentation test of paper Table 3: how well a relevance map, read as a foreground mask,
//! matches the ground truth (ImageNet-segmentation's, or the embedded benchmark's object masks). Follows the reference evaluation
//! (`SegmentationTest/imagenet_seg_eval.py` of hila-chefer/RobustViT, with `batch_pix_accuracy`,
//! `batch_intersection_union` and `get_ap_scores` of Transformer-Explainability's
//! `utils/metrices.py`), one image at a time:
//!
//! 1. The map is min-max normalised in `f32` (`(r - min) / (max - min)`, as the reference does on
//!    its float tensor). A constant map divides 0 by 0 there; the reference then zeroes the NaNs, so
//!    every pixel is predicted background and both AP score channels are 0. We do the same.
//! 2. A pixel is predicted foreground iff its normalised relevance is strictly greater than the
//!    image's mean normalised relevance (`Res.gt(Res.mean())`; ties go to background). The mean is
//!    summed in `f64` here, where the reference reduces in `f32`; the two only differ for a pixel
//!    within rounding of the mean.
//! 3. Pixel accuracy and IoU are accumulated over the dataset as integer sums: correct and labelled
//!    pixels, and per class (background, foreground) intersection and union. At the end
//!    `pixel accuracy = correct / (eps + labelled)`, `IoU_c = inter_c / (eps + union_c)` and
//!    `mIoU = (IoU_bg + IoU_fg) / 2`, with `eps = f64::EPSILON` (`np.spacing(1)`), exactly as the
//!    reference.
//! 4. Per-image AP: the reference builds a two-channel score map (channel 0 `1 - r`, channel 1 `r`)
//!    and a one-hot target (channel 0 = background, channel 1 = foreground), flattens *both*
//!    channels into one vector of 2N scores and 2N labels, and calls scikit-learn's
//!    `average_precision_score` once on it. So it is one AP over the pooled pixels of both classes,
//!    not the mean of a background AP and a foreground AP. We do exactly that, with
//!    [`average_precision`]; `1 - r` is computed in `f32` like the reference's tensor, since a tie
//!    between `1 - r` and some `r'` changes the AP. The pooled vector always holds N positives, so
//!    the AP is never undefined; NaN would still be mapped to 0 like the reference's `nan_to_num`.
//! 5. mAP is the plain mean of the per-image APs.
//!
//! All three results are fractions in [0, 1]; Table 3 reports them times 100.
use anyhow::{bail, ensure};
use ndarray::{ArrayView2, Ix2};

use crate::data::{array, Batch, Sample};
use crate::model::VisionTransformer;
use crate::relevance::{relevance, Graph, Target};

/// The test's metrics, in percent, as `results_long.csv` and Table 3 name them, in Table 3's order.
pub const METRICS: [&str; 3] = ["pixel_accuracy", "miou", "map"];

/// Dataset-wide accumulator of the segmentation test's metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SegmentationMetrics {
    correct: u64,
    labelled: u64,
    /// Index 0 background, 1 foreground.
    intersection: [u64; 2],
    union: [u64; 2],
    ap_sum: f64,
    images: u64,
}

impl SegmentationMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one image: `map` its relevance `[H, W]` (any finite values; normalised here as the
    /// reference does), `truth` its foreground mask of the same shape. Errors, without changing the
    /// totals, on empty input, a shape mismatch or a non-finite relevance.
    pub fn add(&mut self, map: ArrayView2<f32>, truth: ArrayView2<bool>) -> anyhow::Result<()> {
        ensure!(!map.is_empty(), "segmentation: empty relevance map");
        ensure!(map.dim() == truth.dim(), "segmentation: map is {:?}, mask {:?}", map.dim(), truth.dim());
        // Pixels in the same (row-major) order on both sides, whatever the views' strides.
        let (map, truth) = (map.iter().copied().collect::<Vec<f32>>(), truth.iter().copied().collect::<Vec<bool>>());
        if let Some(i) = map.iter().position(|v| !v.is_finite()) {
            bail!("segmentation: relevance at pixel {i} is {}", map[i]);
        }
        let min = map.iter().copied().fold(f32::INFINITY, f32::min);
        let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // max - min can overflow to infinity for extreme inputs; the reference would then produce
        // zeros and NaN, which we cannot mirror meaningfully, so refuse instead.
        let range = max - min;
        ensure!(range.is_finite(), "segmentation: relevance range {min}..{max} overflows f32");
        let normalised: Vec<f32> =
            if range > 0.0 { map.iter().map(|&v| (v - min) / range).collect() } else { vec![0.0; map.len()] };
        let mean = normalised.iter().map(|&v| f64::from(v)).sum::<f64>() / map.len() as f64;

        for (&r, &fg) in normalised.iter().zip(&truth) {
            // A constant map has no foreground: the reference's NaN comparisons are all false.
            let predicted = range > 0.0 && f64::from(r) > mean;
            let (p, t) = (usize::from(predicted), usize::from(fg));
            self.correct += u64::from(p == t);
            self.intersection[t] += u64::from(p == t);
            self.union[t] += 1;
            if p != t {
                self.union[p] += 1;
            }
        }
        self.labelled += map.len() as u64;

        let background = normalised.iter().map(|&r| if range > 0.0 { 1.0 - r } else { 0.0 });
        let scores: Vec<f32> = background.chain(normalised.iter().copied()).collect();
        let labels: Vec<bool> = truth.iter().map(|&fg| !fg).chain(truth.iter().copied()).collect();
        let ap = average_precision(&scores, &labels);
        self.ap_sum += if ap.is_nan() { 0.0 } else { ap };
        self.images += 1;
        Ok(())
    }

    /// Number of images added.
    /// Adds the totals of `other` (images measured apart, e.g. one class at a time).
    pub fn merge(&mut self, other: &SegmentationMetrics) {
        self.correct += other.correct;
        self.labelled += other.labelled;
        for k in 0..2 {
            self.intersection[k] += other.intersection[k];
            self.union[k] += other.union[k];
        }
        self.ap_sum += other.ap_sum;
        self.images += other.images;
    }

    pub fn images(&self) -> u64 {
        self.images
    }

    /// Correct pixels over all pixels, dataset-wide; 0 before any image.
    pub fn pixel_accuracy(&self) -> f64 {
        self.correct as f64 / (f64::EPSILON + self.labelled as f64)
    }

    /// Mean of background and foreground IoU, each from dataset-wide sums; 0 before any image.
    pub fn miou(&self) -> f64 {
        let iou = |c: usize| self.intersection[c] as f64 / (f64::EPSILON + self.union[c] as f64);
        (iou(0) + iou(1)) / 2.0
    }

    /// The three results in percent, named by [`METRICS`].
    pub fn percent(&self) -> [(&'static str, f64); 3] {
        let [pixel, miou, map] = METRICS;
        [(pixel, 100.0 * self.pixel_accuracy()), (miou, 100.0 * self.miou()), (map, 100.0 * self.map())]
    }

    /// Mean over images of the per-image AP; 0 before any image (where numpy's mean would be NaN).
    pub fn map(&self) -> f64 {
        if self.images == 0 {
            0.0
        } else {
            self.ap_sum / self.images as f64
        }
    }
}

/// The segmentation test of `model` over `samples` (their masks are the ground truth): the relevance
/// of each image's predicted class, `batch_size` images at a time.
pub fn of_samples(
    model: &VisionTransformer,
    samples: &[Sample],
    batch_size: usize,
) -> anyhow::Result<SegmentationMetrics> {
    let mut metrics = SegmentationMetrics::new();
    for chunk in samples.chunks(batch_size.max(1)) {
        add_samples(model, chunk, &mut metrics)?;
    }
    Ok(metrics)
}

/// Adds one batch of `samples` to the test's totals.
pub fn add_samples(
    model: &VisionTransformer,
    samples: &[Sample],
    metrics: &mut SegmentationMetrics,
) -> anyhow::Result<()> {
    let b = Batch::new(samples, model.device());
    let maps = relevance(model, &b.images, Target::Predicted, Graph::Detached)?.maps.to_device(tch::Device::Cpu);
    for (i, s) in samples.iter().enumerate() {
        let map = array::<Ix2>(&maps.get(i as i64).squeeze_dim(0))?;
        metrics.add(map.view(), s.mask.mapv(|m| m > 0.5).view())?;
    }
    Ok(())
}

/// scikit-learn's `average_precision_score` for binary labels: `sum_k (R_k - R_{k-1}) P_k` over the
/// distinct score values taken as thresholds in decreasing order, step-wise, without
/// interpolation; tied scores form one threshold. Matches scikit-learn's edge cases: no positive
/// gives 0 (scikit-learn warns and sets recall to 1, which yields 0; older versions gave NaN, which
/// the reference turned into 0 anyway). Input scikit-learn rejects (empty, length mismatch, a NaN
/// or infinite score) gives NaN.
pub fn average_precision(scores: &[f32], truth: &[bool]) -> f64 {
    if scores.is_empty() || scores.len() != truth.len() || scores.iter().any(|s| !s.is_finite()) {
        return f64::NAN;
    }
    let positives = truth.iter().filter(|&&t| t).count();
    if positives == 0 {
        return 0.0;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut seen, mut previous_tp, mut ap) = (0usize, 0usize, 0usize, 0.0f64);
    for (k, &i) in order.iter().enumerate() {
        tp += usize::from(truth[i]);
        seen += 1;
        // Close a threshold at the end of a run of equal scores (`==`, so -0.0 ties with 0.0 as in
        // numpy; total_cmp puts them next to each other).
        let last_of_run = order.get(k + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_run && tp > previous_tp {
            ap += (tp - previous_tp) as f64 / positives as f64 * (tp as f64 / seen as f64);
            previous_tp = tp;
        }
    }
    ap
}

//! Evaluating a model on in-memory samples: top-1/top-5 accuracy, and the segmentation test (GAE relevance
//! of the predicted class against the true foreground masks).
use tch::{Kind, Tensor};

use crate::data::Sample;
use crate::model::VisionTransformer;
use crate::ops;
use crate::segmentation::SegmentationMetrics;
use crate::train::batch;

/// Top-1 and top-5 accuracy in percent.
pub fn accuracy(model: &VisionTransformer, samples: &[Sample], batch_size: usize) -> (f64, f64) {
    let device = model.device();
    let (mut top1, mut top5) = (0i64, 0i64);
    for chunk in samples.chunks(batch_size.max(1)) {
        let b = batch(chunk, device);
        let logits = tch::no_grad(|| model.forward(&b.images));
        let k = logits.size()[1].min(5);
        let (_, best) = logits.topk(k, -1, true, true);
        let hits = best.eq_tensor(&b.labels.unsqueeze(1));
        top1 += hits.narrow(1, 0, 1).sum(Kind::Int64).int64_value(&[]);
        top5 += hits.any_dim(1, false).sum(Kind::Int64).int64_value(&[]);
    }
    let n = samples.len().max(1) as f64;
    (100.0 * top1 as f64 / n, 100.0 * top5 as f64 / n)
}

/// What the GAE relevance of one target class per image gives, all detached.
pub struct Relevance {
    /// `[B,C]`
    pub logits: Tensor,
    /// `[B]`: the explained class of each image.
    pub classes: Tensor,
    /// `[B,P]`: `gae_relevance`, the CLS row over the patches.
    pub patches: Tensor,
    /// `[B,1,S,S]` in [0,1]: `relevance_map` at the input's size.
    pub maps: Tensor,
}

/// GAE relevance of `classes` (`[B]`; `None`: each image's predicted class).
pub fn relevance(model: &VisionTransformer, images: &Tensor, classes: Option<&Tensor>) -> Result<Relevance, ops::OpError> {
    let out = model.forward_with_attention(images);
    let classes = classes.map_or_else(|| out.logits.argmax(-1, false), Tensor::shallow_clone);
    let score = out.logits.gather(1, &classes.unsqueeze(1), false).sum(Kind::Float);
    let grads = Tensor::run_backward(&[score], &out.attention, false, false);
    let patches = ops::gae_relevance(&out.attention, &grads, 0)?;
    let c = model.config();
    let side = images.size()[2];
    let maps = ops::relevance_map(&patches, (c.grid(), c.grid()), (side, side), 1e-8)?;
    Ok(Relevance { logits: out.logits.detach(), classes, patches: patches.detach(), maps: maps.detach() })
}

/// The segmentation test over `samples` (their masks are the ground truth).
pub fn segmentation(model: &VisionTransformer, samples: &[Sample], batch_size: usize) -> anyhow::Result<SegmentationMetrics> {
    let mut metrics = SegmentationMetrics::new();
    for chunk in samples.chunks(batch_size.max(1)) {
        add_segmentation(model, chunk, &mut metrics)?;
    }
    Ok(metrics)
}

/// Adds one batch of `samples` to the segmentation test's totals.
pub fn add_segmentation(model: &VisionTransformer, samples: &[Sample], metrics: &mut SegmentationMetrics) -> anyhow::Result<()> {
    let b = batch(samples, model.device());
    let maps = relevance(model, &b.images, None)?.maps.to_device(tch::Device::Cpu);
    for (i, s) in samples.iter().enumerate() {
        let map = Vec::<f32>::try_from(maps.get(i as i64).flatten(0, -1))?;
        let truth: Vec<bool> = s.mask.iter().map(|&m| m > 0.5).collect();
        metrics.add(&map, &truth)?;
    }
    Ok(())
}

//! The ImageNet-S finetuning job behind `harness finetune` and the real study: draw the split, decode and
//! cache the images once, run the training loop with the chosen method.
use std::path::{Path, PathBuf};

use anyhow::Context;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::imagenet_s::{self, Item, MaskResize, MaskSource, Pair, SplitConfig, TransformConfig};
use crate::data::Sample;
use crate::model::LoadedModel;
use crate::train::methods::{CrossEntropy, Method};
use crate::train::{self, RunOptions, Summary, TrainConfig, TrainSet};

/// Where the data is and how to read it.
#[derive(Clone, Debug)]
pub struct DataConfig {
    pub images: PathBuf,
    pub masks: PathBuf,
    pub split: SplitConfig,
    pub mask_resize: MaskResize,
}

/// The drawn split as the run manifest records it: the classes and images each side used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSplit {
    pub images: PathBuf,
    pub masks: PathBuf,
    /// Where the masks were read, when not from `masks` (whose listing drew the images).
    #[serde(default)]
    pub masks_from: Option<PathBuf>,
    pub mask_source: MaskSource,
    pub mask_resize: MaskResize,
    pub seed: u64,
    /// The wnids of the training classes (the "train classes" of the paper's Tables 10-11).
    pub train_classes: Vec<String>,
    pub val_classes: Vec<String>,
    pub train_images: Vec<PathBuf>,
    pub val_images: Vec<PathBuf>,
    pub dropped_masks: usize,
    pub short_classes: Vec<String>,
}

/// Training pairs resized once to R x R; each epoch draws its crop and flip from the sample seed.
pub struct ImagenetSTrain {
    pairs: Vec<(Pair, i64)>,
    transform: TransformConfig,
}

impl ImagenetSTrain {
    /// Decodes, validates and resizes `items` on all cores.
    pub fn load(items: &[Item], source: MaskSource, transform: &TransformConfig) -> anyhow::Result<Self> {
        let pairs = items
            .par_iter()
            .map(|item| Ok((imagenet_s::train_resized(&imagenet_s::load_pair(item, source)?, transform), item.label)))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("loading training data")?;
        Ok(ImagenetSTrain { pairs, transform: *transform })
    }
}

impl TrainSet for ImagenetSTrain {
    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn sample(&self, index: usize, seed: u64) -> anyhow::Result<Sample> {
        let (pair, label) = &self.pairs[index];
        Ok(imagenet_s::train_crop_flip(pair, *label, &self.transform, seed))
    }
}

/// The validation images with their masks, decoded on all cores with the evaluation transform.
fn val_samples(items: &[Item], source: MaskSource, transform: &TransformConfig) -> anyhow::Result<Vec<Sample>> {
    items
        .par_iter()
        .map(|item| Ok(imagenet_s::eval_sample(&imagenet_s::load_pair(item, source)?, item.label, transform)))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("loading validation data")
}

/// The transform of `loaded` for its finetuning data.
fn transform(loaded: &LoadedModel, data: &DataConfig) -> TransformConfig {
    TransformConfig {
        size: loaded.model.config().img_size as u32,
        mean: loaded.preprocess.mean,
        std: loaded.preprocess.std,
        mask_resize: data.mask_resize,
    }
}

/// The top-1 accuracy (a fraction) of `loaded` on the validation split of `data`, as the training loop
/// measures it: what a run must stay close to under an accuracy floor.
pub fn val_accuracy(loaded: &LoadedModel, data: &DataConfig) -> anyhow::Result<f64> {
    let split = imagenet_s::split(&data.images, &data.masks, &data.split)?;
    let val = val_samples(&split.val, data.split.source, &transform(loaded, data))?;
    let plain = Method::CrossEntropy(CrossEntropy { temperature: 1.0 });
    Ok(train::evaluate(loaded, &plain, &val, 8)?.1)
}

/// Runs the whole job; the run manifest records the split.
pub fn run(
    loaded: &LoadedModel,
    data: &DataConfig,
    cfg: &TrainConfig,
    out: &Path,
    mut opts: RunOptions,
) -> anyhow::Result<Summary> {
    let split = imagenet_s::split(&data.images, &data.masks, &data.split)?;
    let transform = transform(loaded, data);
    eprintln!(
        "data: {} training images from {} classes, {} validation images from {} classes{}",
        split.train.len(),
        split.train_wnids.len(),
        split.val.len(),
        split.val_wnids.len(),
        if split.dropped_masks > 0 {
            format!(", {} drawn images skipped for their masks (too small or not made)", split.dropped_masks)
        } else {
            String::new()
        }
    );
    let source = data.split.source;
    let train_set = ImagenetSTrain::load(&split.train, source, &transform)?;
    let val = val_samples(&split.val, source, &transform)?;
    opts.data = Some(DataSplit {
        images: data.images.clone(),
        masks: data.masks.clone(),
        masks_from: data.split.masks_from.clone(),
        mask_source: source,
        mask_resize: data.mask_resize,
        seed: data.split.seed,
        train_images: split.train.iter().map(|i| i.image.clone()).collect(),
        val_images: split.val.iter().map(|i| i.image.clone()).collect(),
        train_classes: split.train_wnids,
        val_classes: split.val_wnids,
        dropped_masks: split.dropped_masks,
        short_classes: split.short_classes,
    });
    train::finetune(loaded, &train_set, &val, cfg, out, &opts)
}

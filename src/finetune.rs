//! The ImageNet-S finetuning job behind `harness finetune`: split the data, decode and cache it, run the
//! training loop with the chosen method.
use std::path::PathBuf;

use anyhow::Context;

use crate::data::imagenet_s::{self, Item, MaskResize, MaskSource, Pair, SplitConfig, TransformConfig};
use crate::data::Sample;
use crate::model::LoadedModel;
use crate::train::{self, RunOptions, Summary, TrainConfig, TrainSet};

/// Where the data is and how to read it.
#[derive(Clone, Debug)]
pub struct DataConfig {
    pub images: PathBuf,
    pub masks: PathBuf,
    pub split: SplitConfig,
    pub mask_resize: MaskResize,
}

/// Training pairs resized once to R x R; each epoch draws its crop and flip from the sample seed.
pub struct ImagenetSTrain {
    pairs: Vec<(Pair, i64)>,
    transform: TransformConfig,
}

impl ImagenetSTrain {
    /// Decodes, validates and resizes `items` on all cores.
    pub fn load(items: &[Item], source: MaskSource, transform: &TransformConfig) -> anyhow::Result<Self> {
        let pairs = parallel_map(items, |item| {
            let pair = imagenet_s::load_pair(item, source)?;
            Ok((imagenet_s::train_resized(&pair, transform), item.label))
        })
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

/// Applies `f` to every item on all cores, keeping order; the first error wins.
fn parallel_map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> anyhow::Result<U> + Sync) -> anyhow::Result<Vec<U>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.chunks(chunk).map(|c| scope.spawn(|| c.iter().map(&f).collect::<anyhow::Result<Vec<U>>>())).collect();
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            out.extend(h.join().expect("decode worker panicked")?);
        }
        Ok(out)
    })
}

/// Runs the whole job; `opts.manifest` is extended with the split.
pub fn run(loaded: &LoadedModel, data: &DataConfig, cfg: &TrainConfig, out: &std::path::Path, mut opts: RunOptions)
    -> anyhow::Result<Summary> {
    let split = imagenet_s::split(&data.images, &data.masks, &data.split)?;
    let size = loaded.model.config().img_size as u32;
    let transform = TransformConfig {
        size,
        mean: loaded.preprocess.mean,
        std: loaded.preprocess.std,
        mask_resize: data.mask_resize,
    };
    eprintln!(
        "data: {} training images from {} classes, {} validation images from {} classes{}",
        split.train.len(),
        split.train_wnids.len(),
        split.val.len(),
        split.val_wnids.len(),
        if split.dropped_masks > 0 { format!(", {} masks dropped as too small", split.dropped_masks) } else { String::new() }
    );
    let source = data.split.source;
    let train_set = ImagenetSTrain::load(&split.train, source, &transform)?;
    let val = parallel_map(&split.val, |item| {
        Ok(imagenet_s::eval_sample(&imagenet_s::load_pair(item, source)?, item.label, &transform))
    })
    .context("loading validation data")?;
    if let serde_json::Value::Object(map) = &mut opts.manifest {
        map.insert("data".into(), serde_json::json!({
            "images": data.images, "masks": data.masks, "seed": data.split.seed,
            "train_classes": split.train_wnids, "val_classes": split.val_wnids,
            "train_images": split.train.iter().map(|i| &i.image).collect::<Vec<_>>(),
            "val_images": split.val.iter().map(|i| &i.image).collect::<Vec<_>>(),
            "dropped_masks": split.dropped_masks, "short_classes": split.short_classes,
            "mask_resize": format!("{:?}", data.mask_resize),
        }));
    }
    train::finetune(loaded, &train_set, &val, cfg, out, &opts)
}

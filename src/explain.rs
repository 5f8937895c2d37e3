//! Relevance pictures like the paper's Figures 1-3 and 6: the GAE relevance map of a class blended over
//! the network's input with a perceptual colour map (inferno), captioned with the model's prediction and
//! its probability; one row per image, one tile per model, so that an original and a finetuned model sit
//! side by side.
use std::path::{Path, PathBuf};

use anyhow::Context;
use image::RgbImage;
use ndarray::{Array2, ArrayView2, Ix3};
use ndarray_npy::WriteNpyExt;
use tch::{Kind, Tensor};

use crate::atomic_write;
use crate::data::array;
use crate::eval::predict;
use crate::image::{denormalize_chw, heatmap, write_png};
use crate::model::{LoadedModel, VisionTransformer};
use crate::relevance::{relevance, Graph, Target};

/// Weight of the heatmap in the blend.
pub const ALPHA: f32 = 0.5;
/// Pixels between tiles and rows.
pub const GAP: u32 = 4;

/// One model's explanation of one image.
#[derive(Clone, Debug)]
pub struct Explained {
    /// The class explained.
    pub class: i64,
    /// Softmax probability of `class`.
    pub probability: f64,
    /// The class with the highest logit.
    pub predicted: i64,
    /// `gae_relevance` over the patches, `[grid, grid]`.
    pub patches: Array2<f32>,
    /// The relevance map at the input's size, in [0, 1]: `[H, W]`.
    pub map: Array2<f32>,
}

/// Explains each image of `images` (`[B,3,S,S]`, normalised) by `model`: `classes` one per image, or
/// `None` for each image's predicted class.
pub fn explain(model: &VisionTransformer, images: &Tensor, classes: Option<&[i64]>) -> anyhow::Result<Vec<Explained>> {
    let device = model.device();
    let classes = classes.map(|c| Tensor::from_slice(c).to_device(device));
    let target = classes.as_ref().map_or(Target::Predicted, Target::Classes);
    let r = relevance(model, &images.to_device(device), target, Graph::Detached)?;
    let cpu = tch::Device::Cpu;
    let probabilities = r.logits.softmax(-1, Kind::Float).to_device(cpu);
    let predicted = Vec::<i64>::try_from(r.logits.argmax(-1, false).to_device(cpu))?;
    let explained = Vec::<i64>::try_from(r.classes.to_device(cpu))?;
    let grid = model.config().grid();
    (0..explained.len())
        .map(|i| {
            let row = i as i64;
            Ok(Explained {
                class: explained[i],
                probability: probabilities.double_value(&[row, explained[i]]),
                predicted: predicted[i],
                patches: array(&r.patches.get(row).view([grid, grid]))?,
                map: array(&r.maps.get(row).squeeze_dim(0))?,
            })
        })
        .collect()
}

/// `image`, enlarged `zoom` times (nearest neighbour, for tiny inputs), with caption lines under it.
pub fn captioned(image: &RgbImage, caption: &[String], zoom: u32) -> RgbImage {
    let image = heatmap::upscale_nearest(image, zoom);
    let strip = heatmap::caption_strip(image.width(), caption, 1);
    heatmap::vstack(&[image, strip], 0)
}

/// The heatmap of `map` (`[H, W]`, the image's size) over `image`, enlarged `zoom` times, captioned.
pub fn tile(image: &RgbImage, map: ArrayView2<f32>, caption: &[String], zoom: u32) -> anyhow::Result<RgbImage> {
    let blended = heatmap::overlay(image, map, ALPHA).map_err(anyhow::Error::msg)?;
    Ok(captioned(&blended, caption, zoom))
}

/// Caption of an explanation: `who`, the class (its name where `name` knows it) and the probability.
pub fn caption(who: &str, e: &Explained, name: impl Fn(i64) -> String) -> Vec<String> {
    let mut lines =
        vec![who.to_string(), format!("{} {}", e.class, name(e.class)), format!("p = {:.3}", e.probability)];
    if e.predicted != e.class {
        lines.push(format!("(predicts {})", e.predicted));
    }
    lines
}

/// What [`explain_files`] wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// One PNG per image: the input, then one captioned heatmap per model.
    pub pictures: Vec<PathBuf>,
    /// All rows in one PNG, when there is more than one image.
    pub grid: Option<PathBuf>,
    /// The raw relevance (`gae_relevance`, `[grid, grid]` float32) per image and model.
    pub arrays: Vec<PathBuf>,
    /// Images that could not be read, with the reason; nothing was written for them.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Explains every image file with every model (`(label, model)`, the first model's preprocessing for
/// all), the class `class` or each model's prediction, into `out`: `<stem>.png`, `<stem>.<label>.npy`
/// and `grid.png`. `names` are class names by index (captions show the part before the first comma).
pub fn explain_files(
    models: &[(&str, &LoadedModel)],
    images: &[PathBuf],
    class: Option<i64>,
    names: Option<&[String]>,
    out: &Path,
) -> anyhow::Result<Written> {
    let Some((_, first)) = models.first() else { anyhow::bail!("explain: no model given") };
    for (label, m) in models {
        let classes = m.model.config().num_classes;
        if let Some(c) = class.filter(|&c| c < 0 || c >= classes) {
            anyhow::bail!("class {c} is out of range: the {label} model has {classes} classes");
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let pre = &first.preprocess;
    let (h, w) = pre.input_size;
    let name = |k: i64| {
        names
            .and_then(|n| n.get(k as usize))
            .map_or_else(String::new, |n| n.split(',').next().unwrap_or_default().to_string())
    };
    let mut written = Written::default();
    let mut rows = Vec::new();
    let mut stems = std::collections::HashMap::<String, usize>::new();
    for path in images {
        let input = match predict::image_tensor(path, pre) {
            Ok(t) => t,
            Err(e) => {
                written.unreadable.push((path.clone(), format!("{e:#}")));
                continue;
            }
        };
        let stem = path.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
        let seen = stems.entry(stem.clone()).or_default();
        *seen += 1;
        let stem = if *seen == 1 { stem } else { format!("{stem}-{seen}") };
        let rgb = denormalize_chw(array::<Ix3>(&input.squeeze_dim(0))?.view(), pre.mean, pre.std);
        let file_name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut tiles = vec![captioned(&rgb, &[file_name, format!("{w}x{h} input")], 1)];
        for (label, m) in models {
            let e = explain(&m.model, &input, class.map(|c| vec![c]).as_deref())?.remove(0);
            tiles.push(tile(&rgb, e.map.view(), &caption(label, &e, name), 1)?);
            let npy_path = out.join(format!("{stem}.{label}.npy"));
            let mut bytes = Vec::new();
            e.patches.write_npy(&mut bytes).with_context(|| format!("encoding {}", npy_path.display()))?;
            atomic_write::write(&npy_path, &bytes).with_context(|| format!("writing {}", npy_path.display()))?;
            written.arrays.push(npy_path);
        }
        let row = heatmap::hstack(&tiles, GAP);
        let png = out.join(format!("{stem}.png"));
        write_png(&png, &row)?;
        written.pictures.push(png);
        rows.push(row);
    }
    if rows.len() > 1 {
        let grid = out.join("grid.png");
        write_png(&grid, &heatmap::vstack(&rows, GAP))?;
        written.grid = Some(grid);
    }
    Ok(written)
}

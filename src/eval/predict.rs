//! Top-k classification of image files with a loaded model, and its CSV.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tch::{Kind, Tensor};

use crate::atomic_write;
use crate::data::{imagenet, stack};
use crate::image::{eval_transform, load_rgb, PreprocessConfig};
use crate::model::LoadedModel;

/// One row of a prediction: rank 1 is the most probable class.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub image: PathBuf,
    pub rank: usize,
    pub class_index: i64,
    pub probability: f64,
    pub class_name: Option<String>,
}

/// Class names for a model: a file with one name per line in index order, else ImageNet's for a 1000-class
/// model, else none.
pub fn class_names(file: Option<&Path>, num_classes: i64) -> anyhow::Result<Option<Vec<String>>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading class names {}", path.display()))?;
        let names: Vec<String> = text.lines().map(str::to_string).collect();
        if names.len() as i64 != num_classes {
            bail!("{}: {} class names for a model with {num_classes} classes", path.display(), names.len());
        }
        return Ok(Some(names));
    }
    Ok((num_classes == 1000).then(|| imagenet::classes().iter().map(|c| c.name.to_string()).collect()))
}

/// The model's input tensor `[1,3,H,W]` for an image file.
pub fn image_tensor(path: &Path, cfg: &PreprocessConfig) -> anyhow::Result<Tensor> {
    Ok(stack(&[eval_transform(&load_rgb(path)?, cfg).view()]))
}

/// The `topk` most probable classes of each image.
pub fn predict(
    loaded: &LoadedModel,
    images: &[PathBuf],
    topk: usize,
    names: Option<&[String]>,
) -> anyhow::Result<Vec<Prediction>> {
    let num_classes = loaded.model.config().num_classes;
    let k = topk.clamp(1, num_classes as usize) as i64;
    let mut rows = Vec::with_capacity(images.len() * k as usize);
    for path in images {
        let input = image_tensor(path, &loaded.preprocess)?.to_device(loaded.vs.device());
        let probs = loaded.model.predict(&input).softmax(-1, Kind::Float).get(0);
        let (values, indices) = probs.topk(k, 0, true, true);
        for r in 0..k {
            let class_index = indices.int64_value(&[r]);
            rows.push(Prediction {
                image: path.clone(),
                rank: r as usize + 1,
                class_index,
                probability: values.double_value(&[r]),
                class_name: names.map(|n| n[class_index as usize].clone()),
            });
        }
    }
    Ok(rows)
}

/// Writes `image,rank,class_index,probability[,class_name]` atomically.
pub fn write_csv(path: &Path, rows: &[Prediction]) -> anyhow::Result<()> {
    let with_names = rows.iter().any(|r| r.class_name.is_some());
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["image", "rank", "class_index", "probability"];
    if with_names {
        header.push("class_name");
    }
    w.write_record(&header)?;
    for r in rows {
        let mut record = vec![
            r.image.display().to_string(),
            r.rank.to_string(),
            r.class_index.to_string(),
            format!("{:.6}", r.probability),
        ];
        if with_names {
            record.push(r.class_name.clone().unwrap_or_default());
        }
        w.write_record(&record)?;
    }
    let bytes = w.into_inner().context("finishing the CSV")?;
    atomic_write::write(path, &bytes)?;
    Ok(())
}

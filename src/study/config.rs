//! The study file of `harness compare --data STUDY.toml`: real checkpoints, the finetuning data, the
//! evaluation datasets.
//!
//! ```toml
//! [imagenet_s]                       # finetuning data (method.md section 5)
//! images = "/data/imagenet/train"    # <images>/<wnid>/<name>.JPEG
//! masks = "/data/ImageNetS919/train-semi-segmentation"
//! mask_source = "imagenet-s"         # or "binary" (e.g. TokenCut masks)
//! # masks = "tokencut"               # only the paper's "not annotated" rows: masks of every image made
//! seed = 0                           # once into OUT/masks-tokencut by the [tokencut] section's model
//!
//! # [tokencut]                        # the "not annotated" rows (harness masks): with a masks folder, beside
//!                                     # the annotated rows, from the same drawn images (their masks made once
//!                                     # into OUT/masks-tokencut); with masks = "tokencut", alone
//! # checkpoint = "/weights/dino_vitb16"   # a self-supervised ViT, e.g. timm's vit_base_patch16_224.dino
//! # model = "vit_base_patch16_224"   # optional, when its config.json names none
//! # tau = 0.2                        # optional
//! # min_pixels = 520                 # optional: smaller masks (at 224x224) are not written, so not drawn
//!
//! [[models]]
//! name = "vit_base_patch16_224.orig_in21k_ft_in1k"   # timm name and weight tag
//! # architecture = "vit_base_patch16_224"  # the timm name, when `name` is a label of your own
//! checkpoint = "/weights/vit_base"   # timm hub folder, .safetensors or .pth
//! preset = "vit-b"                   # the paper's settings for it (default: looked up by name)
//! # Settings the paper does not give for this model, or that replace the paper's (each optional):
//! # ours = { lr = 3e-6 }
//! # gradmask = { lr = 2e-4, lambda_bg = 50.0, lambda_cls = 3e-9 }
//! # rrr = { lr = 2e-6, lambda_bg = 1e-10, lambda_cls = 2e-6 }
//!
//! [[datasets]]                        # evaluation (harness eval kinds)
//! kind = "imagenet-a"
//! path = "/data/imagenet-a"
//!
//! [segmentation]                      # optional: the segmentation test (Table 3)
//! path = "/data/gtsegs_ijcv.mat"
//! limit = 500                        # optional: only the first images (default: all 4276)
//!
//! [finetune]                          # optional (every field optional)
//! epochs = 10                        # paper: 50
//! train_classes = 100                # paper: 500
//! per_class = 3                      # paper: 3
//! val_per_class = 1                  # paper: 1
//! grid = [0.3, 1.0, 3.0]             # also try these multiples of each method's setting (module doc of plan.rs)
//! ```
//! Top-level keys: `protocol = "reference"` evaluates with the reference code's transform and scoring
//! (default `"standard"`: each checkpoint's own transform, the standard scoring; `harness eval --protocol`);
//! `max_unreadable = 0.01` sets the share of a dataset's images that may be unreadable before the study
//! stops (default 1%).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::data::eval_sets::{Kind, Protocol};
use crate::data::imagenet_s::MaskSource;
use crate::train::methods::MethodKind;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    pub imagenet_s: ImagenetS,
    pub models: Vec<ModelEntry>,
    #[serde(default)]
    pub datasets: Vec<DatasetEntry>,
    pub segmentation: Option<SegmentationEntry>,
    #[serde(default)]
    pub finetune: FinetuneOverrides,
    /// The evaluation protocol (default standard).
    pub protocol: Option<Protocol>,
    /// The share of a dataset's images that may be unreadable before the study stops.
    pub max_unreadable: Option<f64>,
    /// How to make the "not annotated" rows' finetuning masks (TokenCut's).
    pub tokencut: Option<TokenCutEntry>,
}

/// The "not annotated" rows: finetuning masks made by TokenCut from this self-supervised ViT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCutEntry {
    pub checkpoint: PathBuf,
    pub model: Option<String>,
    pub tau: Option<f64>,
    pub min_pixels: Option<u32>,
}

/// The value of `imagenet_s.masks` that asks for TokenCut masks only.
pub const TOKENCUT: &str = "tokencut";
/// Where a study makes its TokenCut masks, inside its output folder.
pub const TOKENCUT_MASKS: &str = "masks-tokencut";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagenetS {
    pub images: PathBuf,
    pub masks: PathBuf,
    #[serde(default = "default_source")]
    pub mask_source: MaskSource,
    #[serde(default)]
    pub seed: u64,
}

fn default_source() -> MaskSource {
    MaskSource::ImagenetS
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The model's name in the tables, and its timm name (with weight tag) unless `architecture` is given.
    pub name: String,
    /// The timm name of the network, when `name` is a label of your own.
    pub architecture: Option<String>,
    pub checkpoint: PathBuf,
    pub preset: Option<String>,
    pub ours: Option<OursSettings>,
    pub gradmask: Option<BaselineSettings>,
    pub rrr: Option<BaselineSettings>,
}

/// The method's setting for one model, where the study file gives it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OursSettings {
    pub lr: f64,
}

/// A baseline's setting for one model, where the study file gives it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSettings {
    pub lr: f64,
    pub lambda_bg: f64,
    pub lambda_cls: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    pub kind: Kind,
    pub path: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentationEntry {
    pub path: PathBuf,
    pub limit: Option<usize>,
}

/// Departures from the paper's finetuning protocol; unset fields keep the paper's value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneOverrides {
    pub epochs: Option<usize>,
    pub train_classes: Option<usize>,
    pub per_class: Option<usize>,
    pub val_per_class: Option<usize>,
    /// Multiples of each method's setting to try (LR for the method, lambda_bg for the baselines); the run
    /// kept is chosen by one rule for every method (plan.rs).
    pub grid: Option<Vec<f64>>,
}

impl ModelEntry {
    /// The timm name the checkpoint is loaded as.
    pub fn architecture(&self) -> &str {
        self.architecture.as_deref().unwrap_or(&self.name)
    }
}

impl StudyConfig {
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(Protocol::Standard)
    }

    pub fn max_unreadable(&self) -> f64 {
        self.max_unreadable.unwrap_or(crate::eval::MAX_UNREADABLE)
    }

    pub fn grid(&self) -> &[f64] {
        self.finetune.grid.as_deref().unwrap_or(&[1.0])
    }

    /// The finetuning masks the study's rows use: the annotated ones, TokenCut's ("not annotated"), or
    /// both side by side.
    pub fn mask_sets(&self) -> Vec<MaskSet> {
        match (self.tokencut_only(), self.tokencut.is_some()) {
            (true, _) => vec![MaskSet::NotAnnotated],
            (false, true) => vec![MaskSet::Annotated, MaskSet::NotAnnotated],
            (false, false) => vec![MaskSet::Annotated],
        }
    }

    /// Whether `masks = "tokencut"`: the study has no annotated masks.
    pub fn tokencut_only(&self) -> bool {
        self.imagenet_s.masks == Path::new(TOKENCUT)
    }

    /// The folder of the study's TokenCut masks, for a study writing into `out`.
    pub fn tokencut_masks(&self, out: &Path) -> PathBuf {
        out.join(TOKENCUT_MASKS)
    }
}

/// Which masks a finetuned row was trained with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaskSet {
    /// The study's mask folder (human annotation).
    #[default]
    Annotated,
    /// TokenCut's, made by the study: the paper's "not annotated" rows.
    NotAnnotated,
}

impl MaskSet {
    pub fn name(self) -> &'static str {
        match self {
            MaskSet::Annotated => "annotated",
            MaskSet::NotAnnotated => "not annotated",
        }
    }

    /// A finetuned row's name: the method's, marked for TokenCut's masks.
    pub fn label(self, method: MethodKind) -> String {
        match self {
            MaskSet::Annotated => method.name().to_string(),
            MaskSet::NotAnnotated => format!("{} (not annotated)", method.name()),
        }
    }

    /// The folder name of a finetuning job with `method`.
    pub fn dir_name(self, method: MethodKind) -> String {
        match self {
            MaskSet::Annotated => method.name().to_string(),
            MaskSet::NotAnnotated => format!("{}-not-annotated", method.name()),
        }
    }
}

/// The study file `text` (read from `path`) as written, without looking at any path it names.
pub fn parse(text: &str, path: &Path) -> anyhow::Result<StudyConfig> {
    toml::from_str(text).with_context(|| format!("{}: not a valid study file", path.display()))
}

/// Reads a study file and checks what the file alone can say (paths exist, names are unique, numbers
/// make sense); everything that needs the models or the data is checked by [`super::plan::check`].
/// Errors name the file and the entry.
pub fn read(path: &Path) -> anyhow::Result<StudyConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config = parse(&text, path)?;
    let at = path.display();
    let masks = Some(&config.imagenet_s.masks).filter(|_| !config.tokencut_only());
    for p in [Some(&config.imagenet_s.images), masks].into_iter().flatten() {
        if !p.is_dir() {
            bail!("{at}: {} is not a folder", p.display());
        }
    }
    match &config.tokencut {
        None if config.tokencut_only() => {
            bail!("{at}: masks = \"{TOKENCUT}\" needs a [tokencut] section naming its checkpoint")
        }
        Some(t) if !t.checkpoint.exists() => {
            bail!("{at}: [tokencut] checkpoint {} does not exist", t.checkpoint.display())
        }
        _ => {}
    }
    if config.models.is_empty() {
        bail!("{at}: no [[models]]");
    }
    for (i, m) in config.models.iter().enumerate() {
        if !m.checkpoint.exists() {
            bail!("{at}: checkpoint {} of model {} does not exist", m.checkpoint.display(), m.name);
        }
        if config.models[..i].iter().any(|other| other.name == m.name) {
            bail!("{at}: two models are named {}; give each entry its own name", m.name);
        }
    }
    for d in &config.datasets {
        if !d.path.is_dir() {
            bail!("{at}: dataset folder {} ({}) does not exist", d.path.display(), d.kind);
        }
    }
    if let Some(seg) = &config.segmentation {
        if !seg.path.is_file() {
            bail!("{at}: segmentation file {} does not exist", seg.path.display());
        }
    }
    if let Some(grid) = &config.finetune.grid {
        if grid.is_empty() || grid.iter().any(|m| !(m.is_finite() && *m > 0.0)) {
            bail!("{at}: [finetune] grid must be positive multiples, got {grid:?}");
        }
    }
    if let Some(share) = config.max_unreadable {
        crate::eval::max_unreadable(share).map_err(|e| anyhow::anyhow!("{at}: max_unreadable: {e}"))?;
    }
    Ok(config)
}

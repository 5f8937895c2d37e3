//! Plain-data ViT configuration: architecture sizes, and the preset table of the timm models the paper uses
//! (method.md section 6) with their timm `pretrained_cfg` for preprocessing.
use serde::{Deserialize, Serialize};

use crate::image::{
    Interpolation, PreprocessConfig, IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN, IMAGENET_DEFAULT_STD as IMAGENET_STD,
    IMAGENET_INCEPTION_MEAN,
};

/// Architecture of a timm-layout Vision Transformer (CLS token, learned position embedding, pre-norm blocks,
/// LayerNorm eps 1e-6, exact GELU, qkv bias, linear head on the CLS token).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub img_size: i64,
    pub patch_size: i64,
    pub in_chans: i64,
    pub embed_dim: i64,
    pub depth: i64,
    pub num_heads: i64,
    pub mlp_ratio: f64,
    pub num_classes: i64,
}

/// The reference code's normalisation for every model (method.md section 5), also timm's for ViT/AugReg.
pub const HALF: [f32; 3] = IMAGENET_INCEPTION_MEAN;

impl VitConfig {
    /// Patches per side.
    pub fn grid(&self) -> i64 {
        self.img_size / self.patch_size
    }

    /// Tokens per image: CLS plus patches.
    pub fn tokens(&self) -> i64 {
        1 + self.grid() * self.grid()
    }

    pub fn head_dim(&self) -> i64 {
        self.embed_dim / self.num_heads
    }

    pub fn mlp_hidden(&self) -> i64 {
        (self.embed_dim as f64 * self.mlp_ratio) as i64
    }

    /// Checks the sizes fit together; the message says which do not.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("img_size", self.img_size),
            ("patch_size", self.patch_size),
            ("in_chans", self.in_chans),
            ("embed_dim", self.embed_dim),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(format!("{name} must be positive, got {v}"));
        }
        if self.num_classes < 0 {
            return Err(format!("num_classes must be 0 (a backbone without head) or more, got {}", self.num_classes));
        }
        if self.img_size % self.patch_size != 0 {
            return Err(format!("img_size {} is not a multiple of patch_size {}", self.img_size, self.patch_size));
        }
        if self.embed_dim % self.num_heads != 0 {
            return Err(format!("embed_dim {} is not divisible by num_heads {}", self.embed_dim, self.num_heads));
        }
        if self.mlp_hidden() <= 0 {
            return Err(format!("mlp_ratio {} gives no hidden units", self.mlp_ratio));
        }
        Ok(())
    }
}

/// A named model: its architecture and the preprocessing timm's `pretrained_cfg` gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub config: VitConfig,
    pub preprocess: PreprocessConfig,
}

/// One row of the preset table: what differs between the models (all are patch 16 at 224 px, MLP ratio 4,
/// 1000 classes, bicubic with crop_pct 0.9).
struct Row {
    name: &'static str,
    embed_dim: i64,
    depth: i64,
    num_heads: i64,
    mean: [f32; 3],
    std: [f32; 3],
}

const fn row(name: &'static str, embed_dim: i64, depth: i64, num_heads: i64, mean: [f32; 3], std: [f32; 3]) -> Row {
    Row { name, embed_dim, depth, num_heads, mean, std }
}

const PRESETS: [Row; 7] = [
    row("vit_tiny_patch16_224", 192, 12, 3, HALF, HALF),
    row("vit_small_patch16_224", 384, 12, 6, HALF, HALF),
    row("vit_base_patch16_224", 768, 12, 12, HALF, HALF),
    row("vit_large_patch16_224", 1024, 24, 16, HALF, HALF),
    row("deit_tiny_patch16_224", 192, 12, 3, IMAGENET_MEAN, IMAGENET_STD),
    row("deit_small_patch16_224", 384, 12, 6, IMAGENET_MEAN, IMAGENET_STD),
    row("deit_base_patch16_224", 768, 12, 12, IMAGENET_MEAN, IMAGENET_STD),
];

/// The names `preset` accepts (a timm pretrained tag such as `.augreg_in21k_ft_in1k` may follow).
pub fn preset_names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|p| p.name)
}

/// Every preset, in table order.
pub fn presets() -> impl Iterator<Item = Preset> {
    PRESETS.iter().map(|&Row { name, embed_dim, depth, num_heads, mean, std }| Preset {
        name,
        config: VitConfig {
            img_size: 224,
            patch_size: 16,
            in_chans: 3,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            num_classes: 1000,
        },
        preprocess: PreprocessConfig {
            input_size: (224, 224),
            crop_pct: 0.9,
            interpolation: Interpolation::Bicubic,
            mean,
            std,
        },
    })
}

/// The preset of a timm model name, e.g. `vit_base_patch16_224` or
/// `vit_small_patch16_224.augreg_in21k_ft_in1k` (all these tags share one architecture and preprocessing).
pub fn preset(name: &str) -> Option<Preset> {
    let arch = name.split('.').next().unwrap_or(name);
    presets().find(|p| p.name == arch)
}

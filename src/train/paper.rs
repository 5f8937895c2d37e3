//! The paper's finetuning protocol and hyperparameters for its seven models (method.md sections 3-5), for
//! `--preset` and the real study.
use super::methods::Method;
use super::{Selection, TrainConfig};

/// The paper's number of finetuning epochs.
pub const EPOCHS: usize = 50;

/// The paper's training protocol (method.md section 5) for `method` at `lr`: AdamW with weight decay 1e-4,
/// the LR times 0.85 every 2 epochs, batch 8, [`EPOCHS`] epochs, the epoch of lowest validation loss kept.
pub fn train_config(method: Method, lr: f64, seed: u64) -> TrainConfig {
    TrainConfig {
        method,
        lr,
        weight_decay: 1e-4,
        lr_decay: 0.85,
        decay_every: 2,
        epochs: EPOCHS,
        batch_size: 8,
        seed,
        select: Selection::ValLoss,
        accuracy_floor: None,
        precision: Default::default(),
    }
}

/// `(lambda_cls, lambda_bg, lr)` of an input-gradient baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BaselineHparams {
    pub lambda_cls: f64,
    pub lambda_bg: f64,
    pub lr: f64,
}

/// One model's values; a baseline the paper did not run on that model is `None`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaperHparams {
    /// timm model name with the tag of the weights the paper used (ViT-L's `orig_in21k_ft_in1k` is no longer
    /// offered by timm: scripts/studies/paper.toml says where its file is).
    pub model: &'static str,
    /// The paper's short name, accepted as an alias.
    pub alias: &'static str,
    pub ours_lr: f64,
    /// Temperature of the classification term (DeiT only differs from 1).
    pub temperature: f64,
    pub rrr: Option<BaselineHparams>,
    pub gradmask: Option<BaselineHparams>,
}

const fn rrr(lambda_cls: f64, lambda_bg: f64, lr: f64) -> Option<BaselineHparams> {
    Some(BaselineHparams { lambda_cls, lambda_bg, lr })
}

const fn gradmask(lr: f64) -> Option<BaselineHparams> {
    Some(BaselineHparams { lambda_cls: 3e-9, lambda_bg: 50.0, lr })
}

pub const MODELS: [PaperHparams; 7] = [
    PaperHparams {
        model: "vit_base_patch16_224.orig_in21k_ft_in1k",
        alias: "vit-b",
        ours_lr: 3e-6,
        temperature: 1.0,
        rrr: rrr(2e-6, 1e-10, 2e-6),
        gradmask: gradmask(2e-4),
    },
    PaperHparams {
        model: "vit_large_patch16_224.orig_in21k_ft_in1k",
        alias: "vit-l",
        ours_lr: 9e-7,
        temperature: 1.0,
        rrr: None,
        gradmask: None,
    },
    PaperHparams {
        model: "vit_small_patch16_224.augreg_in21k_ft_in1k",
        alias: "ar-s",
        ours_lr: 2e-6,
        temperature: 1.0,
        rrr: rrr(2e-8, 1e-8, 1e-5),
        gradmask: gradmask(5e-4),
    },
    PaperHparams {
        model: "vit_base_patch16_224.augreg_in21k_ft_in1k",
        alias: "ar-b",
        ours_lr: 6e-7,
        temperature: 1.0,
        rrr: rrr(2e-7, 1e-8, 5e-7),
        gradmask: gradmask(1e-5),
    },
    PaperHparams {
        model: "vit_large_patch16_224.augreg_in21k_ft_in1k",
        alias: "ar-l",
        ours_lr: 9e-7,
        temperature: 1.0,
        rrr: None,
        gradmask: None,
    },
    PaperHparams {
        model: "deit_small_patch16_224.fb_in1k",
        alias: "deit-s",
        ours_lr: 1e-6,
        temperature: 0.55,
        rrr: rrr(2e-6, 1e-10, 1e-5),
        gradmask: gradmask(5e-3),
    },
    PaperHparams {
        model: "deit_base_patch16_224.fb_in1k",
        alias: "deit-b",
        ours_lr: 8e-7,
        temperature: 0.65,
        rrr: rrr(2e-6, 1e-10, 5e-6),
        gradmask: gradmask(1e-3),
    },
];

/// The values for a timm name or the paper's alias (`vit-b`, `ar-s`, `deit-b`, ...).
pub fn lookup(name: &str) -> Option<&'static PaperHparams> {
    MODELS.iter().find(|m| m.model == name || m.alias.eq_ignore_ascii_case(name))
}

/// The names `lookup` accepts, for error messages.
pub fn known() -> String {
    MODELS.iter().map(|m| format!("{} ({})", m.alias, m.model)).collect::<Vec<_>>().join(", ")
}

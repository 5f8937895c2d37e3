//! The flags that name a model and how to run it, shared by every subcommand that loads a checkpoint.
use std::path::PathBuf;

use robustvit::model::config::HALF;
use robustvit::model::{self, LoadedModel};

#[derive(clap::Args)]
pub struct ModelArgs {
    /// timm model name (e.g. vit_base_patch16_224); optional when the checkpoint's config.json names it.
    #[arg(long)]
    pub model: Option<String>,
    /// A timm hub folder (model.safetensors + config.json), a .safetensors file, or a .pth/.pt/.bin pickle.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Normalise with mean = std = 0.5 as the reference code does, whatever the checkpoint's config says.
    #[arg(long)]
    pub reference_norm: bool,
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<LoadedModel> {
        let mut loaded = model::load(self.model.as_deref(), &self.checkpoint, robustvit::device::parse(&self.device)?)?;
        if self.reference_norm {
            loaded.preprocess.mean = HALF;
            loaded.preprocess.std = HALF;
        }
        Ok(loaded)
    }
}

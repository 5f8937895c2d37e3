//! The Vision Transformer, its configurations and its checkpoints.
pub mod checkpoint;
pub mod config;
pub mod vit;

pub use checkpoint::{load, load_backbone, save, LoadedModel};
pub use config::{preset, VitConfig};
pub use vit::{ForwardWithAttention, VisionTransformer};

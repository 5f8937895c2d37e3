//! robustvit: finetune Vision Transformers so that their GAE relevance maps match foreground masks
//! (Chefer, Schwartz, Wolf, NeurIPS 2022), and measure robustness against GradMask and RRR.
//!
//! Layers, each using only those below it:
//! - `study`: `harness compare`, the embedded benchmark and the real study -> long rows -> tables;
//! - `train` (one loop for every method) and `eval` (accuracy, protocols, the segmentation test), and
//!   `explain` (relevance pictures);
//! - `relevance`: forward -> class score -> gradient to attention -> `gae_relevance` -> `relevance_map`;
//! - `model` (the ViT and its checkpoints) and `data` (samples, batches, the pipeline, dataset layouts);
//! - `image` (decode as PIL does, PIL-exact resampling, transforms, pictures);
//! - `ops`, the C++ torch ops of `cpp/`.
//!
//! Leaves that any layer may use: `report` (long rows -> wide tables), `pickle` (torch.save and numpy
//! pickles), `manifest`, `names`, `rng`, `atomic_write`, `device`, `heap`, `precision`.
pub mod atomic_write;
pub mod data;
pub mod device;
pub mod eval;
pub mod explain;
pub mod heap;
pub mod image;
pub mod manifest;
pub mod masks;
pub mod model;
pub mod names;
pub mod ops;
pub mod pickle;
pub mod precision;
pub mod relevance;
pub mod report;
pub mod rng;
pub mod study;
pub mod tokencut;
pub mod train;

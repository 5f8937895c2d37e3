//! robustvit: finetune Vision Transformers so that their GAE relevance maps match foreground masks
//! (Chefer, Schwartz, Wolf, NeurIPS 2022), and measure robustness against GradMask and RRR.
pub mod atomic_write;
pub mod compare;
pub mod data;
pub mod device;
pub mod evaluate;
pub mod explain;
pub mod finetune;
pub mod heatmap;
pub mod manifest;
pub mod methods;
pub mod model;
pub mod npy;
pub mod ops;
pub mod optim;
pub mod paper;
pub mod predict;
pub mod report;
pub mod robustness;
pub mod rng;
pub mod segmentation;
pub mod segtest;
pub mod train;

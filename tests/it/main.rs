//! The integration tests, one binary (one link against libtorch): the library against independent
//! references (timm, scikit-learn, PIL, numpy, plain PyTorch) and the harness command line end to end.
mod support;

mod compare;
mod compare_study;
mod eval;
mod eval_sets;
mod explain;
mod fashion_mnist;
mod finetune;
mod fixtures;
mod image;
mod ops;
mod pickle;
mod report;
mod segmentation;
mod segtest;
mod tokencut;
mod vit_timm;

//! Data: images and their preprocessing, class tables, ImageNet-S with foreground masks, and the embedded
//! spurious-background benchmark.
pub mod animal_mnist;
pub mod eval_sets;
pub mod imagenet;
pub mod imagenet_seg;
pub mod imagenet_s;
pub mod preprocess;
pub mod spurious;

/// A network input: normalised CHW image (3*S*S), foreground mask (S*S, in [0, 1]) and class label.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub image: Vec<f32>,
    pub mask: Vec<f32>,
    pub label: i64,
}

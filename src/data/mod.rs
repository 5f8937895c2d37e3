//! Data for the model: samples and batches, the one ordered pipeline that decodes ahead of its consumer,
//! and the dataset layouts (ImageNet-S with masks, the evaluation sets, ImageNet-segmentation's gtsegs
//! file, and the embedded benchmark's objects (Animal-MNIST, Fashion-MNIST) and backgrounds).
pub mod animal_mnist;
pub mod eval_sets;
pub mod fashion_mnist;
pub mod gtsegs;
pub mod imagenet;
pub mod imagenet_s;
pub mod pipeline;
pub mod spurious;

use ndarray::{Array, Array2, Array3, ArrayD, ArrayView3, Axis, Dimension};
use tch::{Device, Tensor};

/// A network input: a normalised image `[3, H, W]`, its foreground mask `[H, W]` in [0, 1], its label.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub image: Array3<f32>,
    pub mask: Array2<f32>,
    pub label: i64,
}

/// Samples stacked on the model's device: images `[B, 3, H, W]`, masks `[B, 1, H, W]` (1 = object),
/// labels `[B]`.
pub struct Batch {
    pub images: Tensor,
    pub masks: Tensor,
    pub labels: Tensor,
}

impl Batch {
    /// Stacks `samples`, which one transform made and so share one size, onto `device`.
    pub fn new(samples: &[Sample], device: Device) -> Batch {
        let masks: Vec<ArrayView3<f32>> = samples.iter().map(|s| s.mask.view().insert_axis(Axis(0))).collect();
        let images: Vec<ArrayView3<f32>> = samples.iter().map(|s| s.image.view()).collect();
        let labels: Vec<i64> = samples.iter().map(|s| s.label).collect();
        Batch {
            images: stack(&images).to_device(device),
            masks: stack(&masks).to_device(device),
            labels: Tensor::from_slice(&labels).to_device(device),
        }
    }
}

/// A float tensor (on any device) as an array of dimension `D`.
pub fn array<D: Dimension>(t: &Tensor) -> anyhow::Result<Array<f32, D>> {
    let a: ArrayD<f32> = (&t.to_device(Device::Cpu).to_kind(tch::Kind::Float)).try_into()?;
    Ok(a.into_dimensionality::<D>()?)
}

/// `[C, H, W]` views of one shape -> a `[B, C, H, W]` tensor.
pub fn stack(views: &[ArrayView3<f32>]) -> Tensor {
    let stacked = ndarray::stack(Axis(0), views).expect("a batch's samples share one shape");
    Tensor::try_from(stacked).expect("an f32 array converts to a tensor")
}

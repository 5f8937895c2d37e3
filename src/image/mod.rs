//! Pixels, with no model and no dataset in sight: decoding files as PIL does (JPEGs with PIL's libjpeg-turbo),
//! PIL-exact resampling, timm's evaluation transform, and the pictures (heatmaps, captions, grids).
pub mod decode;
pub mod heatmap;
mod jpeg;
mod png;
pub mod resample;
pub mod transform;

pub use decode::{load_rgb, DecodeError};
pub use jpeg::save_jpeg;
pub use png::write_png;
pub use resample::{resize_exact, Interpolation};
pub use transform::{
    center_crop, denormalize_chw, eval_resize_dims, eval_transform, gray_view, normalize_chw, on_mask,
    PreprocessConfig, DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
};

//! timm's evaluation transform (`timm.data.create_transform(**resolve_data_config({}, model=m))`, crop
//! mode `'center'`) on PIL images: Resize(shorter side) -> CenterCrop -> ToTensor -> Normalize, with sizes
//! as torchvision 0.26 / timm 1.0 compute them, including Python's round-half-to-even where they call
//! `round`.
use std::ops::Range;

use image::{GrayImage, Luma, RgbImage};
use ndarray::{Array3, ArrayView2, ArrayView3};

use super::resample::{resize_window, Interpolation};

/// timm's `IMAGENET_DEFAULT_MEAN`.
pub const IMAGENET_DEFAULT_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// timm's `IMAGENET_DEFAULT_STD`.
pub const IMAGENET_DEFAULT_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// timm's `IMAGENET_INCEPTION_MEAN` (used by e.g. `vit_*_augreg` weights).
pub const IMAGENET_INCEPTION_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
/// timm's `IMAGENET_INCEPTION_STD`.
pub const IMAGENET_INCEPTION_STD: [f32; 3] = [0.5, 0.5, 0.5];
/// timm's `DEFAULT_CROP_PCT`, substituted for a zero `crop_pct` as timm does.
pub const DEFAULT_CROP_PCT: f64 = 0.875;

/// timm's pretrained_cfg fields that the eval transform uses.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreprocessConfig {
    /// (height, width) of the network input.
    pub input_size: (u32, u32),
    pub crop_pct: f64,
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl PreprocessConfig {
    /// The reference code's evaluation transform (`--protocol reference`, method.md section 7): the shorter
    /// side resized to 256 with bilinear filtering, a centre crop of 224, mean = std = 0.5.
    pub const REFERENCE: PreprocessConfig = PreprocessConfig {
        input_size: (224, 224),
        crop_pct: 224.0 / 256.0,
        interpolation: Interpolation::Bilinear,
        mean: [0.5; 3],
        std: [0.5; 3],
    };
}

/// Size (width, height) that timm's eval Resize produces for a `width` x
/// `height` image: torchvision `Resize(int)` when the scale size is square,
/// timm's `ResizeKeepRatio` otherwise.
pub fn eval_resize_dims(width: u32, height: u32, cfg: &PreprocessConfig) -> (u32, u32) {
    // timm: `crop_pct = crop_pct or DEFAULT_CROP_PCT`.
    let crop_pct = if cfg.crop_pct == 0.0 { DEFAULT_CROP_PCT } else { cfg.crop_pct };
    let (th, tw) = cfg.input_size;
    // `as u32` saturates, so degenerate crop_pct values cannot panic.
    let scale_h = (f64::from(th) / crop_pct).floor() as u32;
    let scale_w = (f64::from(tw) / crop_pct).floor() as u32;
    if scale_h == scale_w {
        // torchvision _compute_resized_output_size: long = int(size * long / short).
        let (short, long) = if width <= height { (width, height) } else { (height, width) };
        let new_long =
            if short == 0 { 0 } else { ((u64::from(scale_h) * u64::from(long)) as f64 / f64::from(short)) as u32 };
        if width <= height {
            (scale_h, new_long)
        } else {
            (new_long, scale_h)
        }
    } else {
        // ResizeKeepRatio(longest=0): ratio = min(img/target) per axis, then round().
        let ratio = (f64::from(height) / f64::from(scale_h)).min(f64::from(width) / f64::from(scale_w));
        let h = (f64::from(height) / ratio).round_ties_even() as u32;
        let w = (f64::from(width) / ratio).round_ties_even() as u32;
        (w, h)
    }
}

/// timm eval transform: shorter-side Resize to `floor(input_size / crop_pct)`
/// with PIL resampling, torchvision CenterCrop(input_size), ToTensor and
/// Normalize. Returns `[3, H, W]`.
///
/// Only the part of the resized image inside the crop is computed; each
/// resized pixel depends only on its own filter taps, so this is exact and
/// keeps absurd `crop_pct` values from allocating huge images (NEAREST still
/// steps through every index before the crop, as PIL accumulates positions).
pub fn eval_transform(img: &RgbImage, cfg: &PreprocessConfig) -> Array3<f32> {
    let (w, h) = eval_resize_dims(img.width(), img.height(), cfg);
    let (th, tw) = cfg.input_size;
    // torchvision returns the image untouched when it already has the size.
    let cropped = if (w, h) == img.dimensions() {
        center_crop(img, tw, th)
    } else {
        let (off_x, off_y) = (crop_offset(w, tw), crop_offset(h, th));
        let xs = overlap(off_x, tw, w);
        let ys = overlap(off_y, th, h);
        let window = resize_window(img, w, h, cfg.interpolation, xs.clone(), ys.clone());
        crop_at(&window, off_x - i64::from(xs.start), off_y - i64::from(ys.start), tw, th)
    };
    normalize_chw(&cropped, cfg.mean, cfg.std)
}

/// Runs an RGB geometry operation on a grey mask.
pub fn on_mask(mask: &GrayImage, op: impl FnOnce(&RgbImage) -> RgbImage) -> GrayImage {
    let rgb = RgbImage::from_fn(mask.width(), mask.height(), |x, y| image::Rgb([mask.get_pixel(x, y)[0]; 3]));
    let out = op(&rgb);
    GrayImage::from_fn(out.width(), out.height(), |x, y| Luma([out.get_pixel(x, y)[0]]))
}

/// torchvision `CenterCrop((height, width))` on a PIL image: zero-pads
/// (left = floor, right = ceil of half the shortfall) when the crop is larger,
/// and offsets by Python `round((size - crop) / 2)` (ties to even) otherwise.
pub fn center_crop(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let off_x = crop_offset(img.width(), width);
    let off_y = crop_offset(img.height(), height);
    crop_at(img, off_x, off_y, width, height)
}

/// ToTensor (`/255` in f32) then Normalize (`(x - mean) / std` in f32): `[3, H, W]`.
pub fn normalize_chw(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Array3<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = Array3::zeros((3, h, w));
    // A plane at a time along the interleaved bytes (the per-element form spent its time indexing).
    for (c, mut plane) in out.outer_iter_mut().enumerate() {
        let plane = plane.as_slice_mut().expect("a fresh standard-layout array");
        for (v, px) in plane.iter_mut().zip(img.as_raw().chunks_exact(3)) {
            *v = (f32::from(px[c]) / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

/// A grey image's pixels as an `[H, W]` array.
pub fn gray_view(img: &GrayImage) -> ArrayView2<'_, u8> {
    ArrayView2::from_shape((img.height() as usize, img.width() as usize), img.as_raw())
        .expect("a grey image holds height * width pixels")
}

/// The inverse of [`normalize_chw`], rounded to the nearest level: a network input back as an image.
pub fn denormalize_chw(chw: ArrayView3<f32>, mean: [f32; 3], std: [f32; 3]) -> RgbImage {
    let (_, h, w) = chw.dim();
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let level =
            |c: usize| ((chw[[c, y as usize, x as usize]] * std[c] + mean[c]) * 255.0).round().clamp(0.0, 255.0) as u8;
        image::Rgb([level(0), level(1), level(2)])
    })
}

/// Source coordinate of the crop's first pixel along one axis (negative when padded).
fn crop_offset(size: u32, crop: u32) -> i64 {
    if crop > size {
        -i64::from((crop - size) / 2)
    } else {
        let d = size - crop;
        let half = d / 2;
        // round(k + 0.5) in Python goes to the even neighbour.
        i64::from(if d % 2 == 1 && half % 2 == 1 { half + 1 } else { half })
    }
}

/// The indices of `0..size` covered by `offset..offset + len`.
fn overlap(offset: i64, len: u32, size: u32) -> Range<u32> {
    let clamp = |v: i64| v.clamp(0, i64::from(size)) as u32;
    clamp(offset)..clamp(offset + i64::from(len))
}

/// A `width` x `height` crop whose pixel (0, 0) is source pixel (`off_x`,
/// `off_y`); pixels outside the source are zero, like PIL's `crop`.
fn crop_at(img: &RgbImage, off_x: i64, off_y: i64, width: u32, height: u32) -> RgbImage {
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    let mut out = RgbImage::new(width, height);
    // The source columns that land inside the crop, copied row by row; the rest stays zero.
    let (x0, x1) = (off_x.clamp(0, iw), (off_x + i64::from(width)).clamp(0, iw));
    if x0 < x1 {
        let (src_stride, out_stride) = (iw as usize * 3, width as usize * 3);
        let len = (x1 - x0) as usize * 3;
        let at = (x0 - off_x) as usize * 3;
        for (y, out_row) in out.chunks_exact_mut(out_stride).enumerate() {
            let sy = y as i64 + off_y;
            if (0..ih).contains(&sy) {
                let from = sy as usize * src_stride + x0 as usize * 3;
                out_row[at..at + len].copy_from_slice(&img.as_raw()[from..from + len]);
            }
        }
    }
    out
}

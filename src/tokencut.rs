//! TokenCut (Wang et al., CVPR 2022): an image's foreground from a self-supervised ViT's last-block keys, by
//! a normalised cut of the patch graph; the paper's "not annotated" masks (issue 15).
//!
//! Per image: keys of the patch tokens at the image's own size (cropped to a multiple of the patch size,
//! ImageNet mean/std); W_ij = 1 where cos(k_i, k_j) > tau, else 1e-5; the second-smallest generalised
//! eigenvector x of (D - W) x = lambda D x (exact: libtorch's `linalg_eigh` on the symmetric normalised
//! form); patches above the mean of x, on the side of its largest absolute entry (the seed); the
//! 4-connected component holding the seed, as TokenCut's `ndimage.label` keeps; upsampled to pixels and
//! refined. Images of one patch grid share the forward pass ([`keys`]). TokenCut refines with a bilateral
//! solver; this refines with a guided filter (He et al., 2010) on the image's grey levels, which snaps the
//! patch-grid edges to the image's edges the same way (both are edge-aware smoothers of the coarse mask),
//! then thresholds at one half.
use image::{imageops, GrayImage, Luma, RgbImage};
use tch::{Device, Kind, Tensor};

use crate::data;
use crate::image::{normalize_chw, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD};
use crate::model::VisionTransformer;

/// TokenCut's weight of the edges between dissimilar patches.
const EPS: f64 = 1e-5;
/// Guided-filter regularisation on grey levels in [0, 1]: edges of contrast above about 0.1 are kept.
const GUIDED_EPS: f64 = 1e-2;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Cosine similarity above which two patches are joined.
    pub tau: f64,
    /// Refine the patch-grid mask along the image's edges.
    pub refine: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { tau: 0.2, refine: true }
    }
}

/// The second-smallest generalised eigenvector of (D - W) x = lambda D x for the graph of `keys` `[N, C]`,
/// normalised as scipy's `eigh(D - W, D)` does (x^T D x = 1), in f64; its sign is arbitrary.
pub fn second_eigenvector(keys: &Tensor, tau: f64) -> Tensor {
    let f = keys.to_kind(Kind::Double);
    let f = &f / f.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    let w = f.matmul(&f.tr()).gt(tau).to_kind(Kind::Double).clamp_min(EPS);
    let d_inv_sqrt = w.sum_dim_intlist(&[1i64][..], false, Kind::Double).rsqrt();
    // D^-1/2 (D - W) D^-1/2 = I - D^-1/2 W D^-1/2: symmetric, same eigenvalues; x = D^-1/2 y.
    let n = w.size()[0];
    let normalised =
        Tensor::eye(n, (Kind::Double, w.device())) - d_inv_sqrt.unsqueeze(1) * &w * d_inv_sqrt.unsqueeze(0);
    let (_, vectors) = normalised.linalg_eigh("L");
    vectors.select(1, 1) * d_inv_sqrt
}

/// The foreground patches `[h * w]` (row-major) from the eigenvector: above its mean, on the seed's side,
/// the seed's 4-connected component.
pub fn bipartition(x: &[f64], h: usize, w: usize) -> Vec<bool> {
    assert_eq!(x.len(), h * w, "one eigenvector entry per patch");
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    let seed = (0..x.len()).max_by(|&a, &b| x[a].abs().total_cmp(&x[b].abs())).expect("at least one patch");
    let above = x[seed] > mean;
    let side: Vec<bool> = x.iter().map(|&v| (v > mean) == above).collect();
    // Flood fill from the seed (a few thousand patches at most).
    let mut keep = vec![false; x.len()];
    let mut stack = vec![seed];
    keep[seed] = true;
    while let Some(i) = stack.pop() {
        let (r, c) = (i / w, i % w);
        let neighbours =
            [(r > 0).then(|| i - w), (r + 1 < h).then(|| i + w), (c > 0).then(|| i - 1), (c + 1 < w).then(|| i + 1)];
        for j in neighbours.into_iter().flatten() {
            if side[j] && !keep[j] {
                keep[j] = true;
                stack.push(j);
            }
        }
    }
    keep
}

/// Mean over a (2r+1)^2 window, over the pixels that exist (`[1, 1, H, W]`).
fn box_mean(t: &Tensor, r: i64) -> Tensor {
    t.avg_pool2d([2 * r + 1, 2 * r + 1], [1, 1], [r, r], false, false, None::<i64>)
}

/// Guided filter of `p` `[1, 1, H, W]` by the grey `guide` (same shape), radius `r`.
fn guided_filter(guide: &Tensor, p: &Tensor, r: i64) -> Tensor {
    let mean_i = box_mean(guide, r);
    let mean_p = box_mean(p, r);
    let cov_ip = box_mean(&(guide * p), r) - &mean_i * &mean_p;
    let var_i = box_mean(&(guide * guide), r) - &mean_i * &mean_i;
    let a = cov_ip / (var_i + GUIDED_EPS);
    let b = mean_p - &a * &mean_i;
    box_mean(&a, r) * guide + box_mean(&b, r)
}

/// Patches beyond which the dense eigen-solve is refused: its N x N f64 matrices (a few copies of 134 MB
/// at 4096) and O(N^3) time; ImageNet's images have a few hundred to a few thousand at patch 16.
pub const MAX_PATCHES: i64 = 4096;

/// Why an image has no mask.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("the image is {width}x{height}, smaller than one {patch}x{patch} patch")]
    TooSmall { width: u32, height: u32, patch: u32 },
    #[error(
        "the image is {width}x{height}: {patches} patches of {patch}x{patch}, more than the {max} the exact \
         eigen-solve takes; resize it first"
    )]
    TooLarge { width: u32, height: u32, patch: u32, patches: i64, max: i64 },
}

/// An image cut to whole patches (its last rows and columns short of a patch left out), ready for the model.
pub struct Prepared {
    cropped: RgbImage,
    /// The image's own size.
    width: u32,
    height: u32,
    /// The patch side it was cut to.
    patch: i64,
    /// Patch rows and columns.
    pub grid: (i64, i64),
}

/// `image` cut to whole `patch`-pixel patches; refused when it has none or more than [`MAX_PATCHES`].
pub fn prepare(image: &RgbImage, patch: i64) -> Result<Prepared, Unusable> {
    let (width, height) = image.dimensions();
    let (h, w) = (height as i64 / patch, width as i64 / patch);
    if h == 0 || w == 0 {
        return Err(Unusable::TooSmall { width, height, patch: patch as u32 });
    }
    if h * w > MAX_PATCHES {
        let (patch, patches, max) = (patch as u32, h * w, MAX_PATCHES);
        return Err(Unusable::TooLarge { width, height, patch, patches, max });
    }
    let cropped = imageops::crop_imm(image, 0, 0, (w * patch) as u32, (h * patch) as u32).to_image();
    Ok(Prepared { cropped, width, height, patch, grid: (h, w) })
}

/// ToTensor, then Normalize with `mean` and `std`: `[B, 3, H, W]` on `device`.
fn pixels(images: &[&Prepared], mean: [f32; 3], std: [f32; 3], device: Device) -> Tensor {
    let arrays: Vec<_> = images.iter().map(|p| normalize_chw(&p.cropped, mean, std)).collect();
    data::stack(&arrays.iter().map(|a| a.view()).collect::<Vec<_>>()).to_device(device)
}

/// The last-block keys of the patches `[B, N, C]` of images that share one patch grid, in one forward pass.
pub fn keys(model: &VisionTransformer, images: &[&Prepared]) -> Tensor {
    assert!(images.windows(2).all(|p| p[0].grid == p[1].grid), "a batch shares one patch grid");
    assert!(images.iter().all(|p| p.patch == model.config().patch_size), "images cut to the model's patch");
    let normalised = pixels(images, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, model.device());
    tch::no_grad(|| model.last_keys(&normalised))
}

/// The binary foreground mask (0/255, the image's own size) of `image` from its patch keys `[N, C]`.
pub fn mask_from_keys(image: &Prepared, keys: &Tensor, opts: &Options) -> GrayImage {
    let device = keys.device();
    let ((h, w), (width, height), patch) = (image.grid, (image.width, image.height), image.patch);
    let x = tch::no_grad(|| second_eigenvector(keys, opts.tau));
    let x = Vec::<f64>::try_from(x.to_device(Device::Cpu)).expect("a 1-d f64 tensor");
    let grid = bipartition(&x, h as usize, w as usize);
    let grid = Tensor::from_slice(&grid.iter().map(|&f| f32::from(u8::from(f))).collect::<Vec<f32>>())
        .reshape([1, 1, h, w])
        .to_device(device);
    let coarse = grid.upsample_nearest2d([h * patch, w * patch], None, None);
    let soft = if opts.refine {
        let grey = pixels(&[image], [0.0; 3], [1.0; 3], device).mean_dim(&[1i64][..], true, Kind::Float);
        guided_filter(&grey, &coarse, patch)
    } else {
        coarse
    };
    // The rows and columns the crop left out (fewer than a patch) continue the mask's edge.
    let pad = [0, width as i64 - w * patch, 0, height as i64 - h * patch];
    let full = soft.replication_pad2d(pad).ge(0.5).to_kind(Kind::Uint8).to_device(Device::Cpu).view([-1]);
    let on = Vec::<u8>::try_from(full).expect("a 1-d u8 tensor");
    GrayImage::from_fn(width, height, |x, y| Luma([if on[(y * width + x) as usize] != 0 { 255 } else { 0 }]))
}

/// The mask of one image by `model`'s keys ([`crate::masks::run`] batches images of one size instead).
pub fn mask(model: &VisionTransformer, image: &RgbImage, opts: &Options) -> Result<GrayImage, Unusable> {
    let prepared = prepare(image, model.config().patch_size)?;
    let keys = keys(model, &[&prepared]).squeeze_dim(0);
    Ok(mask_from_keys(&prepared, &keys, opts))
}

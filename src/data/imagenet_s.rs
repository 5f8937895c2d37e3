//! ImageNet-S finetuning data (method.md section 5): scanning an
//! `<images>/<wnid>/<name>.JPEG` + `<masks>/<wnid>/<name>.png` layout, the
//! seeded train/validation class split, mask decoding, and the train/eval
//! transforms applied with identical geometry to an image and its mask.
//!
//! Pixel operations reuse the PIL-exact routines of [`crate::image`]; masks go
//! through them as grey replicated into RGB, which PIL resamples per channel
//! exactly as it does an `L` image.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use image::{GrayImage, ImageBuffer, Luma, Pixel, RgbImage};

use crate::data::{imagenet, Sample};
use crate::image::{
    center_crop, eval_resize_dims, gray_view, load_rgb, normalize_chw, on_mask, resize_exact, DecodeError,
    Interpolation, PreprocessConfig, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD,
};
use crate::rng::{derive_seed, shuffle, SplitMix64};

/// The wnids of the 5 class pairs that ImageNet-S merges; the reference
/// implementation skips them, leaving 914 of its 919 classes.
pub const MERGED_WNIDS: [&str; 10] = [
    "n04356056",
    "n04355933",
    "n04493381",
    "n02808440",
    "n03642806",
    "n03832673",
    "n04008634",
    "n03773504",
    "n03887697",
    "n15075141",
];

/// Image extensions tried, in order, for a mask's image.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["JPEG", "jpg", "jpeg", "png"];

/// ImageNet-S id of pixels excluded from annotation; treated as background.
const IGNORED_ID: u32 = 1000;

crate::named_enum! {
    /// How a mask PNG encodes the foreground.
    pub enum MaskSource("mask source") {
        /// ImageNet-S semantic mask: id = R + 256 * G; 0 background, 1000
        /// ignored (background), exactly one other id for the object.
        ImagenetS = "imagenet-s",
        /// Any PNG; foreground where some channel exceeds 127 (e.g. TokenCut).
        Binary = "binary",
    }
}

crate::named_enum! {
    /// Resampling of the mask in the transforms.
    pub enum MaskResize("mask resize") {
        /// PIL NEAREST: the mask stays binary.
        Nearest = "nearest",
        /// PIL BILINEAR on the 0/255 mask, as the reference code does: fractional
        /// values along the edges.
        Bilinear = "bilinear",
    }
}

#[derive(Clone, Debug)]
pub struct SplitConfig {
    /// Classes drawn for training; the remaining classes validate.
    pub train_classes: usize,
    /// Images per training class.
    pub per_class: usize,
    /// Images per validation class.
    pub val_per_class: usize,
    pub seed: u64,
    /// Masks with fewer foreground pixels are skipped (the paper uses 520
    /// for TokenCut masks). Setting it makes [`split`] decode masks.
    pub min_mask_pixels: Option<u64>,
    pub source: MaskSource,
    /// Draw from the mask folder's listing as always, but read each drawn image's mask from this folder
    /// (same layout) instead; an image without a mask there is skipped (counted in `dropped_masks`) and
    /// the next one in the class's order taken. Two mask sets of the same images are then compared on the
    /// same drawn images wherever both have the mask.
    pub masks_from: Option<PathBuf>,
}

impl Default for SplitConfig {
    /// The paper's protocol: 3 images for each of 500 classes, 1 image for
    /// each of the others.
    fn default() -> Self {
        SplitConfig {
            train_classes: 500,
            per_class: 3,
            val_per_class: 1,
            seed: 0,
            min_mask_pixels: None,
            source: MaskSource::ImagenetS,
            masks_from: None,
        }
    }
}

/// One image with its mask and ImageNet label.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub image: PathBuf,
    pub mask: PathBuf,
    pub wnid: String,
    pub label: i64,
}

#[derive(Clone, Debug)]
pub struct Split {
    pub train: Vec<Item>,
    pub val: Vec<Item>,
    /// Training classes in drawn order (the "train classes" of the paper's
    /// Tables 10-11); `val_wnids` are all the others.
    pub train_wnids: Vec<String>,
    pub val_wnids: Vec<String>,
    /// Masks skipped for `min_mask_pixels`, or missing from `masks_from`,
    /// while filling the per-class quotas (masks past a filled quota are not
    /// looked at, so not counted).
    pub dropped_masks: usize,
    /// Classes that had fewer usable masks than their quota; all were taken.
    pub short_classes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{what} folder {} does not exist or is not a directory", path.display())]
    MissingDir { what: &'static str, path: PathBuf },
    #[error("cannot list folder {}: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("file name {} is not valid UTF-8", path.display())]
    NonUtf8Name { path: PathBuf },
    #[error("mask folder {} is not named after an ImageNet-1k wnid", path.display())]
    UnknownWnid { path: PathBuf },
    #[error("mask class folder {} has no image folder {}", masks.display(), images.display())]
    MissingClassImages { masks: PathBuf, images: PathBuf },
    #[error("mask {} has no image: none of {}.{{JPEG,jpg,jpeg,png}} exists", mask.display(), stem.display())]
    MissingImage { mask: PathBuf, stem: PathBuf },
    #[error(
        "{found} usable classes in {} but train_classes is {train_classes}; validation classes \
         come from the rest, so with val_per_class > 0 at least {} are needed",
        masks.display(),
        train_classes.saturating_add(1)
    )]
    TooFewClasses { masks: PathBuf, found: usize, train_classes: usize },
    #[error(transparent)]
    Load(#[from] DecodeError),
    #[error("ImageNet-S mask {} holds two object ids ({first} and {second}); expected one", path.display())]
    MultipleObjects { path: PathBuf, first: u32, second: u32 },
    #[error("ImageNet-S mask {} holds no object (only background and ignored pixels)", path.display())]
    NoObject { path: PathBuf },
    #[error(
        "mask {} is {}x{} but its image {} is {}x{}",
        mask.display(), mask_size.0, mask_size.1, image.display(), image_size.0, image_size.1
    )]
    SizeMismatch { mask: PathBuf, mask_size: (u32, u32), image: PathBuf, image_size: (u32, u32) },
}

/// Scans the layout and draws the split. The classes are the sorted wnid
/// folders of `masks` minus [`MERGED_WNIDS`], shuffled with `cfg.seed`; the
/// first `train_classes` train. Each class's sorted mask stems are shuffled
/// with a seed derived from (`cfg.seed`, wnid) and taken in that order.
/// Sorting first makes the split independent of directory-listing order.
pub fn split(images: &Path, masks: &Path, cfg: &SplitConfig) -> Result<Split, DataError> {
    let masks_from = cfg.masks_from.as_deref().map(|p| ("masks", p));
    for (what, path) in [("images", images), ("masks", masks)].into_iter().chain(masks_from) {
        if !path.is_dir() {
            return Err(DataError::MissingDir { what, path: path.to_path_buf() });
        }
    }
    let mut classes = class_folders(masks)?;
    // Validation classes are the ones left over; asking for validation
    // images with none left would silently yield an empty validation set.
    if classes.len() <= cfg.train_classes && cfg.val_per_class > 0 {
        return Err(DataError::TooFewClasses {
            masks: masks.to_path_buf(),
            found: classes.len(),
            train_classes: cfg.train_classes,
        });
    }
    shuffle(&mut classes, &mut SplitMix64(cfg.seed));
    let val_wnids = classes.split_off(cfg.train_classes.min(classes.len()));
    let train_wnids = classes;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    let (mut dropped_masks, mut short_classes) = (0, Vec::new());
    for (wnids, quota, items) in [(&train_wnids, cfg.per_class, &mut train), (&val_wnids, cfg.val_per_class, &mut val)]
    {
        for wnid in wnids {
            let taken = take_class(images, masks, wnid, quota, cfg, &mut dropped_masks)?;
            if taken.len() < quota {
                short_classes.push(wnid.clone());
            }
            items.extend(taken);
        }
    }
    Ok(Split { train, val, train_wnids, val_wnids, dropped_masks, short_classes })
}

/// Every image the split can draw from (each usable class's masks with their images), in class order.
pub fn annotated_items(images: &Path, masks: &Path) -> Result<Vec<Item>, DataError> {
    let mut items = Vec::new();
    for wnid in class_folders(masks)? {
        items.extend(class_items(images, masks, &wnid)?);
    }
    Ok(items)
}

/// Up to `quota` items of one class in its seeded order, skipping (and
/// counting in `dropped`) masks below `cfg.min_mask_pixels`.
fn take_class(
    images: &Path,
    masks: &Path,
    wnid: &str,
    quota: usize,
    cfg: &SplitConfig,
    dropped: &mut usize,
) -> Result<Vec<Item>, DataError> {
    let mut items = class_items(images, masks, wnid)?;
    let mut rng = SplitMix64(derive_seed(cfg.seed, &[fnv1a(wnid)]));
    shuffle(&mut items, &mut rng);
    let mut taken = Vec::with_capacity(quota.min(items.len()));
    for mut item in items {
        if taken.len() == quota {
            break;
        }
        if let Some(dir) = &cfg.masks_from {
            item.mask = dir.join(wnid).join(item.mask.file_name().expect("a mask file has a name"));
            if !item.mask.is_file() {
                *dropped += 1;
                continue;
            }
        }
        if let Some(min) = cfg.min_mask_pixels {
            let mask = decode_mask(&item.mask, cfg.source)?;
            let fg = mask.as_raw().iter().filter(|&&v| v != 0).count() as u64;
            if fg < min {
                *dropped += 1;
                continue;
            }
        }
        taken.push(item);
    }
    Ok(taken)
}

/// The usable class folders of `masks`, sorted; files beside them are ignored.
fn class_folders(masks: &Path) -> Result<Vec<String>, DataError> {
    let merged: HashSet<&str> = MERGED_WNIDS.into_iter().collect();
    let mut classes = Vec::new();
    for path in list_dir(masks)? {
        if !path.is_dir() {
            continue;
        }
        let wnid = utf8_name(&path)?;
        if merged.contains(wnid) {
            continue;
        }
        if imagenet::index_of(wnid).is_none() {
            return Err(DataError::UnknownWnid { path });
        }
        classes.push(wnid.to_string());
    }
    classes.sort();
    Ok(classes)
}

/// Every `.png` mask of one class with its image, sorted by file stem.
fn class_items(images: &Path, masks: &Path, wnid: &str) -> Result<Vec<Item>, DataError> {
    let mask_dir = masks.join(wnid);
    let image_dir = images.join(wnid);
    if !image_dir.is_dir() {
        return Err(DataError::MissingClassImages { masks: mask_dir, images: image_dir });
    }
    let label = imagenet::index_of(wnid).ok_or_else(|| DataError::UnknownWnid { path: mask_dir.clone() })? as i64;
    let mut stems = Vec::new();
    for path in list_dir(&mask_dir)? {
        let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if is_png && path.is_file() {
            let stem =
                Path::new(utf8_name(&path)?).file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            stems.push((stem, path));
        }
    }
    stems.sort();
    stems
        .into_iter()
        .map(|(stem, mask)| {
            let base = image_dir.join(&stem);
            let image = IMAGE_EXTENSIONS
                .iter()
                .map(|ext| image_dir.join(format!("{stem}.{ext}")))
                .find(|p| p.is_file())
                .ok_or_else(|| DataError::MissingImage { mask: mask.clone(), stem: base })?;
            Ok(Item { image, mask, wnid: wnid.to_string(), label })
        })
        .collect()
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let read_err = |source| DataError::ReadDir { path: dir.to_path_buf(), source };
    std::fs::read_dir(dir).map_err(read_err)?.map(|entry| entry.map(|e| e.path()).map_err(read_err)).collect()
}

fn utf8_name(path: &Path) -> Result<&str, DataError> {
    path.file_name().and_then(|n| n.to_str()).ok_or_else(|| DataError::NonUtf8Name { path: path.to_path_buf() })
}

/// A decoded image and its binary foreground mask (same size), validated.
/// After [`train_resized`] with [`MaskResize::Bilinear`] the mask also holds
/// the intermediate values of the edges.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    pub image: RgbImage,
    /// 0 background, 255 foreground.
    pub mask: GrayImage,
}

/// Decodes an item's image (as PIL `convert('RGB')`) and mask, checking that
/// their sizes agree.
pub fn load_pair(item: &Item, source: MaskSource) -> Result<Pair, DataError> {
    let image = load_rgb(&item.image)?;
    let mask = decode_mask(&item.mask, source)?;
    if image.dimensions() != mask.dimensions() {
        return Err(DataError::SizeMismatch {
            mask: item.mask.clone(),
            mask_size: mask.dimensions(),
            image: item.image.clone(),
            image_size: image.dimensions(),
        });
    }
    Ok(Pair { image, mask })
}

/// A mask PNG as 0/255 foreground.
fn decode_mask(path: &Path, source: MaskSource) -> Result<GrayImage, DataError> {
    // Grey and alpha PNGs arrive with grey replicated and alpha dropped.
    let rgb = load_rgb(path)?;
    let fg = |on: bool| Luma([if on { 255 } else { 0 }]);
    match source {
        MaskSource::Binary => {
            Ok(GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| fg(rgb.get_pixel(x, y).0.iter().any(|&c| c > 127))))
        }
        MaskSource::ImagenetS => {
            let id = |p: &image::Rgb<u8>| u32::from(p[0]) + 256 * u32::from(p[1]);
            let mut object = None;
            for p in rgb.pixels() {
                let v = id(p);
                if v == 0 || v == IGNORED_ID {
                    continue;
                }
                match object {
                    None => object = Some(v),
                    Some(first) if first != v => {
                        return Err(DataError::MultipleObjects { path: path.to_path_buf(), first, second: v })
                    }
                    Some(_) => {}
                }
            }
            let Some(object) = object else {
                return Err(DataError::NoObject { path: path.to_path_buf() });
            };
            Ok(GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| fg(id(rgb.get_pixel(x, y)) == object)))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransformConfig {
    /// Output side S; images are first resized to [`resized_size`]`(S)`.
    pub size: u32,
    /// Take these from the model's pretrained_cfg (the reference uses 0.5).
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub mask_resize: MaskResize,
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            size: 224,
            mean: IMAGENET_DEFAULT_MEAN,
            std: IMAGENET_DEFAULT_STD,
            mask_resize: MaskResize::Nearest,
        }
    }
}

/// R = round(S * 256 / 224), the resize before the S crop (256 for 224).
pub fn resized_size(size: u32) -> u32 {
    // 8S/7 is never halfway between integers, so rounding half up is exact.
    ((8 * u64::from(size) + 3) / 7).min(u64::from(u32::MAX)) as u32
}

/// The random crop offsets and flip of one training sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropFlip {
    pub top: u32,
    pub left: u32,
    /// Mirror the crop left-right.
    pub flip: bool,
}

/// Draws a `size` x `size` crop of a `width` x `height` image (offsets
/// uniform over the valid range, top first) and a flip with p = 0.5, all
/// from `seed` alone.
pub fn crop_flip_params(seed: u64, width: u32, height: u32, size: u32) -> CropFlip {
    let mut rng = SplitMix64(seed);
    let top = rng.below(u64::from(height.saturating_sub(size)) + 1) as u32;
    let left = rng.below(u64::from(width.saturating_sub(size)) + 1) as u32;
    let flip = rng.next_u64() >> 63 == 1;
    CropFlip { top, left, flip }
}

/// The deterministic part of the train transform: resize to R x R ignoring
/// the aspect, PIL bilinear for the image. Cache it across epochs.
pub fn train_resized(pair: &Pair, cfg: &TransformConfig) -> Pair {
    let r = resized_size(cfg.size);
    let image = resize_exact(&pair.image, r, r, Interpolation::Bilinear);
    let mask = on_mask(&pair.mask, |m| resize_exact(m, r, r, mask_interpolation(cfg.mask_resize)));
    Pair { image, mask }
}

/// The random part of the train transform on a [`train_resized`] pair: the
/// crop and flip of [`crop_flip_params`]`(seed, ..)`, then normalisation.
pub fn train_crop_flip(resized: &Pair, label: i64, cfg: &TransformConfig, seed: u64) -> Sample {
    let (w, h) = resized.image.dimensions();
    let cf = crop_flip_params(seed, w, h, cfg.size);
    let image = crop_flip(&resized.image, cf, cfg.size);
    let mask = crop_flip(&resized.mask, cf, cfg.size);
    to_sample(&image, &mask, label, cfg)
}

/// Train transform: [`train_resized`] then [`train_crop_flip`].
pub fn train_sample(pair: &Pair, label: i64, cfg: &TransformConfig, seed: u64) -> Sample {
    train_crop_flip(&train_resized(pair, cfg), label, cfg, seed)
}

/// Eval transform: torchvision Resize(R) (shorter side, PIL bilinear for the
/// image) and CenterCrop(S), i.e. timm's eval with crop_pct = S / R.
pub fn eval_sample(pair: &Pair, label: i64, cfg: &TransformConfig) -> Sample {
    let r = resized_size(cfg.size);
    // crop_pct 1 makes the scale size exactly R.
    let resize_cfg = PreprocessConfig {
        input_size: (r, r),
        crop_pct: 1.0,
        interpolation: Interpolation::Bilinear,
        mean: cfg.mean,
        std: cfg.std,
    };
    let (w, h) = eval_resize_dims(pair.image.width(), pair.image.height(), &resize_cfg);
    let s = cfg.size;
    let image = center_crop(&resize_exact(&pair.image, w, h, Interpolation::Bilinear), s, s);
    let mask = on_mask(&pair.mask, |m| {
        let resized = resize_exact(m, w, h, mask_interpolation(cfg.mask_resize));
        center_crop(&resized, s, s)
    });
    to_sample(&image, &mask, label, cfg)
}

fn mask_interpolation(resize: MaskResize) -> Interpolation {
    match resize {
        MaskResize::Nearest => Interpolation::Nearest,
        MaskResize::Bilinear => Interpolation::Bilinear,
    }
}

/// The `size` x `size` crop at (`top`, `left`), mirrored if asked; pixels
/// beyond the image are zero.
fn crop_flip<P: Pixel<Subpixel = u8>>(
    img: &ImageBuffer<P, Vec<u8>>,
    cf: CropFlip,
    size: u32,
) -> ImageBuffer<P, Vec<u8>> {
    let zero = *P::from_slice(&[0u8; 4][..usize::from(P::CHANNEL_COUNT)]);
    ImageBuffer::from_fn(size, size, |x, y| {
        let x = if cf.flip { size - 1 - x } else { x };
        match (cf.left.checked_add(x), cf.top.checked_add(y)) {
            (Some(sx), Some(sy)) => img.get_pixel_checked(sx, sy).copied().unwrap_or(zero),
            _ => zero,
        }
    })
}

fn to_sample(image: &RgbImage, mask: &GrayImage, label: i64, cfg: &TransformConfig) -> Sample {
    Sample {
        image: normalize_chw(image, cfg.mean, cfg.std),
        mask: gray_view(mask).mapv(|v| f32::from(v) / 255.0),
        label,
    }
}

/// FNV-1a, to turn a wnid into a seed part.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

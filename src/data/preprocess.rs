//! Image preprocessing that reproduces timm's evaluation transform
//! (`timm.data.create_transform(**resolve_data_config({}, model=m))`, crop_mode
//! `'center'`) on PIL images, in pure Rust and without `tch`.
//!
//! The pipeline is Resize(shorter side) -> CenterCrop -> ToTensor -> Normalize.
//! Resampling is a port of Pillow's `libImaging/Resample.c` (separable two-pass
//! convolution, antialiased support, 22-bit fixed-point weights, uint8 rounding
//! and clipping between the passes) and of `Geometry.c`'s `ImagingScaleAffine`
//! for NEAREST, so resized pixels are byte-identical to `Image.resize`.
//! Sizes follow torchvision 0.26 / timm 1.0 exactly, including Python's
//! round-half-to-even where they call `round`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, ImageReader, Luma, RgbImage};

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

/// Resampling filter, as PIL's `Image.Resampling` members of the same name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Interpolation {
    Bicubic,
    Bilinear,
    Nearest,
}

impl Interpolation {
    const ALL: [Interpolation; 3] = [Interpolation::Bicubic, Interpolation::Bilinear, Interpolation::Nearest];

    /// The name timm's pretrained_cfg uses.
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Bicubic => "bicubic",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Nearest => "nearest",
        }
    }

    /// The filter a pretrained_cfg name stands for.
    pub fn parse(name: &str) -> Option<Interpolation> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }
}

/// timm's pretrained_cfg fields that the eval transform uses.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessConfig {
    /// (height, width) of the network input.
    pub input_size: (u32, u32),
    pub crop_pct: f64,
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("cannot read image file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode image file {}: {source}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("image file {} is truncated (JPEG scan data has no end-of-image marker)", path.display())]
    Truncated { path: PathBuf },
}

/// Decodes a JPEG/PNG (format sniffed from the content) into RGB8 the way
/// PIL's `Image.open(path).convert('RGB')` does: alpha is dropped (not
/// composited), grey is replicated, 16-bit colour keeps the high byte and
/// 16-bit grey is clipped to 255 (PIL's `I;16` -> `RGB` rule). EXIF
/// orientation is ignored, as in PIL without `exif_transpose`.
pub fn load_rgb(path: &Path) -> Result<RgbImage, PreprocessError> {
    let mut bytes = std::fs::read(path).map_err(|source| PreprocessError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // The JPEG decoder pads a cut-off scan silently; PIL raises instead.
    if jpeg_is_truncated(&bytes) {
        return Err(PreprocessError::Truncated {
            path: path.to_path_buf(),
        });
    }
    // PIL stops reading at the last IDAT and accepts a PNG without its IEND
    // chunk, which the png crate rejects; supplying one keeps truncated image
    // data an error while matching PIL otherwise.
    if bytes.starts_with(PNG_SIGNATURE) && !bytes.ends_with(PNG_IEND) {
        bytes.extend_from_slice(PNG_IEND);
    }
    let decode_err = |source| PreprocessError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let decoded = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(image::ImageError::IoError(e)))?
        .decode()
        .map_err(decode_err)?;
    Ok(to_rgb8_like_pil(decoded))
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
/// The IEND chunk: zero length, type, CRC.
const PNG_IEND: &[u8] = b"\0\0\0\0IEND\xAE\x42\x60\x82";

/// True for a JPEG whose headers or scan data end before the EOI marker
/// (what PIL reports as "image file is truncated"). Header segments are
/// skipped by length so an EXIF thumbnail's own EOI does not count.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut pos = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let marker = match bytes.get(pos..pos + 2) {
            Some([0xFF, m]) => *m,
            // Not a marker: corrupt rather than cut off; the decoder reports it.
            Some(_) => return false,
            None => return true,
        };
        pos += 2;
        match marker {
            0xDA => break,
            0xD9 => return false,
            0x01 | 0xD0..=0xD7 => {}
            _ => match bytes.get(pos..pos + 2) {
                Some(len) => pos += usize::from(u16::from_be_bytes([len[0], len[1]])),
                None => return true,
            },
        }
    }
    // Inside entropy-coded data 0xFF is always stuffed or an RST marker, so
    // FF D9 there is the real end of image.
    !bytes[pos.min(bytes.len())..]
        .windows(2)
        .any(|w| w == [0xFF, 0xD9])
}

/// PIL's `.convert('RGB')` for each colour type the PNG/JPEG decoders produce.
fn to_rgb8_like_pil(img: DynamicImage) -> RgbImage {
    fn map<P: image::Pixel>(
        src: &image::ImageBuffer<P, Vec<P::Subpixel>>,
        f: impl Fn(&[P::Subpixel]) -> [u8; 3],
    ) -> RgbImage {
        RgbImage::from_fn(src.width(), src.height(), |x, y| {
            image::Rgb(f(src.get_pixel(x, y).channels()))
        })
    }
    // PIL unpacks 16-bit RGB(A)/LA PNG samples by keeping the high byte.
    let hi = |v: u16| (v >> 8) as u8;
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageRgba8(src) => map(&src, |p| [p[0], p[1], p[2]]),
        DynamicImage::ImageLuma8(src) => map(&src, |p| [p[0]; 3]),
        DynamicImage::ImageLumaA8(src) => map(&src, |p| [p[0]; 3]),
        // 16-bit grey opens as mode I;16, whose RGB conversion clips instead of scaling.
        DynamicImage::ImageLuma16(src) => map(&src, |p| [p[0].min(255) as u8; 3]),
        DynamicImage::ImageLumaA16(src) => map(&src, |p| [hi(p[0]); 3]),
        DynamicImage::ImageRgb16(src) => map(&src, |p| [hi(p[0]), hi(p[1]), hi(p[2])]),
        DynamicImage::ImageRgba16(src) => map(&src, |p| [hi(p[0]), hi(p[1]), hi(p[2])]),
        // Float images never come from the JPEG/PNG decoders.
        other => other.to_rgb8(),
    }
}

/// Size (width, height) that timm's eval Resize produces for a `width` x
/// `height` image: torchvision `Resize(int)` when the scale size is square,
/// timm's `ResizeKeepRatio` otherwise.
pub fn eval_resize_dims(width: u32, height: u32, cfg: &PreprocessConfig) -> (u32, u32) {
    // timm: `crop_pct = crop_pct or DEFAULT_CROP_PCT`.
    let crop_pct = if cfg.crop_pct == 0.0 {
        DEFAULT_CROP_PCT
    } else {
        cfg.crop_pct
    };
    let (th, tw) = cfg.input_size;
    // `as u32` saturates, so degenerate crop_pct values cannot panic.
    let scale_h = (f64::from(th) / crop_pct).floor() as u32;
    let scale_w = (f64::from(tw) / crop_pct).floor() as u32;
    if scale_h == scale_w {
        // torchvision _compute_resized_output_size: long = int(size * long / short).
        let (short, long) = if width <= height {
            (width, height)
        } else {
            (height, width)
        };
        let new_long = if short == 0 {
            0
        } else {
            ((u64::from(scale_h) * u64::from(long)) as f64 / f64::from(short)) as u32
        };
        if width <= height {
            (scale_h, new_long)
        } else {
            (new_long, scale_h)
        }
    } else {
        // ResizeKeepRatio(longest=0): ratio = min(img/target) per axis, then round().
        let ratio =
            (f64::from(height) / f64::from(scale_h)).min(f64::from(width) / f64::from(scale_w));
        let h = (f64::from(height) / ratio).round_ties_even() as u32;
        let w = (f64::from(width) / ratio).round_ties_even() as u32;
        (w, h)
    }
}

/// timm eval transform: shorter-side Resize to `floor(input_size / crop_pct)`
/// with PIL resampling, torchvision CenterCrop(input_size), ToTensor and
/// Normalize. Returns CHW f32 of length `3 * H * W`.
///
/// Only the part of the resized image inside the crop is computed; each
/// resized pixel depends only on its own filter taps, so this is exact and
/// keeps absurd `crop_pct` values from allocating huge images (NEAREST still
/// steps through every index before the crop, as PIL accumulates positions).
pub fn eval_transform(img: &RgbImage, cfg: &PreprocessConfig) -> Vec<f32> {
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
        crop_at(
            &window,
            off_x - i64::from(xs.start),
            off_y - i64::from(ys.start),
            tw,
            th,
        )
    };
    normalize_chw(&cropped, cfg.mean, cfg.std)
}

/// PIL `Image.resize((width, height), resample)` with the default box and
/// `reducing_gap=None`. A zero target dimension yields an empty image (PIL
/// raises instead).
pub fn resize_exact(img: &RgbImage, width: u32, height: u32, interp: Interpolation) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    resize_window(img, width, height, interp, 0..width, 0..height)
}

/// Runs an RGB geometry operation on a grey mask.
pub fn on_mask(mask: &GrayImage, op: impl FnOnce(&RgbImage) -> RgbImage) -> GrayImage {
    let rgb = RgbImage::from_fn(mask.width(), mask.height(), |x, y| {
        image::Rgb([mask.get_pixel(x, y)[0]; 3])
    });
    let out = op(&rgb);
    GrayImage::from_fn(out.width(), out.height(), |x, y| {
        Luma([out.get_pixel(x, y)[0]])
    })
}

/// torchvision `CenterCrop((height, width))` on a PIL image: zero-pads
/// (left = floor, right = ceil of half the shortfall) when the crop is larger,
/// and offsets by Python `round((size - crop) / 2)` (ties to even) otherwise.
pub fn center_crop(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let off_x = crop_offset(img.width(), width);
    let off_y = crop_offset(img.height(), height);
    crop_at(img, off_x, off_y, width, height)
}

/// ToTensor (`/255` in f32) then Normalize (`(x - mean) / std` in f32), CHW.
pub fn normalize_chw(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let plane = img.width() as usize * img.height() as usize;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

/// Source coordinate of the crop's first pixel along one axis (negative when padded).
fn crop_offset(size: u32, crop: u32) -> i64 {
    if crop > size {
        -i64::from((crop - size) / 2)
    } else {
        let d = size - crop;
        let half = d / 2;
        // round(k + 0.5) in Python goes to the even neighbour.
        i64::from(if d % 2 == 1 && half % 2 == 1 {
            half + 1
        } else {
            half
        })
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
    RgbImage::from_fn(width, height, |x, y| {
        let (sx, sy) = (i64::from(x) + off_x, i64::from(y) + off_y);
        if (0..iw).contains(&sx) && (0..ih).contains(&sy) {
            *img.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

/// Columns `xs` and rows `ys` of `Image.resize((out_w, out_h), interp)`.
fn resize_window(
    img: &RgbImage,
    out_w: u32,
    out_h: u32,
    interp: Interpolation,
    xs: Range<u32>,
    ys: Range<u32>,
) -> RgbImage {
    if xs.is_empty() || ys.is_empty() {
        return RgbImage::new(xs.len() as u32, ys.len() as u32);
    }
    let filter = match interp {
        Interpolation::Nearest => return nearest_window(img, out_w, out_h, xs, ys),
        Interpolation::Bilinear => Filter::Bilinear,
        Interpolation::Bicubic => Filter::Bicubic,
    };
    resample_window(img, out_w, out_h, filter, xs, ys)
}

/// PIL's antialiasing filters (Resample.c), evaluated with the same
/// expression order so the f64 weights are bit-identical.
#[derive(Clone, Copy)]
enum Filter {
    Bilinear,
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Resample.c: 8 bits of result, 2 bits of headroom for negative lobes.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Source window and fixed-point weights of a run of output indices on one axis.
struct Coeffs {
    ksize: usize,
    /// (first source index, number of taps) per output index.
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

impl Coeffs {
    /// Resample.c `precompute_coeffs` + `normalize_coeffs_8bpc` for the
    /// output indices `outs` of an `in_size` -> `out_size` resize over the box
    /// `[0, in_size)` (PIL passes the box as C floats; integral sizes are exact).
    fn new(in_size: u32, out_size: u32, outs: Range<u32>, filter: Filter) -> Coeffs {
        let scale = f64::from(in_size as f32) / f64::from(out_size);
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut bounds = Vec::with_capacity(outs.len());
        let mut weights = vec![0i32; outs.len() * ksize];
        let mut k = vec![0.0f64; ksize];
        for (xx, row) in outs.zip(weights.chunks_exact_mut(ksize)) {
            let center = (f64::from(xx) + 0.5) * scale;
            // C `(int)` truncation, then clamping to the image.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size));
            let n = (xmax - xmin).max(0) as usize;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = filter.eval(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            for (out, &kx) in row.iter_mut().zip(&k).take(n) {
                let w = if ww != 0.0 { kx / ww } else { kx };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                *out = if w < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
            }
            bounds.push((xmin as usize, n));
        }
        Coeffs {
            ksize,
            bounds,
            weights,
        }
    }

    /// Source indices read by any output index.
    fn source_span(&self) -> Range<usize> {
        let first = self.bounds.first().map_or(0, |b| b.0);
        let last = self.bounds.last().map_or(0, |b| b.0 + b.1);
        first..last.max(first)
    }

    fn taps(&self) -> impl Iterator<Item = (&(usize, usize), &[i32])> {
        self.bounds
            .iter()
            .zip(self.weights.chunks_exact(self.ksize))
    }
}

/// Rounds away the fixed-point fraction and clips to uint8 (PIL's clip8 table).
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resample.c `ImagingResampleInner` for RGB8, restricted to output columns
/// `xs` and rows `ys`: two separable passes, each rounded and clipped to
/// uint8; a pass is skipped when its dimension is unchanged. Pillow 13 runs
/// the vertical pass first when the height shrinks by more than twice as many
/// pixels as the width, otherwise the horizontal pass first. The order changes
/// the rounding of the intermediate image, so it must match.
fn resample_window(
    img: &RgbImage,
    out_w: u32,
    out_h: u32,
    filter: Filter,
    xs: Range<u32>,
    ys: Range<u32>,
) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    let mut out = RgbImage::new(xs.len() as u32, ys.len() as u32);
    if in_h == out_h {
        let horiz = Coeffs::new(in_w, out_w, xs, filter);
        horizontal_pass(img, ys.start as usize, 0, &horiz, &mut out);
        return out;
    }
    let vert = Coeffs::new(in_h, out_h, ys.clone(), filter);
    if in_w == out_w {
        vertical_pass(img, 0, xs.start as usize, &vert, &mut out);
        return out;
    }
    let horiz = Coeffs::new(in_w, out_w, xs.clone(), filter);
    let shrink_h = i64::from(in_h) - i64::from(out_h);
    let shrink_w = i64::from(in_w) - i64::from(out_w);
    if shrink_h > 0 && shrink_h > 2 * shrink_w {
        let cols = horiz.source_span();
        let mut tmp = RgbImage::new(cols.len() as u32, ys.len() as u32);
        vertical_pass(img, 0, cols.start, &vert, &mut tmp);
        horizontal_pass(&tmp, 0, cols.start, &horiz, &mut out);
    } else {
        let rows = vert.source_span();
        let mut tmp = RgbImage::new(xs.len() as u32, rows.len() as u32);
        horizontal_pass(img, rows.start, 0, &horiz, &mut tmp);
        vertical_pass(&tmp, rows.start, 0, &vert, &mut out);
    }
    out
}

/// Resample.c `ImagingResampleHorizontal_8bpc`. `src` holds source rows from
/// `row0` and columns from `col0`; output row `y` is source row `row0 + y`.
fn horizontal_pass(src: &RgbImage, row0: usize, col0: usize, coeffs: &Coeffs, out: &mut RgbImage) {
    let in_stride = src.width() as usize * 3;
    let out_stride = out.width() as usize * 3;
    if out_stride == 0 {
        return;
    }
    let src = src.as_raw();
    for (y, out_row) in out.chunks_exact_mut(out_stride).enumerate() {
        let in_row = &src[(row0 + y) * in_stride..][..in_stride];
        for (out_px, (&(xmin, n), k)) in out_row.chunks_exact_mut(3).zip(coeffs.taps()) {
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (px, &w) in in_row[(xmin - col0) * 3..][..n * 3].chunks_exact(3).zip(k) {
                for c in 0..3 {
                    acc[c] += i64::from(px[c]) * i64::from(w);
                }
            }
            for c in 0..3 {
                out_px[c] = clip8(acc[c]);
            }
        }
    }
}

/// Resample.c `ImagingResampleVertical_8bpc`. `src` holds source rows from
/// `row0`; output column `x` is `src` column `col0 + x`.
fn vertical_pass(src: &RgbImage, row0: usize, col0: usize, coeffs: &Coeffs, out: &mut RgbImage) {
    let in_stride = src.width() as usize * 3;
    let out_stride = out.width() as usize * 3;
    if out_stride == 0 {
        return;
    }
    let src = src.as_raw();
    for (out_row, (&(ymin, n), k)) in out.chunks_exact_mut(out_stride).zip(coeffs.taps()) {
        let rows = &src[(ymin - row0) * in_stride..][..n * in_stride];
        for (i, o) in out_row.iter_mut().enumerate() {
            let mut acc = 1i64 << (PRECISION_BITS - 1);
            for (row, &w) in rows.chunks_exact(in_stride).zip(k) {
                acc += i64::from(row[col0 * 3 + i]) * i64::from(w);
            }
            *o = clip8(acc);
        }
    }
}

/// Geometry.c `ImagingScaleAffine`, which `Image.resize(NEAREST)` uses,
/// restricted to output columns `xs` and rows `ys`: the source index is
/// `trunc((i + 0.5) * in / out)`, with the position accumulated by repeated
/// addition as PIL does; pixels mapping outside the source stay zero.
fn nearest_window(
    img: &RgbImage,
    out_w: u32,
    out_h: u32,
    xs: Range<u32>,
    ys: Range<u32>,
) -> RgbImage {
    fn index_table(in_size: u32, out_size: u32, outs: Range<u32>) -> Vec<Option<u32>> {
        let step = f64::from(in_size as f32) / f64::from(out_size);
        let mut pos = step * 0.5;
        (0..outs.end)
            .map(|_| {
                // COORD(v): negative -> -1, else C truncation.
                let idx = (pos >= 0.0).then_some(pos as u64);
                pos += step;
                idx.filter(|&i| i < u64::from(in_size)).map(|i| i as u32)
            })
            .skip(outs.start as usize)
            .collect()
    }
    let col = index_table(img.width(), out_w, xs);
    let row = index_table(img.height(), out_h, ys);
    RgbImage::from_fn(col.len() as u32, row.len() as u32, |x, y| {
        match (col[x as usize], row[y as usize]) {
            (Some(sx), Some(sy)) => *img.get_pixel(sx, sy),
            _ => image::Rgb([0, 0, 0]),
        }
    })
}

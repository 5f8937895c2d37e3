//! Resizing that reproduces PIL's `Image.resize` byte for byte: a port of Pillow's `libImaging/Resample.c`
//! (separable two-pass convolution, antialiased support, 22-bit fixed-point weights, uint8 rounding and
//! clipping between the passes) and of `Geometry.c`'s `ImagingScaleAffine` for NEAREST. Hand-written
//! because no crate resamples as PIL does, and the paper's numbers depend on those pixels.
use std::ops::Range;

use image::RgbImage;

crate::named_enum! {
    /// Resampling filter, as PIL's `Image.Resampling` members of the same name; named as timm's
    /// pretrained_cfg names them.
    pub enum Interpolation("interpolation") {
        Bicubic = "bicubic",
        Bilinear = "bilinear",
        Nearest = "nearest",
    }
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

/// Columns `xs` and rows `ys` of `Image.resize((out_w, out_h), interp)`.
pub(crate) fn resize_window(
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
                *out = if w < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 };
            }
            bounds.push((xmin as usize, n));
        }
        Coeffs { ksize, bounds, weights }
    }

    /// Source indices read by any output index.
    fn source_span(&self) -> Range<usize> {
        let first = self.bounds.first().map_or(0, |b| b.0);
        let last = self.bounds.last().map_or(0, |b| b.0 + b.1);
        first..last.max(first)
    }

    fn taps(&self) -> impl Iterator<Item = (&(usize, usize), &[i32])> {
        self.bounds.iter().zip(self.weights.chunks_exact(self.ksize))
    }
}

/// Rounds away the fixed-point fraction and clips to uint8 (PIL's clip8 table). Sums are C `int`s in PIL:
/// the weights' 22 bits leave headroom for 8-bit pixels, so i32 holds them as there.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resample.c `ImagingResampleInner` for RGB8, restricted to output columns
/// `xs` and rows `ys`: two separable passes, each rounded and clipped to
/// uint8; a pass is skipped when its dimension is unchanged. Pillow 13 runs
/// the vertical pass first when the height shrinks by more than twice as many
/// pixels as the width, otherwise the horizontal pass first. The order changes
/// the rounding of the intermediate image, so it must match.
fn resample_window(img: &RgbImage, out_w: u32, out_h: u32, filter: Filter, xs: Range<u32>, ys: Range<u32>) -> RgbImage {
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
            let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
            for (px, &w) in in_row[(xmin - col0) * 3..][..n * 3].chunks_exact(3).zip(k) {
                for c in 0..3 {
                    acc[c] += i32::from(px[c]) * w;
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
    // A whole output row accumulates source row by source row (the same sums as PIL's pixel by pixel, in
    // the same order), so the inner loop runs along contiguous bytes and vectorises.
    let mut acc = vec![0i32; out_stride];
    for (out_row, (&(ymin, n), k)) in out.chunks_exact_mut(out_stride).zip(coeffs.taps()) {
        acc.fill(1 << (PRECISION_BITS - 1));
        let rows = &src[(ymin - row0) * in_stride..][..n * in_stride];
        for (row, &w) in rows.chunks_exact(in_stride).zip(k) {
            for (a, &px) in acc.iter_mut().zip(&row[col0 * 3..][..out_stride]) {
                *a += i32::from(px) * w;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// Geometry.c `ImagingScaleAffine`, which `Image.resize(NEAREST)` uses,
/// restricted to output columns `xs` and rows `ys`: the source index is
/// `trunc((i + 0.5) * in / out)`, with the position accumulated by repeated
/// addition as PIL does; pixels mapping outside the source stay zero.
fn nearest_window(img: &RgbImage, out_w: u32, out_h: u32, xs: Range<u32>, ys: Range<u32>) -> RgbImage {
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
    RgbImage::from_fn(col.len() as u32, row.len() as u32, |x, y| match (col[x as usize], row[y as usize]) {
        (Some(sx), Some(sy)) => *img.get_pixel(sx, sy),
        _ => image::Rgb([0, 0, 0]),
    })
}

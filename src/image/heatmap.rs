//! Pictures of relevance maps: colormapping, overlays, text labels and image
//! layout (stacks, grids, upscaling).
//!
//! Everything here is total: odd input (empty images, zero sizes, NaN
//! relevance, text running off the image) never panics. Relevance values and
//! blend factors are sanitised the same way everywhere: NaN becomes 0 and the
//! value is clamped to `[0, 1]`.

use image::{imageops, Rgb, RgbImage};
use ndarray::ArrayView2;

// The colormap table lives in its own generated file so this one stays readable.
mod inferno;
use inferno::INFERNO;

/// Background of layout canvases (`hstack`, `vstack`, `grid`).
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
/// Background of [`caption_strip`]: dark, so white text reads well.
const CAPTION_BG: Rgb<u8> = Rgb([24, 24, 24]);
/// Side length of a font glyph in pixels (before scaling).
const GLYPH: u64 = 8;

/// Maps NaN to 0 and clamps to `[0, 1]`.
fn unit(v: f32) -> f32 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(0.0, 1.0)
    }
}

/// Matplotlib's "inferno" colormap (256 entries, perceptually uniform).
///
/// `t` is clamped to `[0, 1]` (NaN counts as 0) and looked up at index
/// `round(t * 255)`, so 0 is near black and 1 is pale yellow.
pub fn inferno(t: f32) -> Rgb<u8> {
    // In range by construction: unit() yields [0, 1].
    let index = (unit(t) * 255.0).round() as usize;
    Rgb(INFERNO[index])
}

/// Blends the inferno-coloured `relevance` map (`[height, width]`) over `image`.
///
/// Values are sanitised (NaN -> 0, clamped to `[0, 1]`). Each output channel
/// is `round((1 - alpha) * image + alpha * inferno(r))`, with `alpha`
/// sanitised the same way. The map must match the image exactly (no implicit
/// resizing, which would hide a patch-grid/pixel mix-up).
///
/// # Errors
///
/// If the map's size differs from the image's; the message names both sizes.
pub fn overlay(image: &RgbImage, relevance: ArrayView2<f32>, alpha: f32) -> Result<RgbImage, String> {
    let (image_w, image_h) = image.dimensions();
    let (height, width) = relevance.dim();
    if (image_w as usize, image_h as usize) != (width, height) {
        return Err(format!("relevance map is {width}x{height} but image is {image_w}x{image_h}"));
    }
    let alpha = unit(alpha);
    let mut out = image.clone();
    // Row-major on both sides, whatever the view's strides.
    for (pixel, &r) in out.pixels_mut().zip(relevance.iter()) {
        let colour = inferno(r);
        for (channel, &c) in pixel.0.iter_mut().zip(&colour.0) {
            let blended = (1.0 - alpha) * f32::from(*channel) + alpha * f32::from(c);
            // A convex combination of two u8 values stays within [0, 255].
            *channel = blended.round() as u8;
        }
    }
    Ok(out)
}

/// Fills the part of the rectangle `(x, y, w, h)` that lies inside `img`.
///
/// Coordinates are `u64` so callers can compute positions past the image
/// border without overflow; those parts are simply clipped.
fn fill_rect(img: &mut RgbImage, x: u64, y: u64, w: u64, h: u64, colour: Rgb<u8>) {
    let x_end = x.saturating_add(w).min(u64::from(img.width()));
    let y_end = y.saturating_add(h).min(u64::from(img.height()));
    // Both ends are bounded by the image size, so the casts are lossless.
    for py in y..y_end {
        for px in x..x_end {
            img.put_pixel(px as u32, py as u32, colour);
        }
    }
}

/// The 8x8 glyph for `c`; anything outside printable ASCII renders as `?`.
///
/// Rows are top to bottom; bit `i` of a row is column `i` from the left.
fn glyph(c: char) -> [u8; 8] {
    let c = if (' '..='~').contains(&c) { c } else { '?' };
    font8x8::legacy::BASIC_LEGACY[c as usize]
}

/// Draws `text` (glyph pixels only, no background) with its top-left corner
/// at `(x, y)`, each font pixel as a `scale x scale` block, clipped to `img`.
fn draw_text(img: &mut RgbImage, x: u64, y: u64, text: &str, scale: u64, fg: Rgb<u8>) {
    let advance = GLYPH.saturating_mul(scale);
    for (i, c) in text.chars().enumerate() {
        let left = x.saturating_add((i as u64).saturating_mul(advance));
        if left >= u64::from(img.width()) {
            break;
        }
        for (row, bits) in (0u64..).zip(glyph(c)) {
            for col in 0..GLYPH {
                if (bits >> col) & 1 == 1 {
                    let px = left.saturating_add(col * scale);
                    let py = y.saturating_add(row * scale);
                    fill_rect(img, px, py, scale, scale, fg);
                }
            }
        }
    }
}

/// Draws `text` in the 8x8 bitmap font, scaled by `scale` (0 counts as 1),
/// on a filled `bg` box whose top-left corner is `(x, y)`.
///
/// The box pads the text by `2 * scale` pixels on every side, so it is
/// `8 * scale * chars + 4 * scale` wide and `12 * scale` high. Characters
/// outside printable ASCII are drawn as `?`. Everything is clipped at the
/// image border; empty text draws nothing.
pub fn label(img: &mut RgbImage, x: u32, y: u32, text: &str, scale: u32, fg: Rgb<u8>, bg: Rgb<u8>) {
    if text.is_empty() {
        return;
    }
    let scale = u64::from(scale.max(1));
    let pad = 2 * scale;
    let chars = text.chars().count() as u64;
    let (x, y) = (u64::from(x), u64::from(y));
    let box_w = GLYPH.saturating_mul(scale).saturating_mul(chars) + 2 * pad;
    let box_h = GLYPH * scale + 2 * pad;
    fill_rect(img, x, y, box_w, box_h, bg);
    draw_text(img, x + pad, y + pad, text, scale, fg);
}

/// Shortens `line` to at most `max_chars` characters, ending in `...` when
/// something was cut off.
fn fit_line(line: &str, max_chars: usize) -> String {
    if line.chars().count() <= max_chars {
        line.to_owned()
    } else if max_chars >= 3 {
        line.chars().take(max_chars - 3).chain("...".chars()).collect()
    } else {
        ".".repeat(max_chars)
    }
}

/// A dark strip `width` pixels wide holding `lines` of white text, meant to
/// be stacked under an image as its caption.
///
/// Text uses the 8x8 font scaled by `scale` (0 counts as 1) with `2 * scale`
/// pixels of padding around and between lines, so the strip is
/// `2 * scale + lines * 10 * scale` high. Lines too long for the width are
/// truncated with `...`.
pub fn caption_strip(width: u32, lines: &[String], scale: u32) -> RgbImage {
    let scale = u64::from(scale.max(1));
    let pad = 2 * scale;
    let pitch = GLYPH * scale + pad;
    let height = pad.saturating_add(pitch.saturating_mul(lines.len() as u64));
    let mut strip = RgbImage::from_pixel(width, u32::try_from(height).unwrap_or(u32::MAX), CAPTION_BG);
    let max_chars = (u64::from(width).saturating_sub(2 * pad) / (GLYPH * scale)) as usize;
    for (i, line) in (0u64..).zip(lines) {
        let top = pad + i * pitch;
        draw_text(&mut strip, pad, top, &fit_line(line, max_chars), scale, WHITE);
    }
    strip
}

/// Concatenates `images` along one axis with `gap` white pixels between them,
/// aligned to the top (horizontal) or left (vertical) and padded with white.
fn stack(images: &[RgbImage], gap: u32, horizontal: bool) -> RgbImage {
    if images.is_empty() {
        return RgbImage::from_pixel(1, 1, WHITE);
    }
    let along = |img: &RgbImage| {
        if horizontal {
            img.width()
        } else {
            img.height()
        }
    };
    let across = |img: &RgbImage| {
        if horizontal {
            img.height()
        } else {
            img.width()
        }
    };
    let gaps = gap.saturating_mul(u32::try_from(images.len() - 1).unwrap_or(u32::MAX));
    let length = images.iter().fold(gaps, |acc, img| acc.saturating_add(along(img)));
    let thickness = images.iter().map(across).max().unwrap_or(0);
    let (w, h) = if horizontal { (length, thickness) } else { (thickness, length) };
    let mut out = RgbImage::from_pixel(w, h, WHITE);
    let mut offset = 0i64;
    for img in images {
        let (x, y) = if horizontal { (offset, 0) } else { (0, offset) };
        imageops::replace(&mut out, img, x, y);
        offset += i64::from(along(img)) + i64::from(gap);
    }
    out
}

/// Places `images` side by side, left to right, separated by `gap` white
/// pixels; shorter images are top-aligned on white. An empty slice gives a
/// 1x1 white image.
pub fn hstack(images: &[RgbImage], gap: u32) -> RgbImage {
    stack(images, gap, true)
}

/// Places `images` top to bottom, separated by `gap` white pixels; narrower
/// images are left-aligned on white. An empty slice gives a 1x1 white image.
pub fn vstack(images: &[RgbImage], gap: u32) -> RgbImage {
    stack(images, gap, false)
}

/// Lays `tiles` out row by row, `columns` per row (0 counts as 1), on white
/// with `gap` pixels between cells.
///
/// Every cell is the size of the largest tile (widest by tallest) and tiles
/// sit at the top-left of their cell. The grid is only as wide as the columns
/// actually used, so fewer tiles than `columns` leave no empty margin. An
/// empty slice gives a 1x1 white image.
pub fn grid(tiles: &[RgbImage], columns: usize, gap: u32) -> RgbImage {
    if tiles.is_empty() {
        return RgbImage::from_pixel(1, 1, WHITE);
    }
    let columns = columns.clamp(1, tiles.len());
    let rows = tiles.len().div_ceil(columns);
    let cell_w = tiles.iter().map(RgbImage::width).max().unwrap_or(0);
    let cell_h = tiles.iter().map(RgbImage::height).max().unwrap_or(0);
    let span = |count: usize, cell: u32| -> u32 {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        cell.saturating_mul(count).saturating_add(gap.saturating_mul(count - 1))
    };
    let mut out = RgbImage::from_pixel(span(columns, cell_w), span(rows, cell_h), WHITE);
    for (i, tile) in tiles.iter().enumerate() {
        let x = (i % columns) as i64 * (i64::from(cell_w) + i64::from(gap));
        let y = (i / columns) as i64 * (i64::from(cell_h) + i64::from(gap));
        imageops::replace(&mut out, tile, x, y);
    }
    out
}

/// Enlarges `img` by an integer `factor` (0 counts as 1), repeating each
/// pixel as a `factor x factor` block, so small inputs (e.g. 32x32) stay
/// crisp instead of blurring.
pub fn upscale_nearest(img: &RgbImage, factor: u32) -> RgbImage {
    let factor = factor.max(1);
    let w = img.width().saturating_mul(factor);
    let h = img.height().saturating_mul(factor);
    RgbImage::from_fn(w, h, |x, y| *img.get_pixel(x / factor, y / factor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
    const RED: Rgb<u8> = Rgb([255, 0, 0]);

    /// A deterministic, non-uniform test image.
    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 17 % 256) as u8, (y * 29 % 256) as u8, 77]))
    }

    fn luma(p: &Rgb<u8>) -> u32 {
        299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2])
    }

    #[test]
    fn inferno_matches_matplotlib() {
        // Printed from matplotlib 3.11.2: round(255 * colormaps['inferno'].colors[i]).
        assert_eq!(inferno(0.0), Rgb([0, 0, 4])); // colors[0] = (0.001462, 0.000466, 0.013866)
        assert_eq!(INFERNO[128], [188, 55, 84]); // colors[128] = (0.735683, 0.215906, 0.330245)
        assert_eq!(inferno(1.0), Rgb([252, 255, 164])); // colors[255] = (0.988362, 0.998364, 0.644924)
                                                        // round(0.5 * 255) = round(127.5) = 128.
        assert_eq!(inferno(0.5), Rgb([188, 55, 84]));
    }

    #[test]
    fn inferno_sanitises_input() {
        assert_eq!(inferno(f32::NAN), inferno(0.0));
        assert_eq!(inferno(-3.0), inferno(0.0));
        assert_eq!(inferno(f32::NEG_INFINITY), inferno(0.0));
        assert_eq!(inferno(7.0), inferno(1.0));
        assert_eq!(inferno(f32::INFINITY), inferno(1.0));
    }

    #[test]
    fn inferno_brightens_monotonically() {
        for i in 1..256 {
            assert!(luma(&Rgb(INFERNO[i])) > luma(&Rgb(INFERNO[i - 1])), "entry {i}");
        }
    }

    #[test]
    fn overlay_alpha_zero_is_identity_and_one_is_colormap() {
        let img = gradient(5, 4);
        let rel = Array2::from_shape_fn((4, 5), |(y, x)| (y * 5 + x) as f32 / 19.0);
        assert_eq!(overlay(&img, rel.view(), 0.0).unwrap(), img);
        let full = overlay(&img, rel.view(), 1.0).unwrap();
        for (x, y, p) in full.enumerate_pixels() {
            assert_eq!(*p, inferno(rel[[y as usize, x as usize]]));
        }
        // alpha is sanitised like relevance.
        assert_eq!(overlay(&img, rel.view(), f32::NAN).unwrap(), img);
        assert_eq!(overlay(&img, rel.view(), 2.0).unwrap(), full);
        // A transposed view is read by index, not by memory order.
        let square = gradient(4, 4);
        let m = Array2::from_shape_fn((4, 4), |(y, x)| (y * 4 + x) as f32 / 15.0);
        let t = m.t().to_owned();
        assert_eq!(overlay(&square, t.view(), 1.0).unwrap(), overlay(&square, m.t(), 1.0).unwrap());
    }

    #[test]
    fn overlay_blends_and_rounds() {
        let img = RgbImage::from_pixel(1, 1, Rgb([100, 0, 255]));
        let out = overlay(&img, Array2::from_elem((1, 1), 1.0).view(), 0.25).unwrap();
        // 0.75 * [100, 0, 255] + 0.25 * [252, 255, 164] = [138, 63.75, 232.25].
        assert_eq!(*out.get_pixel(0, 0), Rgb([138, 64, 232]));
    }

    #[test]
    fn overlay_brightest_pixel_is_peak_relevance() {
        let (w, h) = (9u32, 7u32);
        let img = RgbImage::from_pixel(w, h, Rgb([128, 128, 128]));
        let (px, py) = (6.0f32, 2.0f32);
        let rel = Array2::from_shape_fn((h as usize, w as usize), |(y, x)| {
            let d2 = (x as f32 - px).powi(2) + (y as f32 - py).powi(2);
            (-d2 / 4.0).exp()
        });
        let out = overlay(&img, rel.view(), 0.6).unwrap();
        let (best, _) = out.enumerate_pixels().map(|(x, y, p)| ((x, y), luma(p))).max_by_key(|&(_, l)| l).unwrap();
        assert_eq!(best, (6, 2));
    }

    #[test]
    fn overlay_sanitises_relevance() {
        let img = gradient(3, 1);
        let dirty = overlay(&img, ndarray::arr2(&[[f32::NAN, -1.0, 5.0]]).view(), 1.0).unwrap();
        let clean = overlay(&img, ndarray::arr2(&[[0.0, 0.0, 1.0]]).view(), 1.0).unwrap();
        assert_eq!(dirty, clean);
    }

    #[test]
    fn overlay_rejects_size_mismatch() {
        let img = gradient(4, 3);
        let err = overlay(&img, Array2::zeros((2, 2)).view(), 0.5).unwrap_err();
        assert!(err.contains("2x2") && err.contains("4x3"), "{err}");
        // Height and width swapped is a mismatch too.
        let err = overlay(&img, Array2::zeros((4, 3)).view(), 0.5).unwrap_err();
        assert!(err.contains("3x4") && err.contains("4x3"), "{err}");
        // Empty image with an empty map is fine.
        let empty = overlay(&RgbImage::new(0, 0), Array2::zeros((0, 0)).view(), 0.5).unwrap();
        assert_eq!(empty.dimensions(), (0, 0));
    }

    #[test]
    fn label_draws_only_inside_its_box() {
        let mut img = RgbImage::from_pixel(40, 30, BLACK);
        let (x, y, scale) = (5u32, 6u32, 2u32);
        label(&mut img, x, y, "A", scale, Rgb([255, 255, 255]), RED);
        // Box: pad 4 + glyph 16 + pad 4 = 24 px square.
        let inside = |px: u32, py: u32| (x..x + 24).contains(&px) && (y..y + 24).contains(&py);
        let mut fg_pixels = 0;
        for (px, py, p) in img.enumerate_pixels() {
            if inside(px, py) {
                assert!(*p == RED || *p == Rgb([255, 255, 255]), "({px},{py}) = {p:?}");
                fg_pixels += usize::from(*p != RED);
            } else {
                assert_eq!(*p, BLACK, "({px},{py}) outside the box changed");
            }
        }
        // 'A' has 26 set bits in font8x8, each drawn as a 2x2 block.
        let bits: u32 = glyph('A').iter().map(|r| r.count_ones()).sum();
        assert_eq!(fg_pixels, 4 * bits as usize);
        // Top glyph row of 'A' is 0x0C: columns 2 and 3 set, 0 and 1 clear.
        let (tx, ty) = (x + 4, y + 4);
        assert_eq!(*img.get_pixel(tx + 2 * 2, ty), Rgb([255, 255, 255]));
        assert_eq!(*img.get_pixel(tx + 3 * 2 + 1, ty + 1), Rgb([255, 255, 255]));
        assert_eq!(*img.get_pixel(tx, ty), RED);
        assert_eq!(*img.get_pixel(tx + 2 * 2 - 1, ty), RED);
    }

    #[test]
    fn label_replaces_non_ascii_with_question_mark() {
        let mut a = RgbImage::from_pixel(30, 14, BLACK);
        let mut b = a.clone();
        label(&mut a, 1, 1, "é\n", 1, Rgb([255, 255, 255]), RED);
        label(&mut b, 1, 1, "??", 1, Rgb([255, 255, 255]), RED);
        assert_eq!(a, b);
        assert_ne!(a, RgbImage::from_pixel(30, 14, BLACK));
    }

    #[test]
    fn label_clips_and_never_panics() {
        let mut img = RgbImage::from_pixel(10, 10, BLACK);
        label(&mut img, 7, 8, "clipped text", 3, Rgb([255, 255, 255]), RED);
        assert_eq!(*img.get_pixel(9, 9), RED); // Box (pad 6) reaches the corner.
        assert_eq!(*img.get_pixel(6, 9), BLACK);
        assert_eq!(*img.get_pixel(9, 7), BLACK);
        let before = img.clone();
        label(&mut img, u32::MAX, u32::MAX, "far away", u32::MAX, BLACK, RED);
        label(&mut img, 0, 0, "", 1, BLACK, RED);
        assert_eq!(img, before);
        label(&mut img, 0, 0, "zero scale", 0, BLACK, RED); // Treated as 1.
        assert_eq!(*img.get_pixel(0, 0), RED);
        label(&mut RgbImage::new(0, 0), 0, 0, "x", 1, BLACK, RED);
    }

    #[test]
    fn caption_strip_size_and_text() {
        let lines = vec!["207 golden retriever 87.1%".to_string(), "b".to_string()];
        let strip = caption_strip(300, &lines, 1);
        // pad 2 + 2 lines * (8 + 2).
        assert_eq!(strip.dimensions(), (300, 22));
        assert_eq!(*strip.get_pixel(0, 0), CAPTION_BG);
        let white = |x0: u32, y0: u32, w: u32, h: u32| {
            (y0..y0 + h).any(|y| (x0..x0 + w).any(|x| *strip.get_pixel(x, y) == WHITE))
        };
        assert!(white(2, 2, 8, 8)); // '2' of the first line.
        assert!(white(2, 12, 8, 8)); // 'b' on the second line.
        assert!(!white(10, 12, 290, 10)); // Second line is a single char.
        assert!(!white(0, 0, 300, 2) && !white(0, 20, 300, 2)); // Padding stays dark.

        let scaled = caption_strip(50, &lines, 2);
        assert_eq!(scaled.height(), 4 + 2 * 20);
        assert_eq!(caption_strip(0, &lines, 0).dimensions(), (0, 22));
        assert_eq!(caption_strip(10, &[], 1).dimensions(), (10, 2));
    }

    #[test]
    fn caption_strip_truncates_with_ellipsis() {
        // 100 px wide, pad 2: (100 - 4) / 8 = 12 characters fit.
        let long = vec!["abcdefghijklmnopqrstuvwxyz".to_string()];
        let strip = caption_strip(100, &long, 1);
        let mut expected = RgbImage::from_pixel(100, 12, CAPTION_BG);
        draw_text(&mut expected, 2, 2, "abcdefghi...", 1, WHITE);
        assert_eq!(strip, expected);
        assert_eq!(fit_line("abcdef", 6), "abcdef");
        assert_eq!(fit_line("abcdefg", 6), "abc...");
        assert_eq!(fit_line("abcdefg", 2), "..");
        assert_eq!(fit_line("ééééé", 4), "é...");
    }

    #[test]
    fn stacks_pad_with_white_and_align_top_left() {
        let a = RgbImage::from_pixel(2, 3, RED);
        let b = RgbImage::from_pixel(4, 1, BLACK);
        let h = hstack(&[a.clone(), b.clone()], 1);
        assert_eq!(h.dimensions(), (7, 3));
        assert_eq!(*h.get_pixel(1, 2), RED);
        assert_eq!(*h.get_pixel(2, 0), WHITE); // Gap.
        assert_eq!(*h.get_pixel(3, 0), BLACK);
        assert_eq!(*h.get_pixel(6, 0), BLACK);
        assert_eq!(*h.get_pixel(3, 1), WHITE); // Below the short image.

        let v = vstack(&[a, b], 2);
        assert_eq!(v.dimensions(), (4, 6));
        assert_eq!(*v.get_pixel(1, 2), RED);
        assert_eq!(*v.get_pixel(2, 0), WHITE); // Right of the narrow image.
        assert_eq!(*v.get_pixel(0, 3), WHITE); // Gap.
        assert_eq!(*v.get_pixel(3, 5), BLACK);

        let one_white = RgbImage::from_pixel(1, 1, WHITE);
        assert_eq!(hstack(&[], 5), one_white);
        assert_eq!(vstack(&[], 5), one_white);
        let empties = [RgbImage::new(0, 0), RgbImage::new(0, 0)];
        assert_eq!(hstack(&empties, 3).dimensions(), (3, 0));
    }

    #[test]
    fn grid_dimensions_and_placement() {
        let tiles: Vec<RgbImage> =
            (0..5u8).map(|i| RgbImage::from_pixel(3 + u32::from(i % 2), 2, Rgb([i, i, i]))).collect();
        // Cells 4x2; 2 columns x 3 rows; gap 1.
        let g = grid(&tiles, 2, 1);
        assert_eq!(g.dimensions(), (2 * 4 + 1, 3 * 2 + 2));
        assert_eq!(*g.get_pixel(0, 0), Rgb([0, 0, 0]));
        assert_eq!(*g.get_pixel(3, 0), WHITE); // Tile 0 is 3 wide in a 4-wide cell.
        assert_eq!(*g.get_pixel(5, 0), Rgb([1, 1, 1]));
        assert_eq!(*g.get_pixel(0, 3), Rgb([2, 2, 2]));
        assert_eq!(*g.get_pixel(0, 6), Rgb([4, 4, 4]));
        assert_eq!(*g.get_pixel(5, 6), WHITE); // Missing sixth tile.

        assert_eq!(grid(&tiles, 0, 1).dimensions(), (4, 5 * 2 + 4));
        assert_eq!(grid(&tiles, 99, 0).dimensions(), (5 * 4, 2));
        assert_eq!(grid(&[], 3, 2), RgbImage::from_pixel(1, 1, WHITE));
    }

    #[test]
    fn upscale_repeats_pixels() {
        let img = gradient(2, 3);
        let big = upscale_nearest(&img, 4);
        assert_eq!(big.dimensions(), (8, 12));
        for (x, y, p) in big.enumerate_pixels() {
            assert_eq!(p, img.get_pixel(x / 4, y / 4));
        }
        assert_eq!(upscale_nearest(&img, 0), img);
        assert_eq!(upscale_nearest(&RgbImage::new(0, 5), 3).dimensions(), (0, 15));
    }
}

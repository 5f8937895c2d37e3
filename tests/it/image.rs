//! The image code against PIL and timm (python/fixtures/pil_goldens.py, run once into target/fixtures/pil-goldens):
//! `resize_exact` byte for byte against `Image.resize` for BILINEAR, NEAREST and BICUBIC, masks resized as PIL
//! resizes mode L, `load_rgb`'s verdict (loads / errors) and pixels against `Image.open(p).convert('RGB')`, JPEGs
//! of every kind PIL writes decoded byte for byte as PIL decodes them, and `eval_transform` against timm's eval
//! transform for bilinear and nearest interpolation.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, RgbImage};
use robustvit::image::{eval_transform, load_rgb, on_mask, resize_exact, Interpolation, PreprocessConfig};
use serde::Deserialize;

use crate::support::made;

#[derive(Deserialize)]
struct Index {
    pillow: String,
    libjpeg_turbo: String,
    resize: Vec<ResizeCase>,
    mask: Vec<ResizeCase>,
    decode: Vec<DecodeCase>,
    jpeg: Vec<JpegCase>,
    eval: Vec<EvalCase>,
}

#[derive(Deserialize)]
struct ResizeCase {
    source: String,
    filter: Interpolation,
    size: (u32, u32),
    output: String,
    #[serde(default)]
    why: String,
}

#[derive(Deserialize)]
struct DecodeCase {
    file: String,
    what: String,
    /// "loads" or "raises".
    pil: String,
    error: Option<String>,
    /// PIL's RGB pixels (loadable files only).
    pixels: Option<String>,
    size: Option<(u32, u32)>,
}

#[derive(Deserialize)]
struct JpegCase {
    file: String,
    /// The kind of JPEG ("baseline 4:2:0", "CMYK", ...), to count cases by.
    family: String,
    what: String,
    /// PIL's size and RGB pixels.
    size: (u32, u32),
    pixels: String,
}

#[derive(Deserialize)]
struct EvalCase {
    source: String,
    interpolation: Interpolation,
    /// (height, width), as timm's input_size without channels.
    input_size: (u32, u32),
    crop_pct: f64,
    mean: [f32; 3],
    std: [f32; 3],
    output: String,
}

fn goldens() -> (PathBuf, Index) {
    let dir = made("pil-goldens");
    let index = serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    (dir, index)
}

fn read(dir: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Bytes that differ and the largest difference, for a readable failure.
fn diff(ours: &[u8], theirs: &[u8]) -> (usize, u8) {
    ours.iter().zip(theirs).filter(|(a, b)| a != b).fold((0, 0), |(n, m), (a, b)| (n + 1, m.max(a.abs_diff(*b))))
}

/// Each source decoded once.
fn sources<'a>(dir: &Path, names: impl Iterator<Item = &'a str>) -> HashMap<String, RgbImage> {
    names.map(|s| (s.to_string(), load_rgb(&dir.join(s)).unwrap_or_else(|e| panic!("{e}")))).collect()
}

#[test]
fn resize_matches_pil_byte_for_byte() {
    let (dir, index) = goldens();
    let src = sources(&dir, index.resize.iter().map(|c| c.source.as_str()));
    let mut failures = String::new();
    let mut cases: HashMap<Interpolation, (usize, usize)> = HashMap::new();
    for case in &index.resize {
        let (w, h) = case.size;
        let ours = resize_exact(&src[&case.source], w, h, case.filter);
        let theirs = read(&dir, &case.output);
        assert_eq!(theirs.len(), (w * h * 3) as usize, "{}", case.output);
        let count = cases.entry(case.filter).or_default();
        count.0 += 1;
        if ours.dimensions() != (w, h) || ours.as_raw() != &theirs {
            count.1 += 1;
            let (n, max) = diff(ours.as_raw(), &theirs);
            writeln!(failures, "{} ({}): {n} bytes differ, by up to {max}", case.output, case.why).unwrap();
        }
    }
    for (filter, (n, failed)) in &cases {
        println!("Pillow {} {filter}: {n} resize cases, {failed} differ", index.pillow);
    }
    // A lost or emptied index must fail too, not pass with nothing compared.
    for filter in Interpolation::ALL {
        assert!(cases.get(filter).is_some_and(|c| c.0 >= 100), "too few {filter} cases in the index");
    }
    assert!(failures.is_empty(), "resize_exact differs from PIL's Image.resize:\n{failures}");
}

#[test]
fn mask_resize_matches_pil_mode_l() {
    let (dir, index) = goldens();
    let src = sources(&dir, index.mask.iter().map(|c| c.source.as_str()));
    let mut failures = String::new();
    for case in &index.mask {
        // The masks are grey PNGs; load_rgb replicates the grey level into R, G and B.
        let rgb = &src[&case.source];
        let mask = GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| Luma([rgb.get_pixel(x, y)[0]]));
        let (w, h) = case.size;
        let ours = on_mask(&mask, |m| resize_exact(m, w, h, case.filter));
        let theirs = read(&dir, &case.output);
        if ours.dimensions() != (w, h) || ours.as_raw() != &theirs {
            let (n, max) = diff(ours.as_raw(), &theirs);
            writeln!(failures, "{}: {n} pixels differ, by up to {max}", case.output).unwrap();
        }
    }
    println!("{} mask cases", index.mask.len());
    for filter in [Interpolation::Nearest, Interpolation::Bilinear] {
        assert!(index.mask.iter().filter(|c| c.filter == filter).count() >= 10, "too few {filter} mask cases");
    }
    assert!(failures.is_empty(), "mask resizing differs from PIL's mode L resize:\n{failures}");
}

#[test]
fn load_rgb_reads_what_pil_reads_with_pils_pixels() {
    let (dir, index) = goldens();
    let mut failures = String::new();
    let mut table = String::new();
    for case in &index.decode {
        let path = dir.join(&case.file);
        let ours = load_rgb(&path);
        let verdict = if ours.is_ok() { "loads" } else { "raises" };
        writeln!(table, "{:40} {:52} PIL {:6} ours {verdict}", case.file, case.what, case.pil).unwrap();
        let mut fail = |why: String| writeln!(failures, "{} ({}): {why}", case.file, case.what).unwrap();
        match (case.pil.as_str(), ours) {
            ("loads", Ok(img)) => {
                if let (Some(pixels), Some(size)) = (&case.pixels, case.size) {
                    let theirs = read(&dir, pixels);
                    if img.dimensions() != size {
                        fail(format!("size {:?}, PIL {size:?}", img.dimensions()));
                    } else if img.as_raw() != &theirs {
                        let (n, max) = diff(img.as_raw(), &theirs);
                        fail(format!("{n} bytes differ from PIL's, by up to {max}"));
                    }
                }
            }
            ("loads", Err(e)) => fail(format!("PIL loads it, load_rgb fails: {e}")),
            ("raises", Ok(_)) => {
                fail(format!("PIL raises ({}), load_rgb loads it", case.error.as_deref().unwrap_or("")))
            }
            ("raises", Err(e)) => {
                if !e.to_string().contains(&path.display().to_string()) {
                    fail(format!("the error does not name the file: {e}"));
                }
            }
            (other, _) => panic!("unknown PIL verdict {other:?}"),
        }
    }
    println!("{table}");
    // Both verdicts, for both formats, and pixels: a fixture that lost its cases must not pass.
    for ext in [".png", ".jpg"] {
        for verdict in ["loads", "raises"] {
            let n = index.decode.iter().filter(|c| c.file.ends_with(ext) && c.pil == verdict).count();
            assert!(n >= 3, "only {n} {ext} cases that PIL {verdict}");
        }
    }
    assert!(index.decode.iter().filter(|c| c.pixels.is_some()).count() >= 20, "too few pixel goldens");
    assert!(failures.is_empty(), "load_rgb disagrees with PIL:\n{failures}");
}

#[test]
fn jpegs_decode_to_pils_pixels_byte_for_byte() {
    let (dir, index) = goldens();
    let mut failures = String::new();
    let mut families: HashMap<&str, (usize, usize)> = HashMap::new();
    for case in &index.jpeg {
        let count = families.entry(&case.family).or_default();
        count.0 += 1;
        let failure = match load_rgb(&dir.join(&case.file)) {
            Err(e) => Some(format!("PIL loads it, load_rgb fails: {e}")),
            Ok(img) if img.dimensions() != case.size => {
                Some(format!("size {:?}, PIL {:?}", img.dimensions(), case.size))
            }
            Ok(img) => {
                let theirs = read(&dir, &case.pixels);
                (img.as_raw() != &theirs).then(|| {
                    let (n, max) = diff(img.as_raw(), &theirs);
                    format!("{n} of {} bytes differ from PIL's, by up to {max}", theirs.len())
                })
            }
        };
        if let Some(why) = failure {
            count.1 += 1;
            writeln!(failures, "{} ({}, {}): {why}", case.file, case.family, case.what).unwrap();
        }
    }
    let mut names: Vec<_> = families.keys().copied().collect();
    names.sort_unstable();
    for family in &names {
        let (n, failed) = families[family];
        println!(
            "Pillow {} (libjpeg-turbo {}) {family}: {n} cases, {failed} differ",
            index.pillow, index.libjpeg_turbo
        );
    }
    // Every kind the datasets hold must have been compared, not passed with nothing.
    for family in [
        "baseline 4:2:0",
        "baseline 4:2:2",
        "baseline 4:4:4",
        "progressive 4:2:0",
        "progressive 4:2:2",
        "progressive 4:4:4",
        "greyscale",
        "CMYK",
        "restart markers",
    ] {
        assert!(families.get(family).is_some_and(|c| c.0 >= 2), "too few {family} JPEG cases in the index");
    }
    assert!(failures.is_empty(), "JPEGs decode differently from PIL:\n{failures}");
}

#[test]
fn eval_transform_matches_timm_for_bilinear_and_nearest() {
    let (dir, index) = goldens();
    let src = sources(&dir, index.eval.iter().map(|c| c.source.as_str()));
    let mut failures = String::new();
    for case in &index.eval {
        let cfg = PreprocessConfig {
            input_size: case.input_size,
            crop_pct: case.crop_pct,
            interpolation: case.interpolation,
            mean: case.mean,
            std: case.std,
        };
        let ours = eval_transform(&src[&case.source], &cfg);
        let theirs: Vec<f32> =
            read(&dir, &case.output).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let (h, w) = case.input_size;
        assert_eq!(ours.dim(), (3, h as usize, w as usize), "{}", case.output);
        assert_eq!(theirs.len(), ours.len(), "{}", case.output);
        // PNG sources: identical pixels on both sides, so only f32 rounding could differ.
        let max = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        if max >= 1e-6 {
            writeln!(failures, "{}: differs from timm by {max:e}", case.output).unwrap();
        }
    }
    println!("{} eval transform cases", index.eval.len());
    for interp in [Interpolation::Bilinear, Interpolation::Nearest] {
        assert!(index.eval.iter().filter(|c| c.interpolation == interp).count() >= 10, "too few {interp} cases");
    }
    assert!(failures.is_empty(), "eval_transform differs from timm:\n{failures}");
}

//! `harness explain` and the picture helpers: the PNGs decode at the documented sizes, the `.npy` holds
//! exactly what `gae_relevance` gives for the same input (computed here from the model's attention and
//! its gradients, and read back by numpy), the heatmap's brightest region lies on the object for a
//! hand-set model whose relevance is known by construction, and a bad image or class fails with its name.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{hub, made, python, scratch, timm, HARNESS};
use image::{Rgb, RgbImage};
use robustvit::image::{denormalize_chw, eval_transform, load_rgb, normalize_chw};
use robustvit::model;
use tch::Device;

fn tiny() -> PathBuf {
    hub("vit_tiny_patch16_224")
}

fn explain(args: &[&str], images: &[&Path]) -> std::process::Output {
    Command::new(HARNESS).arg("explain").arg("--checkpoint").arg(tiny()).args(args).args(images).output().unwrap()
}

/// numpy loads both `.npy` files (argv 1, 2) and compares them: same shape and dtype, values within 1e-5 of
/// the largest.
const NUMPY_AGREES: &str = "import numpy as np, sys
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
scale = float(np.abs(b).max())
assert a.shape == b.shape == (14, 14) and a.dtype == b.dtype == np.float32, (a.shape, a.dtype, b.shape, b.dtype)
worst = float(np.abs(a - b).max())
assert scale > 0 and worst <= 1e-5 * scale, (worst, scale)
print('agree', worst, scale)";

/// A `.npy` file's header (magic, version, length and the dictionary with its padding) and its float32
/// payload.
fn read_npy(path: &Path) -> (Vec<u8>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "{}", path.display());
    let end = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let data = bytes[end..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (bytes[..end].to_vec(), data)
}

/// numpy's `.npy` of the GAE relevance of the timm fixture photo's predicted class by the vit_tiny fixture,
/// computed by python/fixtures/explain_reference.py with timm and the full-matrix rollout.
fn reference_relevance() -> PathBuf {
    made("explain-reference").join("relevance.npy")
}

#[test]
fn explain_writes_pictures_grid_and_the_raw_relevance() {
    let dir = scratch("explain/cli");
    let photo = timm().join("photo.png");
    let second = dir.join("stripes.png");
    RgbImage::from_fn(
        300,
        200,
        |x, y| if (x / 10 + y / 25) % 2 == 0 { Rgb([200, 40, 40]) } else { Rgb([20, 90, 200]) },
    )
    .save(&second)
    .unwrap();
    let out = dir.join("out");
    let result = explain(&["--compare", tiny().to_str().unwrap(), "--out", out.to_str().unwrap()], &[&photo, &second]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));

    // A row: the input and two heatmaps of 224 px, 4 px apart, over a 3-line caption (2 + 3 * 10 px).
    for stem in ["photo", "stripes"] {
        let png = image::open(out.join(format!("{stem}.png"))).unwrap();
        assert_eq!((png.width(), png.height()), (3 * 224 + 2 * 4, 224 + 32), "{stem}.png");
    }
    let grid = image::open(out.join("grid.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (3 * 224 + 2 * 4, 2 * 256 + 4));

    // The raw relevance: what numpy loads from it is what timm and the full-matrix rollout compute.
    let reference = reference_relevance();
    for label in ["original", "finetuned"] {
        let npy = out.join(format!("photo.{label}.npy"));
        let check = Command::new(python()).args(["-c", NUMPY_AGREES]).arg(&npy).arg(&reference).output().unwrap();
        let said = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success() && said.starts_with("agree"),
            "{said}{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[test]
fn explain_names_bad_images_and_classes_and_keeps_the_good_ones() {
    let dir = scratch("explain/bad");
    let broken = dir.join("broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let photo = timm().join("photo.png");
    let out = dir.join("out");
    let result = explain(&["--out", out.to_str().unwrap()], &[&broken, &photo]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("broken.png") && stderr.contains("1 of 2"), "{stderr}");
    assert!(out.join("photo.png").is_file() && out.join("photo.model.npy").is_file());

    let result = explain(&["--class", "1000", "--out", out.to_str().unwrap()], &[&photo]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("class 1000") && stderr.contains("1000 classes"), "{stderr}");

    // An explicit class is explained even where the model predicts another; the caption says so.
    let result = explain(&["--class", "3", "--out", dir.join("class3").to_str().unwrap()], &[&photo]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let png = image::open(dir.join("class3/photo.png")).unwrap();
    assert_eq!(png.width(), 2 * 224 + 4);
}

#[test]
fn heatmap_is_brightest_on_the_object_whose_relevance_is_known() {
    // python/fixtures/known_relevance.py: a hand-set ViT whose relevance is positive exactly on dark
    // patches, and a bright 64 px image with a dark square object on whole patches.
    let data = made("known-relevance");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("expected.json")).unwrap()).unwrap();
    let b: Vec<u32> = expected["object_box"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let inside = |x: u32, y: u32| (b[0]..b[2]).contains(&x) && (b[1]..b[3]).contains(&y);
    let out = scratch("explain/known");
    let result = Command::new(HARNESS)
        .args(["explain", "--checkpoint"])
        .arg(data.join("hub"))
        .arg("--out")
        .arg(&out)
        .arg(data.join("object.png"))
        .output()
        .unwrap();
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));

    // The raw relevance is timm's, and exactly 0 off the object.
    let (header, got) = read_npy(&out.join("object.model.npy"));
    let header = String::from_utf8_lossy(&header);
    assert!(header.contains("'shape': (8, 8)"), "{header}");
    let want: Vec<f64> = expected["relevance"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    for (k, (&g, &w)) in got.iter().zip(&want).enumerate() {
        assert!((f64::from(g) - w).abs() < 1e-6, "patch {k}: harness {g}, timm {w}");
        let (px, py) = (8 * (k as u32 % 8), 8 * (k as u32 / 8));
        assert_eq!(g > 0.0, inside(px, py), "patch {k}");
    }

    // The picture: input and heatmap tiles of 64 px, 4 px apart, over a 3-line caption. The dark object
    // is where the heatmap's brightest 8x8 block lies.
    let png = image::open(out.join("object.png")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (2 * 64 + 4, 64 + 32));
    let luma = |p: &Rgb<u8>| 299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2]);
    let block = |bx: u32, by: u32| -> u32 {
        (by..by + 8).flat_map(|y| (bx..bx + 8).map(move |x| (x, y))).map(|(x, y)| luma(png.get_pixel(68 + x, y))).sum()
    };
    let blocks: Vec<(u32, u32)> = (0..8).flat_map(|j| (0..8).map(move |i| (8 * i, 8 * j))).collect();
    let &(bx, by) = blocks.iter().max_by_key(|&&(x, y)| block(x, y)).unwrap();
    assert!(inside(bx, by) && inside(bx + 7, by + 7), "brightest block at ({bx}, {by}) is not on the object");
    let input_dark = luma(png.get_pixel(bx + 4, by + 4)) < luma(png.get_pixel(2, 2));
    assert!(input_dark, "the object is the dark part of the input");
}

#[test]
fn network_input_turns_back_into_its_pixels() {
    let photo = timm().join("photo.png");
    let loaded = model::load(None, &tiny(), Device::Cpu).unwrap();
    let pre = &loaded.preprocess;
    let chw = eval_transform(&load_rgb(&photo).unwrap(), pre);
    let rgb = denormalize_chw(chw.view(), pre.mean, pre.std);
    assert_eq!(rgb.dimensions(), (pre.input_size.1, pre.input_size.0));
    assert_eq!(normalize_chw(&rgb, pre.mean, pre.std), chw);
}

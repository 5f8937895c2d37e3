//! `harness explain` and the picture helpers: the PNGs decode at the documented sizes, the `.npy` holds
//! exactly what `gae_relevance` gives for the same input (computed here from the model's attention and
//! its gradients, and read back by numpy), the heatmap's brightest region lies on the object for a
//! hand-set model whose relevance is known by construction, and a bad image or class fails with its name.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{fixture, hub, python, scratch, timm, HARNESS};
use image::{Rgb, RgbImage};
use robustvit::eval::predict;
use robustvit::image::{denormalize_chw, eval_transform, load_rgb, normalize_chw};
use robustvit::model;
use robustvit::ops;
use tch::{Device, Kind, Tensor};

fn tiny() -> PathBuf {
    hub("vit_tiny_patch16_224")
}

fn explain(args: &[&str], images: &[&Path]) -> std::process::Output {
    Command::new(HARNESS).arg("explain").arg("--checkpoint").arg(tiny()).args(args).args(images).output().unwrap()
}

/// The float32 payload of a C-order `.npy` file and its shape string.
fn read_npy(path: &Path) -> (String, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8(bytes[10..10 + header_len].to_vec()).unwrap();
    let data = bytes[10 + header_len..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (header, data)
}

/// `gae_relevance` of the predicted class, straight from the ops.
fn reference_relevance(image: &Path) -> Vec<f32> {
    let loaded = model::load(None, &tiny(), Device::Cpu).unwrap();
    let input = predict::image_tensor(image, &loaded.preprocess).unwrap();
    let out = loaded.model.forward_with_attention(&input);
    let class = out.logits.argmax(-1, true);
    let score = out.logits.gather(1, &class, false).sum(Kind::Float);
    let grads = Tensor::run_backward(&[score], &out.attention, false, false);
    Vec::<f32>::try_from(ops::gae_relevance(&out.attention, &grads, 0).unwrap().flatten(0, -1)).unwrap()
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

    let want = reference_relevance(&photo);
    for label in ["original", "finetuned"] {
        let (header, got) = read_npy(&out.join(format!("photo.{label}.npy")));
        assert!(header.contains("'descr': '<f4'") && header.contains("'shape': (14, 14)"), "{header}");
        assert_eq!(got.len(), want.len());
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-6 * want.iter().fold(0.0f32, |m, v| m.max(v.abs())), "max |npy - gae_relevance| = {worst}");
    }
    // numpy reads the file as written.
    let check = Command::new(python())
        .args(["-c", "import numpy as np, sys; a = np.load(sys.argv[1]); print(a.shape, a.dtype, float(a.sum()))"])
        .arg(out.join("photo.original.npy"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    let sum: f32 = want.iter().sum();
    assert!(text.starts_with("(14, 14) float32 "), "{text}{}", String::from_utf8_lossy(&check.stderr));
    let numpy_sum: f32 = text.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!((numpy_sum - sum).abs() <= 1e-4 * sum.abs(), "numpy sum {numpy_sum}, relevance sum {sum}");
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
    let data = fixture("known_relevance.py", "known-relevance", &[]);
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

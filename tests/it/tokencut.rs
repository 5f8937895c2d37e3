//! TokenCut masks (`harness masks`): the eigenvector against scipy's dense generalised solver, a headless
//! DINO-layout timm checkpoint's keys against timm's at two image sizes, and the command end to end on
//! synthetic images whose object a ViT's keys separate by construction (python/fixtures/tokencut.py).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use robustvit::image::load_rgb;
use robustvit::masks;
use robustvit::model;
use robustvit::tokencut;
use tch::{Device, Kind, Tensor};

use crate::support::{made, scratch, HARNESS};

pub fn tokencut_fixture() -> PathBuf {
    made("tokencut")
}

#[test]
fn second_eigenvector_equals_scipys_up_to_sign() {
    let dir = tokencut_fixture().join("graphs");
    for i in 0..3 {
        let keys = Tensor::read_npy(dir.join(format!("keys_{i}.npy"))).unwrap();
        let want = Tensor::read_npy(dir.join(format!("eig_{i}.npy"))).unwrap();
        let have = tokencut::second_eigenvector(&keys, 0.2);
        let sign = if (&have * &want).sum(Kind::Double).double_value(&[]) < 0.0 { -1.0 } else { 1.0 };
        let diff = (have * sign - &want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        assert!(diff < 1e-8 * scale.max(1.0), "graph {i} ({} nodes): max difference {diff}", keys.size()[0]);
    }
}

#[test]
fn bipartition_keeps_the_seeds_side_and_its_component() {
    // 3 x 4 patches: the seed (largest |x|) at (0, 0) on the low side; (2, 3) is low too but not connected.
    let x = [-5.0, -4.0, 1.0, 1.0, -4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -3.0];
    let keep = tokencut::bipartition(&x, 3, 4);
    let want = [true, true, false, false, true, false, false, false, false, false, false, false];
    assert_eq!(keep, want);
}

#[test]
fn dino_backbone_loads_and_its_keys_match_timm_at_two_sizes() {
    let dir = tokencut_fixture().join("dino");
    let hub = dir.join("hub");
    let loaded = model::load_backbone(None, &hub, Device::Cpu).unwrap();
    assert_eq!(loaded.model.config().num_classes, 0);
    let reference: Vec<(String, Tensor)> = Tensor::read_safetensors(dir.join("keys.safetensors")).unwrap();
    let get = |k: &str| reference.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
    for size in ["native", "other"] {
        let keys = tch::no_grad(|| loaded.model.last_keys(&get(&format!("input.{size}")))).squeeze_dim(0);
        let want = get(&format!("keys.{size}"));
        assert_eq!(keys.size(), want.size(), "{size}");
        let diff = (keys - &want).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{size}: keys differ from timm's by {diff}");
    }
    // Classification refuses a backbone by name.
    let err = model::load(None, &hub, Device::Cpu).err().expect("a backbone must not load for classification");
    assert!(err.to_string().contains("num_classes 0") && err.to_string().contains("harness masks"), "{err}");
}

#[test]
fn images_of_one_size_batched_give_each_image_its_own_keys_and_mask() {
    // Keys: a random DINO-layout ViT (attention mixes the tokens, so a batch mix-up would show).
    let dino = model::load_backbone(None, &tokencut_fixture().join("dino/hub"), Device::Cpu).unwrap().model;
    let images = tokencut_fixture().join("images");
    let out = scratch("tokencut-batch");
    let jobs = masks::jobs(&images, &out).unwrap();
    let prepared: Vec<_> = jobs
        .iter()
        .map(|j| tokencut::prepare(&load_rgb(&j.image).unwrap(), 16).unwrap())
        .filter(|p| p.grid == (4, 6))
        .collect();
    assert_eq!(prepared.len(), 4, "the fixture has four 64x96 images");
    let together = tokencut::keys(&dino, &prepared.iter().collect::<Vec<_>>());
    for (k, p) in prepared.iter().enumerate() {
        let alone = tokencut::keys(&dino, &[p]).squeeze_dim(0);
        let diff = (together.get(k as i64) - alone).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "image {k}: batched keys differ by {diff}");
    }
    // Masks: the folder job (batched by size, in size order) writes each image's own mask.
    let separating = model::load_backbone(None, &tokencut_fixture().join("separating/hub"), Device::Cpu).unwrap().model;
    let opts = tokencut::Options::default();
    let report = masks::run(&separating, &jobs, &out, &opts, 0, true).unwrap();
    assert_eq!(report.written, 8);
    for job in &jobs {
        let alone = tokencut::mask(&separating, &load_rgb(&job.image).unwrap(), &opts).unwrap();
        assert!(gray(&job.mask) == alone, "{}: the batched mask differs from the image's own", job.image.display());
    }
}

/// `harness masks` by the separating ViT, which must succeed.
fn masks(args: &[&str], images: &Path, out: &Path) -> Output {
    masks_by(&tokencut_fixture().join("separating/hub"), args, images, out)
}

fn masks_by(checkpoint: &Path, args: &[&str], images: &Path, out: &Path) -> Output {
    let output = Command::new(HARNESS)
        .args(["masks", "--quiet", "--checkpoint"])
        .arg(checkpoint)
        .arg("--images")
        .arg(images)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

fn gray(path: &Path) -> image::GrayImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_luma8()
}

/// Mean IoU of the masks in `out` against the fixture's truth, over every image.
fn mean_iou(out: &Path) -> f64 {
    let truth = tokencut_fixture().join("truth");
    let mut ious = Vec::new();
    for class in ["class0", "class1"] {
        for entry in std::fs::read_dir(truth.join(class)).unwrap() {
            let path = entry.unwrap().path();
            let (want, have) = (gray(&path), gray(&out.join(class).join(path.file_name().unwrap())));
            assert_eq!(want.dimensions(), have.dimensions(), "{}", path.display());
            let (mut inter, mut union) = (0u32, 0u32);
            for (a, b) in want.pixels().zip(have.pixels()) {
                let (a, b) = (a[0] > 127, b[0] > 127);
                inter += u32::from(a && b);
                union += u32::from(a || b);
            }
            ious.push(f64::from(inter) / f64::from(union));
        }
    }
    assert_eq!(ious.len(), 8);
    ious.iter().sum::<f64>() / ious.len() as f64
}

#[test]
fn masks_cli_finds_the_objects_lists_bad_images_and_resumes() {
    let root = scratch("tokencut");
    let images = root.join("images");
    for class in ["class0", "class1"] {
        let (from, to) = (tokencut_fixture().join("images").join(class), images.join(class));
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(images.join("class1/broken.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
    // Smaller than one 8 px patch; more patches (70 x 70) than the exact eigen-solve takes.
    image::RgbImage::new(4, 4).save(images.join("class0/speck.png")).unwrap();
    image::RgbImage::new(560, 560).save(images.join("class0/huge.png")).unwrap();

    let out = root.join("masks");
    let run = masks(&[], &images, &out);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("8 written, 0 already there, 3 unreadable"), "{stderr}");
    let unreadable = std::fs::read_to_string(out.join("unreadable.txt")).unwrap();
    assert_eq!(unreadable.lines().count(), 3, "{unreadable}");
    for (name, why) in
        [("broken.jpg", "cannot decode"), ("speck.png", "smaller than one 8x8 patch"), ("huge.png", "4900 patches")]
    {
        assert!(unreadable.lines().any(|l| l.contains(name) && l.contains(why)), "{name}: {unreadable}");
    }
    let refined = mean_iou(&out);
    let coarse_out = root.join("coarse");
    masks(&["--no-refine"], &images, &coarse_out);
    let coarse = mean_iou(&coarse_out);
    eprintln!("mean IoU with the true masks: refined {refined:.3}, patch grid {coarse:.3}");
    assert!(refined > 0.9, "refined masks: mean IoU {refined}");
    assert!(refined > coarse, "the refinement did not help: {coarse} -> {refined}");

    // The random DINO-layout backbone (patch 16, position embedding resampled) runs on both image sizes (and on
    // the huge image, 1225 of its patches).
    let dino = masks_by(&tokencut_fixture().join("dino/hub"), &["--min-pixels", "0"], &images, &root.join("dino"));
    let stderr = String::from_utf8_lossy(&dino.stderr);
    assert!(stderr.contains("9 written, 0 already there, 2 unreadable"), "{stderr}");
    for size in [(96, 64), (90, 70)] {
        let made = ["class0", "class1"]
            .iter()
            .flat_map(|c| std::fs::read_dir(root.join("dino").join(c)).unwrap())
            .filter(|e| gray(&e.as_ref().unwrap().path()).dimensions() == size)
            .count();
        assert_eq!(made, 4, "masks of {size:?} images");
    }

    // A rerun finds every mask written and leaves it alone.
    let before = std::fs::metadata(out.join("class0/disc0.png")).unwrap().modified().unwrap();
    let rerun = masks(&[], &images, &out);
    assert!(String::from_utf8_lossy(&rerun.stderr).contains("0 written, 8 already there"));
    assert_eq!(std::fs::metadata(out.join("class0/disc0.png")).unwrap().modified().unwrap(), before);

    // A threshold no cosine can pass is refused before any work.
    let refused = Command::new(HARNESS)
        .args(["masks", "--tau", "1.5", "--checkpoint"])
        .arg(tokencut_fixture().join("separating/hub"))
        .arg("--images")
        .arg(&images)
        .arg("--out")
        .arg(root.join("refused"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("tau 1.5"), "{stderr}");
    assert!(!root.join("refused").exists());

    // Masks below the floor are listed with their size, not written.
    let small_out = root.join("small");
    let small = masks(&["--min-pixels", "50000"], &images, &small_out);
    assert!(String::from_utf8_lossy(&small.stderr).contains("0 written"), "{}", String::from_utf8_lossy(&small.stderr));
    let listed = std::fs::read_to_string(small_out.join("too_small.txt")).unwrap();
    assert!(listed.starts_with("# tau 0.2, min_pixels 50000, refine true\n"), "{listed}");
    assert_eq!(listed.lines().filter(|l| !l.starts_with('#')).count(), 8, "{listed}");
    assert!(!small_out.join("class0").exists());
    // A rerun with the same options takes the list as it stands; with other options it makes the masks again.
    let again = masks(&["--min-pixels", "50000"], &images, &small_out);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("8 below 50000 pixels at 224x224, 8 of them as an earlier run listed"), "{stderr}");
    assert_eq!(std::fs::read_to_string(small_out.join("too_small.txt")).unwrap(), listed);
    let other = masks(&["--min-pixels", "40000"], &images, &small_out);
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(stderr.contains("8 below 40000 pixels at 224x224 (lists in"), "{stderr}");
}

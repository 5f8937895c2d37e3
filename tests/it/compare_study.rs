//! `harness compare --data STUDY.toml` end to end on tiny real-layout data: an ImageNet-S fixture for
//! finetuning (its images double as an `imagenet-val` folder), the gtsegs fixture for the segmentation
//! test, the timm-made vit_tiny as the original. Every table is written with one row per method, the
//! original's segmentation row equals the reference computation of python/fixtures/segtest.py, and every
//! finetuned model differs from the original.

use std::path::Path;
use std::process::Command;

use crate::support::imagenet_s::write_imagenet_s;
use crate::support::{hub, max_weight_change, scratch, segtest, HARNESS};

fn csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| l.split(',').map(str::to_string).collect()).collect()
}

#[test]
fn study_finetunes_evaluates_and_writes_every_table() {
    let root = scratch("compare-study");
    write_imagenet_s(&root.join("imagenet-s"), 3, 3);
    let seg = segtest::segtest_fixture();
    let expected = segtest::expected(&seg);
    let study = root.join("study.toml");
    let text = format!(
        "[imagenet_s]\nimages = {images:?}\nmasks = {masks:?}\n\n\
         [[models]]\nname = \"vit_tiny_patch16_224\"\ncheckpoint = {hub:?}\npreset = \"vit-b\"\n\n\
         [[datasets]]\nkind = \"imagenet-val\"\npath = {images:?}\n\n\
         [segmentation]\npath = {mat:?}\n\n\
         [finetune]\nepochs = 1\ntrain_classes = 2\nper_class = 3\nval_per_class = 1\n",
        images = root.join("imagenet-s/images"),
        masks = root.join("imagenet-s/masks"),
        hub = hub("vit_tiny_patch16_224"),
        mat = seg.join("gtsegs.mat"),
    );
    std::fs::write(&study, text).unwrap();
    let out = root.join("out");
    let result = Command::new(HARNESS)
        .args(["compare", "--baselines", "gradmask", "--quiet", "--data"])
        .arg(&study)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));

    let accuracy = csv(&out.join("table_accuracy.csv"));
    assert_eq!(accuracy[0], ["model", "method", "imagenet-val_top1", "imagenet-val_top5"]);
    let methods: Vec<&str> = accuracy[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(methods, ["original", "ours", "gradmask"]);
    let shift = csv(&out.join("table_shift.csv"));
    assert_eq!(shift[0][2], "imagenet-val_top1_delta");
    assert_eq!(shift.len(), 3, "ours and gradmask against the original");

    let table3 = csv(&out.join("table_segmentation.csv"));
    assert_eq!(table3[0], ["model", "method", "pixel_accuracy", "miou", "map"]);
    assert_eq!(table3.len(), 4, "original, ours, gradmask");
    let original = table3.iter().find(|r| r[1] == "original").unwrap();
    for (k, metric) in ["pixel_accuracy", "miou", "map"].iter().enumerate() {
        let have: f64 = original[2 + k].parse().unwrap();
        let want = expected[*metric].as_f64().unwrap();
        assert!((have - want).abs() < 0.01, "original {metric}: study {have}, reference {want}");
    }
    for row in &table3[1..] {
        assert!(row[2..].iter().all(|v| v.parse::<f64>().is_ok_and(|x| (0.0..=100.0).contains(&x))), "{row:?}");
    }
    let long = std::fs::read_to_string(out.join("results_long.csv")).unwrap();
    assert_eq!(long.lines().filter(|l| l.contains(",imagenet-segmentation,")).count(), 9);
    for method in ["ours", "gradmask"] {
        let run = out.join("runs/vit_tiny_patch16_224/seed0").join(method);
        let moved = max_weight_change(
            &hub("vit_tiny_patch16_224").join("model.safetensors"),
            &run.join("best/model.safetensors"),
        );
        assert!(moved > 0.0, "{method}: the finetuned weights equal the original's");
        let manifest = robustvit::train::RunManifest::read(&run.join("manifest.json")).unwrap();
        assert_eq!(manifest.data.unwrap().train_classes.len(), 2);
    }
}

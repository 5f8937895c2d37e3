//! `harness eval` on tiny datasets in every distributed layout (python/fixtures/eval_sets.py: PNG noise
//! images filed so that the timm fixture model is right on about half of them), against the accuracies
//! timm's own predictions give under both protocols; unreadable images are listed, never scored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use robustvit::data::imagenet_s::{MaskResize, MaskSource};
use robustvit::image::{eval_transform, load_rgb, PreprocessConfig};
use robustvit::manifest::Provenance;
use robustvit::model;
use robustvit::train::imagenet_s::DataSplit;
use robustvit::train::methods::{Method, Relevance};
use robustvit::train::{Origin, RunManifest, Selection, TrainConfig};

use crate::support::{hub, made, root, scratch, HARNESS};

const KINDS: [(&str, &str); 7] = [
    ("imagenet-val", "val"),
    ("imagenet-sketch", "sketch"),
    ("imagenet-v2", "v2"),
    ("imagenet-a", "a"),
    ("imagenet-r", "r"),
    ("si-location", "si"),
    ("objectnet", "objectnet"),
];

fn eval_timm() -> PathBuf {
    made("eval")
}

/// A finetuning run's manifest whose split trained on `classes`.
fn finetune_manifest(classes: &[String]) -> RunManifest {
    let preset = model::preset("vit_tiny_patch16_224").unwrap();
    RunManifest {
        provenance: Provenance::default(),
        model: preset.name.into(),
        model_config: preset.config,
        preprocess: preset.preprocess,
        device: "Cpu".into(),
        train: TrainConfig {
            method: Method::Ours(Relevance::default()),
            lr: 1e-6,
            weight_decay: 1e-4,
            lr_decay: 0.85,
            decay_every: 2,
            epochs: 1,
            batch_size: 8,
            seed: 0,
            select: Selection::ValLoss,
            accuracy_floor: None,
            precision: Default::default(),
        },
        origin: Origin::default(),
        data: Some(DataSplit {
            images: "images".into(),
            masks: "masks".into(),
            masks_from: None,
            mask_source: MaskSource::ImagenetS,
            mask_resize: MaskResize::Nearest,
            seed: 0,
            train_classes: classes.to_vec(),
            val_classes: Vec::new(),
            train_images: Vec::new(),
            val_images: Vec::new(),
            dropped_masks: 0,
            short_classes: Vec::new(),
        }),
        best: None,
    }
}

#[test]
fn eval_matches_timm_predictions_in_every_layout_and_protocol() {
    let data = eval_timm();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("expected.json")).unwrap()).unwrap();
    let out = scratch("eval");
    // A finetuning manifest naming one of the validation fixture's classes (one with a readable image).
    let mut val_classes: Vec<String> = std::fs::read_dir(data.join("val"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("0.png").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    val_classes.sort();
    let manifest = out.join("manifest.json");
    std::fs::write(&manifest, serde_json::to_string(&finetune_manifest(&val_classes[..1])).unwrap()).unwrap();
    for protocol in ["standard", "reference"] {
        let csv = out.join(format!("{protocol}.csv"));
        let mut cmd = Command::new(HARNESS);
        // One unreadable image of 9 in imagenet-val: allowed here, refused by the default share (below).
        cmd.args(["eval", "--quiet", "--batch-size", "3", "--max-unreadable", "0.2", "--protocol", protocol])
            .arg("--checkpoint")
            .arg(hub("vit_tiny_patch16_224"))
            .arg("--csv")
            .arg(&csv)
            .arg("--per-class-csv")
            .arg(out.join(format!("{protocol}_per_class.csv")))
            .arg("--finetune-manifest")
            .arg(&manifest);
        for (kind, dir) in KINDS {
            cmd.arg("--dataset").arg(format!("{kind}={}", data.join(dir).display()));
        }
        let result = cmd.output().unwrap();
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        let text = std::fs::read_to_string(&csv).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("model,method,seed,dataset,protocol,metric,value"));
        let got: HashMap<(String, String), f64> = lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .inspect(|f| assert_eq!(f[4], protocol))
            .map(|f| ((f[3].to_string(), f[5].to_string()), f[6].parse().unwrap()))
            .collect();
        for (kind, _) in KINDS {
            for metric in ["top1", "top5"] {
                let want = expected[kind][protocol][metric].as_f64().unwrap();
                let have = got[&(kind.to_string(), metric.to_string())];
                assert!((have - want).abs() < 1e-6, "{kind} {protocol} {metric}: harness {have}, timm {want}");
            }
        }
        for metric in robustvit::report::CLASS_SPLIT {
            assert!(got.contains_key(&("imagenet-val".to_string(), metric.to_string())), "{metric}");
        }
        let log = std::fs::read_to_string(csv.with_extension("unreadable.log")).unwrap();
        assert!(log.contains("broken.png") && log.lines().count() == 1, "{log}");
        let per_class = std::fs::read_to_string(out.join(format!("{protocol}_per_class.csv"))).unwrap();
        assert!(per_class.starts_with("dataset,class,correct,images,top1\n"));
    }
    // bf16 autocast: the same images scored, top-1 within one image of fp32's (timm's) on this fixture.
    if robustvit::ops::cpu_has_bf16() {
        let csv = out.join("bf16.csv");
        let result = Command::new(HARNESS)
            .args(["eval", "--quiet", "--max-unreadable", "0.2", "--precision", "bf16", "--checkpoint"])
            .arg(hub("vit_tiny_patch16_224"))
            .arg("--dataset")
            .arg(format!("imagenet-val={}", data.join("val").display()))
            .arg("--csv")
            .arg(&csv)
            .output()
            .unwrap();
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        assert!(String::from_utf8_lossy(&result.stdout).contains("standard bf16: top-1"));
        let text = std::fs::read_to_string(&csv).unwrap();
        let top1: f64 =
            text.lines().find(|l| l.contains(",top1,")).unwrap().rsplit(',').next().unwrap().parse().unwrap();
        let want = expected["imagenet-val"]["standard"]["top1"].as_f64().unwrap();
        assert!((top1 - want).abs() <= 100.0 / 8.0 + 1e-9, "bf16 top-1 {top1}, fp32 (timm) {want}");
    }
    // More unreadable images than the default 1%: an error naming the log, and no CSV.
    let strict = out.join("strict.csv");
    let result = Command::new(HARNESS)
        .args(["eval", "--quiet", "--checkpoint"])
        .arg(hub("vit_tiny_patch16_224"))
        .arg("--dataset")
        .arg(format!("imagenet-val={}", data.join("val").display()))
        .arg("--csv")
        .arg(&strict)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("1 of 9 inputs could not be read"), "{stderr}");
    assert!(stderr.contains("strict.unreadable.log") && !strict.exists(), "{stderr}");
    // A folder that is not a class of the dataset stops with a message naming it.
    let bad = out.join("bad-v2/1234");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("x.png"), b"").unwrap();
    let result = Command::new(HARNESS)
        .args(["eval", "--quiet", "--checkpoint"])
        .arg(hub("vit_tiny_patch16_224"))
        .arg("--dataset")
        .arg(format!("imagenet-v2={}", out.join("bad-v2").display()))
        .output()
        .unwrap();
    assert!(!result.status.success() && String::from_utf8_lossy(&result.stderr).contains("1234"));
}

#[test]
fn bench_eval_reports_pipeline_and_model_throughput() {
    let scratch = root().join("target/test-tmp/bench-eval");
    let _ = std::fs::remove_dir_all(&scratch);
    let result = Command::new(HARNESS)
        .args(["bench-eval", "--images", "4", "--batch-size", "2", "--models", "vit_tiny_patch16_224", "--rounds", "2"])
        .arg("--scratch")
        .arg(&scratch)
        .arg("--segtest")
        .arg(crate::support::segtest::segtest_fixture().join("gtsegs.mat"))
        .output()
        .unwrap();
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let text = String::from_utf8_lossy(&result.stdout);
    let rate = |prefix: &str| -> f64 {
        let line =
            text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line in {text}"));
        line.rsplit(": ").next().unwrap().trim_end_matches(" images/s").parse().unwrap()
    };
    assert!(rate("pipeline alone") > 0.0 && rate("whole evaluation, vit_tiny_patch16_224") > 0.0);
    assert!(rate("forward-only loop over preloaded tensors, vit_tiny_patch16_224") > 0.0);
    // Each round pairs a whole run with the loop alone; the median of the rounds' ratios is reported.
    let whole_runs = text.lines().filter(|l| l.starts_with("whole evaluation, vit_tiny_patch16_224")).count();
    assert_eq!(whole_runs, 2, "{text}");
    let summary = text.lines().find(|l| l.starts_with("the whole evaluation of vit_tiny_patch16_224 runs at "));
    assert!(summary.is_some_and(|l| l.contains("of its forward-only loop (median of 2 rounds")), "{text}");
    assert!(rate("whole segmentation test, vit_tiny_patch16_224") > 0.0);
    assert!(rate("relevance loop over preloaded samples, vit_tiny_patch16_224") > 0.0);
    // No rounds is no measurement: refused by name before any work.
    let result = Command::new(HARNESS).args(["bench-eval", "--rounds", "0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("'--rounds <ROUNDS>'"), "{stderr}");
    assert!(!String::from_utf8_lossy(&result.stdout).contains("pipeline alone"));
    // A --segtest file that is not gtsegs' is refused, naming it, before any measurement.
    let bad = scratch.join("not-gtsegs.mat");
    std::fs::write(&bad, b"MATLAB 5.0 MAT-file").unwrap();
    let result = Command::new(HARNESS).args(["bench-eval", "--segtest"]).arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("not-gtsegs.mat"), "{stderr}");
    assert!(!String::from_utf8_lossy(&result.stdout).contains("pipeline alone"));
}

#[test]
fn reference_transform_equals_torchvision() {
    let dir = eval_timm().join("reference");
    let mut compared = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let png = entry.unwrap().path();
        if png.extension().is_none_or(|e| e != "png") {
            continue;
        }
        let ours = eval_transform(&load_rgb(&png).unwrap(), &PreprocessConfig::REFERENCE);
        assert_eq!(ours.shape(), [3, 224, 224], "{}", png.display());
        let bytes = std::fs::read(png.with_extension("f32")).unwrap();
        let want: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let worst = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "{}: differs from torchvision by {worst}", png.display());
        compared += 1;
    }
    assert_eq!(compared, 6);
}

#[test]
fn eval_refuses_what_it_cannot_score() {
    let data = eval_timm();
    let out = scratch("eval-refusals");
    let eval = |checkpoint: &Path, dataset: &str| {
        let result = Command::new(HARNESS)
            .args(["eval", "--quiet", "--checkpoint"])
            .arg(checkpoint)
            .args(["--dataset", dataset, "--csv"])
            .arg(out.join("long.csv"))
            .output()
            .unwrap();
        assert!(!result.status.success());
        String::from_utf8_lossy(&result.stderr).into_owned()
    };
    // A share of unreadable images outside [0, 1) is refused before anything is read.
    let result = Command::new(HARNESS)
        .args(["eval", "--quiet", "--max-unreadable", "1.5", "--dataset", "imagenet-val=/nonexistent", "--checkpoint"])
        .arg(hub("vit_tiny_patch16_224"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("--max-unreadable") && stderr.contains("[0, 1)"), "{stderr}");
    // A 10-class checkpoint scores nothing right on ImageNet classes: an error, not 0%.
    let ten = ten_class_hub(&hub("vit_tiny_patch16_224"), &out.join("ten"));
    let stderr = eval(&ten, &format!("imagenet-val={}", data.join("val").display()));
    assert!(stderr.contains("has 10 classes") && stderr.contains("1000-way"), "{stderr}");
    // A dataset of which no image can be read: an error, not top-1 0.00 over 0 images.
    let wnid = robustvit::data::imagenet::classes()[0].wnid;
    let unreadable = out.join("unreadable").join(wnid);
    std::fs::create_dir_all(&unreadable).unwrap();
    for name in ["a.png", "b.JPEG"] {
        std::fs::write(unreadable.join(name), b"not an image").unwrap();
    }
    let stderr = eval(&hub("vit_tiny_patch16_224"), &format!("imagenet-val={}", out.join("unreadable").display()));
    assert!(
        stderr.contains("none of its 2 inputs could be read") && stderr.contains("long.unreadable.log"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(out.join("long.unreadable.log")).unwrap().lines().count(), 2);
}

/// A copy of the timm hub folder `hub` made 10-way: the head's first 10 rows, num_classes 10 in config.json.
fn ten_class_hub(hub: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = std::fs::read_to_string(hub.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), config.replace("\"num_classes\": 1000", "\"num_classes\": 10")).unwrap();
    let tensors: Vec<(String, tch::Tensor)> = tch::Tensor::read_safetensors(hub.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(k, t)| if k.starts_with("head.") { (k, t.narrow(0, 0, 10)) } else { (k, t) })
        .collect();
    tch::Tensor::write_safetensors(&tensors, dir.join("model.safetensors")).unwrap();
    dir.to_path_buf()
}

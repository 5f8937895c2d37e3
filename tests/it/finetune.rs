//! The finetuning engine on a small ImageNet-S-layout fixture that this test writes (real JPEGs and
//! R+256G PNG masks): every method trains with finite terms and lowers its own penalty; one step of each
//! method equals a plain-PyTorch implementation of method.md (python/fixtures/finetune_step.py) on a
//! timm-made model; a run interrupted mid-epoch and resumed ends with the same weights as an uninterrupted
//! one; bad masks and folders fail with errors naming the file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::imagenet_s::write_imagenet_s;
use crate::support::{hub, python, root, scratch, HARNESS};
use image::{Rgb, RgbImage};
use robustvit::data::imagenet_s::{self, MaskResize, MaskSource, SplitConfig, TransformConfig};
use robustvit::data::{imagenet, Batch, Sample};
use robustvit::model::{self, LoadedModel};
use robustvit::precision::Precision;
use robustvit::train::imagenet_s::ImagenetSTrain;
use robustvit::train::methods::{ClsTarget, InputGradient, Method, Relevance, RelevanceGrad};
use robustvit::train::optim::AdamW;
use robustvit::train::{self, EpochMetrics, RunManifest, RunOptions, Selection, TrainConfig, TrainSet};
use tch::{Device, Kind, Tensor};

const CLASSES: usize = 4;
const PER_CLASS: usize = 4;

fn tiny_model() -> LoadedModel {
    model::load(None, &hub("custom"), Device::Cpu).unwrap()
}

fn split_config() -> SplitConfig {
    SplitConfig {
        train_classes: 2,
        per_class: 3,
        val_per_class: 2,
        seed: 7,
        min_mask_pixels: None,
        source: MaskSource::ImagenetS,
        masks_from: None,
    }
}

/// Training set and validation samples of the fixture for `loaded`.
fn data(root: &Path, loaded: &LoadedModel) -> (ImagenetSTrain, Vec<Sample>) {
    let split = imagenet_s::split(&root.join("images"), &root.join("masks"), &split_config()).unwrap();
    assert_eq!((split.train.len(), split.val.len()), (6, 4));
    let transform = TransformConfig {
        size: loaded.model.config().img_size as u32,
        mean: loaded.preprocess.mean,
        std: loaded.preprocess.std,
        mask_resize: MaskResize::Nearest,
    };
    let train = ImagenetSTrain::load(&split.train, MaskSource::ImagenetS, &transform).unwrap();
    let val = split
        .val
        .iter()
        .map(|item| {
            imagenet_s::eval_sample(
                &imagenet_s::load_pair(item, MaskSource::ImagenetS).unwrap(),
                item.label,
                &transform,
            )
        })
        .collect();
    (train, val)
}

fn ours(grad: RelevanceGrad) -> Method {
    Method::Ours(Relevance { relevance_grad: grad, ..Relevance::default() })
}

fn config(method: Method, epochs: usize, lr: f64) -> TrainConfig {
    TrainConfig {
        method,
        lr,
        weight_decay: 1e-4,
        lr_decay: 0.85,
        decay_every: 2,
        epochs,
        batch_size: 3,
        seed: 3,
        select: Selection::ValLoss,
        accuracy_floor: None,
        precision: Default::default(),
    }
}

fn quiet() -> RunOptions {
    RunOptions { quiet: true, ..RunOptions::default() }
}

fn term(history: &[EpochMetrics], method: &Method, epoch: usize, name: &str) -> f64 {
    let k = method.term_names().iter().position(|n| *n == name).unwrap();
    history[epoch].train[k]
}

#[test]
fn every_method_trains_with_finite_terms_and_lowers_its_penalty() {
    let root = scratch("finetune/methods");
    write_imagenet_s(&root, CLASSES, PER_CLASS);
    let baseline = |lambda_bg| InputGradient { lambda_bg, lambda_cls: 1e-9, temperature: 1.0 };
    let cases = [
        (ours(RelevanceGrad::Detached), "relevance"),
        (ours(RelevanceGrad::Full), "relevance"),
        (Method::Gradmask(baseline(1e4)), "mask"),
        (Method::Rrr(baseline(0.1)), "mask"),
    ];
    for (k, (method, penalty)) in cases.into_iter().enumerate() {
        let loaded = tiny_model();
        let (train_set, val) = data(&root, &loaded);
        let out = root.join(format!("{k}-{}", method.name()));
        let summary =
            train::finetune(&loaded, &train_set, &val, &config(method.clone(), 6, 1e-3), &out, &quiet()).unwrap();
        for row in &summary.history {
            assert!(
                row.train.iter().chain(&row.val).all(|v| v.is_finite()),
                "{}: non-finite terms {row:?}",
                method.name()
            );
        }
        let first = term(&summary.history, &method, 0, penalty);
        let last = term(&summary.history, &method, 5, penalty);
        assert!(last < 0.7 * first, "{}: {penalty} went from {first} to {last}", method.name());
        let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
        assert_eq!(csv.lines().count(), 7, "header and 6 epochs");
        assert!(out.join("best/model.safetensors").is_file() && out.join("last/optimizer.safetensors").is_file());
        let manifest = RunManifest::read(&out.join("manifest.json")).unwrap();
        assert_eq!(manifest.train.method, method);
        assert_eq!(manifest.best.as_ref(), Some(&summary.best));
        assert!(manifest.provenance.libtorch_version.starts_with("2.11"), "{:?}", manifest.provenance);
    }
}

/// The batch of the step test: deterministic images, masks with a box, labels.
fn step_batch() -> Batch {
    let images = (Tensor::arange(2 * 3 * 32 * 32, (Kind::Float, Device::Cpu)).view([2, 3, 32, 32]) * 0.37).sin();
    let masks = Tensor::zeros([2, 1, 32, 32], (Kind::Float, Device::Cpu));
    let _ = masks.narrow(2, 6, 16).narrow(3, 8, 14).fill_(1.0);
    Batch { images, masks, labels: Tensor::from_slice(&[3i64, 7]) }
}

#[test]
fn steps_match_plain_pytorch_implementation() {
    let dir = scratch("finetune/steps");
    let batch = step_batch();
    let batch_file = dir.join("batch.safetensors");
    Tensor::write_safetensors(
        &[("images", &batch.images), ("masks", &batch.masks), ("labels", &batch.labels)],
        &batch_file,
    )
    .unwrap();
    let gb = |lambda_bg, lambda_cls| InputGradient { lambda_bg, lambda_cls, temperature: 0.7 };
    let cases: Vec<(Method, Vec<&str>)> = vec![
        (ours(RelevanceGrad::Detached), vec!["--method", "ours"]),
        (ours(RelevanceGrad::Full), vec!["--method", "ours", "--relevance-grad", "full"]),
        (
            Method::Ours(Relevance { cls_target: ClsTarget::Gt, temperature: 0.55, ..Relevance::default() }),
            vec!["--method", "ours", "--cls-target", "gt", "--temperature", "0.55"],
        ),
        (
            Method::Gradmask(gb(1e3, 0.5)),
            vec!["--method", "gradmask", "--lambda-bg", "1000", "--lambda-cls", "0.5", "--temperature", "0.7"],
        ),
        (
            Method::Rrr(gb(0.1, 0.5)),
            vec!["--method", "rrr", "--lambda-bg", "0.1", "--lambda-cls", "0.5", "--temperature", "0.7"],
        ),
    ];
    // Every case's two reference steps in one Python process.
    let out = |k: usize| dir.join(format!("reference{k}.safetensors"));
    let argv: Vec<Vec<String>> = cases
        .iter()
        .enumerate()
        .map(|(k, (_, flags))| {
            let paths = [hub("custom"), batch_file.clone(), out(k)].map(|p| p.display().to_string());
            let fixed = ["--lr", "1e-3", "--steps", "2"].map(String::from);
            paths.into_iter().chain(flags.iter().map(|f| f.to_string())).chain(fixed).collect()
        })
        .collect();
    let cases_file = dir.join("cases.json");
    std::fs::write(&cases_file, serde_json::to_string(&argv).unwrap()).unwrap();
    let status = Command::new(python())
        .arg(root().join("python/fixtures/finetune_step.py"))
        .arg("--cases")
        .arg(&cases_file)
        .status()
        .unwrap();
    assert!(status.success(), "finetune_step.py --cases {} failed", cases_file.display());
    for (k, (method, flags)) in cases.into_iter().enumerate() {
        let out = out(k);
        let reference: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(&out).unwrap().into_iter().collect();
        let loaded = tiny_model();
        let mut opt = AdamW::new(&loaded.vs, 1e-3, 1e-4);
        for step in 0..2 {
            opt.zero_grad();
            let loss = method.loss(&loaded.model, &batch, true).unwrap();
            for (name, value) in &loss.terms {
                let expected = reference[&format!("step{step}.{name}")].double_value(&[]);
                let got = value.double_value(&[]);
                assert!(
                    (got - expected).abs() <= 1e-4 * expected.abs().max(1e-6),
                    "{flags:?} step {step} {name}: {got} vs PyTorch {expected}"
                );
            }
            loss.total().backward();
            opt.step().unwrap();
        }
        for (name, param) in loaded.vs.variables() {
            let expected = &reference[&format!("param.{name}")];
            let mut diff = (&param - expected).abs();
            if name.ends_with("attn.qkv.bias") {
                // The key bias shifts every logit of a softmax row equally, so its exact gradient is zero;
                // both sides get float noise there, which AdamW's g / (|g| + eps) scales to steps of up to
                // lr. Its slice [D, 2D) is left out; the query and value biases are compared.
                let d = diff.size()[0] / 3;
                diff = Tensor::cat(&[diff.narrow(0, 0, d), diff.narrow(0, 2 * d, d)], 0);
            }
            let diff = diff.max().double_value(&[]);
            assert!(diff < 1e-5, "{flags:?}: {name} after two steps differs from PyTorch by {diff}");
        }
    }
}

/// A training set that fails once `budget` samples have been drawn: an interruption mid-epoch.
struct Interrupted<'a> {
    inner: &'a ImagenetSTrain,
    budget: usize,
    drawn: AtomicUsize,
}

impl TrainSet for Interrupted<'_> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn sample(&self, index: usize, seed: u64) -> anyhow::Result<Sample> {
        if self.drawn.fetch_add(1, Ordering::SeqCst) >= self.budget {
            anyhow::bail!("killed");
        }
        self.inner.sample(index, seed)
    }
}

#[test]
fn resume_after_interrupt_equals_uninterrupted_run() {
    let root = scratch("finetune/resume");
    write_imagenet_s(&root, CLASSES, PER_CLASS);
    let cfg = config(ours(RelevanceGrad::Detached), 4, 1e-3);
    let straight = tiny_model();
    let (train_set, val) = data(&root, &straight);
    train::finetune(&straight, &train_set, &val, &cfg, &root.join("straight"), &quiet()).unwrap();

    let out = root.join("interrupted");
    let first = tiny_model();
    // Dies in the middle of epoch 3 (6 samples per epoch).
    let dying = Interrupted { inner: &train_set, budget: 14, drawn: AtomicUsize::new(0) };
    let err = train::finetune(&first, &dying, &val, &cfg, &out, &quiet()).unwrap_err();
    assert!(err.to_string().contains("killed"));
    let again = train::finetune(&tiny_model(), &train_set, &val, &cfg, &out, &quiet()).unwrap_err();
    assert!(again.to_string().contains("--resume"), "a second run without --resume must refuse: {again}");

    let resumed = tiny_model();
    let opts = RunOptions { resume: true, ..quiet() };
    let summary = train::finetune(&resumed, &train_set, &val, &cfg, &out, &opts).unwrap();
    assert_eq!(summary.history.len(), 4);
    let want: std::collections::HashMap<String, Tensor> = straight.vs.variables().into_iter().collect();
    for (name, param) in resumed.vs.variables() {
        assert!(param.equal(&want[&name]), "{name} differs between the resumed and the uninterrupted run");
    }
    let other = config(ours(RelevanceGrad::Detached), 5, 1e-3);
    let mismatch = train::finetune(&tiny_model(), &train_set, &val, &other, &out, &opts).unwrap_err();
    assert!(mismatch.to_string().contains("other settings"));
}

#[test]
fn a_split_reading_masks_from_another_folder_draws_the_same_images_and_skips_missing_masks() {
    let root = scratch("finetune/masks-from");
    write_imagenet_s(&root, CLASSES, PER_CLASS);
    let (images, masks, other) = (root.join("images"), root.join("masks"), root.join("other"));
    let base = imagenet_s::split(&images, &masks, &split_config()).unwrap();
    for item in imagenet_s::annotated_items(&images, &masks).unwrap() {
        std::fs::create_dir_all(other.join(&item.wnid)).unwrap();
        std::fs::copy(&item.mask, other.join(&item.wnid).join(item.mask.file_name().unwrap())).unwrap();
    }
    let removed = &base.train[0];
    std::fs::remove_file(other.join(&removed.wnid).join(removed.mask.file_name().unwrap())).unwrap();
    let cfg = SplitConfig { masks_from: Some(other.clone()), ..split_config() };
    let sub = imagenet_s::split(&images, &masks, &cfg).unwrap();
    assert_eq!((&sub.train_wnids, &sub.val_wnids), (&base.train_wnids, &base.val_wnids));
    assert_eq!(sub.dropped_masks, 1);
    let images_of = |items: &[imagenet_s::Item]| items.iter().map(|i| i.image.clone()).collect::<Vec<_>>();
    assert_eq!(images_of(&sub.val), images_of(&base.val));
    // The same drawn images, but the one whose mask is missing: its class's next image (of 4) instead.
    let kept: Vec<_> = images_of(&base.train).into_iter().filter(|p| *p != removed.image).collect();
    assert!(kept.iter().all(|p| images_of(&sub.train).contains(p)));
    let added: Vec<_> = sub.train.iter().filter(|i| !images_of(&base.train).contains(&i.image)).collect();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].wnid, removed.wnid);
    assert!(sub.train.iter().chain(&sub.val).all(|i| i.mask.starts_with(&other)), "masks read from the other folder");
}

fn split_err(root: &Path) -> String {
    let split = imagenet_s::split(&root.join("images"), &root.join("masks"), &split_config());
    match split {
        Err(e) => e.to_string(),
        Ok(s) => s
            .train
            .iter()
            .chain(&s.val)
            .find_map(|item| imagenet_s::load_pair(item, MaskSource::ImagenetS).err())
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no error".into()),
    }
}

#[test]
fn bad_masks_and_missing_folders_are_errors_naming_the_file() {
    let root = scratch("finetune/bad");
    write_imagenet_s(&root, CLASSES, PER_CLASS);
    let masks: Vec<PathBuf> = imagenet::classes()
        .iter()
        .take(CLASSES)
        .flat_map(|c| (0..PER_CLASS).map(move |k| (c.wnid, k)))
        .map(|(wnid, k)| root.join("masks").join(wnid).join(format!("img{k}.png")))
        .collect();
    let names_a_mask = |message: &str| masks.iter().any(|m| message.contains(&m.display().to_string()));
    // Two object ids in one mask (id 259 beside the box's 517+).
    for path in &masks {
        let mut two = image::open(path).unwrap().to_rgb8();
        two.put_pixel(2, 2, Rgb([3, 1, 0]));
        two.save(path).unwrap();
    }
    let message = split_err(&root);
    assert!(names_a_mask(&message) && message.contains("259"), "{message}");
    // Masks of another size than their images.
    write_imagenet_s(&root, CLASSES, PER_CLASS);
    for path in &masks {
        let mut mask = RgbImage::new(10, 10);
        mask.put_pixel(5, 5, Rgb([5, 2, 0]));
        mask.save(path).unwrap();
    }
    let message = split_err(&root);
    assert!(names_a_mask(&message) && message.contains("10"), "{message}");
    // Missing folders.
    let empty = scratch("finetune/bad-empty");
    let message = split_err(&empty);
    assert!(message.contains(&empty.join("images").display().to_string()), "{message}");
}

fn harness(args: &[&str], paths: &[(&str, &Path)]) -> std::process::Output {
    let mut cmd = Command::new(HARNESS);
    cmd.args(args);
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    cmd.output().unwrap()
}

#[test]
fn cli_finetune_fills_paper_presets_and_writes_the_run() {
    let root = scratch("finetune/cli");
    write_imagenet_s(&root, CLASSES, PER_CLASS);
    let hub = hub("custom");
    let (images, masks, out) = (root.join("images"), root.join("masks"), root.join("run"));
    let paths = [("--checkpoint", hub.as_path()), ("--images", &images), ("--masks", &masks), ("--out", &out)];
    let common = ["finetune", "--epochs", "1", "--batch-size", "4", "--train-classes", "2", "--quiet"];
    let run = harness(&[&common[..], &["--method", "ours", "--preset", "deit-s"]].concat(), &paths);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let manifest = RunManifest::read(&out.join("manifest.json")).unwrap();
    assert_eq!(manifest.train.lr, 1e-6);
    assert!(
        matches!(manifest.train.method, Method::Ours(Relevance { temperature: 0.55, .. })),
        "{:?}",
        manifest.train.method
    );
    assert_eq!(manifest.data.unwrap().train_classes.len(), 2);
    assert_eq!(manifest.origin.checkpoint.as_deref(), Some(hub.as_path()));
    assert!(out.join("best/config.json").is_file() && out.join("metrics.csv").is_file());

    let rrr = harness(
        &[&common[..], &["--method", "rrr", "--preset", "ar-b"]].concat(),
        &[("--out", &root.join("rrr")), ("--checkpoint", &hub), ("--images", &images), ("--masks", &masks)],
    );
    assert!(rrr.status.success(), "{}", String::from_utf8_lossy(&rrr.stderr));
    let manifest = RunManifest::read(&root.join("rrr/manifest.json")).unwrap();
    assert_eq!(manifest.train.lr, 5e-7);
    assert!(
        matches!(manifest.train.method, Method::Rrr(InputGradient { lambda_bg: 1e-8, .. })),
        "{:?}",
        manifest.train.method
    );

    let no_values = harness(&[&common[..], &["--method", "gradmask", "--preset", "vit-l"]].concat(), &paths);
    assert!(String::from_utf8_lossy(&no_values.stderr).contains("gives no GradMask values for vit-l"));
    let missing = harness(
        &[&common[..], &["--method", "ours", "--lr", "1e-4"]].concat(),
        &[
            ("--checkpoint", hub.as_path()),
            ("--images", &root.join("nope")),
            ("--masks", &masks),
            ("--out", &root.join("x")),
        ],
    );
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("nope"));
}

/// `--precision bf16` (autocast) against fp32 on the timm-made ViT-Tiny at 224 px: one step's loss terms of
/// every method agree within 2% (relative), and its parameter gradient points the same way (cosine > 0.99).
/// Measured here on 2026-12-02: terms within 0.00-0.31%, gradient cosines 0.9998 and above (printed with --nocapture).
/// On a CPU without native bf16 the precision is refused instead.
#[test]
fn bf16_step_stays_close_to_fp32() {
    if !robustvit::ops::cpu_has_bf16() {
        let err = Precision::Bf16.check(Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("AVX512-BF16") && err.contains("--precision fp32"), "{err}");
        return;
    }
    let loaded = model::load(None, &hub("vit_tiny_patch16_224"), Device::Cpu).unwrap();
    tch::manual_seed(5);
    let images = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
    let masks = Tensor::zeros([2, 1, 224, 224], (Kind::Float, Device::Cpu));
    let _ = masks.narrow(2, 40, 120).narrow(3, 60, 100).fill_(1.0);
    let batch = Batch { images, masks, labels: Tensor::from_slice(&[3i64, 700]) };
    let gb = InputGradient { lambda_bg: 1.0, lambda_cls: 1.0, temperature: 1.0 };
    let methods = [
        ours(RelevanceGrad::Detached),
        Method::Gradmask(gb.clone()),
        Method::Rrr(gb),
        Method::CrossEntropy(robustvit::train::methods::CrossEntropy { temperature: 1.0 }),
    ];
    for method in methods {
        let run = |precision: Precision| {
            let mut opt = AdamW::new(&loaded.vs, 1e-3, 1e-4);
            opt.zero_grad();
            let loss = precision.run(Device::Cpu, || method.loss(&loaded.model, &batch, true)).unwrap();
            loss.total().backward();
            let terms: Vec<f64> = loss.terms.iter().map(|(_, t)| t.double_value(&[])).collect();
            let grads: Vec<Tensor> = loaded.vs.trainable_variables().iter().map(|p| p.grad().flatten(0, -1)).collect();
            (terms, Tensor::cat(&grads, 0).to_kind(Kind::Double))
        };
        let (fp32, g32) = run(Precision::Fp32);
        let (bf16, g16) = run(Precision::Bf16);
        for ((name, a), b) in method.term_names().iter().zip(&fp32).zip(&bf16) {
            let rel = (a - b).abs() / a.abs().max(1e-12);
            println!("{} {name}: fp32 {a:.6e} bf16 {b:.6e} ({:.2}%)", method.name(), 100.0 * rel);
            assert!(rel < 0.02, "{} {name}: bf16 {b} vs fp32 {a}", method.name());
        }
        let cosine = (&g32 * &g16).sum(Kind::Double).double_value(&[])
            / (g32.norm().double_value(&[]) * g16.norm().double_value(&[]));
        println!("{} gradient cosine {cosine:.5}", method.name());
        assert!(cosine > 0.99, "{}: gradient cosine {cosine}", method.name());
    }
}

#[test]
fn bench_step_refuses_zero_rounds_before_any_measurement() {
    // No rounds is no ratio: refused by name before any process starts.
    let result = Command::new(HARNESS).args(["bench-step", "--rounds", "0"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("'--rounds <ROUNDS>'"), "{stderr}");
    assert!(!String::from_utf8_lossy(&result.stdout).contains("timed steps"));
}

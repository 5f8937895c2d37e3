//! The ViT against timm itself: checkpoints made by the .venv's timm (python/fixtures/timm_models.py, run once
//! per build into target/fixtures/timm) load in every layout and reproduce timm's logits and attention;
//! preprocessing matches timm's eval transform; harness-saved checkpoints load back in timm; bad checkpoints
//! and config.json keys describing another network fail with errors naming the file and the offending keys;
//! `harness predict` writes the documented CSV.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use robustvit::eval::predict;
use robustvit::model::checkpoint::{self, CheckpointError};
use robustvit::model::{self, VisionTransformer, VitConfig};
use serde_json::{json, Value};
use tch::{nn, Device, Kind, Tensor};

use crate::support::{hub, python, root, scratch, timm, HARNESS};

fn io(model: &str) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(timm().join(model).join("io.safetensors")).expect("fixture outputs")
}

fn get(named: &[(String, Tensor)], key: &str) -> Tensor {
    named.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("fixture lacks {key}")).1.shallow_clone()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn custom_config() -> VitConfig {
    VitConfig {
        img_size: 32,
        patch_size: 4,
        in_chans: 3,
        embed_dim: 48,
        depth: 3,
        num_heads: 3,
        mlp_ratio: 2.0,
        num_classes: 10,
    }
}

/// Logits and attention of `model` on the fixture input of `name`, against timm's.
fn assert_matches_timm(model: &VisionTransformer, name: &str, layout: &str) {
    let io = io(name);
    let out = tch::no_grad(|| model.forward_with_attention(&get(&io, "input")));
    let d = max_abs_diff(&out.logits, &get(&io, "logits"));
    assert!(d < 1e-4, "{name} {layout}: logits differ from timm by {d:e}");
    assert_eq!(out.attention.len() as i64, model.config().depth);
    let last = out.attention.len() - 1;
    for (i, a) in out.attention.iter().enumerate() {
        let timm = get(&io, &format!("attn.{i}"));
        // The last block runs the class token's query alone: its row is timm's, the others are zero.
        let (a, timm) = if i == last {
            let rest = a.narrow(2, 1, a.size()[2] - 1);
            assert_eq!(rest.abs().max().double_value(&[]), 0.0, "{name}: last block's other rows are not zero");
            (a.narrow(2, 0, 1), timm.narrow(2, 0, 1))
        } else {
            (a.shallow_clone(), timm)
        };
        let d = max_abs_diff(&a, &timm);
        assert!(d < 1e-4, "{name} {layout}: attention of block {i} differs from timm by {d:e}");
    }
    let fast = tch::no_grad(|| model.forward(&get(&io, "input")));
    assert!(max_abs_diff(&fast, &out.logits) < 1e-6, "{name}: logits-only path differs");
    // The evaluation path (fused attention kernel) against timm's logits.
    let d = max_abs_diff(&model.predict(&get(&io, "input")), &get(&io, "logits"));
    assert!(d < 1e-4, "{name} {layout}: predict's logits differ from timm by {d:e}");
}

#[test]
fn preset_models_load_in_every_layout_and_match_timm() {
    for name in ["vit_tiny_patch16_224", "deit_tiny_patch16_224"] {
        let dir = timm().join(name);
        let layouts: [(Option<&str>, PathBuf); 5] = [
            (None, dir.join("hub")),
            (Some(name), dir.join("hub/model.safetensors")),
            (Some(name), dir.join("flat.pth")),
            (Some(name), dir.join("nested.pth")),
            (Some(name), dir.join("module.pth")),
        ];
        for (model_name, path) in layouts {
            let loaded = model::load(model_name, &path, Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(loaded.name, name);
            assert_matches_timm(&loaded.model, name, &path.display().to_string());
        }
    }
}

#[test]
fn custom_config_loads_from_hub_folder_and_pickles() {
    let dir = timm().join("custom");
    let loaded = model::load(None, &dir.join("hub"), Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.model.config(), &custom_config());
    assert_eq!(loaded.preprocess.input_size, (32, 32));
    assert_matches_timm(&loaded.model, "custom", "hub");
    for file in ["flat.pth", "nested.pth", "module.pth"] {
        let vs = nn::VarStore::new(Device::Cpu);
        let vit = VisionTransformer::new(&vs.root(), &custom_config());
        let path = dir.join(file);
        checkpoint::load_into(&vs, checkpoint::read_tensors(&path).unwrap(), &path).unwrap_or_else(|e| panic!("{e}"));
        assert_matches_timm(&vit, "custom", file);
    }
}

#[test]
fn preset_preprocessing_comes_from_timm_pretrained_cfg() {
    let vit = model::load(None, &hub("vit_tiny_patch16_224"), Device::Cpu).unwrap();
    assert_eq!(vit.preprocess.mean, [0.5; 3]);
    let deit =
        model::load(Some("deit_tiny_patch16_224"), &timm().join("deit_tiny_patch16_224/nested.pth"), Device::Cpu)
            .unwrap();
    assert_eq!(deit.preprocess.mean, [0.485, 0.456, 0.406]);
    assert_eq!(deit.preprocess.std, [0.229, 0.224, 0.225]);
    assert_eq!(deit.preprocess.crop_pct, 0.9);
}

#[test]
fn preprocessing_matches_timm_eval_transform() {
    for name in ["vit_tiny_patch16_224", "deit_tiny_patch16_224"] {
        let cfg = model::preset(name).unwrap().preprocess;
        let reference = Tensor::read_safetensors(timm().join(format!("photo_{name}.safetensors"))).unwrap();
        let ours = |file: &str| predict::image_tensor(&timm().join(file), &cfg).unwrap().squeeze_dim(0);
        // PNG: identical pixels on both sides, so resize, crop and normalisation must agree exactly.
        let png = max_abs_diff(&ours("photo.png"), &get(&reference, "input_png"));
        assert!(png < 1e-6, "{name}: PNG preprocessing differs from timm by {png}");
        // JPEG: the decoders (image crate vs PIL's libjpeg) differ by a few grey levels after chroma
        // upsampling; bound the difference in levels of the 8-bit image.
        let std = Tensor::from_slice(&cfg.std).view([3, 1, 1]);
        let levels = (ours("photo.jpg") - get(&reference, "input")).abs() * std * 255.0;
        let (max, mean) = (levels.max().double_value(&[]), levels.mean(Kind::Float).double_value(&[]));
        assert!(max <= 8.0 && mean <= 1.0, "{name}: JPEG preprocessing differs by {max} levels (mean {mean})");
    }
}

#[test]
fn saved_checkpoint_loads_back_in_timm_and_harness() {
    let names = ["custom", "deit_tiny_patch16_224"];
    let loaded = names.map(|name| model::load(None, &timm().join(name).join("hub"), Device::Cpu).unwrap());
    let outs = names.map(|name| scratch(&format!("roundtrip-{name}")));
    let mut roundtrip = Command::new(python());
    roundtrip.arg(root().join("python/fixtures/timm_models.py")).arg("roundtrip");
    for ((name, loaded), out) in names.iter().zip(&loaded).zip(&outs) {
        checkpoint::save(out, &loaded.name, &loaded.vs, loaded.model.config(), &loaded.preprocess).unwrap();
        let input = timm().join(name).join("io.safetensors");
        roundtrip.arg(out).arg(&loaded.name).arg(input).arg(out.join("timm_logits.safetensors"));
    }
    assert!(roundtrip.status().unwrap().success(), "timm could not load the harness-saved checkpoints");
    for ((name, loaded), out) in names.iter().zip(&loaded).zip(&outs) {
        let name = *name;
        let timm_logits = out.join("timm_logits.safetensors");
        let ours = tch::no_grad(|| loaded.model.forward(&get(&io(name), "input")));
        let theirs = get(&Tensor::read_safetensors(&timm_logits).unwrap(), "logits");
        assert!(max_abs_diff(&ours, &theirs) < 1e-5, "{name}: timm's logits of the saved model differ");
        let back = model::load(None, out, Device::Cpu).unwrap();
        assert_eq!(back.model.config(), loaded.model.config());
        assert_eq!(back.preprocess, loaded.preprocess);
        let again = tch::no_grad(|| back.model.forward(&get(&io(name), "input")));
        assert_eq!(max_abs_diff(&again, &ours), 0.0);
    }
}

fn load_err(path: &Path) -> String {
    match model::load(Some("vit_tiny_patch16_224"), path, Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_checkpoints_fail_with_errors_naming_file_and_keys() {
    let bad = timm().join("bad");
    let cases = [
        ("missing_key.pth", "missing keys: blocks.0.attn.qkv.bias"),
        ("unexpected_key.pth", "unexpected keys: blocks.0.attn.q_bias"),
        ("wrong_shape.pth", "pos_embed: checkpoint [1, 100, 192], model [1, 197, 192]"),
        ("distilled.pth", "distilled DeiT"),
        ("truncated.pth", "cannot read the zip archive (truncated or corrupt file?)"),
        ("truncated.safetensors", "not a readable safetensors file"),
    ];
    for (file, expected) in cases {
        let path = bad.join(file);
        let message = load_err(&path);
        assert!(message.contains(&path.display().to_string()), "error does not name the file: {message}");
        assert!(message.contains(expected), "{file}: expected {expected:?} in {message:?}");
    }
    let err = model::load(Some("vit_huge_patch99"), &timm().join("vit_tiny_patch16_224/nested.pth"), Device::Cpu);
    assert!(matches!(err, Err(CheckpointError::UnknownModel { .. })));
}

/// A copy of the custom fixture's hub folder, in `target/test-tmp/<name>`, with `patch` merged into `section`
/// of its config.json (`""`: the top level).
fn custom_hub_with(name: &str, section: &str, patch: &Value) -> PathBuf {
    let dir = scratch(name);
    for file in [checkpoint::WEIGHTS_FILE, checkpoint::CONFIG_FILE] {
        fs::copy(hub("custom").join(file), dir.join(file)).unwrap();
    }
    let path = dir.join(checkpoint::CONFIG_FILE);
    let mut config: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let target = if section.is_empty() { &mut config } else { &mut config[section] };
    target.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
    fs::write(&path, config.to_string()).unwrap();
    dir
}

#[test]
fn config_json_keys_are_understood_or_refused_by_name() {
    let refused = [
        ("model_args", json!({"foo": 1}), "foo = 1: not one of timm's VisionTransformer arguments this ViT implements"),
        ("model_args", json!({"act_layer": "relu"}), r#"act_layer = "relu": this ViT has exact GELU"#),
        ("model_args", json!({"global_pool": "avg", "fc_norm": false}), r#"global_pool = "avg": this ViT has a head"#),
        ("model_args", json!({"class_token": false}), "class_token = false: this ViT has a class token"),
        ("model_args", json!({"attn_layer": "diff"}), r#"attn_layer = "diff""#),
        ("model_args", json!({"embed_layer": "PatchEmbed"}), r#"embed_layer = "PatchEmbed": not one of"#),
        ("", json!({"global_pool": "avg"}), r#"top-level global_pool = "avg""#),
        ("", json!({"num_classes": 5}), "num_classes 10 in model_args contradicts num_classes 5 in top-level"),
        ("pretrained_cfg", json!({"crop_mode": "squash"}), r#"crop_mode = "squash""#),
    ];
    for (i, (section, patch, expected)) in refused.iter().enumerate() {
        let dir = custom_hub_with(&format!("config-refused-{i}"), section, patch);
        let Err(e) = model::load(None, &dir, Device::Cpu) else { panic!("{section} {patch} loaded but should not") };
        let message = e.to_string();
        assert!(message.contains(&dir.join(checkpoint::CONFIG_FILE).display().to_string()), "{message}");
        assert!(message.contains(expected), "{section} {patch}: expected {expected:?} in {message:?}");
    }
    // Values that build the same network: dropout (off in evaluation), the spelled-out defaults.
    let same = json!({"drop_path_rate": 0.1, "act_layer": "gelu", "global_pool": "token", "fc_norm": null,
        "norm_layer": "layernorm", "attn_layer": "attn", "weight_init": "jax"});
    let loaded = model::load(None, &custom_hub_with("config-accepted", "model_args", &same), Device::Cpu).unwrap();
    assert_matches_timm(&loaded.model, "custom", "hub with spelled-out model_args");
}

/// Every argument of the installed timm's `VisionTransformer.__init__` that is not a size, at its default,
/// loads: the arguments checkpoint.rs knows are this timm's. Those whose default is a Python class (which a
/// config.json cannot hold) are the ones it expects. (python/fixtures/timm_models.py reads them with
/// `inspect`.)
#[test]
fn model_args_at_the_installed_timms_defaults_load() {
    let path = timm().join("model_args.json");
    let installed: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(installed["classes"], json!(["embed_layer", "block_fn", "mlp_layer", "attn_layer"]));
    assert!(installed["args"].as_object().unwrap().len() >= 30, "{installed}");
    let dir = custom_hub_with("config-timm-defaults", "model_args", &installed["args"]);
    model::load(None, &dir, Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn wrong_size_checkpoint_says_in_a_few_lines_which_presets_it_fits() {
    let result = Command::new(HARNESS)
        .args(["predict", "--model", "vit_small_patch16_224", "--checkpoint"])
        .arg(hub("vit_tiny_patch16_224"))
        .arg(timm().join("photo.jpg"))
        .env_remove("RUST_BACKTRACE") // as most users run it: anyhow would add a backtrace
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.lines().count() <= 15 && stderr.len() < 2000, "too long:\n{stderr}");
    for expected in [
        "checkpoint does not fit the model: 0 missing, 0 unexpected and 151 mismatched keys",
        "blocks.0.attn.proj.bias: checkpoint [192], model [384]",
        "these weights fit vit_tiny_patch16_224 or deit_tiny_patch16_224",
    ] {
        assert!(stderr.contains(expected), "expected {expected:?} in:\n{stderr}");
    }
}

#[test]
fn predict_cli_writes_topk_csv_matching_timm() {
    let out = scratch("predict");
    let csv = out.join("pred.csv");
    let photo = timm().join("photo.jpg");
    let result = Command::new(HARNESS)
        .args(["predict", "--topk", "3", "--checkpoint"])
        .arg(hub("vit_tiny_patch16_224"))
        .arg("--csv")
        .arg(&csv)
        .arg(&photo)
        .output()
        .unwrap();
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "image,rank,class_index,probability,class_name");
    assert_eq!(lines.len(), 4);
    let timm = get(&Tensor::read_safetensors(timm().join("photo_vit_tiny_patch16_224.safetensors")).unwrap(), "logits");
    let probs = timm.softmax(-1, Kind::Float).get(0);
    // timm's top-1 leads by 0.3 in logits, robust to the JPEG decoders' differences; ranks 2-3 are within
    // 0.02 of each other, so for them the probability of the reported class is what is compared.
    for (rank, line) in lines[1..].iter().enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[0], photo.display().to_string());
        assert_eq!(fields[1], (rank + 1).to_string());
        let class: i64 = fields[2].parse().unwrap();
        if rank == 0 {
            assert_eq!(class, probs.argmax(0, false).int64_value(&[]), "top-1 class differs from timm");
        }
        let p: f64 = fields[3].parse().unwrap();
        assert!((p - probs.double_value(&[class])).abs() < 2e-4, "rank {} probability {p}", rank + 1);
        assert!(
            line.ends_with(&format!("\"{}\"", robustvit::data::imagenet::classes()[class as usize].name))
                || line.ends_with(robustvit::data::imagenet::classes()[class as usize].name)
        );
    }
    let missing = Command::new(HARNESS)
        .args(["predict", "--checkpoint"])
        .arg(hub("vit_tiny_patch16_224"))
        .arg(out.join("no_such.jpg"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no_such.jpg"));
}

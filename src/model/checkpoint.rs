//! Loading and saving ViT weights with timm's key names.
//!
//! Sources: a timm hub folder (`model.safetensors` + `config.json` with `pretrained_cfg`), a bare
//! `.safetensors` file, or a PyTorch pickle (`.pth`/`.pt`/`.bin`: a flat state dict, or nested under `model`
//! or `state_dict`, keys with or without `module.`). Loading is strict: a config.json describing another
//! network than vit.rs's is refused naming each key that does, and the weights must hold every key of the
//! model with its shape and nothing else, or one short error counts and shows the offenders. Saving writes
//! the timm hub layout atomically, so timm loads it back.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tch::{nn, Device, Kind, Tensor};

use super::config::{self, VitConfig};
use super::vit::VisionTransformer;
use crate::atomic_write;
use crate::image::PreprocessConfig;
use crate::names::UnknownName;
use crate::pickle::{self, DType};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    /// Its message starts with the file already.
    #[error(transparent)]
    Pickle(#[from] pickle::PickleError),
    #[error("{path}: {details}")]
    Mismatch { path: PathBuf, details: String },
    #[error("{path}: unsupported ViT variant ({what}); only plain timm ViT/DeiT checkpoints load")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "unknown model {name:?}: use one of {known}, or a checkpoint folder whose config.json model_args give \
         patch_size, embed_dim, depth and num_heads"
    )]
    UnknownModel { name: String, known: String },
    #[error("{0}")]
    Write(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, CheckpointError>;

/// A model ready to run: weights in `vs`, the architecture, and the preprocessing its checkpoint asks for.
pub struct LoadedModel {
    pub vs: nn::VarStore,
    pub model: VisionTransformer,
    pub name: String,
    pub preprocess: PreprocessConfig,
}

/// Where the weights and the optional config.json of a checkpoint path are.
struct Source {
    weights: PathBuf,
    config: Option<PathBuf>,
}

fn locate(path: &Path) -> Result<Source> {
    if path.is_dir() {
        let config = Some(path.join(CONFIG_FILE)).filter(|p| p.is_file());
        for name in [WEIGHTS_FILE, "pytorch_model.bin"] {
            if path.join(name).is_file() {
                return Ok(Source { weights: path.join(name), config });
            }
        }
        return Err(CheckpointError::Read {
            path: path.to_path_buf(),
            message: format!("folder holds neither {WEIGHTS_FILE} nor pytorch_model.bin"),
        });
    }
    if !path.is_file() {
        return Err(CheckpointError::Read { path: path.to_path_buf(), message: "no such file or folder".into() });
    }
    let sibling = path.with_file_name(CONFIG_FILE);
    let config = (path.file_name().is_some_and(|n| n == WEIGHTS_FILE) && sibling.is_file()).then_some(sibling);
    Ok(Source { weights: path.to_path_buf(), config })
}

fn kind_of(dtype: DType) -> Kind {
    match dtype {
        DType::F64 => Kind::Double,
        DType::F32 => Kind::Float,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
    }
}

/// Every tensor of a weights file, keys without a `module.` prefix, in file order.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let read_err = |message: String| CheckpointError::Read { path: path.to_path_buf(), message };
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    let tensors = if is_safetensors {
        Tensor::read_safetensors(path).map_err(|e| read_err(format!("not a readable safetensors file: {e}")))?
    } else {
        pickle::read_state_dict(path)?
            .into_iter()
            .map(|(name, raw)| {
                let shape: Vec<i64> = raw.shape.iter().map(|&s| s as i64).collect();
                (name, Tensor::from_data_size(&raw.contiguous_bytes(), &shape, kind_of(raw.dtype)))
            })
            .collect()
    };
    Ok(tensors.into_iter().map(|(k, t)| (k.strip_prefix("module.").map(str::to_string).unwrap_or(k), t)).collect())
}

/// Keys that mark ViT variants this model does not implement.
fn unsupported_variant(keys: &[&str]) -> Option<String> {
    let has = |pred: &dyn Fn(&str) -> bool| keys.iter().any(|k| pred(k));
    if has(&|k| k == "dist_token" || k.starts_with("head_dist")) {
        return Some("distilled DeiT: dist_token/head_dist; use the non-distilled deit_*_patch16_224 weights".into());
    }
    if has(&|k| k.contains(".ls1.") || k.contains(".ls2.") || k.ends_with("gamma_1") || k.ends_with("gamma_2")) {
        return Some("layer scale (DeiT-3): blocks.*.ls1/ls2".into());
    }
    if has(&|k| k == "reg_token") {
        return Some("register tokens: reg_token".into());
    }
    if has(&|k| k.starts_with("fc_norm")) {
        return Some("global-average-pool head: fc_norm".into());
    }
    None
}

/// Mismatches a load error shows of each kind; the header counts them all.
const SHOWN: usize = 5;

/// Copies `tensors` into the variables of `vs`, strictly: the same key set and shapes, or an error that counts
/// missing keys, unexpected keys and shape mismatches, shows the first few (with both shapes), and names the
/// presets the weights fit when the checkpoint is simply another size.
pub fn load_into(vs: &nn::VarStore, tensors: Vec<(String, Tensor)>, path: &Path) -> Result<()> {
    let keys: Vec<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
    if let Some(what) = unsupported_variant(&keys) {
        return Err(CheckpointError::Unsupported { path: path.to_path_buf(), what });
    }
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let given: HashMap<&str, &Tensor> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let missing: Vec<&str> = vars.keys().map(String::as_str).filter(|k| !given.contains_key(k)).collect();
    let unexpected: Vec<&str> = keys.iter().copied().filter(|k| !vars.contains_key(*k)).collect();
    let mismatched: Vec<String> = vars
        .iter()
        .filter_map(|(k, v)| {
            let t = given.get(k.as_str())?;
            (t.size() != v.size()).then(|| format!("{k}: checkpoint {:?}, model {:?}", t.size(), v.size()))
        })
        .collect();
    if !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty()) {
        let mut lines = vec![format!(
            "checkpoint does not fit the model: {} missing, {} unexpected and {} mismatched keys",
            missing.len(),
            unexpected.len(),
            mismatched.len()
        )];
        for (label, names) in [("missing keys", &missing), ("unexpected keys", &unexpected)] {
            if !names.is_empty() {
                let more = if names.len() > SHOWN { ", ..." } else { "" };
                lines.push(format!("  {label}: {}{more}", names[..names.len().min(SHOWN)].join(", ")));
            }
        }
        lines.extend(mismatched.iter().take(SHOWN).map(|m| format!("  {m}")));
        let theirs = WeightSizes::of(&tensors.iter().map(|(k, t)| (k.as_str(), t.size())).collect());
        let ours = WeightSizes::of(&vars.iter().map(|(k, v)| (k.as_str(), v.size())).collect());
        if let Some(theirs) = theirs.filter(|t| Some(t) != ours.as_ref()) {
            let fits: Vec<&str> =
                config::presets().filter(|p| WeightSizes::from(&p.config) == theirs).map(|p| p.name).collect();
            match fits.as_slice() {
                [] => {}
                [one] => lines.push(format!("  these weights fit {one} (use --model {one})")),
                several => lines.push(format!(
                    "  these weights fit {}: use --model with the one they were trained as (their preprocessing \
                     differs)",
                    several.join(" or ")
                )),
            }
        }
        return Err(CheckpointError::Mismatch { path: path.to_path_buf(), details: lines.join("\n") });
    }
    tch::no_grad(|| {
        for (k, var) in &vars {
            let mut var = var.shallow_clone();
            var.copy_(&given[k.as_str()].to_kind(var.kind()).to_device(var.device()));
        }
    });
    Ok(())
}

/// What timm ViT weights show of their architecture: every size but num_heads (which no shape holds).
#[derive(PartialEq)]
struct WeightSizes {
    img_size: i64,
    patch_size: i64,
    in_chans: i64,
    embed_dim: i64,
    depth: usize,
    mlp_hidden: i64,
    num_classes: i64,
}

impl WeightSizes {
    /// Read from `patch_embed.proj.weight` `[D, C, p, p]`, `pos_embed` `[1, 1 + g*g, D]`, the `blocks.<i>`
    /// indices, `blocks.0.mlp.fc1.weight` `[H, D]` and `head.weight` `[N, D]`; None when one is missing or odd.
    fn of(shapes: &HashMap<&str, Vec<i64>>) -> Option<WeightSizes> {
        let (&[embed_dim, in_chans, patch_size, p2], &[1, tokens, _], &[mlp_hidden, _], &[num_classes, _]) = (
            shapes.get("patch_embed.proj.weight")?.as_slice(),
            shapes.get("pos_embed")?.as_slice(),
            shapes.get("blocks.0.mlp.fc1.weight")?.as_slice(),
            shapes.get("head.weight")?.as_slice(),
        ) else {
            return None;
        };
        let grid = ((tokens - 1) as f64).sqrt().round() as i64;
        if p2 != patch_size || grid * grid != tokens - 1 {
            return None;
        }
        let blocks: BTreeSet<&str> =
            shapes.keys().filter_map(|k| k.strip_prefix("blocks.")?.split('.').next()).collect();
        let img_size = grid * patch_size;
        Some(WeightSizes { img_size, patch_size, in_chans, embed_dim, depth: blocks.len(), mlp_hidden, num_classes })
    }
}

impl From<&VitConfig> for WeightSizes {
    fn from(c: &VitConfig) -> Self {
        WeightSizes {
            img_size: c.img_size,
            patch_size: c.patch_size,
            in_chans: c.in_chans,
            embed_dim: c.embed_dim,
            depth: c.depth as usize,
            mlp_hidden: c.mlp_hidden(),
            num_classes: c.num_classes,
        }
    }
}

/// A timm config.json: `model_args` (the arguments timm passes to `VisionTransformer.__init__`),
/// `pretrained_cfg` (preprocessing) and the top-level keys timm writes for information (`num_classes`,
/// `global_pool`; `num_features` too, which the weights show).
#[derive(Default)]
struct HubConfig {
    architecture: Option<String>,
    model_args: serde_json::Map<String, Value>,
    pretrained_cfg: serde_json::Map<String, Value>,
    top: serde_json::Map<String, Value>,
}

fn read_hub_config(path: &Path) -> Result<HubConfig> {
    let err = |message: String| CheckpointError::Config { path: path.to_path_buf(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
    let top = value.as_object().cloned().ok_or_else(|| err("not a JSON object".into()))?;
    let object = |key: &str| top.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
    // Older timm wrote one flat object, which timm reads as the pretrained_cfg itself.
    let pretrained_cfg = if top.contains_key("pretrained_cfg") { object("pretrained_cfg") } else { top.clone() };
    Ok(HubConfig {
        architecture: top.get("architecture").and_then(Value::as_str).map(str::to_string),
        model_args: object("model_args"),
        pretrained_cfg,
        top,
    })
}

/// The `VisionTransformer.__init__` arguments (timm 1.0.31) that size the network; `resolve` reads them.
const SIZES: [&str; 8] =
    ["img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio", "num_classes"];

/// What `model_args` may give for one of the other `VisionTransformer.__init__` arguments.
enum Accept {
    /// Only these values (JSON text): the ones that build the network vit.rs computes, which the text names.
    OneOf(&'static [&'static str], &'static str),
    /// A dropout rate: any number, as evaluation runs without dropout (and this project's finetuning too).
    Rate,
    /// Any value: weight initialisation (every weight is then loaded) or where the weights are created.
    Any,
}

/// Every other argument of timm 1.0.31's `VisionTransformer.__init__` but three: `embed_layer`, `block_fn` and
/// `mlp_layer` take only Python classes, which a config can only give to replace timm's, so any value of them
/// is refused like an unknown key.
const SETTINGS: [(&str, Accept); 31] = [
    ("global_pool", Accept::OneOf(&["\"token\""], "a head on the class token")),
    ("fc_norm", Accept::OneOf(&["null", "false"], "the final norm on every token, before the class token is taken")),
    ("class_token", Accept::OneOf(&["true"], "a class token")),
    ("qkv_bias", Accept::OneOf(&["true"], "a bias in the qkv projection")),
    ("qk_norm", Accept::OneOf(&["false"], "no q/k normalisation")),
    ("scale_attn_norm", Accept::OneOf(&["false"], "no norm inside attention")),
    ("scale_mlp_norm", Accept::OneOf(&["false"], "no norm inside the MLP")),
    ("proj_bias", Accept::OneOf(&["true"], "a bias in the attention output projection")),
    ("init_values", Accept::OneOf(&["null"], "no layer scale")),
    ("pos_embed", Accept::OneOf(&["\"learn\""], "a learned position embedding")),
    ("no_embed_class", Accept::OneOf(&["false"], "a position embedding for the class token too")),
    ("reg_tokens", Accept::OneOf(&["0"], "no register tokens")),
    ("pre_norm", Accept::OneOf(&["false"], "no norm before the blocks")),
    ("final_norm", Accept::OneOf(&["true"], "a norm after the blocks")),
    ("pool_include_prefix", Accept::OneOf(&["false"], "plain class-token pooling")),
    ("dynamic_img_size", Accept::OneOf(&["false"], "a fixed input size")),
    ("dynamic_img_pad", Accept::OneOf(&["false"], "no input padding")),
    ("embed_norm_layer", Accept::OneOf(&["null"], "no norm in the patch embedding")),
    ("norm_layer", Accept::OneOf(&["null", "\"layernorm\""], "LayerNorm with eps 1e-6")),
    ("act_layer", Accept::OneOf(&["null", "\"gelu\""], "exact GELU")),
    // timm's ATTN_LAYERS names; "diff" is differential attention.
    ("attn_layer", Accept::OneOf(&["\"attn\"", "\"\""], "plain softmax attention")),
    ("dtype", Accept::OneOf(&["null"], "float32 weights")),
    ("drop_rate", Accept::Rate),
    ("pos_drop_rate", Accept::Rate),
    ("patch_drop_rate", Accept::Rate),
    ("proj_drop_rate", Accept::Rate),
    ("attn_drop_rate", Accept::Rate),
    ("drop_path_rate", Accept::Rate),
    ("weight_init", Accept::Any),
    ("fix_init", Accept::Any),
    ("device", Accept::Any),
];

/// Why `value` of the setting `key` describes another network than vit.rs, or None when it does not.
fn refusal(key: &str, value: &Value) -> Option<String> {
    let Some((_, accept)) = SETTINGS.iter().find(|(k, _)| *k == key) else {
        return Some(format!("{key} = {value}: not one of timm's VisionTransformer arguments this ViT implements"));
    };
    match accept {
        Accept::OneOf(allowed, what) => {
            let ok = allowed.iter().any(|a| serde_json::from_str::<Value>(a).is_ok_and(|a| a == *value));
            (!ok).then(|| format!("{key} = {value}: this ViT has {what} ({key} = {})", allowed.join(" or ")))
        }
        Accept::Rate => (!value.is_number()).then(|| format!("{key} = {value}: a dropout rate must be a number")),
        Accept::Any => None,
    }
}

/// Every model_args key this ViT does not implement and every top-level key that contradicts the model, one
/// line each, or nothing; the sizes themselves are read by `resolve`.
fn check_settings(hub: &HubConfig) -> Vec<String> {
    let mut problems: Vec<String> = hub
        .model_args
        .iter()
        .filter(|(key, _)| !SIZES.contains(&key.as_str()))
        .filter_map(|(key, value)| refusal(key, value))
        .collect();
    // timm writes the top-level global_pool for information only, but it describes the saved model.
    if let Some(pool) = hub.top.get("global_pool").filter(|p| p.as_str() != Some("token")) {
        problems.push(format!("top-level global_pool = {pool}: this ViT has a head on the class token (\"token\")"));
    }
    let known = |k: &str| SIZES.contains(&k) || SETTINGS.iter().any(|(s, _)| *s == k);
    if hub.model_args.keys().any(|k| !known(k)) {
        let settings: Vec<&str> = SETTINGS.iter().map(|(k, _)| *k).collect();
        problems.push(format!("(model_args this ViT reads: {}, {})", SIZES.join(", "), settings.join(", ")));
    }
    problems
}

fn int_field(map: &serde_json::Map<String, Value>, key: &str, path: &Path) -> Result<Option<i64>> {
    map.get(key)
        .map(|v| {
            v.as_i64().ok_or_else(|| CheckpointError::Config {
                path: path.to_path_buf(),
                message: format!("{key} must be an integer, got {v}"),
            })
        })
        .transpose()
}

fn triple(map: &serde_json::Map<String, Value>, key: &str, path: &Path) -> Result<Option<[f32; 3]>> {
    let Some(v) = map.get(key) else { return Ok(None) };
    let values: Option<Vec<f32>> =
        v.as_array().map(|a| a.iter().filter_map(|x| x.as_f64().map(|f| f as f32)).collect());
    match values {
        Some(vals) if vals.len() == 3 => Ok(Some([vals[0], vals[1], vals[2]])),
        _ => Err(CheckpointError::Config {
            path: path.to_path_buf(),
            message: format!("{key} must be 3 numbers, got {v}"),
        }),
    }
}

/// timm writes `img_size` and `patch_size` as `16` or `[16, 16]`; this model is square.
fn square_field(map: &serde_json::Map<String, Value>, key: &str, path: &Path) -> Result<Option<i64>> {
    let Some(v) = map.get(key) else { return Ok(None) };
    let size = match v {
        Value::Array(hw) if hw.len() == 2 && hw[0] == hw[1] => hw[0].as_i64(),
        other => other.as_i64(),
    };
    size.map(Some).ok_or_else(|| CheckpointError::Config {
        path: path.to_path_buf(),
        message: format!("model_args {key} must be an integer or a square [h, w], got {v}"),
    })
}

/// The sizes a `model_args` must give when its architecture is not a preset: timm's factory for that name
/// may set any of them, and num_heads is not visible in the weights.
const UNKNOWN_ARCHITECTURE_SIZES: [&str; 4] = ["patch_size", "embed_dim", "depth", "num_heads"];

/// The architecture and preprocessing of `name` (a preset, or the config's architecture) with the config's
/// `model_args` and `pretrained_cfg` applied on top; a config describing another network than vit.rs's is
/// refused, naming every key that does.
fn resolve(name: Option<&str>, hub: &HubConfig, config_path: &Path) -> Result<(String, VitConfig, PreprocessConfig)> {
    let config_err = |message: String| CheckpointError::Config { path: config_path.to_path_buf(), message };
    let problems = check_settings(hub);
    if !problems.is_empty() {
        return Err(config_err(format!(
            "describes a ViT this one does not implement (src/model/vit.rs: a plain timm ViT/DeiT):\n  {}",
            problems.join("\n  ")
        )));
    }
    let name = name
        .map(str::to_string)
        .or_else(|| hub.architecture.clone())
        .ok_or_else(|| config_err("no model name given and config.json names no architecture".into()))?;
    let args = &hub.model_args;
    let (mut vit, mut pre) = match config::preset(&name) {
        Some(p) => (p.config, p.preprocess),
        // timm's VisionTransformer defaults are ViT-B/16's, for the sizes that the weights then check.
        None if UNKNOWN_ARCHITECTURE_SIZES.iter().all(|k| args.contains_key(*k)) => {
            let base = config::preset("vit_base_patch16_224").expect("built-in preset");
            (base.config, base.preprocess)
        }
        None => {
            return Err(CheckpointError::UnknownModel {
                name,
                known: config::preset_names().collect::<Vec<_>>().join(", "),
            })
        }
    };
    for (key, field) in [("img_size", &mut vit.img_size), ("patch_size", &mut vit.patch_size)] {
        if let Some(v) = square_field(args, key, config_path)? {
            *field = v;
        }
    }
    for (key, field) in [
        ("in_chans", &mut vit.in_chans),
        ("embed_dim", &mut vit.embed_dim),
        ("depth", &mut vit.depth),
        ("num_heads", &mut vit.num_heads),
    ] {
        if let Some(v) = int_field(args, key, config_path)? {
            *field = v;
        }
    }
    if let Some(r) = args.get("mlp_ratio") {
        vit.mlp_ratio =
            r.as_f64().ok_or_else(|| config_err(format!("model_args mlp_ratio must be a number, got {r}")))?;
    }
    // timm writes the class count three times; they must agree, or which one timm builds is unclear.
    let cfg = &hub.pretrained_cfg;
    let counts = [("model_args", args), ("top-level", &hub.top), ("pretrained_cfg", cfg)]
        .into_iter()
        .filter_map(|(place, map)| {
            int_field(map, "num_classes", config_path).map(|n| n.map(|n| (place, n))).transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(&(_, n)) = counts.first() {
        if let Some((place, other)) = counts.iter().find(|(_, m)| *m != n) {
            return Err(config_err(format!(
                "num_classes {n} in {} contradicts num_classes {other} in {place}",
                counts[0].0
            )));
        }
        vit.num_classes = n;
    }
    pre.input_size = (vit.img_size as u32, vit.img_size as u32);
    if let Some(m) = triple(cfg, "mean", config_path)? {
        pre.mean = m;
    }
    if let Some(s) = triple(cfg, "std", config_path)? {
        pre.std = s;
    }
    if let Some(c) = cfg.get("crop_pct").and_then(Value::as_f64) {
        pre.crop_pct = c;
    }
    if let Some(mode) = cfg.get("crop_mode").filter(|m| m.as_str() != Some("center")) {
        return Err(config_err(format!(
            "pretrained_cfg crop_mode = {mode}: this project's eval transform crops the centre (\"center\")"
        )));
    }
    if let Some(i) = cfg.get("interpolation").and_then(Value::as_str) {
        pre.interpolation = i.parse().map_err(|e: UnknownName| config_err(e.to_string()))?;
    }
    vit.validate().map_err(config_err)?;
    Ok((name, vit, pre))
}

/// Builds the model named `name` (or the one config.json names) and loads `path` into it, for
/// classification: a backbone without a head is refused.
pub fn load(name: Option<&str>, path: &Path, device: Device) -> Result<LoadedModel> {
    load_as(name, path, device, false)
}

/// Like [`load`], for the features only (`harness masks`): weights without `head.*` (DINO's, timm's
/// `num_classes=0`) load as a backbone.
pub fn load_backbone(name: Option<&str>, path: &Path, device: Device) -> Result<LoadedModel> {
    load_as(name, path, device, true)
}

fn load_as(name: Option<&str>, path: &Path, device: Device, backbone: bool) -> Result<LoadedModel> {
    let source = locate(path)?;
    let hub = match &source.config {
        Some(p) => read_hub_config(p)?,
        None => HubConfig::default(),
    };
    let config_path = source.config.clone().unwrap_or_else(|| source.weights.clone());
    let (name, mut vit, preprocess) = resolve(name, &hub, &config_path)?;
    let tensors = read_tensors(&source.weights)?;
    if backbone && !tensors.iter().any(|(k, _)| k == "head.weight") {
        vit.num_classes = 0;
    }
    if !backbone && vit.num_classes == 0 {
        return Err(CheckpointError::Config {
            path: config_path,
            message: "num_classes 0: a backbone without a classifier head (such as DINO's); it can make \
                      foreground masks (`harness masks`) but not classify"
                .into(),
        });
    }
    let vs = nn::VarStore::new(device);
    let model = VisionTransformer::new(&vs.root(), &vit);
    load_into(&vs, tensors, &source.weights)?;
    Ok(LoadedModel { vs, model, name, preprocess })
}

/// Writes `dir/model.safetensors` (timm keys) and `dir/config.json` (timm hub layout with `model_args` and
/// `pretrained_cfg`), each atomically. timm loads it back with `timm.create_model(name, pretrained=True,
/// pretrained_cfg_overlay=dict(file=".../model.safetensors", num_classes=C), **model_args)` (without
/// `num_classes` in the overlay timm re-initialises a head whose size differs from the preset's).
pub fn save(dir: &Path, name: &str, vs: &nn::VarStore, vit: &VitConfig, pre: &PreprocessConfig) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    let mut named: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(k, t)| (k, t.detach().to_device(Device::Cpu).contiguous())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    atomic_write::write_via_path(&dir.join(WEIGHTS_FILE), |tmp| {
        Tensor::write_safetensors(&named, tmp).map_err(|e| std::io::Error::other(e.to_string()))
    })?;
    let config = json!({
        "architecture": name.split('.').next().unwrap_or(name),
        "num_classes": vit.num_classes,
        "num_features": vit.embed_dim,
        "global_pool": "token",
        "model_args": {
            "img_size": vit.img_size, "patch_size": vit.patch_size, "in_chans": vit.in_chans,
            "embed_dim": vit.embed_dim, "depth": vit.depth, "num_heads": vit.num_heads,
            "mlp_ratio": vit.mlp_ratio, "num_classes": vit.num_classes,
        },
        "pretrained_cfg": {
            "input_size": [vit.in_chans, pre.input_size.0, pre.input_size.1],
            "interpolation": pre.interpolation.name(),
            "crop_pct": pre.crop_pct,
            "crop_mode": "center",
            "mean": pre.mean,
            "std": pre.std,
            "num_classes": vit.num_classes,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    });
    let text = serde_json::to_string_pretty(&config).expect("a JSON value serialises");
    atomic_write::write(&dir.join(CONFIG_FILE), text.as_bytes())?;
    Ok(())
}

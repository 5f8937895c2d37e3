//! `harness finetune`: the method, GradMask or RRR on ImageNet-S images with foreground masks.
use std::path::PathBuf;

use anyhow::{bail, Context};
use robustvit::data::imagenet_s::{MaskResize, MaskSource, SplitConfig};
use robustvit::precision::Precision;
use robustvit::train::imagenet_s::{self, DataConfig};
use robustvit::train::methods::{ClsTarget, CrossEntropy, InputGradient, Method, MethodKind, Relevance, RelevanceGrad};
use robustvit::train::paper::{self, PaperHparams};
use robustvit::train::{Origin, RunOptions, Selection, TrainConfig};

use crate::model_args::ModelArgs;
use crate::named;

#[derive(clap::Args)]
pub struct Args {
    /// ours (the relevance method), gradmask, rrr, or ce (cross-entropy on the labels alone).
    #[arg(long, value_parser = named::<MethodKind>(MethodKind::NAMES))]
    method: MethodKind,
    #[command(flatten)]
    model: ModelArgs,
    /// ImageNet training images: <images>/<wnid>/<name>.JPEG
    #[arg(long)]
    images: PathBuf,
    /// Foreground masks: <masks>/<wnid>/<name>.png
    #[arg(long)]
    masks: PathBuf,
    /// Output folder: best/, last/, metrics.csv, manifest.json.
    #[arg(long)]
    out: PathBuf,
    /// imagenet-s (PNG ids R + 256*G: 0 background, 1000 ignored, any other id the object) or binary
    /// (bright = object, e.g. unsupervised TokenCut masks).
    #[arg(long, default_value = "imagenet-s", value_parser = named::<MaskSource>(MaskSource::NAMES))]
    mask_source: MaskSource,
    /// Drop masks with fewer foreground pixels (the paper uses 520 for TokenCut masks).
    #[arg(long)]
    min_mask_pixels: Option<u64>,
    /// Fill in the paper's values for a model: vit-b, vit-l, ar-s, ar-b, ar-l, deit-s, deit-b (or timm names).
    #[arg(long)]
    preset: Option<String>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// The LR of epoch e is lr * lr_decay^(e / decay_every).
    #[arg(long, default_value_t = 0.85)]
    lr_decay: f64,
    #[arg(long, default_value_t = 2)]
    decay_every: usize,
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Background weight (ours: lambda_bg of L_rel, default 2; baselines: weight of the input-gradient penalty).
    #[arg(long)]
    lambda_bg: Option<f64>,
    #[arg(long, default_value_t = 0.3)]
    lambda_fg: f64,
    #[arg(long, default_value_t = 0.8)]
    lambda_rel: f64,
    /// Classification weight (ours: default 0.2; baselines: from --preset or required).
    #[arg(long)]
    lambda_cls: Option<f64>,
    /// Temperature of the classification term (default 1, DeiT presets 0.55 / 0.65).
    #[arg(long)]
    temperature: Option<f64>,
    /// detached (G = dS/dA a constant, as the reference) or full (the loss also trains through G).
    #[arg(long, default_value = "detached", value_parser = named::<RelevanceGrad>(RelevanceGrad::NAMES))]
    relevance_grad: RelevanceGrad,
    /// Ablation: drop the classification term.
    #[arg(long)]
    no_cls_loss: bool,
    /// Ablation: drop the background term.
    #[arg(long)]
    no_bg_loss: bool,
    /// Ablation: drop the foreground term.
    #[arg(long)]
    no_fg_loss: bool,
    /// Target of the classification term: the model's prediction (the method) or the label (ablation).
    #[arg(long, default_value = "pred", value_parser = named::<ClsTarget>(ClsTarget::NAMES))]
    cls_target: ClsTarget,
    /// Which epoch's model to keep: val-loss (the paper's rule), val-acc, or guarded-penalty (lowest
    /// validation penalty among epochs reaching --accuracy-floor).
    #[arg(long, default_value = "val-loss", value_parser = named::<Selection>(Selection::NAMES))]
    select: Selection,
    /// The arithmetic of the training forward passes: fp32, or bf16 autocast (CPUs with AVX512-BF16/AMX, and
    /// CUDA); validation runs in fp32.
    #[arg(long, default_value = "fp32", value_parser = named::<Precision>(Precision::NAMES))]
    precision: Precision,
    /// Validation accuracy (fraction) an epoch needs under --select guarded-penalty.
    #[arg(long)]
    accuracy_floor: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 500)]
    train_classes: usize,
    #[arg(long, default_value_t = 3)]
    per_class: usize,
    #[arg(long, default_value_t = 1)]
    val_per_class: usize,
    /// Continue the run in --out from its last completed epoch.
    #[arg(long)]
    resume: bool,
    /// No progress bars; one log line per epoch.
    #[arg(long)]
    quiet: bool,
    /// Resize masks bilinearly as the reference code does (fractional edges) instead of nearest.
    #[arg(long)]
    reference_mask_resize: bool,
}

fn hparams(args: &Args) -> anyhow::Result<Option<&'static PaperHparams>> {
    args.preset
        .as_deref()
        .map(|name| {
            paper::lookup(name).with_context(|| format!("unknown --preset {name:?}; known: {}", paper::known()))
        })
        .transpose()
}

/// The method and its learning rate from the flags, the preset filling what the flags leave open.
fn method_and_lr(args: &Args) -> anyhow::Result<(Method, f64)> {
    let preset = hparams(args)?;
    let temperature = args.temperature.or(preset.map(|p| p.temperature)).unwrap_or(1.0);
    let ablation = args.no_cls_loss || args.no_bg_loss || args.no_fg_loss || args.cls_target == ClsTarget::Gt;
    if args.method != MethodKind::Ours && (ablation || args.relevance_grad == RelevanceGrad::Full) {
        bail!("--no-*-loss, --cls-target and --relevance-grad apply to --method ours only");
    }
    if args.method == MethodKind::CrossEntropy {
        if args.lambda_bg.is_some() || args.lambda_cls.is_some() {
            bail!("--lambda-bg and --lambda-cls do not apply to --method ce (it has no other term)");
        }
        let lr = args.lr.context("give --lr for --method ce (the paper has no setting for it)")?;
        return Ok((Method::CrossEntropy(CrossEntropy { temperature }), lr));
    }
    if args.method == MethodKind::Ours {
        let lr = args.lr.or(preset.map(|p| p.ours_lr)).context("give --lr or --preset")?;
        let zero_if = |off: bool, v: f64| if off { 0.0 } else { v };
        let m = Relevance {
            lambda_bg: zero_if(args.no_bg_loss, args.lambda_bg.unwrap_or(2.0)),
            lambda_fg: zero_if(args.no_fg_loss, args.lambda_fg),
            lambda_rel: args.lambda_rel,
            lambda_cls: zero_if(args.no_cls_loss, args.lambda_cls.unwrap_or(0.2)),
            temperature,
            relevance_grad: args.relevance_grad,
            cls_target: args.cls_target,
        };
        return Ok((Method::Ours(m), lr));
    }
    let (name, paper_values) = match args.method {
        MethodKind::Gradmask => ("GradMask", preset.and_then(|p| p.gradmask)),
        _ => ("RRR", preset.and_then(|p| p.rrr)),
    };
    if preset.is_some() && paper_values.is_none() {
        bail!(
            "the paper gives no {name} values for {}; pass --lambda-bg, --lambda-cls and --lr",
            args.preset.as_deref().unwrap_or_default()
        );
    }
    let need = |flag: Option<f64>, from_paper: Option<f64>, what: &str| {
        flag.or(from_paper).with_context(|| format!("give --{what} or --preset for {name}"))
    };
    let b = InputGradient {
        lambda_bg: need(args.lambda_bg, paper_values.map(|p| p.lambda_bg), "lambda-bg")?,
        lambda_cls: need(args.lambda_cls, paper_values.map(|p| p.lambda_cls), "lambda-cls")?,
        temperature,
    };
    let lr = need(args.lr, paper_values.map(|p| p.lr), "lr")?;
    Ok((if args.method == MethodKind::Gradmask { Method::Gradmask(b) } else { Method::Rrr(b) }, lr))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (method, lr) = method_and_lr(&args)?;
    let cfg = TrainConfig {
        method,
        lr,
        weight_decay: args.weight_decay,
        lr_decay: args.lr_decay,
        decay_every: args.decay_every,
        epochs: args.epochs,
        batch_size: args.batch_size.max(1),
        seed: args.seed,
        select: args.select,
        accuracy_floor: args.accuracy_floor,
        precision: args.precision,
    };
    let data = DataConfig {
        images: args.images.clone(),
        masks: args.masks.clone(),
        split: SplitConfig {
            train_classes: args.train_classes,
            per_class: args.per_class,
            val_per_class: args.val_per_class,
            seed: args.seed,
            min_mask_pixels: args.min_mask_pixels,
            source: args.mask_source,
            masks_from: None,
        },
        mask_resize: if args.reference_mask_resize { MaskResize::Bilinear } else { MaskResize::Nearest },
    };
    let loaded = args.model.load()?;
    args.precision.check(loaded.vs.device())?;
    let opts = RunOptions {
        resume: args.resume,
        quiet: args.quiet,
        provenance: crate::provenance(),
        origin: Origin {
            command: std::env::args().collect(),
            checkpoint: Some(args.model.checkpoint.clone()),
            study: None,
        },
        data: None,
        probe: None,
    };
    let summary = imagenet_s::run(&loaded, &data, &cfg, &args.out, opts)?;
    println!(
        "best epoch {} (val total {:.5}, val accuracy {:.4}) saved in {}",
        summary.best_epoch,
        summary.best.val[0],
        summary.best.val_accuracy,
        summary.best_dir.display()
    );
    Ok(())
}

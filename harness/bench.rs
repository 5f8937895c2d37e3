//! `harness bench-eval`: images per second of the evaluation input pipeline alone (decode, resize, crop,
//! normalise on all cores), of the whole evaluation with randomly initialised preset models, and of the
//! same model's forward alone over the same images preloaded as batches, on generated JPEGs; with
//! `--segtest`, the segmentation test likewise against its relevance alone. A measurement, not a test: run
//! it on an otherwise idle machine.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use image::{Rgb, RgbImage};
use robustvit::data::eval_sets::{Kind, Protocol};
use robustvit::data::gtsegs::SegmentationFile;
use robustvit::data::{imagenet, pipeline, stack};
use robustvit::eval::{accuracy, imagenet_segmentation, segmentation, PipelineOptions};
use robustvit::image::save_jpeg;
use robustvit::model::{self, LoadedModel, VisionTransformer};
use robustvit::precision::Precision;
use tch::{nn, Device, Tensor};

#[derive(clap::Args)]
pub struct Args {
    /// Generated 500x375 JPEGs per measurement.
    #[arg(long, default_value_t = 256)]
    images: usize,
    /// Preset models for the whole-evaluation measurement, comma separated.
    #[arg(long, default_value = "vit_tiny_patch16_224,vit_base_patch16_224")]
    models: String,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Where the generated images go (default: a folder in the system temp dir, removed afterwards).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Also the segmentation test on this gtsegs file (python/bench/gtsegs.py makes one): the whole test
    /// against the relevance alone over its entries preloaded, per model.
    #[arg(long)]
    segtest: Option<PathBuf>,
    /// The arithmetic of the forward passes, in the whole evaluation and the forward-only loop alike.
    #[arg(long, default_value = "fp32", value_parser = crate::named::<Precision>(Precision::NAMES))]
    precision: Precision,
    /// Rounds of each comparison, the whole run and the loop alone taken in turn: the machine's speed
    /// drifts by 10-20% between measurements, so each ratio pairs neighbours and the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

fn write_images(dir: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let class = dir.join(imagenet::classes()[0].wnid);
    std::fs::create_dir_all(&class).with_context(|| format!("creating {}", class.display()))?;
    for k in 0..n {
        let img = RgbImage::from_fn(500, 375, |x, y| {
            let v = ((x * 7 + y * 13 + k as u32 * 31) % 256) as u8;
            Rgb([v, v.wrapping_mul(3), 255 - v])
        });
        save_jpeg(&img, &class.join(format!("{k}.JPEG")), 75)?;
    }
    Ok(())
}

/// Images per second of the model's forward alone over `batches` (the bound of any evaluation loop).
fn forward_only(loaded: &LoadedModel, batches: &[Tensor], precision: Precision) -> f64 {
    let started = Instant::now();
    let mut images = 0;
    for batch in batches {
        let device = loaded.vs.device();
        let logits = precision.run(device, || loaded.model.predict(&batch.to_device(device)));
        images += logits.size()[0];
        drop(std::hint::black_box(logits));
    }
    images as f64 / started.elapsed().as_secs_f64()
}

/// The whole segmentation test of `loaded` on `file` against the relevance alone over its entries
/// preloaded, same batch size, in images per second.
fn segtest(loaded: &LoadedModel, file: &Path, precision: Precision, rounds: u32) -> anyhow::Result<()> {
    let opts = PipelineOptions { quiet: true, precision, ..imagenet_segmentation::default_pipeline() };
    let samples = imagenet_segmentation::preload(loaded, file, None)?;
    let whole = || Ok(imagenet_segmentation::run(loaded, file, None, &opts)?.images_per_second);
    let alone = || {
        let started = Instant::now();
        precision.run(loaded.vs.device(), || segmentation::of_samples(&loaded.model, &samples, opts.batch_size))?;
        Ok(samples.len() as f64 / started.elapsed().as_secs_f64())
    };
    let (name, what) = (&loaded.name, format!("(batch {}, {precision})", opts.batch_size));
    let names = [
        format!("whole segmentation test, {name} {what}"),
        format!("relevance loop over preloaded samples, {name} {what}"),
        format!("the whole segmentation test of {name} runs at"),
    ];
    paired(rounds, whole, alone, &names, "of its relevance loop")
}

/// The middle value of measurements (the upper one of an even count); `xs` is never empty (rounds >= 1).
pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Runs `whole` and `alone` in turn `rounds` times, printing each one's images per second under its name,
/// then the median of the rounds' ratios (between `summary` and `of`) and the ratios themselves.
fn paired(
    rounds: u32,
    mut whole: impl FnMut() -> anyhow::Result<f64>,
    mut alone: impl FnMut() -> anyhow::Result<f64>,
    [whole_name, alone_name, summary]: &[String; 3],
    of: &str,
) -> anyhow::Result<()> {
    let mut ratios = Vec::new();
    for _ in 0..rounds {
        let w = whole()?;
        println!("{whole_name}: {w:.1} images/s");
        let a = alone()?;
        println!("{alone_name}: {a:.1} images/s");
        ratios.push(100.0 * w / a);
    }
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.0}%")).collect();
    let median = median(ratios);
    println!("{summary} {median:.0}% {of} (median of {rounds} rounds, each its own pair: {})", listed.join(", "));
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = args
        .scratch
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("robustvit-bench-{}", std::process::id())));
    args.precision.check(Device::Cpu)?;
    // A file that is not gtsegs' stops the run before its first measurement, not after the evaluations.
    if let Some(file) = &args.segtest {
        SegmentationFile::open(file)?;
    }
    write_images(&dir, args.images)?;
    let opts = PipelineOptions {
        batch_size: args.batch_size,
        quiet: true,
        precision: args.precision,
        ..PipelineOptions::default()
    };
    let items = robustvit::data::eval_sets::scan(Kind::ImagenetVal, &dir)?;
    let cfg = model::preset("vit_base_patch16_224").expect("built-in preset").preprocess;
    let started = Instant::now();
    let decode = |item: &robustvit::data::eval_sets::EvalItem| accuracy::decode(&item.path, &cfg);
    let mut decoded_images = Vec::with_capacity(items.len());
    pipeline::ordered(&items, opts.workers, opts.prefetch, decode, |_, decoded| {
        decoded_images.push(decoded.map_err(anyhow::Error::msg)?);
        Ok(())
    })?;
    println!(
        "pipeline alone ({} workers): {:.1} images/s",
        opts.workers,
        items.len() as f64 / started.elapsed().as_secs_f64()
    );
    // The same images as tensors in memory, batched as the evaluation batches them.
    let batches: Vec<Tensor> = decoded_images
        .chunks(args.batch_size.max(1))
        .map(|chunk| stack(&chunk.iter().map(|a| a.view()).collect::<Vec<_>>()))
        .collect();
    drop(decoded_images);
    for name in args.models.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let preset = model::preset(name).with_context(|| format!("unknown preset {name}"))?;
        let vs = nn::VarStore::new(Device::Cpu);
        let vit = VisionTransformer::new(&vs.root(), &preset.config);
        let loaded = LoadedModel { vs, model: vit, name: name.into(), preprocess: preset.preprocess };
        let whole =
            || Ok(accuracy::of_dataset(&loaded, Kind::ImagenetVal, &dir, Protocol::Standard, &opts)?.images_per_second);
        let alone = || Ok(forward_only(&loaded, &batches, args.precision));
        let what = format!("(batch {}, {})", args.batch_size, args.precision);
        let names = [
            format!("whole evaluation, {name} {what}"),
            format!("forward-only loop over preloaded tensors, {name} {what}"),
            format!("the whole evaluation of {name} runs at"),
        ];
        paired(args.rounds, whole, alone, &names, "of its forward-only loop")?;
        if let Some(file) = &args.segtest {
            segtest(&loaded, file, args.precision, args.rounds)?;
        }
    }
    if args.scratch.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

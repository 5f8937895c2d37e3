//! `harness eval`: top-1/top-5 accuracy on the paper's robustness datasets.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use robustvit::atomic_write;
use robustvit::data::eval_sets::{Kind, Protocol};
use robustvit::data::imagenet;
use robustvit::eval::{accuracy, PipelineOptions, Unreadable, MAX_UNREADABLE};
use robustvit::precision::Precision;
use robustvit::report::{self, Subject};
use robustvit::train::RunManifest;

use crate::model_args::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// KIND=DIR, repeatable. KIND: imagenet-val, imagenet-a, imagenet-r, imagenet-sketch, imagenet-v2,
    /// objectnet, si-location, si-rotation, si-size.
    #[arg(long = "dataset", required = true)]
    datasets: Vec<String>,
    /// standard (A/R logits restricted to their classes, ObjectNet pooled) or reference (the reference code).
    #[arg(long, default_value = "standard", value_parser = crate::named::<Protocol>(Protocol::NAMES))]
    protocol: Protocol,
    /// Long-format results: model,method,seed,dataset,protocol,metric,value (percent).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Per-class top-1 accuracy: dataset,class,correct,images,top1.
    #[arg(long)]
    per_class_csv: Option<PathBuf>,
    /// A `harness finetune` manifest.json: also report top-1 and top-5 on the images of its finetuning classes
    /// and on the others (Tables 10-11; an ObjectNet image belongs to every ImageNet class its label maps to).
    #[arg(long)]
    finetune_manifest: Option<PathBuf>,
    /// Method name for the CSV rows.
    #[arg(long, default_value = "original")]
    method: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Decode threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// The share of a dataset's images that may be unreadable (listed in the log, not scored) before the
    /// evaluation stops with an error; a dataset of which no image can be read is always an error.
    #[arg(long, default_value_t = MAX_UNREADABLE, value_parser = crate::max_unreadable)]
    max_unreadable: f64,
    /// The arithmetic of the forward passes: fp32, or bf16 autocast (CPUs with AVX512-BF16/AMX, and CUDA).
    #[arg(long, default_value = "fp32", value_parser = crate::named::<Precision>(Precision::NAMES))]
    precision: Precision,
    #[arg(long)]
    quiet: bool,
}

/// The ImageNet indices of the finetuning classes named in a finetune manifest.
fn finetune_classes(path: &Path) -> anyhow::Result<HashSet<usize>> {
    let manifest = RunManifest::read(path)?;
    let data = manifest.data.with_context(|| {
        format!("{}: the run records no ImageNet-S split (is it a harness finetune run?)", path.display())
    })?;
    imagenet::indices_of(&data.train_classes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let protocol = args.protocol;
    let datasets: Vec<(Kind, PathBuf)> = args
        .datasets
        .iter()
        .map(|spec| {
            let Some((kind, dir)) = spec.split_once('=') else { bail!("--dataset {spec:?}: expected KIND=DIR") };
            Ok((kind.parse::<Kind>()?, PathBuf::from(dir)))
        })
        .collect::<anyhow::Result<_>>()?;
    let classes = args.finetune_manifest.as_deref().map(finetune_classes).transpose()?;
    let loaded = args.model.load()?;
    args.precision.check(loaded.vs.device())?;
    let mut opts = PipelineOptions {
        batch_size: args.batch_size.max(1),
        quiet: args.quiet,
        precision: args.precision,
        ..PipelineOptions::default()
    };
    if let Some(w) = args.workers {
        opts.workers = w.max(1);
    }
    let subject = Subject {
        model: loaded.name.clone(),
        method: args.method.clone(),
        seed: args.seed,
        protocol: protocol.name().into(),
    };
    let mut rows = Vec::new();
    let mut per_class = csv::Writer::from_writer(Vec::new());
    per_class.write_record(["dataset", "class", "correct", "images", "top1"])?;
    let log = unreadable_log(args.csv.as_deref(), "eval_unreadable.log");
    let mut unreadable = Unreadable::new(&log, args.max_unreadable);
    for (kind, dir) in &datasets {
        let r = accuracy::of_dataset(&loaded, *kind, dir, protocol, &opts)?;
        println!(
            "{:<16} {protocol} {}: top-1 {:6.2}  top-5 {:6.2}  ({} images, {} unreadable, {:.1} img/s)",
            kind.name(),
            args.precision,
            r.top1,
            r.top5,
            r.images,
            r.unreadable.len(),
            r.images_per_second
        );
        let mut row = |metric: &str, value: f64| rows.push(subject.row(kind.name(), metric, value));
        row(report::TOP1, r.top1);
        row(report::TOP5, r.top5);
        if let Some(classes) = &classes {
            for (side, counts) in
                ["finetune_classes", "other_classes"].iter().zip(accuracy::split_by_classes(&r.hits, classes))
            {
                if let Some((top1, top5)) = counts.percent() {
                    row(&format!("top1_{side}"), top1);
                    row(&format!("top5_{side}"), top5);
                }
            }
        }
        for (class, (correct, total)) in &r.per_class {
            let top1 = 100.0 * *correct as f64 / *total as f64;
            per_class.write_record([
                kind.name(),
                &class.to_string(),
                &correct.to_string(),
                &total.to_string(),
                &format!("{top1:.4}"),
            ])?;
        }
        let entries: Vec<(String, String)> =
            r.unreadable.into_iter().map(|(p, why)| (p.display().to_string(), why)).collect();
        unreadable.add(kind.name(), r.images, &entries)?;
    }
    if let Some(path) = &args.csv {
        report::write_long(path, &rows)?;
    }
    if let Some(path) = &args.per_class_csv {
        atomic_write::write(path, &per_class.into_inner()?)?;
    }
    Ok(())
}

/// Where unreadable inputs are listed: `<csv>.unreadable.log`, or `fallback` without a CSV.
pub fn unreadable_log(csv: Option<&Path>, fallback: &str) -> PathBuf {
    csv.map_or_else(|| PathBuf::from(fallback), |p| p.with_extension("unreadable.log"))
}

//! The `harness` command line: parses, wires, prints. Each subcommand calls the library.
mod bench;
mod bench_step;
mod compare;
mod eval;
mod explain;
mod finetune;
mod masks;
mod model_args;
mod predict;
mod report;
mod segtest;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "harness", version, about = "robustvit: optimise ViT relevance maps for robustness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the build: libtorch, CUDA kernels, and whether a GPU is visible.
    Info,
    /// Classify images with a ViT checkpoint (timm safetensors folder or PyTorch pickle).
    Predict(predict::Args),
    /// Finetune with the relevance method, GradMask or RRR on ImageNet-S images and masks.
    Finetune(Box<finetune::Args>),
    /// The whole study: finetune the method and the baselines, evaluate, write paper-shaped tables.
    Compare(compare::Args),
    /// Rebuild the tables of `compare` output folders from their long files, merging shards.
    Report(report::Args),
    /// Top-1/top-5 accuracy on the robustness datasets (ImageNet val/A/R/Sketch/v2, ObjectNet, SI-Score).
    Eval(eval::Args),
    /// The ImageNet-segmentation test (paper Table 3): GAE relevance of the predicted class against object masks.
    Segtest(segtest::Args),
    /// Unsupervised foreground masks (TokenCut) of a folder of images, from a self-supervised ViT (DINO).
    Masks(masks::Args),
    /// Relevance heatmaps of images (PNG and .npy), optionally original and finetuned side by side.
    Explain(explain::Args),
    /// Images per second of the evaluation pipeline alone and of whole evaluations (tiny and base ViT).
    BenchEval(bench::Args),
    /// Seconds and peak memory of one finetuning step per method, beside plain PyTorch + timm.
    BenchStep(bench_step::Args),
}

/// A parser for a library enum with fixed names (`named_enum!`): its names are the flag's possible values.
fn named<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names)
        .map(|name| name.parse::<T>().unwrap_or_else(|_| unreachable!("clap accepted only the enum's names")))
}

/// `--max-unreadable`: a share in [0, 1).
fn max_unreadable(text: &str) -> Result<f64, String> {
    robustvit::eval::max_unreadable(text.parse::<f64>().map_err(|e| format!("{text:?}: {e}"))?)
}

/// This binary's build facts for run manifests.
fn provenance() -> robustvit::manifest::Provenance {
    robustvit::manifest::Provenance::new(env!("ROBUSTVIT_GIT_REV"))
}

fn main() -> anyhow::Result<()> {
    robustvit::heap::keep_freed_memory();
    match Cli::parse().command {
        Command::Info => {
            println!("robustvit {} ({})", env!("CARGO_PKG_VERSION"), env!("ROBUSTVIT_GIT_REV"));
            println!("CUDA kernels built: {}", robustvit::ops::built_with_cuda());
            println!("CUDA devices visible: {}", tch::Cuda::device_count());
            Ok(())
        }
        Command::Predict(args) => predict::run(args),
        Command::Finetune(args) => finetune::run(*args),
        Command::Compare(args) => compare::run(args),
        Command::Report(args) => report::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Segtest(args) => segtest::run(args),
        Command::Masks(args) => masks::run(args),
        Command::Explain(args) => explain::run(args),
        Command::BenchEval(args) => bench::run(args),
        Command::BenchStep(args) => bench_step::run(args),
    }
}

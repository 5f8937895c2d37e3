//! `harness compare`: the main job, end to end.
use std::path::{Path, PathBuf};

use anyhow::bail;
use robustvit::data::fashion_mnist;
use robustvit::device;
use robustvit::precision::Precision;
use robustvit::study::embedded::{self, ObjectSet};
use robustvit::study::plan::Selection;
use robustvit::study::{self, CompareOptions, Study};
use robustvit::train::methods::MethodKind;

#[derive(clap::Args)]
pub struct Args {
    /// Baselines to compare the method against, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "gradmask,rrr", value_parser = crate::named::<MethodKind>(MethodKind::NAMES))]
    baselines: Vec<MethodKind>,
    /// A TOML study of real checkpoints and datasets (see the README); without it, the embedded
    /// spurious-background benchmark.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seeds of the finetuning data choice and order; tables get mean and std columns when > 1.
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// With --data: check the study, list its jobs with a time estimate, and stop.
    #[arg(long)]
    plan: bool,
    /// With --data: run only the jobs I, I + N, I + 2N, ... (numbered from 1 as --plan lists them) into this
    /// --out; `harness report` merges the shards' folders.
    #[arg(long, value_name = "I/N", conflicts_with = "job")]
    shard: Option<String>,
    /// With --data: run only job K (numbered from 1 as --plan lists them).
    #[arg(long, value_name = "K")]
    job: Option<usize>,
    /// Embedded benchmark: also run the ablations of the method (no L_cls, no L_bg, no L_fg, ground-truth
    /// class).
    #[arg(long)]
    ablations: bool,
    /// Embedded benchmark: a small budget for tests and smoke runs (under 2 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Embedded benchmark: tinted-noise backgrounds instead of stripes, a negative control where no method
    /// is expected to help.
    #[arg(long)]
    tint: bool,
    #[arg(long, default_value = "out/compare")]
    out: PathBuf,
    /// Embedded benchmark: the objects, `animal-mnist` (default; the 0.4 wheel `make benchmark-data`
    /// downloads to target/downloads), `fashion-mnist` (Debian's dataset-fashion-mnist, which
    /// scripts/system-deps.sh installs), or a path: an animal-mnist wheel, or a folder of Fashion-MNIST's
    /// gzip'd IDX files.
    #[arg(long)]
    objects: Option<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The arithmetic of finetuning: fp32, or bf16 autocast (CPUs with AVX512-BF16/AMX, and CUDA).
    #[arg(long, default_value = "fp32", value_parser = crate::named::<Precision>(Precision::NAMES))]
    precision: Precision,
    /// No progress bars; one log line per epoch.
    #[arg(long)]
    quiet: bool,
}

/// `I/N` with 1 <= I <= N.
fn shard(spec: &str) -> anyhow::Result<Selection> {
    let parsed = spec.split_once('/').and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)));
    match parsed {
        Some((index, count)) if (1..=count).contains(&index) => Ok(Selection::Shard { index, count }),
        _ => bail!("--shard {spec:?}: expected I/N with 1 <= I <= N, e.g. 2/8"),
    }
}

/// The object set `--objects` names.
fn objects(spec: Option<&str>) -> anyhow::Result<ObjectSet> {
    Ok(match spec {
        None | Some("animal-mnist") => ObjectSet::AnimalMnist(study::default_objects()),
        Some("fashion-mnist") => ObjectSet::FashionMnist(fashion_mnist::DIR.into()),
        Some(path) if Path::new(path).is_dir() => ObjectSet::FashionMnist(path.into()),
        Some(path) if Path::new(path).is_file() => ObjectSet::AnimalMnist(path.into()),
        Some(other) => bail!(
            "--objects {other:?}: use animal-mnist, fashion-mnist, an animal-mnist wheel or a folder of \
             Fashion-MNIST's IDX files (no such file or folder)"
        ),
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.baselines.contains(&MethodKind::Ours) {
        bail!("--baselines ours: the method is always run; name only the baselines");
    }
    let study = match args.data {
        Some(file) => {
            let embedded_only = [
                ("--ablations", args.ablations),
                ("--quick", args.quick),
                ("--tint", args.tint),
                ("--objects", args.objects.is_some()),
            ];
            if let Some((flag, _)) = embedded_only.iter().find(|(_, given)| *given) {
                bail!("{flag} is for the embedded benchmark and does not apply to --data (a study file)");
            }
            let selection = match (&args.shard, args.job) {
                (Some(spec), _) => shard(spec)?,
                (None, Some(k)) => Selection::Job(k),
                (None, None) => Selection::All,
            };
            Study::Real { file, plan: args.plan, selection }
        }
        None => {
            let real_only = [("--plan", args.plan), ("--shard", args.shard.is_some()), ("--job", args.job.is_some())];
            if let Some((flag, _)) = real_only.iter().find(|(_, given)| *given) {
                bail!("{flag} applies to a study of real data (--data STUDY.toml) only");
            }
            Study::Embedded(embedded::Options {
                ablations: args.ablations,
                quick: args.quick,
                tint: args.tint,
                objects: objects(args.objects.as_deref())?,
            })
        }
    };
    let mut methods = vec![MethodKind::Ours];
    methods.extend(args.baselines);
    let device = device::parse(&args.device)?;
    args.precision.check(device)?;
    let opts = CompareOptions {
        out: args.out,
        methods,
        seeds: args.seeds.max(1),
        study,
        device,
        precision: args.precision,
        quiet: args.quiet,
        provenance: crate::provenance(),
    };
    study::run(&opts)?;
    Ok(())
}

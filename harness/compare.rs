//! `harness compare`: the main job, end to end.
use std::path::PathBuf;

use robustvit::device;
use robustvit::study::{self, CompareOptions};
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
    /// Also run the ablations of the method (no L_cls, no L_bg, no L_fg, ground-truth class).
    #[arg(long)]
    ablations: bool,
    /// A small budget for tests and smoke runs (under 2 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Tinted-noise backgrounds instead of stripes: a negative control, where no method is expected to help.
    #[arg(long)]
    tint: bool,
    #[arg(long, default_value = "out/compare")]
    out: PathBuf,
    /// The animal-mnist 0.4 wheel (`make benchmark-data` downloads it to target/downloads).
    #[arg(long)]
    objects: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bars; one log line per epoch.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.baselines.contains(&MethodKind::Ours) {
        anyhow::bail!("--baselines ours: the method is always run; name only the baselines");
    }
    let mut methods = vec![MethodKind::Ours];
    methods.extend(args.baselines);
    let opts = CompareOptions {
        out: args.out,
        methods,
        seeds: args.seeds.max(1),
        ablations: args.ablations,
        quick: args.quick,
        tint: args.tint,
        objects: args.objects.unwrap_or_else(study::default_objects),
        data: args.data,
        device: device::parse(&args.device)?,
        quiet: args.quiet,
        provenance: crate::provenance(),
    };
    study::run(&opts)?;
    Ok(())
}

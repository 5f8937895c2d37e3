//! `harness explain`: relevance heatmaps of images, for one model or an original and a finetuned one.
use std::path::PathBuf;

use anyhow::bail;
use robustvit::eval::predict;
use robustvit::explain;
use robustvit::model;

use crate::model_args::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A second checkpoint of the same architecture (e.g. the finetuned model), shown beside the first.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Explain this class index instead of each model's prediction.
    #[arg(long = "class")]
    class: Option<i64>,
    /// Class names, one per line in class-index order (ImageNet's are built in for 1000-class models).
    #[arg(long)]
    class_names: Option<PathBuf>,
    #[arg(long, default_value = "out/explain")]
    out: PathBuf,
    /// JPEG or PNG images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let first = args.model.load()?;
    let second = match &args.compare {
        Some(path) => {
            let device = robustvit::device::parse(&args.model.device)?;
            let second = model::load(args.model.model.as_deref().or(Some(&first.name)), path, device)?;
            if second.model.config() != first.model.config() {
                bail!(
                    "--compare {}: a different architecture than {}",
                    path.display(),
                    args.model.checkpoint.display()
                );
            }
            Some(second)
        }
        None => None,
    };
    let mut models = vec![(if second.is_some() { "original" } else { "model" }, &first)];
    if let Some(second) = &second {
        models.push(("finetuned", second));
    }
    let names = predict::class_names(args.class_names.as_deref(), first.model.config().num_classes)?;
    let written = explain::explain_files(&models, &args.images, args.class, names.as_deref(), &args.out)?;
    for png in &written.pictures {
        println!("{}", png.display());
    }
    if let Some(grid) = &written.grid {
        println!("{}", grid.display());
    }
    for (path, why) in &written.unreadable {
        eprintln!("{}: {why}", path.display());
    }
    if !written.unreadable.is_empty() {
        bail!("{} of {} images could not be read (listed above)", written.unreadable.len(), args.images.len());
    }
    Ok(())
}

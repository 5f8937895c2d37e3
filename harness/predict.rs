//! `harness predict`: top-k classes of images.
use std::path::PathBuf;

use robustvit::eval::predict;

use crate::model_args::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value_t = 5)]
    topk: usize,
    /// Also write the predictions as CSV: image,rank,class_index,probability[,class_name].
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Class names, one per line in class-index order (ImageNet's are built in for 1000-class models).
    #[arg(long)]
    class_names: Option<PathBuf>,
    /// JPEG or PNG images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = args.model.load()?;
    let names = predict::class_names(args.class_names.as_deref(), loaded.model.config().num_classes)?;
    let rows = predict::predict(&loaded, &args.images, args.topk, names.as_deref())?;
    for r in &rows {
        let name = r.class_name.as_deref().map(|n| format!("  {n}")).unwrap_or_default();
        println!("{}\t#{}\t{:>5}\t{:.4}{name}", r.image.display(), r.rank, r.class_index, r.probability);
    }
    if let Some(path) = &args.csv {
        predict::write_csv(path, &rows)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

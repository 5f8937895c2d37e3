//! `harness predict`: top-k classes of images.
use std::path::PathBuf;

use robustvit::model::config::HALF;
use robustvit::{device, model, predict};

#[derive(clap::Args)]
pub struct Args {
    /// timm model name (e.g. vit_base_patch16_224); optional when the checkpoint's config.json names it.
    #[arg(long)]
    model: Option<String>,
    /// A timm hub folder (model.safetensors + config.json), a .safetensors file, or a .pth/.pt/.bin pickle.
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, default_value_t = 5)]
    topk: usize,
    /// Also write the predictions as CSV: image,rank,class_index,probability[,class_name].
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Class names, one per line in class-index order (ImageNet's are built in for 1000-class models).
    #[arg(long)]
    class_names: Option<PathBuf>,
    /// Normalise with mean = std = 0.5 as the reference code does, whatever the checkpoint's config says.
    #[arg(long)]
    reference_norm: bool,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// JPEG or PNG images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = device::parse(&args.device)?;
    let mut loaded = model::load(args.model.as_deref(), &args.checkpoint, device)?;
    if args.reference_norm {
        loaded.preprocess.mean = HALF;
        loaded.preprocess.std = HALF;
    }
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

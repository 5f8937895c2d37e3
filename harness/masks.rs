//! `harness masks`: unsupervised foreground masks (TokenCut) from a self-supervised ViT such as DINO's.
use std::path::PathBuf;

use robustvit::masks;
use robustvit::model;
use robustvit::tokencut::Options;

#[derive(clap::Args)]
pub struct Args {
    /// The self-supervised ViT: a timm hub folder, .safetensors or .pth (e.g. timm's
    /// vit_base_patch16_224.dino, DINO's own checkpoints); a classifier head, if any, is unused.
    #[arg(long)]
    checkpoint: PathBuf,
    /// timm model name; optional when the checkpoint's config.json names it.
    #[arg(long)]
    model: Option<String>,
    /// Images, directly or in class subfolders (IMAGES/<class>/<name>.JPEG).
    #[arg(long)]
    images: PathBuf,
    /// Masks as binary PNGs in the same layout (`finetune --mask-source binary` reads it).
    #[arg(long)]
    out: PathBuf,
    /// Cosine similarity of two patches' keys above which the graph joins them (TokenCut's tau).
    #[arg(long, default_value_t = 0.2)]
    tau: f64,
    /// Masks with fewer foreground pixels at 224x224 are listed in OUT/too_small.txt and not written.
    #[arg(long, default_value_t = masks::MIN_PIXELS)]
    min_pixels: u32,
    /// Keep the patch-grid mask, without the edge-aware refinement.
    #[arg(long)]
    no_refine: bool,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = robustvit::device::parse(&args.device)?;
    let loaded = model::load_backbone(args.model.as_deref(), &args.checkpoint, device)?;
    let jobs = masks::jobs(&args.images, &args.out)?;
    let opts = Options { tau: args.tau, refine: !args.no_refine };
    let report = masks::run(&loaded.model, &jobs, &args.out, &opts, args.min_pixels, args.quiet)?;
    eprintln!("masks: {}", report.summary(args.min_pixels, &args.out));
    for (path, why) in &report.unreadable {
        eprintln!("  unreadable: {}: {why}", path.display());
    }
    Ok(())
}

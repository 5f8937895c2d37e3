//! `harness segtest`: the ImageNet-segmentation test of paper Table 3.
use std::path::PathBuf;

use robustvit::atomic_write;
use robustvit::eval::imagenet_segmentation::{self, DATASET};
use robustvit::eval::segmentation::METRICS;
use robustvit::eval::{PipelineOptions, Unreadable, MAX_UNREADABLE};
use robustvit::precision::Precision;
use robustvit::report::{self, Measurement, Subject};

use crate::model_args::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// ImageNet-segmentation's gtsegs_ijcv.mat (MATLAB v7.3 / HDF5).
    #[arg(long)]
    data: PathBuf,
    /// Long-format results: model,method,seed,dataset,protocol,metric,value (percent).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Table 3 (model,method,pixel_accuracy,miou,map) as CSV, and as Markdown beside it (.md).
    #[arg(long)]
    table: Option<PathBuf>,
    /// Method name for the rows.
    #[arg(long, default_value = "original")]
    method: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// The share of entries that may be unreadable (listed in the log, not scored) before the test stops
    /// with an error; a file of which no entry can be read is always an error.
    #[arg(long, default_value_t = MAX_UNREADABLE, value_parser = crate::max_unreadable)]
    max_unreadable: f64,
    /// The arithmetic of the forward and backward passes behind the relevance: fp32, or bf16 autocast (CPUs
    /// with AVX512-BF16/AMX, and CUDA); the attention, its gradient and the relevance stay fp32.
    #[arg(long, default_value = "fp32", value_parser = crate::named::<Precision>(Precision::NAMES))]
    precision: Precision,
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = args.model.load()?;
    args.precision.check(loaded.vs.device())?;
    let opts = PipelineOptions {
        batch_size: args.batch_size.max(1),
        quiet: args.quiet,
        precision: args.precision,
        ..imagenet_segmentation::default_pipeline()
    };
    let r = imagenet_segmentation::run(&loaded, &args.data, args.limit, &opts)?;
    let m = &r.metrics;
    let [(_, pixel), (_, miou), (_, map)] = m.percent();
    println!(
        "segmentation {}: pixel accuracy {pixel:6.2}  mIoU {miou:6.2}  mAP {map:6.2}  ({} images, {} unreadable, \
         {:.1} img/s)",
        args.precision,
        m.images(),
        r.unreadable.len(),
        r.images_per_second
    );
    let log = crate::eval::unreadable_log(args.csv.as_deref(), "segtest_unreadable.log");
    let entries: Vec<(String, String)> =
        r.unreadable.iter().map(|(i, why)| (format!("{}[{i}]", args.data.display()), why.clone())).collect();
    Unreadable::new(&log, args.max_unreadable).add(DATASET, m.images() as usize, &entries)?;
    let subject = Subject {
        model: loaded.name.clone(),
        method: args.method.clone(),
        seed: args.seed,
        protocol: "standard".into(),
    };
    let rows: Vec<Measurement> =
        m.percent().into_iter().map(|(metric, value)| subject.row(DATASET, metric, value)).collect();
    if let Some(path) = &args.csv {
        report::write_long(path, &rows)?;
    }
    if let Some(path) = &args.table {
        let table = report::segmentation_table(&rows, DATASET, &METRICS, &[&args.method], "standard");
        table.write_csv(path)?;
        atomic_write::write(&path.with_extension("md"), table.to_markdown().as_bytes())?;
    }
    Ok(())
}

//! `harness report`: a study's tables rebuilt from the long files of its output folders.
use std::path::PathBuf;

use anyhow::bail;
use robustvit::study;

#[derive(clap::Args)]
pub struct Args {
    /// Output folders of `harness compare` (one study, or the shards of one).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Where the merged long file and tables go (default: the folder, when only one is given).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let out = match (args.out, args.dirs.as_slice()) {
        (Some(out), _) => out,
        (None, [only]) => only.clone(),
        (None, _) => bail!("give --out for the merged tables of {} folders", args.dirs.len()),
    };
    let tables = study::report(&args.dirs, &out)?;
    println!("{}", tables.to_terminal());
    println!("tables in {}", out.display());
    Ok(())
}

//! Measuring models: top-1/top-5 accuracy (of samples in memory, and of dataset folders decoded by the
//! pipeline and scored per protocol), the segmentation test (relevance read as a foreground mask: its
//! metrics, on samples, and ImageNet-segmentation's Table 3 test), top-k prediction of image files, and
//! paired significance of one method against another.
pub mod accuracy;
pub mod imagenet_segmentation;
pub mod predict;
pub mod segmentation;
pub mod significance;

use crate::precision::Precision;
use std::path::{Path, PathBuf};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};

use crate::atomic_write;

/// How an evaluation reads its images: decode threads ahead of the model, and the model's batch.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    pub batch_size: usize,
    /// Decode threads (default: all cores).
    pub workers: usize,
    /// Images decoded ahead of the model, at most.
    pub prefetch: usize,
    pub quiet: bool,
    /// The arithmetic of the model's forward passes.
    pub precision: Precision,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PipelineOptions { batch_size: 64, workers: cores, prefetch: 256, quiet: false, precision: Precision::Fp32 }
    }
}

/// A bar over `len` images labelled `prefix` (hidden when `quiet`); callers put the rate in its message.
pub fn progress_bar(len: usize, prefix: &'static str, quiet: bool) -> ProgressBar {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(len as u64) };
    bar.set_style(ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}").expect("static template"));
    bar.set_prefix(prefix);
    bar
}

/// The default share of a dataset's images that may be unreadable before an evaluation stops.
pub const MAX_UNREADABLE: f64 = 0.01;

/// `share` as an allowed share of unreadable inputs: in [0, 1), or why not.
pub fn max_unreadable(share: f64) -> Result<f64, String> {
    if (0.0..1.0).contains(&share) {
        Ok(share)
    } else {
        Err(format!("the share of unreadable inputs allowed must lie in [0, 1), got {share}"))
    }
}

/// The unreadable inputs of one or more evaluations, listed in one log, and the rule that decides whether
/// an evaluation stands: nothing scored is an error, and so is an unreadable share above `max_share`.
/// Both errors name the log, which is written first.
pub struct Unreadable {
    log: PathBuf,
    max_share: f64,
    lines: Vec<String>,
}

impl Unreadable {
    pub fn new(log: &Path, max_share: f64) -> Unreadable {
        Unreadable { log: log.to_path_buf(), max_share, lines: Vec::new() }
    }

    /// Records the evaluation of `dataset`: `scored` inputs scored, and `entries` (what, why) that could
    /// not be read. Writes the log when anything was unreadable.
    pub fn add(&mut self, dataset: &str, scored: usize, entries: &[(String, String)]) -> anyhow::Result<()> {
        if !entries.is_empty() {
            if let Some(dir) = self.log.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            self.lines.extend(entries.iter().map(|(what, why)| format!("{dataset}\t{what}\t{why}")));
            atomic_write::write(&self.log, (self.lines.join("\n") + "\n").as_bytes())?;
            eprintln!("{dataset}: {} unreadable inputs (not scored), listed in {}", entries.len(), self.log.display());
        }
        let total = scored + entries.len();
        if scored == 0 {
            bail!("{dataset}: none of its {total} inputs could be read (listed in {})", self.log.display());
        }
        let share = entries.len() as f64 / total as f64;
        if share > self.max_share {
            bail!(
                "{dataset}: {} of {total} inputs could not be read ({:.2}%, more than the {:.2}% allowed); they are \
                 listed in {}",
                entries.len(),
                100.0 * share,
                100.0 * self.max_share,
                self.log.display()
            );
        }
        Ok(())
    }
}

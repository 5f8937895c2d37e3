//! Measuring models: top-1/top-5 accuracy (of samples in memory, and of dataset folders decoded by the
//! pipeline and scored per protocol), the segmentation test (relevance read as a foreground mask: its
//! metrics, on samples, and ImageNet-segmentation's Table 3 test), and top-k prediction of image files.
pub mod accuracy;
pub mod imagenet_segmentation;
pub mod predict;
pub mod segmentation;

use indicatif::{ProgressBar, ProgressStyle};

/// How an evaluation reads its images: decode threads ahead of the model, and the model's batch.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    pub batch_size: usize,
    /// Decode threads (default: all cores).
    pub workers: usize,
    /// Images decoded ahead of the model, at most.
    pub prefetch: usize,
    pub quiet: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PipelineOptions { batch_size: 64, workers: cores, prefetch: 256, quiet: false }
    }
}

/// A bar over `len` images labelled `prefix` (hidden when `quiet`); callers put the rate in its message.
pub fn progress_bar(len: usize, prefix: &'static str, quiet: bool) -> ProgressBar {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(len as u64) };
    bar.set_style(ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}").expect("static template"));
    bar.set_prefix(prefix);
    bar
}

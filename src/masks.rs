//! `harness masks`: a folder of TokenCut foreground masks for a folder of images, in the layout `finetune
//! --mask-source binary` reads (`IMAGES/<class>/<stem>.<ext>` -> `OUT/<class>/<stem>.png`; images directly
//! in IMAGES give masks directly in OUT). Resumable: a mask already written is skipped. An unreadable image
//! and a mask below the size floor are listed (`unreadable.txt`, `too_small.txt` in OUT) and skipped; a rerun
//! with the same options does not make again the masks `too_small.txt` lists (unreadable images are tried
//! again: they may have been mended).
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image::imageops::{self, FilterType};
use image::GrayImage;
use rayon::prelude::*;

use crate::atomic_write;
use crate::data::imagenet_s::IMAGE_EXTENSIONS;
use crate::eval::progress_bar;
use crate::image::{load_rgb, write_png};
use crate::model::VisionTransformer;
use crate::tokencut::{self, Options, Prepared};

/// TokenCut's floor, as the paper applies it: masks are judged at the training resolution.
pub const FLOOR_SIZE: u32 = 224;
/// The paper's floor: masks with fewer foreground pixels at 224x224 are dropped.
pub const MIN_PIXELS: u32 = 520;

/// One image and where its mask goes.
#[derive(Clone, Debug)]
pub struct Job {
    pub image: PathBuf,
    pub mask: PathBuf,
}

/// Every image of `images` (and of its subfolders, one level) with its mask path under `out`, sorted;
/// two images that would write one mask (`a.jpg` and `a.png`) are refused, naming both.
pub fn jobs(images: &Path, out: &Path) -> anyhow::Result<Vec<Job>> {
    let list = |dir: &Path| -> anyhow::Result<Vec<PathBuf>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", dir.display()))?;
        paths.sort();
        Ok(paths)
    };
    let is_image =
        |p: &Path| p.is_file() && p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e));
    let mut jobs = Vec::new();
    let mut add = |image: PathBuf, dir: &Path| {
        let stem = image.file_stem().expect("a file has a name").to_owned();
        jobs.push(Job { mask: dir.join(stem).with_extension("png"), image });
    };
    for path in list(images)? {
        if path.is_dir() {
            let sub = out.join(path.file_name().expect("a folder has a name"));
            list(&path)?.into_iter().filter(|p| is_image(p)).for_each(|p| add(p, &sub));
        } else if is_image(&path) {
            add(path, out);
        }
    }
    if jobs.is_empty() {
        bail!("{}: no images (.{}) in it or its subfolders", images.display(), IMAGE_EXTENSIONS.join(", ."));
    }
    let mut seen: HashMap<&Path, &Path> = HashMap::new();
    for job in &jobs {
        if let Some(first) = seen.insert(&job.mask, &job.image) {
            bail!("{} and {} would both write {}", first.display(), job.image.display(), job.mask.display());
        }
    }
    Ok(jobs)
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub written: usize,
    pub skipped_done: usize,
    pub unreadable: Vec<(PathBuf, String)>,
    /// Images whose mask had fewer foreground pixels than the floor at 224x224 (the count is given).
    pub too_small: Vec<(PathBuf, u32)>,
    /// Of `too_small`, those an earlier run with the same options listed: not made again.
    pub small_before: usize,
}

impl Report {
    /// One line: what was written, found, and listed in `out` (`min_pixels`: the floor the run applied).
    pub fn summary(&self, min_pixels: u32, out: &Path) -> String {
        let before = match self.small_before {
            0 => String::new(),
            n => format!(", {n} of them as an earlier run listed"),
        };
        format!(
            "{} written, {} already there, {} unreadable, {} below {min_pixels} pixels at {FLOOR_SIZE}x{FLOOR_SIZE}\
             {before} (lists in {})",
            self.written,
            self.skipped_done,
            self.unreadable.len(),
            self.too_small.len(),
            out.display()
        )
    }
}

/// The list of images whose mask fell below the floor, in the output folder.
const TOO_SMALL: &str = "too_small.txt";

/// The first line of `too_small.txt`: the options that decided it, so that a rerun with the same ones can
/// trust it.
fn small_header(opts: &Options, min_pixels: u32) -> String {
    format!("# tau {}, min_pixels {min_pixels}, refine {}", opts.tau, opts.refine)
}

/// The images (with their pixel counts) that `too_small.txt` lists under `header`; none when it is missing or
/// was written with other options.
fn listed_small(path: &Path, header: &str) -> HashMap<PathBuf, u32> {
    let Ok(text) = std::fs::read_to_string(path) else { return HashMap::new() };
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        return HashMap::new();
    }
    lines
        .filter_map(|line| {
            let (image, pixels) = line.rsplit_once('\t')?;
            Some((PathBuf::from(image), pixels.parse().ok()?))
        })
        .collect()
}

/// Foreground pixels of `mask` resized to 224x224 (nearest).
fn pixels_at_floor_size(mask: &GrayImage) -> u32 {
    let resized = imageops::resize(mask, FLOOR_SIZE, FLOOR_SIZE, FilterType::Nearest);
    resized.pixels().filter(|p| p[0] > 127).count() as u32
}

fn write_mask(path: &Path, mask: &GrayImage) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_png(path, mask)
}

/// Images decoded ahead of the model, in parallel; those of one patch grid among them share a forward pass.
const CHUNK: usize = 16;

/// Makes the mask of every job whose mask does not exist yet; the lists of skipped images are written
/// into `out` (replaced each run).
pub fn run(
    model: &VisionTransformer,
    jobs: &[Job],
    out: &Path,
    opts: &Options,
    min_pixels: u32,
    quiet: bool,
) -> anyhow::Result<Report> {
    if !(-1.0..1.0).contains(&opts.tau) {
        bail!("tau {}: a cosine similarity threshold must lie in [-1, 1)", opts.tau);
    }
    let patch = model.config().patch_size;
    let mut report = Report::default();
    let mut todo: Vec<&Job> = jobs.iter().filter(|j| !j.mask.is_file()).collect();
    report.skipped_done = jobs.len() - todo.len();
    // An image an earlier run with these options found too small would be found so again.
    let header = small_header(opts, min_pixels);
    let listed = listed_small(&out.join(TOO_SMALL), &header);
    todo.retain(|job| match listed.get(&job.image) {
        Some(&pixels) => {
            report.too_small.push((job.image.clone(), pixels));
            report.small_before += 1;
            false
        }
        None => true,
    });
    // Images of one size batch together: the work goes in order of the sizes their headers give.
    todo.sort_by_cached_key(|j| image::image_dimensions(&j.image).ok());
    let bar = progress_bar(todo.len(), "masks", quiet);
    for chunk in todo.chunks(CHUNK) {
        let prepared: Vec<Result<Prepared, String>> = chunk
            .par_iter()
            .map(|job| {
                let image = load_rgb(&job.image).map_err(|e| e.to_string())?;
                tokencut::prepare(&image, patch).map_err(|e| e.to_string())
            })
            .collect();
        let mut grids: BTreeMap<(i64, i64), Vec<usize>> = BTreeMap::new();
        for (i, p) in prepared.iter().enumerate() {
            if let Ok(p) = p {
                grids.entry(p.grid).or_default().push(i);
            }
        }
        let mut made: Vec<Option<GrayImage>> = vec![None; chunk.len()];
        for members in grids.values() {
            let batch: Vec<&Prepared> = members.iter().map(|&i| prepared[i].as_ref().expect("grouped")).collect();
            let keys = tokencut::keys(model, &batch);
            for (k, (&i, image)) in members.iter().zip(&batch).enumerate() {
                made[i] = Some(tokencut::mask_from_keys(image, &keys.get(k as i64), opts));
            }
        }
        let masks = prepared.into_iter().zip(made).map(|(p, m)| p.map(|_| m.expect("each prepared image is batched")));
        for (job, mask) in chunk.iter().zip(masks) {
            bar.inc(1);
            let mask = match mask {
                Ok(mask) => mask,
                Err(e) => {
                    report.unreadable.push((job.image.clone(), e));
                    continue;
                }
            };
            let pixels = pixels_at_floor_size(&mask);
            if pixels < min_pixels {
                report.too_small.push((job.image.clone(), pixels));
                continue;
            }
            write_mask(&job.mask, &mask)?;
            report.written += 1;
        }
    }
    bar.finish_and_clear();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // In path order, whatever order the work went in.
    report.unreadable.sort();
    report.too_small.sort();
    let lines = |rows: Vec<String>| rows.iter().map(|r| format!("{r}\n")).collect::<String>();
    let unreadable = lines(report.unreadable.iter().map(|(p, e)| format!("{}\t{e}", p.display())).collect());
    atomic_write::write(&out.join("unreadable.txt"), unreadable.as_bytes())?;
    let small = lines(report.too_small.iter().map(|(p, n)| format!("{}\t{n}", p.display())).collect());
    atomic_write::write(&out.join(TOO_SMALL), format!("{header}\n{small}").as_bytes())?;
    Ok(report)
}

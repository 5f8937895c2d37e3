//! `compare --data STUDY.toml`: the study on real checkpoints and datasets (file format: config.rs; jobs,
//! checks and settings: plan.rs).
//!
//! Nothing is lost and nothing is done twice: each measurement is appended to `results_long.csv` and
//! synced as soon as it is made; a rerun with the same `--out` skips every evaluation already there and
//! every finished finetuning run, and resumes a run killed mid-epoch from its last checkpoint. The tables
//! are rebuilt from the long file at the end (and at any time by `harness report`).
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::config::{self, MaskSet, ModelEntry, StudyConfig, TokenCutEntry};
use super::plan::{self, Checked, Job, JobKind, Selection};
use super::{CompareOptions, StudyManifest};
use crate::atomic_write;
use crate::eval::segmentation::METRICS;
use crate::eval::{accuracy, imagenet_segmentation, PipelineOptions, Unreadable};
use crate::masks;
use crate::model::{self, LoadedModel};
use crate::report::{self, Layout, LongLog, Measurement, SegmentationColumns, Subject, Table};
use crate::tokencut;
use crate::train::imagenet_s;
use crate::train::methods::MethodKind;
use crate::train::{self, paper, EpochMetrics, Origin, RunManifest, RunOptions, TrainConfig};

/// What identifies a study's output folder: a rerun must be the same study, or it would mix results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub study: StudyConfig,
    pub methods: Vec<MethodKind>,
    pub seeds: usize,
    pub selection: Selection,
}

/// `selected.json` of a finetuning job: the run kept among its settings, and what it was trained with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selected {
    pub model: String,
    pub method: MethodKind,
    /// The finetuning masks (annotated, unless the field says otherwise).
    #[serde(default)]
    pub masks: MaskSet,
    pub seed: u64,
    /// Which of the job's settings (from 1) was kept, and how many it tried.
    pub setting: usize,
    pub of: usize,
    /// The kept run's folder, relative to the study's output folder.
    pub run: PathBuf,
    pub train: TrainConfig,
    pub best: EpochMetrics,
}

pub const SELECTED: &str = "selected.json";

/// The rows and columns of the study's tables: the original, then each mask set's methods.
pub fn layout(config: &StudyConfig, methods: &[MethodKind]) -> Layout {
    let mut names = vec![report::ORIGINAL.to_string()];
    for masks in config.mask_sets() {
        names.extend(methods.iter().map(|&m| masks.label(m)));
    }
    Layout {
        models: config.models.iter().map(|m| m.name.clone()).collect(),
        methods: names,
        datasets: config.datasets.iter().map(|d| d.kind.name().to_string()).collect(),
        protocol: config.protocol().name().into(),
        segmentation: config.segmentation.as_ref().map(|_| SegmentationColumns {
            dataset: imagenet_segmentation::DATASET.into(),
            metrics: METRICS.iter().map(|m| m.to_string()).collect(),
        }),
        ablations: None,
        class_split: !config.datasets.is_empty(),
        lower_is_better: Vec::new(),
        selection_rules: None,
        significance: false,
    }
}

/// Checks the study, prints its plan, and (unless `plan_only`) runs the selected jobs into `opts.out`;
/// returns the layout of its tables and the folder's measurements, `None` for a plan only.
pub fn run(
    file: &Path,
    selection: Selection,
    plan_only: bool,
    opts: &CompareOptions,
) -> anyhow::Result<Option<(Layout, Vec<Measurement>)>> {
    let config = config::read(file)?;
    // A --job or --shard beyond the study is refused before the checks load every model.
    let jobs = plan::jobs(&config, &opts.methods, opts.seeds);
    let picked = selection.pick(&jobs)?;
    // A --quiet run prints its plan untimed: the measurement (a few seconds) serves only the estimates.
    let timing = (plan_only || !opts.quiet).then_some(opts.precision);
    // config::read has checked that the section comes with masks = "tokencut".
    if let Some(tokencut) = &config.tokencut {
        make_tokencut_masks(&config, tokencut, opts)?;
    }
    let checked = plan::check(file, &config, &opts.methods, opts.seeds, opts.device, timing, &opts.out)?;
    print_plan(file, &config, &checked, &jobs, &picked);
    if plan_only {
        return Ok(None);
    }
    let identity = Identity { study: config.clone(), methods: opts.methods.clone(), seeds: opts.seeds, selection };
    refuse_another_study(&opts.out, &identity)?;
    let layout = layout(&config, &opts.methods);
    StudyManifest::started(opts, &layout, Some(&identity)).write(&opts.out)?;
    let long = opts.out.join("results_long.csv");
    let (mut log, rows) = LongLog::open(&long)?;
    let mut study = Study {
        file,
        config: &config,
        opts,
        log: &mut log,
        done: Done::of(&rows),
        train_classes: &checked.train_classes,
    };
    for (k, job) in &picked {
        eprintln!("job {k} of {}: {}", jobs.len(), job.describe(&config));
        study.run(job).with_context(|| format!("job {k} ({})", job.describe(&config)))?;
    }
    let rows = report::merge(&[(long.clone(), report::read_long(&long)?)])?;
    Ok(Some((layout, rows)))
}

/// The study's "not annotated" masks: TokenCut's, made once into the output folder (a rerun, or `--plan`
/// before the run, finds them made) for every image with an annotated mask when the study has those too
/// (the rows are then drawn from the same images), else for every image; the split is drawn from the masks
/// written.
fn make_tokencut_masks(config: &StudyConfig, t: &TokenCutEntry, opts: &CompareOptions) -> anyhow::Result<()> {
    let loaded = model::load_backbone(t.model.as_deref(), &t.checkpoint, opts.device)
        .with_context(|| format!("[tokencut] checkpoint {}", t.checkpoint.display()))?;
    let dir = config.tokencut_masks(&opts.out);
    let s = &config.imagenet_s;
    let jobs = match config.tokencut_only() {
        true => masks::jobs(&s.images, &dir)?,
        false => crate::data::imagenet_s::annotated_items(&s.images, &s.masks)?
            .into_iter()
            .map(|item| {
                let mask = dir.join(&item.wnid).join(item.mask.file_name().expect("a mask file has a name"));
                masks::Job { image: item.image, mask }
            })
            .collect(),
    };
    let defaults = tokencut::Options::default();
    let options = tokencut::Options { tau: t.tau.unwrap_or(defaults.tau), ..defaults };
    let min_pixels = t.min_pixels.unwrap_or(masks::MIN_PIXELS);
    let report = masks::run(&loaded.model, &jobs, &dir, &options, min_pixels, opts.quiet)?;
    eprintln!("tokencut masks: {}", report.summary(min_pixels, &dir));
    Ok(())
}

fn print_plan(file: &Path, config: &StudyConfig, checked: &Checked, jobs: &[Job], picked: &[(usize, &Job)]) {
    let (train, val) = checked.split_images;
    println!(
        "{}: {} models, {} datasets ({} images){}, finetuning on {train} images ({val} for validation), {} epochs, \
         {} setting(s) per method",
        file.display(),
        config.models.len(),
        config.datasets.len(),
        checked.dataset_images.iter().sum::<usize>(),
        checked.segmentation_images.map_or(String::new(), |n| format!(", segmentation test ({n} images)")),
        config.finetune.epochs.unwrap_or(paper::EPOCHS),
        config.grid().len()
    );
    for (entry, facts) in config.models.iter().zip(&checked.models) {
        let speed = facts.speed.as_ref().map_or(String::new(), |s| {
            format!(
                "; measured a finetuning step of 8 images in {:.2} s, a forward pass in {:.4} s per image",
                s.step_seconds, s.forward_seconds
            )
        });
        println!("  {}: {} classes{speed}", entry.name, facts.num_classes);
    }
    let mut total = Some(0.0);
    for (k, job) in picked {
        let seconds = plan::estimate(job, config, checked);
        total = total.zip(seconds).map(|(t, s)| t + s);
        let about = seconds.map_or(String::new(), |s| format!(" about {}", plan::duration(s)));
        println!("{}", format!("  job {k:>3}  {:<60}{about}", job.describe(config)).trim_end());
    }
    let total = match total {
        Some(t) => format!(", about {} on this machine (estimated from the measured steps)", plan::duration(t)),
        None => " (not timed under --quiet)".into(),
    };
    println!("{} of {} jobs{total}", picked.len(), jobs.len());
}

/// A rerun into a folder of another study would mix results: refuse it.
fn refuse_another_study(out: &Path, identity: &Identity) -> anyhow::Result<()> {
    let Some(before) = StudyManifest::read_identity(out)? else { return Ok(()) };
    if &before != identity {
        bail!(
            "{} holds another study (other study file contents, methods, seeds or jobs); rerun the same command \
             to resume it, or choose another --out",
            out.display()
        );
    }
    Ok(())
}

/// The (model, method, seed, dataset) groups already measured.
struct Done(HashSet<(String, String, u64, String, String)>);

impl Done {
    fn of(rows: &[Measurement]) -> Done {
        Done(
            rows.iter()
                .map(|m| (m.model.clone(), m.method.clone(), m.seed, m.dataset.clone(), m.metric.clone()))
                .collect(),
        )
    }

    fn has(&self, s: &Subject, dataset: &str, metrics: &[&str]) -> bool {
        metrics
            .iter()
            .all(|m| self.0.contains(&(s.model.clone(), s.method.clone(), s.seed, dataset.into(), m.to_string())))
    }

    fn add(&mut self, rows: &[Measurement]) {
        self.0.extend(Done::of(rows).0);
    }
}

struct Study<'a> {
    file: &'a Path,
    config: &'a StudyConfig,
    opts: &'a CompareOptions,
    log: &'a mut LongLog,
    done: Done,
    /// Each seed's finetuning classes (ImageNet indices), as the check drew them.
    train_classes: &'a [HashSet<usize>],
}

impl Study<'_> {
    fn run(&mut self, job: &Job) -> anyhow::Result<()> {
        let entry = &self.config.models[job.model];
        match job.kind {
            // The original is measured once and its rows stand for every seed (the shift table pairs by seed).
            JobKind::Original => {
                self.evaluate(entry, report::ORIGINAL, &(0..self.opts.seeds as u64).collect::<Vec<_>>(), None)
            }
            JobKind::Finetune { method, seed, masks } => {
                let label = masks.label(method);
                let subject = self.subject(entry, &label, seed);
                if self.all_done(&subject) && self.job_dir(entry, method, seed, masks).join(SELECTED).is_file() {
                    eprintln!("  done before: skipped");
                    return Ok(());
                }
                let chosen = self.finetune(entry, method, seed, masks)?;
                self.evaluate(entry, &label, &[seed], Some(&chosen))
            }
        }
    }

    fn subject(&self, entry: &ModelEntry, method: &str, seed: u64) -> Subject {
        Subject {
            model: entry.name.clone(),
            method: method.into(),
            seed,
            protocol: self.config.protocol().name().into(),
        }
    }

    fn all_done(&self, s: &Subject) -> bool {
        let datasets =
            self.config.datasets.iter().all(|d| self.done.has(s, d.kind.name(), &[report::TOP1, report::TOP5]));
        datasets && (self.config.segmentation.is_none() || self.done.has(s, imagenet_segmentation::DATASET, &METRICS))
    }

    fn job_dir(&self, entry: &ModelEntry, method: MethodKind, seed: u64, masks: MaskSet) -> PathBuf {
        self.opts.out.join("runs").join(&entry.name).join(format!("seed{seed}")).join(masks.dir_name(method))
    }

    fn load(&self, entry: &ModelEntry, weights: &Path) -> anyhow::Result<LoadedModel> {
        Ok(model::load(Some(entry.architecture()), weights, self.opts.device)?)
    }

    /// Finetunes every setting of the job (skipping finished runs, resuming interrupted ones), keeps one by
    /// the study's rule and records it in `selected.json`; returns the kept checkpoint.
    fn finetune(&self, entry: &ModelEntry, method: MethodKind, seed: u64, masks: MaskSet) -> anyhow::Result<PathBuf> {
        let settings = plan::settings(entry, method, self.config.grid()).map_err(anyhow::Error::msg)?;
        let data = plan::finetuning_data(self.config, seed, masks, &self.opts.out);
        let job_dir = self.job_dir(entry, method, seed, masks);
        // With a grid, the module rule of plan.rs: guarded penalty across epochs, the weakest tied across runs.
        let floor = match settings.len() {
            1 => None,
            _ => Some(imagenet_s::val_accuracy(&self.load(entry, &entry.checkpoint)?, &data)? - train::ACCURACY_MARGIN),
        };
        let mut runs = Vec::new();
        for (k, (method_settings, lr)) in settings.iter().cloned().enumerate() {
            let paper_run = paper::train_config(method_settings, lr, seed);
            let cfg = TrainConfig {
                epochs: self.config.finetune.epochs.unwrap_or(paper_run.epochs),
                select: if floor.is_some() { train::Selection::GuardedPenalty } else { paper_run.select },
                accuracy_floor: floor,
                precision: self.opts.precision,
                ..paper_run
            };
            let dir = if settings.len() == 1 { job_dir.clone() } else { job_dir.join(format!("setting{}", k + 1)) };
            let best = match finished(&dir, &cfg) {
                Some(best) => best,
                None => {
                    let opts = RunOptions {
                        resume: true,
                        quiet: self.opts.quiet,
                        provenance: self.opts.provenance.clone(),
                        origin: Origin { study: Some(self.file.display().to_string()), ..Origin::default() },
                        data: None,
                        probe: None,
                    };
                    imagenet_s::run(&self.load(entry, &entry.checkpoint)?, &data, &cfg, &dir, opts)?.best
                }
            };
            runs.push((cfg, best, dir));
        }
        // The setting rule reads the runs from the weakest setting to the strongest.
        let grid = self.config.grid();
        let mut order: Vec<usize> = (0..runs.len()).collect();
        order.sort_by(|&a, &b| grid[a].total_cmp(&grid[b]));
        let ascending: Vec<_> = order.iter().map(|&i| (&runs[i].0, &runs[i].1)).collect();
        let k = order[train::choose_setting(&ascending).context("a job without settings")?];
        let (train, best, dir) = runs.swap_remove(k);
        let run = dir.strip_prefix(&self.opts.out).unwrap_or(&dir).to_path_buf();
        let model = entry.name.clone();
        let selected = Selected { model, method, masks, seed, setting: k + 1, of: settings.len(), run, train, best };
        atomic_write::write(&job_dir.join(SELECTED), serde_json::to_string_pretty(&selected)?.as_bytes())?;
        Ok(dir.join("best"))
    }

    /// Measures the model (`checkpoint`, or the entry's own) on every dataset and the segmentation test,
    /// skipping what the long file holds; its rows are written for each of `seeds`.
    fn evaluate(
        &mut self,
        entry: &ModelEntry,
        method: &str,
        seeds: &[u64],
        checkpoint: Option<&Path>,
    ) -> anyhow::Result<()> {
        let subjects: Vec<Subject> = seeds.iter().map(|&s| self.subject(entry, method, s)).collect();
        let config = self.config;
        // The split rows go before top-1/top-5 in the long file, so a group whose top-1 and top-5 are there
        // (a killed run cuts the file's end) is whole.
        let datasets: Vec<_> = config
            .datasets
            .iter()
            .filter(|d| !subjects.iter().all(|s| self.done.has(s, d.kind.name(), &[report::TOP1, report::TOP5])))
            .collect();
        let segmentation = config
            .segmentation
            .as_ref()
            .filter(|_| !self.done.has(&subjects[0], imagenet_segmentation::DATASET, &METRICS));
        if datasets.is_empty() && segmentation.is_none() {
            return Ok(());
        }
        let model = self.load(entry, checkpoint.unwrap_or(&entry.checkpoint))?;
        let max_share = config.max_unreadable();
        for d in datasets {
            let pipeline = PipelineOptions { quiet: self.opts.quiet, ..PipelineOptions::default() };
            let r = accuracy::of_dataset(&model, d.kind, &d.path, config.protocol(), &pipeline)?;
            let entries: Vec<(String, String)> =
                r.unreadable.iter().map(|(p, why)| (p.display().to_string(), why.clone())).collect();
            Unreadable::new(&self.unreadable_log(&subjects[0], d.kind.name()), max_share).add(
                d.kind.name(),
                r.images,
                &entries,
            )?;
            let mut rows = Vec::new();
            for s in &subjects {
                let sides = accuracy::split_by_classes(&r.hits, &self.train_classes[s.seed as usize]);
                for (k, counts) in sides.iter().enumerate() {
                    if let Some((top1, top5)) = counts.percent() {
                        rows.push(s.row(d.kind.name(), report::CLASS_SPLIT[k], top1));
                        rows.push(s.row(d.kind.name(), report::CLASS_SPLIT[k + 2], top5));
                    }
                }
            }
            for s in &subjects {
                rows.extend([s.row(d.kind.name(), report::TOP1, r.top1), s.row(d.kind.name(), report::TOP5, r.top5)]);
            }
            self.record(&rows)?;
        }
        if let Some(seg) = segmentation {
            let dataset = imagenet_segmentation::DATASET;
            let pipeline = PipelineOptions { quiet: self.opts.quiet, ..imagenet_segmentation::default_pipeline() };
            let r = imagenet_segmentation::run(&model, &seg.path, seg.limit, &pipeline)?;
            let entries: Vec<(String, String)> =
                r.unreadable.iter().map(|(i, why)| (format!("{}[{i}]", seg.path.display()), why.clone())).collect();
            Unreadable::new(&self.unreadable_log(&subjects[0], dataset), max_share).add(
                dataset,
                r.metrics.images() as usize,
                &entries,
            )?;
            let percent = r.metrics.percent();
            let rows: Vec<Measurement> = subjects
                .iter()
                .flat_map(|s| percent.iter().map(|&(metric, value)| s.row(dataset, metric, value)))
                .collect();
            self.record(&rows)?;
        }
        Ok(())
    }

    fn unreadable_log(&self, s: &Subject, dataset: &str) -> PathBuf {
        // A row's name as a file name: `ours (not annotated)` -> `ours-not-annotated`.
        let method: Vec<&str> = s
            .method
            .split(|c: char| !(c.is_ascii_alphanumeric() || "-_".contains(c)))
            .filter(|w| !w.is_empty())
            .collect();
        let name = format!("{}.{}.seed{}.{dataset}.log", s.model, method.join("-"), s.seed);
        self.opts.out.join("unreadable").join(name)
    }

    fn record(&mut self, rows: &[Measurement]) -> anyhow::Result<()> {
        self.log.append(rows)?;
        self.done.add(rows);
        Ok(())
    }
}

/// The selected epoch of a run in `dir` that finished with the settings `cfg`.
fn finished(dir: &Path, cfg: &TrainConfig) -> Option<EpochMetrics> {
    let manifest = RunManifest::read(&dir.join(RunManifest::FILE)).ok()?;
    (manifest.train == *cfg && dir.join("best").is_dir()).then_some(manifest.best).flatten()
}

/// The kept setting of every finetuning job of the studies in `dirs` (their `selected.json`), in the
/// layout's order; a job found in two folders counts once.
pub fn selections(dirs: &[PathBuf], layout: &Layout) -> anyhow::Result<Vec<Selected>> {
    let mut selected = Vec::new();
    for dir in dirs {
        let runs = dir.join("runs");
        for model in read_dirs(&runs)? {
            for seed in read_dirs(&model)? {
                for method in read_dirs(&seed)? {
                    let path = method.join(SELECTED);
                    if path.is_file() {
                        let text =
                            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                        let s: Selected =
                            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                        let key = |t: &Selected| (t.model.clone(), t.method, t.masks, t.seed);
                        if !selected.iter().any(|t: &Selected| key(t) == key(&s)) {
                            selected.push(s);
                        }
                    }
                }
            }
        }
    }
    let rank = |list: &[String], name: &str| list.iter().position(|n| n == name).unwrap_or(list.len());
    selected.sort_by_key(|s| (rank(&layout.models, &s.model), rank(&layout.methods, &s.masks.label(s.method)), s.seed));
    Ok(selected)
}

/// The settings table of `selected`: one row per finetuning job, the kept setting and how it was trained.
pub fn settings_table(selected: &[Selected]) -> Table {
    let header = [
        "model",
        "method",
        "seed",
        "setting",
        "of",
        "lr",
        "lambda_bg",
        "lambda_cls",
        "temperature",
        "epochs",
        "selection",
        "best_epoch",
        "val_accuracy",
    ];
    let rows = selected
        .iter()
        .map(|s| {
            let (lambda_bg, lambda_cls, temperature) = s.train.method.weights();
            vec![
                s.model.clone(),
                s.masks.label(s.method),
                s.seed.to_string(),
                s.setting.to_string(),
                s.of.to_string(),
                format!("{:e}", s.train.lr),
                lambda_bg.map_or(String::new(), |v| format!("{v:e}")),
                lambda_cls.map_or(String::new(), |v| format!("{v:e}")),
                format!("{}", temperature),
                s.train.epochs.to_string(),
                s.train.select.name().into(),
                s.best.epoch.to_string(),
                format!("{:.4}", s.best.val_accuracy),
            ]
        })
        .collect();
    Table { header: header.map(String::from).to_vec(), rows }
}

/// The sub-folders of `dir`, sorted; none when it does not exist.
fn read_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry.with_context(|| format!("listing {}", dir.display()))?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

//! `harness bench-step`: one finetuning step of each method (the library's own `train::step`) beside the
//! same step in plain PyTorch + timm (python/bench/step.py, as the released code runs it and as it is best
//! written), on randomly initialised preset models. The harness step runs in fp32 and, where the CPU
//! computes bf16 natively, in bf16 autocast; the plain PyTorch steps in fp32. Each measurement runs in a
//! fresh process, one after the other in one run, so the ratios compare like with like; `--rounds` repeats
//! the set and reports each ratio as the median of the rounds' own ratios, with the worst round beside it.
//! A measurement, not a test.
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use robustvit::data::Batch;
use robustvit::model::{self, VisionTransformer};
use robustvit::precision::Precision;
use robustvit::train::methods::{CrossEntropy, InputGradient, Method, MethodKind, Relevance};
use robustvit::train::{self, optim::AdamW};
use serde_json::{json, Value};
use tch::{nn, Device, Kind, Tensor};

use crate::bench::median;

#[derive(clap::Args)]
pub struct Args {
    /// Preset models, comma separated.
    #[arg(long, default_value = "vit_tiny_patch16_224,vit_base_patch16_224")]
    models: String,
    /// Methods, comma separated (ours, gradmask, rrr, ce).
    #[arg(long, default_value = "ours,gradmask,rrr,ce")]
    methods: String,
    #[arg(long, default_value_t = 8)]
    batch: i64,
    /// Untimed steps before the timed ones.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps; the median is reported.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Rounds of each model and method, its variants measured in turn within a round: the machine's speed
    /// drifts by 10-20% between measurements, so each ratio pairs neighbours; the table gives the median of
    /// the rounds' ratios and the worst (largest) one, and the median seconds over the rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// The Python with torch and timm (the project's .venv when run through make).
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// The plain PyTorch steps.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../python/bench/step.py"))]
    script: PathBuf,
    /// Also write the table here as CSV.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Internal (with --one): the harness step's arithmetic.
    #[arg(long, hide = true, default_value = "fp32", value_parser = crate::named::<Precision>(Precision::NAMES))]
    precision: Precision,
    /// Internal: measure the harness step of MODEL:METHOD in this process and print it as JSON.
    #[arg(long, hide = true)]
    one: Option<String>,
}

fn method(kind: MethodKind) -> Method {
    let baseline = InputGradient { lambda_bg: 1.0, lambda_cls: 1.0, temperature: 1.0 };
    match kind {
        MethodKind::Ours => Method::Ours(Relevance::default()),
        MethodKind::Gradmask => Method::Gradmask(baseline),
        MethodKind::Rrr => Method::Rrr(baseline),
        MethodKind::CrossEntropy => Method::CrossEntropy(CrossEntropy { temperature: 1.0 }),
    }
}

fn status_kb(field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}

/// Peak memory as python/bench/step.py measures it: the resident set's high-water mark, reset once the
/// model and batch exist, less the resident set at that moment.
fn reset_peak() -> anyhow::Result<f64> {
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak resident set")?;
    status_kb("VmRSS")
}

fn measure_here(spec: &str, args: &Args) -> anyhow::Result<Value> {
    let (name, method_name) = spec.split_once(':').context("--one takes MODEL:METHOD")?;
    let preset = model::preset(name).with_context(|| format!("unknown preset {name}"))?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let vit = VisionTransformer::new(&vs.root(), &preset.config);
    let side = preset.config.img_size;
    let (b, opts) = (args.batch, (Kind::Float, Device::Cpu));
    let masks = Tensor::zeros([b, 1, side, side], opts);
    let _ = masks.narrow(2, side / 4, side / 2).narrow(3, side / 4, side / 2).fill_(1.0);
    let batch = Batch {
        images: Tensor::randn([b, 3, side, side], opts),
        masks,
        labels: Tensor::randint(preset.config.num_classes, [b], (Kind::Int64, Device::Cpu)),
    };
    let method = method(method_name.parse()?);
    let base_kb = reset_peak()?;
    let mut opt = AdamW::new(&vs, 1e-5, 1e-4);
    let mut seconds = Vec::new();
    for k in 0..args.warmup + args.steps {
        let started = Instant::now();
        drop(train::step(&method, args.precision, &vit, &batch, &mut opt)?);
        if k >= args.warmup {
            seconds.push(started.elapsed().as_secs_f64());
        }
    }
    let peak_mb = (status_kb("VmHWM")? - base_kb) / 1024.0;
    Ok(json!({ "variant": "harness", "model": name, "method": method_name, "seconds": seconds, "peak_mb": peak_mb }))
}

/// Runs one measurement in a fresh process; its JSON is the last line it prints.
fn measure(mut cmd: Command, what: &str) -> anyhow::Result<(f64, f64)> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().with_context(|| format!("{what} printed nothing"))?;
    let v: Value = serde_json::from_str(line).with_context(|| format!("{what} printed {line:?}"))?;
    let secs: Vec<f64> = v["seconds"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
    if secs.is_empty() {
        bail!("{what} timed no step");
    }
    Ok((median(secs), v["peak_mb"].as_f64().context("no peak_mb")?))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(spec) = &args.one {
        println!("{}", measure_here(spec, &args)?);
        return Ok(());
    }
    let models: Vec<&str> = args.models.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let methods: Vec<&str> = args.methods.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    for m in &methods {
        m.parse::<MethodKind>().context("--methods")?;
    }
    for m in &models {
        model::preset(m).with_context(|| format!("--models: unknown preset {m}"))?;
    }
    if !args.script.is_file() {
        bail!("{}: the plain PyTorch steps are missing; pass --script python/bench/step.py", args.script.display());
    }
    // bf16 beside fp32 where this CPU computes it natively.
    let precisions: Vec<Precision> = Precision::ALL.iter().copied().filter(|p| p.check(Device::Cpu).is_ok()).collect();
    let exe = std::env::current_exe().context("locating the harness binary")?;
    let common = |cmd: &mut Command| {
        cmd.args(["--batch", &args.batch.to_string(), "--warmup", &args.warmup.to_string()]);
        cmd.args(["--steps", &args.steps.to_string()]);
    };
    println!(
        "batch {}, {} timed steps after {} warm-up, {} round(s), {} threads; seconds are medians, MB the resident \
         set's growth, ratios the median of the rounds' ratios and the worst round's; the plain PyTorch steps run \
         in fp32",
        args.batch,
        args.steps,
        args.warmup,
        args.rounds,
        tch::get_num_threads()
    );
    let mut header = vec!["model".to_string(), "method".to_string()];
    for variant in precisions.iter().map(|p| format!("harness_{p}")).chain(["best".into(), "reference".into()]) {
        header.extend([format!("{variant}_s"), format!("{variant}_mb")]);
    }
    for p in &precisions {
        header.extend([format!("harness_{p}_vs_best"), format!("harness_{p}_vs_best_worst")]);
    }
    header.extend(["harness_fp32_vs_reference".into(), "harness_fp32_vs_reference_worst".into()]);
    println!("{}", header.join(","));
    let mut rows = Vec::new();
    for name in &models {
        for m in &methods {
            // rounds[r][v]: (seconds, MB) of variant v (the harness precisions, best, reference) in round r.
            let mut rounds = Vec::new();
            for _ in 0..args.rounds {
                let mut measured = Vec::new();
                for p in &precisions {
                    let mut own = Command::new(&exe);
                    own.args(["bench-step", "--one", &format!("{name}:{m}"), "--precision", p.name()]);
                    common(&mut own);
                    measured.push(measure(own, &format!("the harness step ({name}, {m}, {p})"))?);
                }
                for variant in ["best", "reference"] {
                    let mut py = Command::new(&args.python);
                    py.arg(&args.script).args(["--model", name, "--method", m, "--variant", variant]);
                    common(&mut py);
                    let what = format!("{} {} ({name}, {m}, {variant})", args.python.display(), args.script.display());
                    measured.push(measure(py, &what)?);
                }
                rounds.push(measured);
            }
            let (best, reference) = (precisions.len(), precisions.len() + 1);
            let mut row = vec![name.to_string(), m.to_string()];
            for v in 0..=reference {
                let secs = median(rounds.iter().map(|r| r[v].0).collect());
                let mb = median(rounds.iter().map(|r| r[v].1).collect());
                row.extend([format!("{secs:.4}"), format!("{mb:.0}")]);
            }
            let ratios = |v: usize, of: usize| -> [String; 2] {
                let per_round: Vec<f64> = rounds.iter().map(|r| r[v].0 / r[of].0).collect();
                let worst = per_round.iter().copied().fold(f64::MIN, f64::max);
                [format!("{:.3}", median(per_round)), format!("{worst:.3}")]
            };
            for v in 0..precisions.len() {
                row.extend(ratios(v, best));
            }
            row.extend(ratios(0, reference));
            println!("{}", row.join(","));
            rows.push(row);
        }
    }
    if let Some(path) = &args.out {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&header)?;
        for row in &rows {
            w.write_record(row)?;
        }
        robustvit::atomic_write::write(path, &w.into_inner().context("finishing the CSV")?)?;
    }
    Ok(())
}

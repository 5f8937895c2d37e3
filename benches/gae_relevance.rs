//! gae_relevance at ViT-B shapes (B=8, L=12, H=12, T=197), forward and forward+backward (gradient w.r.t.
//! the attention, G constant as in training), beside the composite full-matrix rollout. After criterion's
//! statistics it times both implementations interleaved in one run and prints op/composite speed ratios,
//! then each mode against its memory floor: reading A and G (forward), and reading A and G while writing a
//! [B,H,T,T] result per block into buffers allocated once (forward+backward, whose dA has that size), with
//! the floor's GB/s. The process keeps freed memory in its heap, as the harness does (robustvit::heap).
#[path = "../tests/it/support/rollout.rs"]
mod rollout;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use robustvit::ops;
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 8;
const BLOCKS: usize = 12;
const HEADS: i64 = 12;
const TOKENS: i64 = 197;

struct Inputs {
    attn: Vec<Tensor>,
    grad: Vec<Tensor>,
}

fn inputs() -> Inputs {
    robustvit::heap::keep_freed_memory(); // idempotent; here because criterion may run either target alone
    tch::manual_seed(0);
    let shape = [BATCH, HEADS, TOKENS, TOKENS];
    let opts = (Kind::Float, Device::Cpu);
    Inputs {
        attn: (0..BLOCKS)
            .map(|_| Tensor::randn(shape, opts).softmax(-1, Kind::Float).set_requires_grad(true))
            .collect(),
        grad: (0..BLOCKS).map(|_| Tensor::randn(shape, opts)).collect(),
    }
}

type Impl = fn(&[Tensor], &[Tensor]) -> Tensor;

fn op(attn: &[Tensor], grad: &[Tensor]) -> Tensor {
    ops::gae_relevance(attn, grad, 0).expect("valid ViT-B shapes")
}

fn full_matrix(attn: &[Tensor], grad: &[Tensor]) -> Tensor {
    rollout::gae_relevance_full_matrix(attn, grad, 0)
}

fn forward(f: Impl, x: &Inputs) -> Tensor {
    tch::no_grad(|| f(&x.attn, &x.grad))
}

fn forward_backward(f: Impl, x: &Inputs) -> Tensor {
    let rel = f(&x.attn, &x.grad);
    Tensor::run_backward(&[rel.sum(Kind::Float)], &x.attn, false, false).swap_remove(0)
}

const IMPLS: [(&str, Impl); 2] = [("op", op), ("full_matrix", full_matrix)];
type Mode = fn(Impl, &Inputs) -> Tensor;
const MODES: [(&str, Mode); 2] = [("forward", forward), ("forward_backward", forward_backward)];

fn bench(c: &mut Criterion) {
    let x = inputs();
    for (mode, run) in MODES {
        let mut group = c.benchmark_group(format!("gae_relevance_vit_b/{mode}"));
        for (name, f) in IMPLS {
            group.bench_function(name, |b| b.iter(|| run(f, &x)));
        }
        group.finish();
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

type Floor = fn(&Inputs, &[Tensor]);

/// Reads every A and G: the least any forward must do.
fn read_floor(x: &Inputs, _: &[Tensor]) {
    tch::no_grad(|| {
        for (a, g) in x.attn.iter().zip(&x.grad) {
            drop(std::hint::black_box(a.sum(Kind::Float) + g.sum(Kind::Float)));
        }
    })
}

/// Reads every A and G and writes a result of A's size into a reused buffer: the least a backward that
/// returns dA must do.
fn read_write_floor(x: &Inputs, out: &[Tensor]) {
    tch::no_grad(|| {
        for ((a, g), o) in x.attn.iter().zip(&x.grad).zip(out) {
            drop(std::hint::black_box(a.mul_out(o, g)));
        }
    })
}

fn median_f64(xs: impl Iterator<Item = f64>) -> f64 {
    let mut xs: Vec<f64> = xs.collect();
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Interleaved rounds of the ratios: the machines are shared, so a few rounds can all land in a busy spell.
const ROUNDS: usize = 15;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Interleaved timing, so every implementation and its floor see the same machine load.
fn ratios(_: &mut Criterion) {
    let x = inputs();
    let buffers: Vec<Tensor> = x.attn.iter().map(|a| a.detach().zeros_like()).collect();
    // Each floor with the number of [B,H,T,T] tensors per block it moves.
    let floors: [(Floor, f64); 2] = [(read_floor, 2.0), (read_write_floor, 3.0)];
    let block_bytes = (BATCH * HEADS * TOKENS * TOKENS * 4) as f64 * BLOCKS as f64;
    for ((mode, run), (floor, tensors)) in MODES.into_iter().zip(floors) {
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            for (k, (_, f)) in IMPLS.iter().enumerate() {
                let start = Instant::now();
                drop(std::hint::black_box(run(*f, &x)));
                times[k].push(start.elapsed());
            }
            let start = Instant::now();
            floor(&x, &buffers);
            times[2].push(start.elapsed());
        }
        // op/floor round by round, then the median: each ratio pairs measurements taken moments apart.
        let per_round = median_f64(times[0].iter().zip(&times[2]).map(|(o, f)| o.as_secs_f64() / f.as_secs_f64()));
        let [ours, composite, floor] = times.map(median);
        println!(
            "gae_relevance ViT-B {mode}: op {:.1} ms, full-matrix composite {:.1} ms (op {:.2}x faster); \
             floor {:.1} ms ({:.1} GB/s), op/floor {:.2}x (median over {ROUNDS} rounds)",
            ms(ours),
            ms(composite),
            composite.as_secs_f64() / ours.as_secs_f64(),
            ms(floor),
            tensors * block_bytes / floor.as_secs_f64() / 1e9,
            per_round
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench, ratios
}
criterion_main!(benches);

//! gae_relevance at ViT-B shapes (B=8, L=12, H=12, T=197), forward and forward+backward (gradient w.r.t.
//! the attention, G constant as in training), beside the composite full-matrix rollout. After criterion's
//! statistics it times both implementations interleaved in one run and prints op/composite speed ratios.
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

/// Interleaved timing, so both implementations see the same machine load.
fn ratios(_: &mut Criterion) {
    let x = inputs();
    for (mode, run) in MODES {
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..7 {
            for (k, (_, f)) in IMPLS.iter().enumerate() {
                let start = Instant::now();
                drop(std::hint::black_box(run(*f, &x)));
                times[k].push(start.elapsed());
            }
        }
        let [ours, composite] = times.map(median);
        println!(
            "gae_relevance ViT-B {mode}: op {:.1} ms, full-matrix composite {:.1} ms, op is {:.2}x faster",
            ours.as_secs_f64() * 1e3,
            composite.as_secs_f64() * 1e3,
            composite.as_secs_f64() / ours.as_secs_f64()
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

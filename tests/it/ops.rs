//! The ops through the Rust bridge, against straightforward composite implementations written here in tch
//! from method.md (the full-matrix rollout for GAE), and finite-difference gradient checks in float64 for
//! every tensor input, first and second order.

use robustvit::ops;

use crate::support::rollout::gae_relevance_full_matrix;
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

// ---- composite references ----

fn ref_map(rel: &Tensor, grid: (i64, i64), out: (i64, i64), eps: f64) -> Tensor {
    let y = rel.reshape([-1, 1, grid.0, grid.1]).upsample_bilinear2d([out.0, out.1], false, None, None);
    let lo = y.amin([1i64, 2, 3], true);
    let hi = y.amax([1i64, 2, 3], true);
    (&y - &lo) / (hi - &lo + eps)
}

fn ref_relevance_loss(map: &Tensor, mask: &Tensor, lbg: f64, lfg: f64) -> [Tensor; 3] {
    let bg = (map * mask.ones_like().g_sub(mask)).square().mean(None);
    let fg = (map * mask - mask).square().mean(None);
    [&bg * lbg + &fg * lfg, bg, fg]
}

fn ref_confidence(logits: &Tensor, temperature: f64) -> Tensor {
    (logits / temperature).log_softmax(1, Kind::Double).nll_loss(&logits.argmax(1, false))
}

fn masked_input_grad(g: &Tensor, mask: &Tensor) -> Tensor {
    (g * mask.ones_like().g_sub(mask)).square()
}

// ---- inputs ----
// Seeded per call rather than through tch's global generator, which the test threads share.

fn uniform(shape: &[i64], seed: u64) -> Tensor {
    let n: i64 = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    let values: Vec<f64> = (0..n)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect();
    Tensor::from_slice(&values).view(shape)
}

fn rand(shape: &[i64], seed: u64) -> Tensor {
    uniform(shape, seed)
}

fn randn(shape: &[i64], seed: u64) -> Tensor {
    // Box-Muller on two independent uniform draws.
    let u1 = uniform(shape, seed).clamp_min(1e-12);
    let u2 = uniform(shape, seed ^ 0xA5A5_A5A5);
    (u1.log() * -2.0).sqrt() * (u2 * (2.0 * std::f64::consts::PI)).cos()
}

fn gae_inputs(shape: [i64; 4], blocks: u64, kind: Kind, seed: u64) -> (Vec<Tensor>, Vec<Tensor>) {
    let attn = (0..blocks).map(|l| randn(&shape, seed * 1000 + l).softmax(-1, kind)).collect();
    let grad = (0..blocks).map(|l| randn(&shape, seed * 1000 + 500 + l).to_kind(kind)).collect();
    (attn, grad)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    assert_eq!(a.size(), b.size(), "{what}: shapes differ");
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max abs difference {d:e} > {tol:e}");
}

// ---- finite differences ----

/// A scalar function of several tensors.
type Scalar<'a> = &'a dyn Fn(&[Tensor]) -> Tensor;

fn leaves(inputs: &[Tensor]) -> Vec<Tensor> {
    inputs.iter().map(|x| x.detach().set_requires_grad(true)).collect()
}

/// Gradients of `f` at `inputs`; an input that `f` does not use gets zeros (autograd leaves it undefined).
fn analytic_grad(f: Scalar, inputs: &[Tensor], create_graph: bool) -> Vec<Tensor> {
    zeros_for_unused(Tensor::run_backward(&[f(inputs)], inputs, create_graph, create_graph), inputs)
}

fn zeros_for_unused(grads: Vec<Tensor>, inputs: &[Tensor]) -> Vec<Tensor> {
    grads.into_iter().zip(inputs).map(|(g, x)| if g.defined() { g } else { x.zeros_like() }).collect()
}

/// Central differences of `f` w.r.t. every element of every input.
fn numeric_grad(f: Scalar, inputs: &[Tensor], h: f64) -> Vec<Tensor> {
    (0..inputs.len())
        .map(|k| {
            let n = inputs[k].numel() as i64;
            let values: Vec<f64> = (0..n)
                .map(|e| {
                    let shifted = |delta: f64| {
                        let xs: Vec<Tensor> = inputs.iter().map(|x| x.detach().copy()).collect();
                        let _ = xs[k].view([-1]).get(e).g_add_scalar_(delta);
                        f(&leaves(&xs)).double_value(&[])
                    };
                    (shifted(h) - shifted(-h)) / (2.0 * h)
                })
                .collect();
            Tensor::from_slice(&values).view(inputs[k].size().as_slice())
        })
        .collect()
}

/// First order: d f / d x against finite differences. Second order: the gradient of
/// `h(x) = sum_k <d f/d x_k, v_k>` (first gradients from autograd with create_graph) against finite
/// differences of h, so the backward's own backward is checked.
fn check_gradients(f: Scalar, inputs: &[Tensor], what: &str) {
    let xs = leaves(inputs);
    for (k, (a, n)) in analytic_grad(f, &xs, false).iter().zip(numeric_grad(f, &xs, 1e-6)).enumerate() {
        assert_close(a, &n, 1e-6, &format!("{what}: first-order gradient of input {k}"));
    }
    let directions: Vec<Tensor> = xs.iter().zip(11..).map(|(x, seed)| randn(&x.size(), seed)).collect();
    let h = |ys: &[Tensor]| -> Tensor {
        let first = analytic_grad(f, ys, true);
        first.iter().zip(&directions).map(|(g, v)| (g * v).sum(Kind::Double)).fold(Tensor::zeros([], F64), |a, b| a + b)
    };
    let analytic = zeros_for_unused(Tensor::run_backward(&[h(&xs)], &xs, false, false), &xs);
    for (k, (a, n)) in analytic.iter().zip(numeric_grad(&h, &xs, 1e-5)).enumerate() {
        assert_close(a, &n, 1e-5, &format!("{what}: second-order gradient of input {k}"));
    }
}

/// `sum(out * w)` for a fixed random weight `w`, so every output element carries a distinct gradient.
fn weighted(out: &Tensor, seed: u64) -> Tensor {
    (out * randn(&out.size(), seed).to_kind(out.kind())).sum(out.kind())
}

// ---- tests ----

#[test]
fn gae_relevance_matches_full_matrix_rollout() {
    for (shape, blocks, start) in [([2, 3, 6, 6], 3, 0), ([3, 5, 37, 37], 4, 2), ([1, 12, 197, 197], 12, 0)] {
        let (attn, grad) = gae_inputs(shape, blocks, Kind::Float, 1);
        let ours = ops::gae_relevance(&attn, &grad, start as i64).unwrap();
        assert_close(
            &ours,
            &gae_relevance_full_matrix(&attn, &grad, start),
            1e-5,
            &format!("gae_relevance {shape:?} start {start}"),
        );
    }
}

#[test]
fn gae_relevance_gradients_match_finite_differences() {
    let (attn, grad) = gae_inputs([1, 2, 4, 4], 2, Kind::Double, 2);
    for start in [0i64, 1] {
        let f = move |xs: &[Tensor]| weighted(&ops::gae_relevance(&xs[..2], &xs[2..], start).unwrap(), 3);
        let inputs: Vec<Tensor> = attn.iter().chain(&grad).map(|t| t.shallow_clone()).collect();
        check_gradients(&f, &inputs, &format!("gae_relevance start {start}"));
    }
}

#[test]
fn gae_relevance_gradient_matches_rollout_with_detached_grad() {
    // Training's default: G is a constant, only A is differentiated.
    let (attn, grad) = gae_inputs([2, 3, 9, 9], 3, Kind::Double, 4);
    let a_ours = leaves(&attn);
    let a_ref = leaves(&attn);
    let ours =
        Tensor::run_backward(&[weighted(&ops::gae_relevance(&a_ours, &grad, 0).unwrap(), 5)], &a_ours, false, false);
    let refs = Tensor::run_backward(&[weighted(&gae_relevance_full_matrix(&a_ref, &grad, 0), 5)], &a_ref, false, false);
    for (o, r) in ours.iter().zip(&refs) {
        assert_close(o, r, 1e-12, "d rel / d attn with detached grad");
    }
}

#[test]
fn relevance_map_matches_composite_and_gradients_check() {
    let rel = rand(&[3, 12], 101);
    let ours = ops::relevance_map(&rel, (3, 4), (10, 7), 1e-8).unwrap();
    assert_eq!(ours.size(), [3, 1, 10, 7]);
    assert_close(&ours, &ref_map(&rel, (3, 4), (10, 7), 1e-8), 1e-12, "relevance_map");
    let f = |xs: &[Tensor]| weighted(&ops::relevance_map(&xs[0], (3, 4), (10, 7), 1e-8).unwrap(), 7);
    check_gradients(&f, &[rand(&[2, 12], 102)], "relevance_map");
}

#[test]
fn relevance_loss_matches_composite_and_gradients_check() {
    let map = rand(&[2, 1, 5, 5], 103);
    let mask = rand(&[2, 1, 5, 5], 104).gt(0.5).to_kind(Kind::Double);
    let ours = ops::relevance_loss(&map, &mask, 2.0, 0.3).unwrap();
    let refs = ref_relevance_loss(&map, &mask, 2.0, 0.3);
    for (o, (r, name)) in
        [&ours.total, &ours.background, &ours.foreground].into_iter().zip(refs.iter().zip(["total", "bg", "fg"]))
    {
        assert_close(o, r, 1e-12, &format!("relevance_loss {name}"));
    }
    for term in 0..3 {
        let f = move |xs: &[Tensor]| {
            let l = ops::relevance_loss(&xs[0], &xs[1], 2.0, 0.3).unwrap();
            vec![l.total, l.background, l.foreground].swap_remove(term)
        };
        check_gradients(&f, &[rand(&[2, 1, 3, 3], 105), rand(&[2, 1, 3, 3], 106)], "relevance_loss");
    }
}

#[test]
fn confidence_loss_matches_cross_entropy_and_gradients_check() {
    let logits = randn(&[4, 6], 107);
    for t in [1.0, 0.65] {
        assert_close(&ops::confidence_loss(&logits, t).unwrap(), &ref_confidence(&logits, t), 1e-12, "confidence_loss");
        let f = move |xs: &[Tensor]| ops::confidence_loss(&xs[0], t).unwrap();
        check_gradients(&f, &[randn(&[3, 5], 108)], "confidence_loss");
    }
}

#[test]
fn gradmask_and_rrr_match_composite_and_gradients_check() {
    let g = randn(&[2, 3, 4, 4], 109);
    let mask = rand(&[2, 1, 4, 4], 110).gt(0.5).to_kind(Kind::Double);
    assert_close(
        &ops::gradmask_loss(&g, &mask).unwrap(),
        &masked_input_grad(&g, &mask).mean(None),
        1e-12,
        "gradmask_loss",
    );
    assert_close(
        &ops::rrr_loss(&g, &mask).unwrap(),
        &masked_input_grad(&g, &mask).sum(Kind::Double),
        1e-12,
        "rrr_loss",
    );
    let inputs = [randn(&[2, 3, 3, 3], 111), rand(&[2, 1, 3, 3], 112)];
    check_gradients(&|xs: &[Tensor]| ops::gradmask_loss(&xs[0], &xs[1]).unwrap(), &inputs, "gradmask_loss");
    check_gradients(&|xs: &[Tensor]| ops::rrr_loss(&xs[0], &xs[1]).unwrap(), &inputs, "rrr_loss");
}

#[test]
fn bad_input_is_an_error_naming_op_and_argument() {
    let (attn, grad) = gae_inputs([1, 2, 5, 5], 2, Kind::Float, 0);
    let cases: Vec<(Result<Tensor, ops::OpError>, &str)> = vec![
        (ops::gae_relevance(&[], &[], 0), "gae_relevance: argument 'attn' is an empty list"),
        (ops::gae_relevance(&attn, &grad[..1], 0), "'attn' and 'grad' must have one tensor per block"),
        (ops::gae_relevance(&attn, &grad, 5), "'start_layer' must lie in [0, 2)"),
        (
            ops::gae_relevance(&[attn[0].select(0, 0)], &[grad[0].select(0, 0)], 0),
            "'attn[0]' must have shape [B,H,T,T]",
        ),
        (
            ops::relevance_map(&rand(&[2, 9], 113), (2, 2), (4, 4), 1e-8),
            "relevance_map: argument 'rel' must have shape [B,4]",
        ),
        (ops::confidence_loss(&rand(&[5], 114), 1.0), "confidence_loss: argument 'logits' must have shape [B,C]"),
        (
            ops::gradmask_loss(&rand(&[2, 3, 4, 4], 115), &rand(&[2, 1, 4, 5], 116)),
            "gradmask_loss: argument 'mask' must have shape [B,1,H,W]",
        ),
        (
            ops::rrr_loss(&rand(&[2, 3, 4, 4], 117), &Tensor::ones([2, 1, 4, 4], (Kind::Int64, Device::Cpu))),
            "rrr_loss: argument 'mask' must be a floating-point",
        ),
    ];
    for (result, expected) in cases {
        let message = result.expect_err(expected).to_string();
        assert!(message.contains(expected), "expected {expected:?} in {message:?}");
        assert!(message.starts_with("robustvit::"), "message should name the op: {message:?}");
    }
    let bad = ops::relevance_loss(&rand(&[2, 1, 4, 4], 118), &rand(&[2, 1, 3, 4], 119), 2.0, 0.3);
    assert!(bad.unwrap_err().to_string().contains("relevance_loss: argument 'mask' must have the shape of 'map'"));
}

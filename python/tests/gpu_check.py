#!/usr/bin/env python3
"""Checks the robustvit ops on one device against the CPU kernels, and times gae_relevance there.

Usage: python3 python/tests/gpu_check.py LIB [--device cuda|cpu] [--skip-speed]

LIB is librobustvit_ops.so built with CUDA (scripts/gpu-check.sh explains where it comes from). Every check runs
the same inputs through the op on --device and on the CPU and compares forward outputs, first-order gradients
(the fused backward kernel) and second-order gradients (the composite backward used under create_graph=True):
NaN and +-Inf at the same entries, finite entries within a tolerance. gae_relevance is also fed NaN and Inf in A
and G, odd sizes, and sizes it must reject. `--device cpu` compares the CPU against itself: a dry run of this
script on a machine without a GPU.
Prints one line per check, a speed section, and `N passed, M failed`; exits 1 if any check failed.
"""

import argparse
import re
import statistics
import sys
import time
import traceback

import torch

# Tolerance on max|got - ref|, relative to max|ref|: summation order differs between the CPU and CUDA kernels.
RTOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 2e-2}


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def compare(self, name, got, ref, rtol, exact_split=True):
        """got and ref are tensors or equally long lists of tensors (None counts as zeros). NaN, +Inf and -Inf
        must sit at the same entries (with exact_split False, only the non-finite entries as a whole); the finite
        entries may differ by rtol * max|finite ref|."""
        got = list(got) if isinstance(got, (list, tuple)) else [got]
        ref = list(ref) if isinstance(ref, (list, tuple)) else [ref]
        problem, err, scale, nonfinite = None, 0.0, 0.0, 0
        if len(got) != len(ref):
            problem = f"{len(got)} tensors, expected {len(ref)}"
        for g, r in zip(got, ref):
            if problem:
                break
            if g is None and r is None:
                continue
            if g is None or r is None:
                g = torch.zeros_like(r) if g is None else g
                r = torch.zeros_like(g) if r is None else r
            if g.shape != r.shape or g.dtype != r.dtype:
                problem = f"got {g.dtype}{list(g.shape)}, expected {r.dtype}{list(r.shape)}"
                break
            g64, r64 = g.detach().cpu().double(), r.detach().cpu().double()
            kinds = (torch.isnan, torch.isposinf, torch.isneginf) if exact_split else (torch.isfinite,)
            differ = sum(int((kind(g64) != kind(r64)).sum()) for kind in kinds)
            if differ:
                problem = f"NaN/Inf at {differ} entries where the reference differs"
                break
            finite = r64.isfinite()
            nonfinite += int((~finite).sum())
            if finite.any():
                err = max(err, (g64[finite] - r64[finite]).abs().max().item())
                scale = max(scale, r64[finite].abs().max().item())
        tol = rtol * scale
        ok = problem is None and err <= tol
        detail = problem or f"max_abs_err={err:.3e} tol={tol:.3e}" + (f" nonfinite={nonfinite}" if nonfinite else "")
        self.record(ok, name, detail)

    def record(self, ok, name, detail):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)

    def expect_error(self, name, fn, pattern):
        """fn() must raise a RuntimeError whose message matches the regular expression pattern."""
        try:
            fn()
        except RuntimeError as e:
            message = str(e).splitlines()[0] if str(e) else ""
            self.record(re.search(pattern, str(e)) is not None, name, f"raised: {message}")
            return
        self.record(False, name, "raised nothing")

    def run(self, name, fn):
        """Runs fn(); an exception fails the check named name."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - any error is a failed check, reported and counted
            traceback.print_exc()
            self.record(False, name, f"raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def randn(gen, shape, dtype=torch.float64):
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


def gae_inputs(B, L, H, T, dtype, seed, noncontig=False):
    """Attention rows from a softmax, signed gradients; a few exact zeros in both, so G*A == 0 occurs (the clamp
    passes the gradient there). noncontig passes transposed views."""
    gen = torch.Generator().manual_seed(seed)
    attn, grad = [], []
    for _ in range(L):
        a = (randn(gen, (B, H, T, T)) * 2).softmax(-1)
        a = a * (torch.rand((B, H, T, T), generator=gen, dtype=torch.float64) > 0.02)
        g = randn(gen, (B, H, T, T))
        g = g * (torch.rand((B, H, T, T), generator=gen, dtype=torch.float64) > 0.05)
        if noncontig:
            a, g = a.transpose(2, 3), g.transpose(2, 3)
        attn.append(a.to(dtype))
        grad.append(g.to(dtype))
    return attn, grad


def evaluate(fn, inputs, needs, device, order, seed):
    """Runs fn(*inputs) on device. Returns forward outputs, and for order >= 1 the gradients of the inputs with
    needs[k] under a random upstream gradient; order 2 builds the graph of the first gradients (the composite
    backward) and returns (first, second) gradients, the second of sum(first * random)."""
    xs = [x.to(device).detach().requires_grad_(n) for x, n in zip(inputs, needs)]
    outs = fn(*xs)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    result = {"fwd": [o.detach() for o in outs]}
    if order == 0:
        return result
    gen = torch.Generator().manual_seed(seed)
    diff = [x for x, n in zip(xs, needs) if n]
    ups = [randn(gen, o.shape, o.dtype).to(device) for o in outs]
    first = torch.autograd.grad(outs, diff, ups, create_graph=order >= 2, allow_unused=True)
    result["bwd"] = [None if g is None else g.detach() for g in first]
    if order >= 2:
        terms = [(g * randn(gen, g.shape, g.dtype).to(device)).sum() for g in first if g is not None and g.requires_grad]
        second = torch.autograd.grad(sum(terms), diff, allow_unused=True) if terms else [None] * len(diff)
        result["bwd2"] = [None if g is None else g.detach() for g in second]
    return result


def same_bits(a, b):
    """Equal values, NaN where the other has NaN (torch.equal treats NaN as unequal to itself)."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


def check_op(rep, name, fn, inputs, needs, device, rtol, order=2, seed=0, deterministic=False, inf_inputs=False):
    """Compares fn on device against fn on the CPU: forward, kernel backward, and (order 2) the composite backward
    and its double backward. deterministic: also check the device results repeat bit for bit (the gae kernels use
    no atomics; ATen's CUDA upsample backward does). inf_inputs: with Inf among the inputs the fused and the
    composite backward agree on which entries are non-finite, not on which of them are Inf and which NaN (the
    fused kernels multiply each head's term before the head mean, so Inf * 0 can meet a head the mean hides)."""

    def body():
        ref1, got1 = (evaluate(fn, inputs, needs, dev, min(order, 1), seed) for dev in ("cpu", device))
        rep.compare(f"{name} forward", got1["fwd"], ref1["fwd"], rtol)
        if order >= 1:
            rep.compare(f"{name} backward", got1["bwd"], ref1["bwd"], rtol)
        if deterministic:
            again = evaluate(fn, inputs, needs, device, min(order, 1), seed)
            same = all(same_bits(a, b) for k in got1 for a, b in zip(got1[k], again[k]) if a is not None)
            rep.record(same, f"{name} deterministic", "bitwise equal on a rerun" if same else "differs on a rerun")
        if order >= 2:
            ref2, got2 = (evaluate(fn, inputs, needs, dev, 2, seed) for dev in ("cpu", device))
            rep.compare(f"{name} backward(create_graph)", got2["bwd"], ref2["bwd"], rtol)
            rep.compare(f"{name} double backward", got2["bwd2"], ref2["bwd2"], rtol)
            # The composite backward and the fused kernel compute the same first-order gradients.
            rep.compare(f"{name} composite vs kernel backward", got2["bwd"], got1["bwd"], rtol,
                        exact_split=not inf_inputs)

    rep.run(name, body)


def composite_rollout(attn, grad, start_layer=0):
    """method.md section 1 with full T x T matrices: R <- R + Abar_l R in forward order, rel = R[:, 0, 1:]."""
    B, _, T, _ = attn[0].shape
    R = torch.eye(T, dtype=attn[0].dtype, device=attn[0].device).expand(B, T, T)
    for a, g in zip(attn[start_layer:], grad[start_layer:]):
        R = R + torch.bmm((g * a).clamp(min=0).mean(1), R)
    return R[:, 0, 1:]


def gae_checks(rep, device):
    op = torch.ops.robustvit.gae_relevance
    # (B, L, H, T, start_layer, dtypes, needs (attn, grad), order, noncontig)
    cases = [
        (3, 4, 5, 37, 0, (torch.float64, torch.float32), ("both", "attn", "grad"), 2, False),
        (3, 4, 5, 37, 2, (torch.float64, torch.float32), ("both", "attn"), 2, False),
        (2, 3, 2, 2, 0, (torch.float64,), ("both",), 2, False),
        (2, 3, 4, 33, 2, (torch.float64, torch.float32), ("both",), 2, True),
        (1, 2, 3, 65, 1, (torch.float32,), ("both",), 2, True),
        (0, 2, 3, 9, 0, (torch.float32,), ("both",), 1, False),
        # odd sizes: one sample, block and head; T below, at and above one 32-column tile; the last block only
        (1, 1, 1, 5, 0, (torch.float64, torch.float32), ("both", "attn", "grad"), 2, False),
        (1, 2, 1, 2, 1, (torch.float64,), ("both",), 2, True),
        (2, 3, 1, 5, 2, (torch.float32,), ("both", "grad"), 2, True),
        (3, 2, 2, 32, 1, (torch.float32,), ("both",), 2, False),
        (2, 3, 1, 197, 2, (torch.float32,), ("both",), 2, False),
        (1, 12, 12, 197, 11, (torch.float32,), ("attn",), 1, True),
        (3, 4, 5, 37, 1, (torch.float16, torch.bfloat16), ("both",), 1, False),
        (8, 12, 12, 197, 0, (torch.float32,), ("both", "attn"), 2, False),
        (8, 12, 12, 197, 4, (torch.float32,), ("attn",), 1, False),
    ]
    needs_of = {"both": (True, True), "attn": (True, False), "grad": (False, True)}
    for B, L, H, T, start, dtypes, needs_list, order, noncontig in cases:
        for dtype in dtypes:
            attn, grad = gae_inputs(B, L, H, T, dtype, seed=B * 1000 + T, noncontig=noncontig)
            fn = lambda *ts, L=L, start=start: op(list(ts[:L]), list(ts[L:]), start)  # noqa: E731
            for needs in needs_list:
                na, ng = needs_of[needs]
                name = (f"gae_relevance {str(dtype)[6:]} B={B} L={L} H={H} T={T} start={start}"
                        f"{' noncontig' if noncontig else ''} grads={needs}")
                check_op(rep, name, fn, attn + grad, [na] * L + [ng] * L, device, RTOL[dtype], order, seed=T,
                         deterministic=True)

    # The op against the full-matrix formula of method.md, on the device.
    def against_composite():
        for start in (0, 2):
            attn, grad = gae_inputs(3, 4, 5, 37, torch.float64, seed=7)
            attn, grad = [a.to(device) for a in attn], [g.to(device) for g in grad]
            rep.compare(f"gae_relevance float64 start={start} vs composite rollout", op(attn, grad, start),
                        composite_rollout(attn, grad, start), RTOL[torch.float64])

    rep.run("gae_relevance vs composite rollout", against_composite)
    nonfinite_checks(rep, device)
    rejection_checks(rep, device)


# name: (block, (b, h, i, j) of the non-finite entry, start_layer, value of the partner (G for A, A for G) there);
# for L=3 blocks, block 2 the last. python/tests/test_ops.py checks the CPU's pattern against the reference rollout.
NONFINITE_PLACES = {
    "last block CLS row": (2, (1, 0, 0, 3), 0, 1.0),
    "last block patch row": (2, (1, 1, 2, 1), 0, 1.0),
    "first block": (0, (1, 1, 3, 2), 0, 1.0),
    "middle block": (1, (0, 0, 1, 4), 0, 1.0),
    "middle block, zero partner": (1, (0, 1, 3, 3), 0, 0.0),
    "start block": (1, (1, 1, 4, 1), 1, 1.0),
    "only block CLS row": (2, (1, 1, 0, 2), 2, 1.0),
    "skipped block": (0, (1, 0, 0, 1), 1, 1.0),
}


def nonfinite_checks(rep, device):
    """NaN, +Inf and -Inf in A or G: the device's NaN/Inf pattern and finite values equal the CPU's, forward and
    backward (fused and composite)."""
    op = torch.ops.robustvit.gae_relevance
    for B, H, T, dtypes in ((2, 2, 5, (torch.float64,)), (2, 3, 37, (torch.float32,))):
        for dtype in dtypes:
            for place, (block, pos, start, partner) in NONFINITE_PLACES.items():
                for where in ("attn", "grad"):
                    for value in (float("nan"), float("inf"), -float("inf")):
                        attn, grad = gae_inputs(B, 3, H, T, dtype, seed=T)
                        target, other = (attn, grad) if where == "attn" else (grad, attn)
                        target[block][pos] = value
                        other[block][pos] = partner
                        fn = lambda *ts, start=start: op(list(ts[:3]), list(ts[3:]), start)  # noqa: E731
                        name = f"gae_relevance {str(dtype)[6:]} B={B} H={H} T={T} {value} in {where}, {place}"
                        check_op(rep, name, fn, attn + grad, [True] * 6, device, RTOL[dtype], order=2, seed=T,
                                 deterministic=True, inf_inputs=abs(value) == float("inf"))


def rejection_checks(rep, device):
    """Sizes the op rejects fail on the device with the message of the CPU and Meta kernels."""
    op = torch.ops.robustvit.gae_relevance
    backward = torch.ops.robustvit._gae_relevance_backward

    def sized(b, h, t):
        """attn and grad lists of two zero blocks [b,h,t,t] on the device."""
        return tuple([torch.zeros(b, h, t, t, device=device) for _ in range(2)] for _ in range(2))

    no_heads = (r"argument 'attn\[0\]' needs H >= 1 heads \(the relevance averages over them\), "
                r"got shape \[2, 0, 5, 5\]")
    rep.expect_error("gae_relevance rejects H=0", lambda: op(*sized(2, 0, 5), 0),
                     r"robustvit::gae_relevance: " + no_heads)
    rep.expect_error("_gae_relevance_backward rejects H=0",
                     lambda: backward(torch.zeros(2, 4, device=device), *sized(2, 0, 5), 0, True, True),
                     r"robustvit::_gae_relevance_backward: " + no_heads)
    rep.expect_error("gae_relevance rejects T=1", lambda: op(*sized(2, 1, 1), 0),
                     r"robustvit::gae_relevance: argument 'attn\[0\]' needs T >= 2 tokens")
    rep.expect_error("gae_relevance rejects start_layer=L", lambda: op(*sized(2, 1, 5), 2),
                     r"robustvit::gae_relevance: argument 'start_layer' must lie in \[0, 2\)")
    if device != "cpu":
        attn, grad = sized(1, 1, 3)
        rep.expect_error("gae_relevance rejects mixed devices", lambda: op(attn, [g.cpu() for g in grad], 0),
                         r"robustvit::gae_relevance: argument 'grad\[0\]' is on cpu but 'attn\[0\]' is on " + device)


def other_op_checks(rep, device):
    ops = torch.ops.robustvit
    for dtype in (torch.float64, torch.float32):
        rtol, tag = RTOL[dtype], str(dtype)[6:]
        gen = torch.Generator().manual_seed(1)
        for B, gh, gw, oh, ow in ((4, 14, 14, 224, 224), (3, 5, 7, 33, 45)):
            rel = randn(gen, (B, gh * gw), dtype)
            check_op(rep, f"relevance_map {tag} B={B} grid={gh}x{gw} out={oh}x{ow}",
                     lambda r, gh=gh, gw=gw, oh=oh, ow=ow: ops.relevance_map(r, gh, gw, oh, ow, 1e-8),
                     [rel], [True], device, rtol)
        for B, S in ((4, 224), (3, 17)):
            amap = torch.rand((B, 1, S, S), generator=gen, dtype=torch.float64).to(dtype)
            mask = (torch.rand((B, 1, S, S), generator=gen, dtype=torch.float64) > 0.6).to(dtype)
            check_op(rep, f"relevance_loss {tag} B={B} {S}x{S}", lambda m, s: ops.relevance_loss(m, s, 2.0, 0.3),
                     [amap, mask], [True, True], device, rtol)
            ig = randn(gen, (B, 3, S, S), dtype) * 1e-2
            check_op(rep, f"gradmask_loss {tag} B={B} {S}x{S}", ops.gradmask_loss, [ig, mask], [True, True],
                     device, rtol)
            check_op(rep, f"rrr_loss {tag} B={B} {S}x{S}", ops.rrr_loss, [ig, mask], [True, True], device, rtol)
        for B, C, temperature in ((8, 1000, 0.65), (3, 7, 1.0)):
            logits = randn(gen, (B, C), dtype) * 3
            check_op(rep, f"confidence_loss {tag} B={B} C={C} T={temperature}",
                     lambda x, t=temperature: ops.confidence_loss(x, t), [logits], [True], device, rtol)


def median_ms(fn, device, runs=20, warmup=3):
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for k in range(warmup + runs):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        if k >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def speed(device):
    """gae_relevance vs composite_rollout at ViT-B shapes, float32: forward, and forward + backward to the
    attention (the detached-G training mode). Median of 20 runs."""
    op = torch.ops.robustvit.gae_relevance
    attn, grad = gae_inputs(8, 12, 12, 197, torch.float32, seed=3)
    attn, grad = [a.to(device) for a in attn], [g.to(device) for g in grad]
    up = torch.randn(8, 196, device=device)

    def backward(f):
        leaves = [a.detach().requires_grad_() for a in attn]
        return lambda: torch.autograd.grad(f(leaves, grad, 0), leaves, up)

    with torch.no_grad():
        fwd = (median_ms(lambda: op(attn, grad, 0), device), median_ms(lambda: composite_rollout(attn, grad), device))
    bwd = (median_ms(backward(op), device), median_ms(backward(composite_rollout), device))
    for what, (t_op, t_comp) in (("forward", fwd), ("forward+backward(attn)", bwd)):
        print(f"SPEED gae_relevance B=8 L=12 H=12 T=197 float32 {what} on {device}: op {t_op:.3f} ms, "
              f"composite rollout {t_comp:.3f} ms, composite/op {t_comp / t_op:.2f}x", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lib", help="path of librobustvit_ops.so")
    parser.add_argument("--device", default="cuda", help="device checked against the CPU (default cuda)")
    parser.add_argument("--skip-speed", action="store_true", help="skip the timing section")
    args = parser.parse_args()

    torch.ops.load_library(args.lib)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            sys.exit("gpu_check: CUDA is not available; use --device cpu for a dry run")
        name = torch.cuda.get_device_name(torch.device(args.device))
    else:
        name = "cpu"
    print(f"torch {torch.__version__}, device {args.device} ({name}), library {args.lib}", flush=True)

    rep = Report()
    if args.device.startswith("cuda"):
        ok = all(torch._C._dispatch_has_kernel_for_dispatch_key(f"robustvit::{op}", "CUDA")
                 for op in ("gae_relevance", "_gae_relevance_forward", "_gae_relevance_backward"))
        rep.record(ok, "CUDA kernels registered", "gae_relevance and its backward" if ok else
                   "missing: the library was built without nvcc")
    gae_checks(rep, args.device)
    other_op_checks(rep, args.device)
    if not args.skip_speed:
        try:
            speed(args.device)
        except Exception:  # noqa: BLE001 - timing is informative only; its errors still fail the run
            traceback.print_exc()
            rep.record(False, "speed", "raised")
    print(f"{rep.passed} passed, {rep.failed} failed", flush=True)
    sys.exit(1 if rep.failed else 0)


if __name__ == "__main__":
    main()

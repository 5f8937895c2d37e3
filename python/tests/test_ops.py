"""torch.ops.robustvit.* against plain-PyTorch implementations written here from ../shared/method.md,
torch.library.opcheck, gradcheck/gradgradcheck in float64, TorchScript round trip, and bad-input messages."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import robustvit_ops

ops = torch.ops.robustvit


# ---- reference implementations (method.md sections 1-4), deliberately naive ----

def ref_gae(attn, grad, start_layer=0):
    """Full-matrix rollout: R = I; R += Abar @ R for every block; CLS row without the CLS column."""
    b, _, t, _ = attn[0].shape
    r = torch.eye(t, dtype=attn[0].dtype).expand(b, t, t)
    for a, g in list(zip(attn, grad))[start_layer:]:
        abar = (g * a).clamp(min=0).mean(dim=1)
        r = r + abar @ r
    return r[:, 0, 1:]


def ref_map(rel, gh, gw, oh, ow, eps=1e-8):
    m = F.interpolate(rel.reshape(-1, 1, gh, gw), size=(oh, ow), mode="bilinear", align_corners=False)
    lo = m.amin(dim=(1, 2, 3), keepdim=True)
    hi = m.amax(dim=(1, 2, 3), keepdim=True)
    return (m - lo) / (hi - lo + eps)


def ref_relevance_loss(rmap, mask, lambda_bg=2.0, lambda_fg=0.3):
    bg = F.mse_loss(rmap * (1 - mask), torch.zeros_like(rmap))
    fg = F.mse_loss(rmap * mask, mask)
    return lambda_bg * bg + lambda_fg * fg, bg, fg


def ref_confidence(logits, temperature=1.0):
    return F.cross_entropy(logits / temperature, logits.argmax(dim=1))


def ref_gradmask(g, mask):
    return ((g * (1 - mask)) ** 2).mean()


def ref_rrr(g, mask):
    return ((g * (1 - mask)) ** 2).sum()


# ---- inputs ----

def gae_inputs(b=2, l=3, h=2, t=6, dtype=torch.float64, seed=0, grad_requires=True):
    gen = torch.Generator().manual_seed(seed)
    attn = [torch.randn(b, h, t, t, generator=gen, dtype=dtype).softmax(-1).requires_grad_() for _ in range(l)]
    grad = [torch.randn(b, h, t, t, generator=gen, dtype=dtype).requires_grad_(grad_requires) for _ in range(l)]
    return attn, grad


def rand(*shape, dtype=torch.float64, seed=0, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=gen, dtype=dtype).requires_grad_(requires_grad)


def binary_mask(*shape, dtype=torch.float64, seed=1, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=gen) > 0.5).to(dtype).requires_grad_(requires_grad)


def assert_close(actual, expected, tol):
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=tol, atol=tol)


# ---- forward values ----

@pytest.mark.parametrize("start_layer", [0, 2])
@pytest.mark.parametrize("shape", [(2, 3, 2, 6), (3, 4, 5, 37)])
def test_gae_relevance_matches_full_rollout(shape, start_layer):
    attn, grad = gae_inputs(*shape, dtype=torch.float32)
    torch.testing.assert_close(ops.gae_relevance(attn, grad, start_layer), ref_gae(attn, grad, start_layer),
                               rtol=1e-5, atol=1e-6)


def test_gae_relevance_vit_b_shapes():
    attn, grad = gae_inputs(2, 12, 12, 197, dtype=torch.float32, seed=3)
    torch.testing.assert_close(ops.gae_relevance(attn, grad), ref_gae(attn, grad), rtol=1e-4, atol=1e-6)


def test_gae_relevance_non_contiguous_inputs():
    attn, grad = gae_inputs(2, 2, 3, 7)
    attn_t = [a.detach().transpose(0, 1).contiguous().transpose(0, 1) for a in attn]
    grad_t = [g.detach().transpose(2, 3).contiguous().transpose(2, 3) for g in grad]
    assert not grad_t[0].is_contiguous()
    torch.testing.assert_close(ops.gae_relevance(attn_t, grad_t), ref_gae(attn, grad).detach())


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_gae_relevance_low_precision(dtype, tol):
    """Forward and, with G constant (the kept blocks' path), the gradient to A, against float64."""
    attn, grad = gae_inputs(2, 3, 2, 9, dtype=torch.float64, grad_requires=False)
    expected = ref_gae(attn, grad)
    low = [a.detach().to(dtype).requires_grad_() for a in attn]
    actual = ops.gae_relevance(low, [g.to(dtype) for g in grad])
    assert actual.dtype == dtype
    torch.testing.assert_close(actual.double(), expected.detach(), rtol=tol, atol=tol)
    upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for a, e in zip(torch.autograd.grad(actual, low, upstream.to(dtype)), torch.autograd.grad(expected, attn, upstream)):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), e, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_gae_relevance_empty_batch(device):
    """B == 0 is a valid batch: the relevance is [0,T-1] and the gradients are empty like the inputs."""
    attn, grad = gae_inputs(0, 2, 3, 5)
    attn = [a.detach().to(device).requires_grad_() for a in attn]
    grad = [g.detach().to(device).requires_grad_() for g in grad]
    rel = ops.gae_relevance(attn, grad, 1)
    assert (rel.shape, rel.dtype, rel.device.type) == ((0, 4), torch.float64, device)
    grads = torch.autograd.grad(rel, attn + grad, torch.zeros(0, 4, dtype=torch.float64, device=device))
    assert [(g.shape, g.device.type) for g in grads] == [(x.shape, device) for x in attn + grad]


def test_relevance_map_values():
    rel = rand(3, 16)
    out = ops.relevance_map(rel, 4, 4, 13, 11)
    assert out.shape == (3, 1, 13, 11)
    torch.testing.assert_close(out, ref_map(rel, 4, 4, 13, 11))
    assert out.amin(dim=(1, 2, 3)).abs().max() < 1e-12 and (out.amax(dim=(1, 2, 3)) - 1).abs().max() < 1e-6


def test_relevance_map_constant_input_is_finite():
    out = ops.relevance_map(torch.full((2, 4), 0.7), 2, 2, 4, 4)
    assert torch.isfinite(out).all() and (out == 0).all()


def test_losses_values():
    rmap, mask = rand(2, 1, 5, 5), binary_mask(2, 1, 5, 5)
    assert_close(ops.relevance_loss(rmap, mask, 2.0, 0.3), ref_relevance_loss(rmap, mask), 1e-12)
    assert_close(ops.relevance_loss(rmap, mask, 0.5, 4.0), ref_relevance_loss(rmap, mask, 0.5, 4.0), 1e-12)
    logits = torch.randn(4, 7, dtype=torch.float64)
    for t in (1.0, 0.55):
        torch.testing.assert_close(ops.confidence_loss(logits, t), ref_confidence(logits, t))
    g, m = torch.randn(2, 3, 5, 5, dtype=torch.float64), binary_mask(2, 1, 5, 5)
    torch.testing.assert_close(ops.gradmask_loss(g, m), ref_gradmask(g, m))
    torch.testing.assert_close(ops.rrr_loss(g, m), ref_rrr(g, m))


# ---- gradients against the reference (first and second order) ----

def grads(fn, inputs, upstream_seed=5, create_graph=False):
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    gen = torch.Generator().manual_seed(upstream_seed)
    ups = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]
    wanted = [x for x in inputs if x.requires_grad]
    return torch.autograd.grad(outs, wanted, ups, create_graph=create_graph, allow_unused=True,
                               materialize_grads=True)


def second_order(fn, inputs):
    first = grads(fn, inputs, create_graph=True)
    gen = torch.Generator().manual_seed(9)
    total = sum((g * torch.randn(g.shape, generator=gen, dtype=g.dtype)).sum() for g in first)
    wanted = [x for x in inputs if x.requires_grad]
    return torch.autograd.grad(total, wanted, allow_unused=True, materialize_grads=True)


def gae_fn(impl, l, start_layer):
    return lambda *xs: impl(list(xs[:l]), list(xs[l:]), start_layer)


@pytest.mark.parametrize("grad_requires", [True, False])
@pytest.mark.parametrize("start_layer", [0, 1])
def test_gae_relevance_gradients_match_reference(start_layer, grad_requires):
    attn, grad = gae_inputs(2, 3, 3, 8, dtype=torch.float64, grad_requires=grad_requires)
    inputs = attn + grad
    ours, ref = gae_fn(ops.gae_relevance, 3, start_layer), gae_fn(ref_gae, 3, start_layer)
    assert_close(grads(ours, inputs), grads(ref, inputs), 1e-10)
    assert_close(second_order(ours, inputs), second_order(ref, inputs), 1e-10)


def test_gae_relevance_gradients_vit_b_shapes_float32():
    attn, grad = gae_inputs(1, 12, 12, 197, dtype=torch.float32, seed=4, grad_requires=False)
    assert_close(grads(gae_fn(ops.gae_relevance, 12, 0), attn + grad),
                 grads(gae_fn(ref_gae, 12, 0), attn + grad), 1e-5)


def ref_gae_cls_row(attn, grad, start_layer=0):
    """The CLS row alone (method.md section 1): v = e0; v += v @ Abar from the last block to the first."""
    b, _, t, _ = attn[0].shape
    v = torch.zeros(b, 1, t, dtype=attn[0].dtype)
    v[:, 0, 0] = 1
    for a, g in reversed(list(zip(attn, grad))[start_layer:]):
        v = v + v @ (g * a).clamp(min=0).mean(dim=1)
    return v[:, 0, 1:]


@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nan_inf"])
def test_gae_relevance_gradient_written_by_streaming_stores(nonfinite):
    """Gradients to A of more than 64 MiB in all take the backward that writes them with streaming stores (AVX2,
    whole cache lines staged): odd T so that rows start off cache lines, two blocks, two heads, against autograd
    through the CLS-row composite. Finite, the first block's dA comes from the forward's kept blocks; with NaN
    and Inf in a non-CLS row of the first block, the gradient after the last block is NaN and the backward reads
    A for every block."""
    attn, grad = gae_inputs(1, 2, 2, 2051, dtype=torch.float32, seed=6, grad_requires=False)
    assert sum(a.numel() * a.element_size() for a in attn) >= 64 << 20
    if nonfinite:
        with torch.no_grad():
            grad[0][0, 1, 5, 7] = float("nan")
            grad[0][0, 0, 9, 2040] = float("inf")
    ours = grads(gae_fn(ops.gae_relevance, 2, 0), attn + grad)
    expected = grads(gae_fn(ref_gae_cls_row, 2, 0), attn + grad)
    for a, e in zip(ours, expected):
        assert torch.equal(a.isnan(), e.isnan()) and torch.equal(a.isinf(), e.isinf())
        assert bool(e.isnan().any()) == nonfinite
        finite = e.isfinite()
        torch.testing.assert_close(a[finite], e[finite], rtol=1e-4, atol=1e-9)


# ---- NaN and Inf: the pattern of the reference rollout and its autograd ----

# name: (block, (b, h, i, j) of the non-finite entry, start_layer, value of the partner (G for A, A for G) there).
# B=2, L=3, H=2, T=5; block 2 is the last.
NONFINITE_PLACES = {
    "last_block_cls_row": (2, (1, 0, 0, 3), 0, 1.0),
    "last_block_patch_row": (2, (1, 1, 2, 1), 0, 1.0),
    "last_block_cls_column": (2, (0, 1, 4, 0), 0, 1.0),
    "first_block": (0, (1, 1, 3, 2), 0, 1.0),
    "middle_block": (1, (0, 0, 1, 4), 0, 1.0),
    "middle_block_zero_partner": (1, (0, 1, 3, 3), 0, 0.0),
    # a row of block 1 that the CLS row of block 2 does not reach (made exactly zero below): the rollout still
    # multiplies it, by zero
    "unreached_row": (1, (1, 0, 2, 3), 0, 1.0),
    "start_block": (1, (1, 1, 4, 1), 1, 1.0),
    "only_block_cls_row": (2, (1, 1, 0, 2), 2, 1.0),
    "skipped_block": (0, (1, 0, 0, 1), 1, 1.0),
}


def nonfinite_inputs(place, where, value):
    block, pos, start, partner = NONFINITE_PLACES[place]
    attn, grad = [[x.detach().clone() for x in xs] for xs in gae_inputs(2, 3, 2, 5)]
    if place == "unreached_row":
        grad[2][pos[0], :, 0, pos[2]] = 0  # Abar_2[b, 0, i] = 0: the CLS-row vector is exactly 0 at token i
    target, other = (attn, grad) if where == "attn" else (grad, attn)
    target[block][pos] = value
    other[block][pos] = partner
    return attn, grad, start


def assert_same_pattern(actual, expected, exact_nan):
    """Same non-finite entries (and the same NaN entries where exact_nan), same finite values."""
    assert torch.equal(actual.isfinite(), expected.isfinite()), f"non-finite entries differ:\n{actual}\n{expected}"
    if exact_nan:
        assert torch.equal(actual.isnan(), expected.isnan()), f"NaN entries differ:\n{actual}\n{expected}"
    finite = expected.isfinite()
    torch.testing.assert_close(actual[finite], expected[finite], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("grad_requires", [True, False], ids=["dG", "G_constant"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["attn", "grad"])
@pytest.mark.parametrize("place", NONFINITE_PLACES)
def test_gae_relevance_nonfinite_like_reference(place, where, value, grad_requires):
    """NaN and Inf in A or G give the NaN/Inf pattern of ref_gae's forward and autograd (IEEE: NaN * 0 = NaN and
    Inf * 0 = NaN in its matrix products), through the fused backward and the composite one (create_graph).
    With G constant, the fused backward reads the forward's kept blocks instead of A (but for the last block).
    For Inf, which non-finite entries are Inf and which NaN follows the evaluation order and is not compared."""
    attn, grad, start = nonfinite_inputs(place, where, value)
    exact_nan = value != value
    ours, ref = gae_fn(ops.gae_relevance, 3, start), gae_fn(ref_gae, 3, start)
    inputs = [x.requires_grad_() for x in attn] + [x.requires_grad_(grad_requires) for x in grad]
    assert_same_pattern(ours(*inputs).detach(), ref(*inputs).detach(), exact_nan)
    expected = grads(ref, inputs)
    for create_graph in (False, True):
        for a, e in zip(grads(ours, inputs, create_graph=create_graph), expected):
            assert_same_pattern(a.detach(), e, exact_nan)


def test_gae_relevance_nonfinite_cases_reach_the_output():
    """The placements above are not vacuous: each NaN placement but the skipped block changes the reference's
    forward or gradients to NaN somewhere, and only the CLS-row placements make the forward NaN."""
    for place in NONFINITE_PLACES:
        attn, grad, start = nonfinite_inputs(place, "attn", float("nan"))
        inputs = [x.requires_grad_() for x in attn + grad]
        fn = gae_fn(ref_gae, 3, start)
        fwd_nan = bool(fn(*inputs).isnan().any())
        any_nan = fwd_nan or any(bool(g.isnan().any()) for g in grads(fn, inputs))
        assert any_nan == (place != "skipped_block"), place
        assert fwd_nan == (place not in ("skipped_block", "last_block_patch_row", "last_block_cls_column")), place


OTHER_OPS = {
    "relevance_map": (lambda r: ops.relevance_map(r, 3, 3, 7, 5), lambda r: ref_map(r, 3, 3, 7, 5),
                      lambda: (rand(2, 9),)),
    "relevance_loss": (lambda m, s: ops.relevance_loss(m, s, 2.0, 0.3), ref_relevance_loss,
                       lambda: (rand(2, 1, 4, 4), rand(2, 1, 4, 4, seed=2))),
    "confidence_loss": (lambda x: ops.confidence_loss(x, 0.65), lambda x: ref_confidence(x, 0.65),
                        lambda: (torch.randn(3, 5, dtype=torch.float64).requires_grad_(),)),
    "gradmask_loss": (ops.gradmask_loss, ref_gradmask, lambda: (rand(2, 3, 4, 4), rand(2, 1, 4, 4, seed=2))),
    "rrr_loss": (ops.rrr_loss, ref_rrr, lambda: (rand(2, 3, 4, 4), rand(2, 1, 4, 4, seed=2))),
}


@pytest.mark.parametrize("name", OTHER_OPS)
def test_gradients_match_reference(name):
    ours, ref, make = OTHER_OPS[name]
    inputs = make()
    assert_close(grads(ours, inputs), grads(ref, inputs), 1e-10)
    assert_close(second_order(ours, inputs), second_order(ref, inputs), 1e-10)


@pytest.mark.parametrize("start_layer", [0, 1])
def test_gae_relevance_gradcheck(start_layer):
    # Two layers compose the rollout; gradgradcheck's cost grows with the square of the inputs' size.
    attn, grad = gae_inputs(2, 2, 2, 4)
    fn = gae_fn(ops.gae_relevance, 2, start_layer)
    assert torch.autograd.gradcheck(fn, attn + grad)
    assert torch.autograd.gradgradcheck(fn, attn + grad)


@pytest.mark.parametrize("name", OTHER_OPS)
def test_gradcheck(name):
    ours, _, make = OTHER_OPS[name]
    inputs = make()
    assert torch.autograd.gradcheck(ours, inputs)
    assert torch.autograd.gradgradcheck(ours, inputs)


# ---- opcheck ----

def opcheck_cases():
    attn, grad = gae_inputs(2, 2, 2, 5, dtype=torch.float32)
    attn_d, grad_d = gae_inputs(2, 2, 2, 5, dtype=torch.float32, grad_requires=False)
    f32 = dict(dtype=torch.float32)
    return [
        ("gae", ops.gae_relevance.default, (attn, grad, 0)),
        ("gae_detached_grad", ops.gae_relevance.default, (attn_d, grad_d, 1)),
        ("gae_no_grad", ops.gae_relevance.default, ([a.detach() for a in attn], [g.detach() for g in grad], 0)),
        ("gae_empty_batch", ops.gae_relevance.default, gae_inputs(0, 2, 2, 5, dtype=torch.float32) + (0,)),
        ("gae_forward_keeping_blocks", ops._gae_relevance_forward.default,
         tuple([x.detach() for x in xs] for xs in gae_inputs(2, 3, 2, 5, dtype=torch.float32)) + (0, True)),
        ("map", ops.relevance_map.default, (rand(2, 9, **f32), 3, 3, 6, 6, 1e-8)),
        ("relevance_loss", ops.relevance_loss.default, (rand(2, 1, 4, 4, **f32), binary_mask(2, 1, 4, 4, **f32), 2.0, 0.3)),
        ("confidence", ops.confidence_loss.default, (torch.randn(3, 5).requires_grad_(), 0.55)),
        ("gradmask", ops.gradmask_loss.default, (rand(2, 3, 4, 4, **f32), binary_mask(2, 1, 4, 4, **f32))),
        ("rrr", ops.rrr_loss.default, (rand(2, 3, 4, 4, **f32), rand(2, 1, 4, 4, seed=3, **f32))),
    ]


@pytest.mark.parametrize("case", opcheck_cases(), ids=lambda c: c[0])
def test_opcheck(case):
    _, op, args = case
    torch.library.opcheck(op, args)


# ---- TorchScript ----

SCRIPT_MODULE = textwrap.dedent("""
    import sys, torch
    from typing import List
    sys.path.insert(0, {python_dir!r})
    import robustvit_ops
    robustvit_ops.load({lib!r})

    class Explain(torch.nn.Module):
        def forward(self, attn: List[torch.Tensor], grad: List[torch.Tensor], mask: torch.Tensor,
                    logits: torch.Tensor, input_grad: torch.Tensor) -> List[torch.Tensor]:
            rel = torch.ops.robustvit.gae_relevance(attn, grad, 0)
            rmap = torch.ops.robustvit.relevance_map(rel, 2, 2, 8, 8, 1e-8)
            total, bg, fg = torch.ops.robustvit.relevance_loss(rmap, mask, 2.0, 0.3)
            return [rel, rmap, total, bg, fg, torch.ops.robustvit.confidence_loss(logits, 1.0),
                    torch.ops.robustvit.gradmask_loss(input_grad, mask),
                    torch.ops.robustvit.rrr_loss(input_grad, mask)]
""")


def test_torchscript_save_and_load_in_new_process(tmp_path):
    lib = robustvit_ops.library_path()
    python_dir = str(robustvit_ops.DEFAULT_LIBRARY.parents[2] / "python")
    prelude = SCRIPT_MODULE.format(python_dir=python_dir, lib=str(lib))
    save = prelude + textwrap.dedent(f"""
        torch.manual_seed(0)
        attn = [torch.randn(2, 2, 5, 5).softmax(-1) for _ in range(3)]
        grad = [torch.randn(2, 2, 5, 5) for _ in range(3)]
        inputs = (attn, grad, (torch.rand(2, 1, 8, 8) > 0.5).float(), torch.randn(2, 4), torch.randn(2, 3, 8, 8))
        scripted = torch.jit.script(Explain())
        scripted.save({str(tmp_path / 'explain.pt')!r})
        torch.save((inputs, scripted(*inputs)), {str(tmp_path / 'io.pt')!r})
    """)
    load = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {python_dir!r})
        import robustvit_ops
        robustvit_ops.load({str(lib)!r})
        module = torch.jit.load({str(tmp_path / 'explain.pt')!r})
        inputs, expected = torch.load({str(tmp_path / 'io.pt')!r})
        got = module(*inputs)
        assert len(got) == len(expected) == 8
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e)
        print("roundtrip ok")
    """)
    # TorchScript compiles from source files, so each process runs a script file, not `python -c`.
    (tmp_path / "save.py").write_text(save)
    (tmp_path / "load.py").write_text(load)
    subprocess.run([sys.executable, str(tmp_path / "save.py")], check=True)
    result = subprocess.run([sys.executable, str(tmp_path / "load.py")], check=True, capture_output=True, text=True)
    assert "roundtrip ok" in result.stdout


# ---- bad input ----

def bad_cases():
    attn, grad = gae_inputs(2, 2, 2, 5)

    def sized(b, h, t, device="cpu"):
        return [torch.zeros(b, h, t, t, device=device)] * 2, [torch.zeros(b, h, t, t, device=device)] * 2

    no_heads = (r"argument 'attn\[0\]' needs H >= 1 heads \(the relevance averages over them\), "
                r"got shape \[2, 0, 5, 5\]")
    return [
        ("empty", lambda: ops.gae_relevance([], [], 0), r"gae_relevance: argument 'attn' is an empty list"),
        ("lengths", lambda: ops.gae_relevance(attn, grad[:1], 0), r"'attn' and 'grad' must have one tensor per block"),
        ("rank", lambda: ops.gae_relevance([attn[0][0]], [grad[0][0]], 0), r"'attn\[0\]' must have shape \[B,H,T,T\]"),
        ("shape", lambda: ops.gae_relevance(attn, [grad[0], grad[1][:, :1]], 0),
         r"argument 'grad\[1\]' must have the shape of 'attn\[0\]'"),
        ("dtype", lambda: ops.gae_relevance([a.long() for a in attn], grad, 0), r"'attn\[0\]' must be a floating-point"),
        ("mixed_dtype", lambda: ops.gae_relevance(attn, [g.float() for g in grad], 0), r"'grad\[0\]' has dtype Float"),
        ("start_layer", lambda: ops.gae_relevance(attn, grad, 2), r"'start_layer' must lie in \[0, 2\)"),
        ("no_heads", lambda: ops.gae_relevance(*sized(2, 0, 5), 0), r"robustvit::gae_relevance: " + no_heads),
        ("no_heads_meta", lambda: ops.gae_relevance(*sized(2, 0, 5, "meta"), 0),
         r"robustvit::gae_relevance: " + no_heads),
        ("no_heads_backward", lambda: ops._gae_relevance_backward(torch.zeros(2, 4), *sized(2, 0, 5), 0, True, True),
         r"robustvit::_gae_relevance_backward: " + no_heads),
        ("no_heads_backward_meta",
         lambda: ops._gae_relevance_backward(torch.zeros(2, 4, device="meta"), *sized(2, 0, 5, "meta"), 0, True, True),
         r"robustvit::_gae_relevance_backward: " + no_heads),
        ("one_token", lambda: ops.gae_relevance(*sized(2, 1, 1), 0), r"'attn\[0\]' needs T >= 2 tokens"),
        ("no_tokens_meta", lambda: ops.gae_relevance(*sized(2, 1, 0, "meta"), 0), r"'attn\[0\]' needs T >= 2 tokens"),
        ("map_size", lambda: ops.relevance_map(rand(2, 9), 2, 2, 4, 4, 1e-8), r"relevance_map: argument 'rel' must have shape \[B,4\]"),
        ("map_rank", lambda: ops.relevance_map(rand(9), 3, 3, 4, 4, 1e-8), r"relevance_map: argument 'rel' must have shape \[B,P\]"),
        ("loss_mask", lambda: ops.relevance_loss(rand(2, 1, 4, 4), rand(2, 1, 4, 5), 2.0, 0.3),
         r"relevance_loss: argument 'mask' must have the shape of 'map'"),
        ("loss_int_mask", lambda: ops.relevance_loss(rand(2, 1, 4, 4), torch.ones(2, 1, 4, 4, dtype=torch.uint8), 2.0, 0.3),
         r"relevance_loss: argument 'mask' must be a floating-point"),
        ("confidence_rank", lambda: ops.confidence_loss(rand(5), 1.0), r"confidence_loss: argument 'logits' must have shape \[B,C\]"),
        ("temperature", lambda: ops.confidence_loss(rand(2, 5), 0.0), r"'temperature' must be > 0"),
        ("gradmask_mask", lambda: ops.gradmask_loss(rand(2, 3, 4, 4), rand(2, 3, 4, 4)),
         r"gradmask_loss: argument 'mask' must have shape \[B,1,H,W\] = \[2,1,4,4\]"),
        ("rrr_rank", lambda: ops.rrr_loss(rand(3, 4, 4), rand(1, 4, 4)), r"rrr_loss: argument 'input_grad' must have shape \[B,C,H,W\]"),
    ]


@pytest.mark.parametrize("case", bad_cases(), ids=lambda c: c[0])
def test_bad_input_raises_named_error(case):
    _, call, pattern = case
    with pytest.raises(RuntimeError, match=pattern):
        call()


def test_mixed_devices_are_a_named_error():
    with pytest.raises(RuntimeError, match=r"gae_relevance: argument 'grad\[0\]' is on cpu but 'attn\[0\]' is on meta"):
        ops.gae_relevance([torch.zeros(1, 1, 2, 2, device="meta")], [torch.zeros(1, 1, 2, 2)], 0)


# ---- CUDA registration: whoever builds the library with nvcc sets ROBUSTVIT_EXPECT_CUDA=1 for these ----

@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nan_in_last_block"])
def test_backward_reusing_forward_levels_equals_recomputing_them(nonfinite):
    """The backward given _gae_relevance_forward's levels returns what it returns computing them itself, also when a
    non-CLS row of the last block holds NaN (the forward's levels then differ and are not used)."""
    attn, grad = gae_inputs(2, 4, 3, 7, dtype=torch.float32, grad_requires=False)
    attn, grad = [a.detach() for a in attn], [g.detach() for g in grad]
    if nonfinite:
        grad[-1][1, 2, 3, 4] = float("nan")
    rel, levels, abar, signs = ops._gae_relevance_forward(attn, grad, 1)
    torch.testing.assert_close(rel, ops.gae_relevance(attn, grad, 1), rtol=0, atol=0)
    assert levels.shape == (5, 2, 7) and abar.shape == signs.shape == (0,)
    g = torch.randn(2, 6)
    reused = ops._gae_relevance_backward(g, attn, grad, 1, True, True, levels)
    fresh = ops._gae_relevance_backward(g, attn, grad, 1, True, True)
    for a, b in zip(reused[0] + reused[1], fresh[0] + fresh[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert bool(torch.cat([t.flatten() for t in reused[0]]).isnan().any()) == nonfinite


def unpack_signs(signs, t):
    """[..., W] int32 words -> [..., t] bools, bit j % 32 of word j // 32."""
    bits = (signs.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.flatten(-2)[..., :t].bool()


@pytest.mark.parametrize("nonfinite", [None, "middle_block", "last_block"])
def test_backward_from_kept_blocks_equals_reading_attention(nonfinite):
    """keep_blocks: the forward keeps Abar (the mean over heads of max(G*A, 0)) and the bits [G*A >= 0] of every
    block but the last (NaN: a clear bit, NaN in Abar); the backward of dA given them returns what it returns
    reading A (values up to summation order). With NaN in a block, the gradient after the last block comes out
    NaN and the backward reads A again for every block: the same NaN entries. T = 37: two words of bits per
    row, the second partly used."""
    attn, grad = gae_inputs(2, 4, 3, 37, dtype=torch.float32, seed=3, grad_requires=False)
    attn, grad = [a.detach() for a in attn], [g.detach() for g in grad]
    grad[1][1, 0, 7, 33] = -0.0  # G*A = -0 >= 0: a set bit, as the clamp passes its gradient at 0
    if nonfinite == "middle_block":
        attn[2][0, 1, 4, 35] = float("nan")
    elif nonfinite == "last_block":
        grad[-1][1, 2, 3, 4] = float("nan")
    rel, levels, abar, signs = ops._gae_relevance_forward(attn, grad, 1, True)
    torch.testing.assert_close(rel, ops.gae_relevance(attn, grad, 1), equal_nan=True)
    assert abar.shape == (2, 2, 37, 37) and signs.shape == (2, 2, 3, 37, 2) and signs.dtype == torch.int32
    for k, l in enumerate((1, 2)):  # blocks [start_layer, L-1)
        w = grad[l] * attn[l]
        torch.testing.assert_close(abar[k], w.clamp(min=0).mean(1), rtol=1e-6, atol=1e-7, equal_nan=True)
        assert torch.equal(unpack_signs(signs[k], 37), w >= 0)
    assert bool(unpack_signs(signs[0], 37)[1, 0, 7, 33])
    g = torch.randn(2, 36)
    kept = ops._gae_relevance_backward(g, attn, grad, 1, True, False, levels, abar, signs)[0]
    read = ops._gae_relevance_backward(g, attn, grad, 1, True, False, levels)[0]
    for a, b in zip(kept, read):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, equal_nan=True)
    assert bool(torch.cat([t.flatten() for t in kept]).isnan().any()) == (nonfinite is not None)


def test_backward_rejects_kept_blocks_of_another_shape():
    attn, grad = gae_inputs(2, 3, 2, 5, dtype=torch.float32, grad_requires=False)
    attn, grad = [a.detach() for a in attn], [g.detach() for g in grad]
    _, levels, abar, signs = ops._gae_relevance_forward(attn, grad, 0, True)
    g = torch.zeros(2, 4)
    with pytest.raises(RuntimeError, match=r"arguments 'abar' and 'signs' come together .*got only 'abar'"):
        ops._gae_relevance_backward(g, attn, grad, 0, True, False, levels, abar, None)
    with pytest.raises(RuntimeError, match=r"argument 'abar' must be Float of shape \[L-1-start_layer,B,T,T\] = "
                                           r"\[1,2,5,5\] on cpu, got Float \[2, 2, 5, 5\]"):
        ops._gae_relevance_backward(g, attn, grad, 1, True, False, levels, abar, signs)
    with pytest.raises(RuntimeError, match=r"argument 'signs' must be Int of shape \[L-1-start_layer,B,H,T,W\] = "
                                           r"\[2,2,2,5,1\] on cpu, got Long"):
        ops._gae_relevance_backward(g, attn, grad, 0, True, False, levels, abar, signs.long())


def test_backward_rejects_levels_of_another_shape():
    attn, grad = gae_inputs(2, 3, 2, 5, dtype=torch.float32, grad_requires=False)
    attn, grad = [a.detach() for a in attn], [g.detach() for g in grad]
    with pytest.raises(RuntimeError, match=r"_gae_relevance_backward: argument 'levels' must have shape "
                                           r"\[L\+1,B,T\] = \[4,2,5\], got \[3, 2, 5\]"):
        ops._gae_relevance_backward(torch.zeros(2, 4), attn, grad, 0, True, False, torch.zeros(3, 2, 5))
    with pytest.raises(RuntimeError, match=r"argument 'levels' must be Float on cpu, got Double"):
        ops._gae_relevance_backward(torch.zeros(2, 4), attn, grad, 0, True, False,
                                    torch.zeros(4, 2, 5, dtype=torch.float64))


EXPECT_CUDA = os.environ.get("ROBUSTVIT_EXPECT_CUDA", "0") == "1"


@pytest.mark.parametrize("op", ["robustvit::gae_relevance", "robustvit::_gae_relevance_forward",
                                "robustvit::_gae_relevance_backward"])
def test_cuda_kernels_registered_as_built(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA") == EXPECT_CUDA


@pytest.mark.parametrize("key", ["CUDA", "XPU"])
def test_backend_without_kernel_gets_the_no_kernel_error(key):
    """The dispatch slot of a backend without a gae_relevance kernel holds the CompositeExplicitAutograd catch-all,
    whose error names the device and what the build has. With no GPU here, CPU tensors are redispatched straight
    to that slot."""
    if key == "CUDA" and EXPECT_CUDA:
        pytest.skip("this library has a CUDA kernel")
    blocks = [torch.rand(1, 1, 3, 3)]
    built = "CPU and CUDA" if EXPECT_CUDA else r"CPU only \(rebuild with nvcc for CUDA\)"
    message = rf"robustvit::gae_relevance: no kernel for tensors on cpu; this build has {built}"
    with pytest.raises(RuntimeError, match=message):
        ops.gae_relevance.default.redispatch(torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key)),
                                             blocks, blocks, 0)

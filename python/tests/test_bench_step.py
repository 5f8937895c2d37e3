"""The plain-PyTorch steps that `harness bench-step` times (python/bench/step.py): as the released code runs it
and as it is best written, they compute the same loss terms and gradients, so their times compare one step."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import step as bench  # noqa: E402


def one_step(method, variant):
    torch.manual_seed(0)
    # Four blocks are enough to compose the rollout and the per-block gradient calls of the reference step.
    model = bench.make_model("vit_tiny_patch16_224", fused=variant == "best" and method == "ce", img_size=64,
                             depth=4)
    store = bench.capture_attention(model) if method == "ours" else None
    images, masks, labels = bench.make_batch(model, 2, 0)
    terms = bench.STEPS[(method, variant)](model, store, images, masks, labels)
    terms["total"].backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    return {k: v.detach() for k, v in terms.items()}, grads


@pytest.mark.parametrize("method", ["ours", "gradmask", "rrr", "ce"])
def test_reference_and_best_steps_agree(method):
    (terms_best, grads_best), (terms_ref, grads_ref) = one_step(method, "best"), one_step(method, "reference")
    assert terms_best.keys() == terms_ref.keys()
    for name in terms_best:
        torch.testing.assert_close(terms_best[name], terms_ref[name], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(grads_best, grads_ref, rtol=1e-4, atol=1e-5)

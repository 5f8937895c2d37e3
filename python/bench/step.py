"""One finetuning step in plain PyTorch + timm, timed, for `harness bench-step` to compare against.

Written from ../shared/method.md (sections 1-4), independently of the Rust code. Two versions of each step:

  best       as a PyTorch user would write it well: one forward, the attention gradients of every block in
             one autograd.grad call, only the CLS row of the rollout (v <- v + v Abar), fused AdamW, and
             timm's fused attention where the method never differentiates through the attention (ce).
  reference  as the released reference code runs it: a second forward for the explanation, one
             autograd.grad call per block, the full T x T rollout matrix, AdamW's default implementation.
             The baselines keep the double backpropagation method.md section 4 decides on (the released
             code drops it, which makes their mask terms constants).

    python step.py --model vit_tiny_patch16_224 --method ours|gradmask|rrr|ce --variant best|reference
        [--batch 8] [--warmup 2] [--steps 5] [--seed 0] [--profile N]

Prints one JSON line: the seconds of each timed step and the peak memory, the growth of the process's
resident set (VmHWM, reset before the first step) over its size once the model and batch exist, the same
measure `harness bench-step` takes. --profile N prints torch.profiler's table of the N ops with the most
self CPU time over the timed steps instead (the harness calls the same ATen kernels).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

# The relevance map as the tests' reference steps compute it (method.md section 2).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from finetune_step import relevance_map  # noqa: E402

# The method's settings (method.md section 3; train::paper for the Rust side); the values only weight terms.
LAMBDA_BG, LAMBDA_FG, LAMBDA_REL, LAMBDA_CLS = 2.0, 0.3, 0.8, 0.2
BASELINE_BG, BASELINE_CLS = 1.0, 1.0


def memory_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak():
    # Linux >= 4.0: writing 5 resets VmHWM to the current resident set.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def make_model(name, fused, **overrides):
    model = timm.create_model(name, pretrained=False, num_classes=1000, **overrides)
    for block in model.blocks:
        block.attn.fused_attn = fused
    return model.train()


def make_batch(model, batch, seed):
    g = torch.Generator().manual_seed(seed)
    size = model.patch_embed.img_size[0]
    images = torch.randn(batch, 3, size, size, generator=g)
    masks = torch.zeros(batch, 1, size, size)
    masks[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    labels = torch.randint(0, 1000, (batch,), generator=g)
    return images, masks, labels


def capture_attention(model):
    store = []
    for block in model.blocks:
        block.attn.attn_drop.register_forward_hook(lambda mod, inp, out: store.append(out))
    return store


def ours_terms(logits, rel, images, masks):
    m = relevance_map(rel, images.shape[-1])
    bg = (m * (1 - masks)).pow(2).mean()
    fg = (m * masks - masks).pow(2).mean()
    cls = F.cross_entropy(logits, logits.argmax(1).detach())
    total = LAMBDA_REL * (LAMBDA_BG * bg + LAMBDA_FG * fg) + LAMBDA_CLS * cls
    return dict(total=total, bg=bg, fg=fg, cls=cls)


def abar(grad, attn):
    return (grad * attn).clamp(min=0).mean(dim=1)


def ours_best(model, store, images, masks, labels):
    store.clear()
    logits = model(images)
    score = logits.gather(1, labels[:, None]).sum()
    grads = torch.autograd.grad(score, list(store), retain_graph=True)
    b, t = images.shape[0], store[0].shape[-1]
    v = torch.zeros(b, 1, t)
    v[:, 0, 0] = 1
    for g, a in zip(reversed(grads), reversed(store)):
        v = v + v @ abar(g, a)
    return ours_terms(logits, v[:, 0, 1:], images, masks)


def ours_reference(model, store, images, masks, labels):
    logits = model(images)
    store.clear()
    explained = model(images)  # the reference explains with a forward of its own
    score = explained.gather(1, labels[:, None]).sum()
    b, t = images.shape[0], store[0].shape[-1]
    r = torch.eye(t).expand(b, t, t)
    for a in store:
        g = torch.autograd.grad(score, [a], retain_graph=True)[0]
        r = r + abar(g, a) @ r
    return ours_terms(logits, r[:, 0, 1:], images, masks)


def input_gradient(method, second_forward):
    def terms(model, store, images, masks, labels):
        x = images.clone().requires_grad_()
        logits = model(x)
        y = logits.gather(1, labels[:, None]).sum() if method == "gradmask" else logits.log_softmax(1).sum()
        g = torch.autograd.grad(y, x, create_graph=True)[0]
        penalty = (g * (1 - masks)).pow(2)
        mask = penalty.mean() if method == "gradmask" else penalty.sum()
        ce = F.cross_entropy(model(images) if second_forward else logits, labels)
        return dict(total=BASELINE_BG * mask + BASELINE_CLS * ce, mask=mask, ce=ce)

    return terms


def ce_terms(model, store, images, masks, labels):
    return dict(total=F.cross_entropy(model(images), labels))


STEPS = {
    ("ours", "best"): ours_best,
    ("ours", "reference"): ours_reference,
    ("gradmask", "best"): input_gradient("gradmask", False),
    ("gradmask", "reference"): input_gradient("gradmask", True),
    ("rrr", "best"): input_gradient("rrr", False),
    ("rrr", "reference"): input_gradient("rrr", True),
    ("ce", "best"): ce_terms,
    ("ce", "reference"): ce_terms,
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--method", required=True, choices=["ours", "gradmask", "rrr", "ce"])
    p.add_argument("--variant", required=True, choices=["best", "reference"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", type=int, metavar="N", help="print the N ops with the most self CPU time")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    best = args.variant == "best"
    model = make_model(args.model, fused=best and args.method == "ce")
    store = capture_attention(model) if args.method == "ours" else None
    images, masks, labels = make_batch(model, args.batch, args.seed)
    step = STEPS[(args.method, args.variant)]
    base_kb = memory_kb("VmRSS")
    reset_peak()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-4, fused=True if best else None)
    seconds = []
    profiler = None
    for k in range(args.warmup + args.steps):
        if k == args.warmup and args.profile:
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            profiler.__enter__()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        terms = step(model, store, images, masks, labels)
        terms["total"].backward()
        opt.step()
        del terms
        if k >= args.warmup:
            seconds.append(time.perf_counter() - start)
    peak_mb = (memory_kb("VmHWM") - base_kb) / 1024
    if profiler is not None:
        profiler.__exit__(None, None, None)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))
    print(json.dumps(dict(variant=args.variant, model=args.model, method=args.method, batch=args.batch,
                          seconds=seconds, peak_mb=peak_mb, threads=torch.get_num_threads())))


if __name__ == "__main__":
    main()

// Shared by the gae_relevance kernels (CPU, CUDA, Meta): argument checks, dimensions, and the tensors the
// kernels read and write, so the backends differ only in their loops.
#pragma once

#include "checks.h"
#include "ops.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/macros/Macros.h>

#include <limits>
#include <optional>
#include <string>
#include <vector>

// NaN and Inf in A or G come out where the full-matrix rollout of method.md section 1 (R = I; R += Abar R;
// CLS row of R; python/tests/test_ops.py: ref_gae) and its autograd put them. Their products multiply every
// entry, zeros included, and IEEE gives NaN * 0 = Inf * 0 = NaN, so the kernels skip no entry for being
// multiplied by zero, with two consequences for the CLS-row vector v:
//  - forward: the rollout's CLS row meets only the CLS row of the last block, so the first step (from e0) reads
//    that row alone; a non-finite entry of any block before the last fills a row of R and, one block later,
//    all of R, so a sample whose final v has any non-finite entry is NaN throughout (relevance_from_levels).
//  - backward: the rollout's gradient multiplies every row of the last block by the zero rows of its upstream
//    gradient, so the backward's levels read every row of every block.
// Which non-finite outputs are Inf and which NaN follows the evaluation order, so for Inf inputs it can differ
// from the rollout's; CPU and CUDA share the order.

namespace robustvit {

// max(w, 0) keeping NaN, like torch's clamp(min=0) (fmax would drop it). Host and device.
template <typename T>
C10_HOST_DEVICE inline T clamp_min0(T w) {
  return w < T(0) ? T(0) : w;
}

// Validates the per-block attention and gradient lists of gae_relevance: L >= 1 blocks, each [B,H,T,T]
// with one shape, dtype and device throughout, H >= 1, T >= 2, and 0 <= start_layer < L. B == 0 is valid
// (an empty batch has the empty relevance [0,T-1]); H == 0 is not, since Abar is the mean over the heads.
inline void check_gae_inputs(const char* op, at::TensorList attn, at::TensorList grad, int64_t start_layer) {
  TORCH_CHECK(!attn.empty(), "robustvit::", op,
              ": argument 'attn' is an empty list; expected one [B,H,T,T] attention tensor per block");
  TORCH_CHECK(attn.size() == grad.size(), "robustvit::", op, ": arguments 'attn' and 'grad' must have one tensor "
              "per block each, got ", attn.size(), " and ", grad.size());
  const at::Tensor& ref = attn[0];
  check_float(op, "attn[0]", ref);
  check_rank(op, "attn[0]", ref, 4, "[B,H,T,T]");
  TORCH_CHECK(ref.sym_size(2) == ref.sym_size(3), "robustvit::", op,
              ": argument 'attn[0]' must have shape [B,H,T,T] (square in the last two dims), got ",
              ref.sym_sizes());
  TORCH_CHECK(ref.sym_size(1) >= 1, "robustvit::", op,
              ": argument 'attn[0]' needs H >= 1 heads (the relevance averages over them), got shape ",
              ref.sym_sizes());
  TORCH_CHECK(ref.sym_size(3) >= 2, "robustvit::", op,
              ": argument 'attn[0]' needs T >= 2 tokens (CLS plus patches), got shape ", ref.sym_sizes());
  for (size_t l = 0; l < attn.size(); ++l) {
    const std::string a = "attn[" + std::to_string(l) + "]";
    const std::string g = "grad[" + std::to_string(l) + "]";
    check_float(op, a.c_str(), attn[l]);
    check_float(op, g.c_str(), grad[l]);
    check_same_shape(op, a.c_str(), attn[l], "attn[0]", ref);
    check_same_shape(op, g.c_str(), grad[l], "attn[0]", ref);
    check_same_device_dtype(op, a.c_str(), attn[l], "attn[0]", ref);
    check_same_device_dtype(op, g.c_str(), grad[l], "attn[0]", ref);
  }
  TORCH_CHECK(start_layer >= 0 && start_layer < static_cast<int64_t>(attn.size()), "robustvit::", op,
              ": argument 'start_layer' must lie in [0, ", attn.size(), "), got ", start_layer);
}

// The upstream gradient of gae_relevance's backward: [B,T-1] for attention [B,H,T,T].
inline void check_gae_backward_grad(const at::Tensor& grad_rel, const at::Tensor& attn0) {
  TORCH_CHECK(grad_rel.dim() == 2 && grad_rel.sym_size(0) == attn0.sym_size(0) &&
                  grad_rel.sym_size(1) == attn0.sym_size(3) - 1,
              "robustvit::_gae_relevance_backward: argument 'grad_rel' must have shape [B,T-1] = [",
              attn0.sym_size(0), ",", attn0.sym_size(3) - 1, "], got ", grad_rel.sym_sizes());
}

// Words of the sign bits of one row of T entries (KeptBlocks); T an int64_t or a SymInt.
template <typename Int>
Int sign_words(const Int& T) {
  return (T + 31) / 32;
}

// The forward's levels handed to _gae_relevance_backward: [L+1,B,T] in the accumulation dtype, on attn's device.
inline void check_gae_levels(const std::optional<at::Tensor>& levels, at::TensorList attn) {
  if (!levels.has_value() || !levels->defined()) return;
  const at::Tensor& a = attn[0];
  const auto acc = at::toOpMathType(a.scalar_type());
  TORCH_CHECK(levels->dim() == 3 && levels->sym_size(0) == static_cast<int64_t>(attn.size()) + 1 &&
                  levels->sym_size(1) == a.sym_size(0) && levels->sym_size(2) == a.sym_size(3),
              "robustvit::_gae_relevance_backward: argument 'levels' must have shape [L+1,B,T] = [", attn.size() + 1,
              ",", a.sym_size(0), ",", a.sym_size(3), "], got ", levels->sym_sizes());
  TORCH_CHECK(levels->scalar_type() == acc && levels->device() == a.device(),
              "robustvit::_gae_relevance_backward: argument 'levels' must be ", acc, " on ", a.device(), ", got ",
              levels->scalar_type(), " on ", levels->device());
}

// What the forward keeps, when asked (CPU kernels), so that the backward of the blocks [start_layer, L-1) reads
// G without A: n = L-1-start_layer blocks of Abar [n,B,T,T] (accumulation dtype) and the bits [G*A >= 0]
// [n,B,H,T,W] (int32 words, W = sign_words(T), bit j%32 of word j/32 for column j). The last block is left out:
// its forward step reads the CLS row alone, and its backward reads A and G as before.
struct KeptBlocks {
  at::Tensor abar, signs;
  bool defined() const { return abar.defined() && abar.numel() > 0; }
};

// The kept blocks handed to _gae_relevance_backward: both or neither, of the forward's shapes.
inline void check_gae_kept(const std::optional<at::Tensor>& abar, const std::optional<at::Tensor>& signs,
                           at::TensorList attn, int64_t start_layer) {
  const bool has_abar = abar.has_value() && abar->defined(), has_signs = signs.has_value() && signs->defined();
  TORCH_CHECK(has_abar == has_signs, "robustvit::_gae_relevance_backward: arguments 'abar' and 'signs' come "
              "together (from _gae_relevance_forward with keep_blocks=True), got only '", has_abar ? "abar" : "signs",
              "'");
  if (!has_abar) return;
  const at::Tensor& a = attn[0];
  const int64_t n = static_cast<int64_t>(attn.size()) - 1 - start_layer;
  const auto acc = at::toOpMathType(a.scalar_type());
  TORCH_CHECK(abar->dim() == 4 && abar->sym_size(0) == n && abar->sym_size(1) == a.sym_size(0) &&
                  abar->sym_size(2) == a.sym_size(3) && abar->sym_size(3) == a.sym_size(3) &&
                  abar->scalar_type() == acc && abar->device() == a.device(),
              "robustvit::_gae_relevance_backward: argument 'abar' must be ", acc, " of shape [L-1-start_layer,B,T,T] "
              "= [", n, ",", a.sym_size(0), ",", a.sym_size(3), ",", a.sym_size(3), "] on ", a.device(), ", got ",
              abar->scalar_type(), " ", abar->sym_sizes(), " on ", abar->device());
  TORCH_CHECK(signs->dim() == 5 && signs->sym_size(0) == n && signs->sym_size(1) == a.sym_size(0) &&
                  signs->sym_size(2) == a.sym_size(1) && signs->sym_size(3) == a.sym_size(3) &&
                  signs->sym_size(4) == sign_words(a.sym_size(3)) && signs->scalar_type() == at::kInt &&
                  signs->device() == a.device(),
              "robustvit::_gae_relevance_backward: argument 'signs' must be Int of shape [L-1-start_layer,B,H,T,W] = [",
              n, ",", a.sym_size(0), ",", a.sym_size(1), ",", a.sym_size(3), ",", sign_words(a.sym_size(3)), "] on ",
              a.device(), ", got ", signs->scalar_type(), " ", signs->sym_sizes(), " on ", signs->device());
}

struct GaeDims {
  int64_t B, H, T;
  // Set by the backward when its outputs together outgrow a last-level cache, so that nothing gains from
  // finding them there afterwards: the CPU kernels may then write them with streaming stores.
  bool stream_outputs = false;
  explicit GaeDims(const at::Tensor& attn0) : B(attn0.size(0)), H(attn0.size(1)), T(attn0.size(2)) {}
};

// Outputs of at least this many bytes in all count as outgrowing a last-level cache (32 MiB on the EPYC
// machines measured in docs/performance.md).
constexpr int64_t kStreamOutputBytes = int64_t(64) << 20;

inline std::vector<at::Tensor> contiguous(at::TensorList ts) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const auto& t : ts) out.push_back(t.contiguous());
  return out;
}

// The relevance [B,T-1] from the CLS-row vector levels[start_layer] (accumulation dtype), as a fresh
// contiguous tensor of the inputs' dtype (never a view, so metadata matches the Meta kernel). Samples with a
// non-finite entry anywhere in the vector, the CLS column included, are all NaN (see the top of this file).
inline at::Tensor relevance_from_levels(const at::Tensor& levels, int64_t start_layer, const at::Tensor& attn0) {
  const at::Tensor row = levels[start_layer];
  const at::Tensor poisoned = row.isfinite().all(1, /*keepdim=*/true).logical_not();
  at::Tensor rel = at::empty({row.size(0), row.size(1) - 1}, attn0.options());
  rel.copy_(row.narrow(1, 1, row.size(1) - 1).masked_fill(poisoned, std::numeric_limits<double>::quiet_NaN()));
  return rel;
}

// The gradient reaching the CLS-row vector after the last block: [0, grad_rel] in the accumulation dtype.
inline at::Tensor initial_row_grad(const at::Tensor& grad_rel, const at::TensorOptions& acc_opts) {
  at::Tensor g = at::zeros({grad_rel.size(0), grad_rel.size(1) + 1}, acc_opts);
  g.narrow(1, 1, grad_rel.size(1)).copy_(grad_rel);
  return g;
}

// Output gradients for one list (attn or grad): empty when not needed; zeros for the blocks before
// start_layer; uninitialised for the others, which the kernels write in full.
inline std::vector<at::Tensor> block_grads(const std::vector<at::Tensor>& like, int64_t start_layer, bool needed) {
  std::vector<at::Tensor> out;
  if (!needed) return out;
  for (size_t l = 0; l < like.size(); ++l) {
    out.push_back(static_cast<int64_t>(l) < start_layer ? at::zeros_like(like[l], at::MemoryFormat::Contiguous)
                                                        : at::empty_like(like[l], at::MemoryFormat::Contiguous));
  }
  return out;
}

// ---- Host-side drivers shared by the CPU and CUDA backends. `Kernels<scalar_t, acc_t>` supplies the loops:
//   static void row_step(const scalar_t* A, const scalar_t* G, const acc_t* v_in, acc_t* v_out, int64_t rows,
//                        const GaeDims&)
//     v_out[b,:] = v_in[b,:] (I + Abar) for one block, Abar = mean_h(clamp_min0(G*A)), reading the rows [0, rows)
//     of Abar only (v_in is zero in the others)
//   static void backward_block(const scalar_t* A, const scalar_t* G, const acc_t* v, const acc_t* g,
//                              acc_t* g_next, scalar_t* dA, scalar_t* dG, const GaeDims&)
//     one block of the backward (formulas at CpuKernels in relevance.cpp); dA / dG may be null.
//   static constexpr bool kKeepsBlocks
//     whether the backend keeps blocks (KeptBlocks); if so, also
//   static void row_step_keeping(const scalar_t* A, const scalar_t* G, const acc_t* v_in, acc_t* v_out,
//                                acc_t* abar, int32_t* signs, const GaeDims&)
//     row_step over every row, writing the block's Abar and sign bits
//   static void backward_block_kept(const scalar_t* G, const int32_t* signs, const acc_t* abar, const acc_t* v,
//                                   const acc_t* g, acc_t* g_next, scalar_t* dA, const GaeDims&)
//     backward_block for dA alone, from G, the sign bits and Abar
// Inputs are contiguous and validated by the caller.

// levels[l] = e0^T (I + Abar_{L-1}) ... (I + Abar_l) for l in [stop, L]; levels[L] = e0. cls_first: the step
// from e0 reads the CLS row of block L-1 alone (the forward; the backward reads all rows, see the top of this file).
// keep: defined KeptBlocks for the blocks [stop, L-1) to fill, or null.
template <template <typename, typename> class Kernels, typename scalar_t, typename acc_t>
at::Tensor cls_row_levels(const std::vector<at::Tensor>& A, const std::vector<at::Tensor>& G, int64_t stop,
                          bool cls_first, const GaeDims& d, const at::TensorOptions& acc_opts,
                          const KeptBlocks* keep = nullptr) {
  using K = Kernels<scalar_t, acc_t>;
  const int64_t L = static_cast<int64_t>(A.size());
  at::Tensor levels = at::zeros({L + 1, d.B, d.T}, acc_opts);
  levels[L].select(1, 0).fill_(1);
  for (int64_t l = L - 1; l >= stop; --l) {
    const scalar_t* a = A[l].data_ptr<scalar_t>();
    const scalar_t* g = G[l].data_ptr<scalar_t>();
    acc_t* v_in = levels[l + 1].data_ptr<acc_t>();
    acc_t* v_out = levels[l].data_ptr<acc_t>();
    if constexpr (K::kKeepsBlocks) {
      if (keep != nullptr && l < L - 1) {
        K::row_step_keeping(a, g, v_in, v_out, keep->abar[l - stop].data_ptr<acc_t>(),
                            keep->signs[l - stop].data_ptr<int32_t>(), d);
        continue;
      }
    }
    K::row_step(a, g, v_in, v_out, cls_first && l == L - 1 ? 1 : d.T, d);
  }
  return levels;
}

template <typename scalar_t>
at::TensorOptions accumulation_options(const at::Tensor& like) {
  return like.options().dtype(c10::CppTypeToScalarType<at::opmath_type<scalar_t>>::value);
}

// The uninitialised KeptBlocks of shapes [n,B,T,T] and [n,B,H,T,W] (keep), or [0] each (not kept); the Meta
// kernel's too, hence symbolic sizes.
inline KeptBlocks kept_blocks(const at::Tensor& attn0, int64_t blocks, int64_t start_layer, bool keep) {
  const auto acc_opts = attn0.options().dtype(at::toOpMathType(attn0.scalar_type()));
  const auto sign_opts = attn0.options().dtype(at::kInt);
  if (!keep) return {at::empty({0}, acc_opts), at::empty({0}, sign_opts)};
  const c10::SymInt n = blocks - 1 - start_layer, B = attn0.sym_size(0), H = attn0.sym_size(1), T = attn0.sym_size(3);
  return {at::empty_symint({n, B, T, T}, acc_opts), at::empty_symint({n, B, H, T, sign_words(T)}, sign_opts)};
}

// The relevance, the forward's levels [L+1,B,T] (accumulation dtype), which the backward reuses, and the kept
// blocks (keep_blocks; backends with kKeepsBlocks only).
template <template <typename, typename> class Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gae_forward(const std::vector<at::Tensor>& A,
                                                                       const std::vector<at::Tensor>& G,
                                                                       int64_t start_layer, bool keep_blocks) {
  const GaeDims d(A[0]);
  at::Tensor rel, levels;
  const KeptBlocks kept = kept_blocks(A[0], static_cast<int64_t>(A.size()), start_layer, keep_blocks);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, A[0].scalar_type(), "gae_relevance", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_opts = accumulation_options<scalar_t>(A[0]);
    if (d.B == 0) {  // CUDA rejects empty grids
      rel = at::empty({0, d.T - 1}, A[0].options());
      levels = at::zeros({static_cast<int64_t>(A.size()) + 1, 0, d.T}, acc_opts);
      return;
    }
    levels = cls_row_levels<Kernels, scalar_t, acc_t>(A, G, start_layer, true, d, acc_opts,
                                                      kept.defined() ? &kept : nullptr);
    rel = relevance_from_levels(levels, start_layer, A[0]);
  });
  return {rel, levels, kept.abar, kept.signs};
}

// `saved_levels`: the forward's levels (gae_forward), or none to compute them here. `kept`: the forward's kept
// blocks, or empty; used for dA alone (dG needs A), and not by the rerun below.
//
// The backward reads levels[l] for l > start_layer over every row of every block (see the top of this file).
// The forward's saved levels differ from those only at level L-1, whose forward step read the CLS row of block
// L-1 alone, and only where another row of that block holds a non-finite max(G*A, 0) (finite rows add exact
// zeros). Such an entry makes its row's part of the gradient after block L-1 non-finite, and the backward
// computes that block last: so the saved levels serve unless that gradient comes out non-finite outside the
// CLS column, and then the backward runs again with levels over every row. Each block is read once otherwise.
template <template <typename, typename> class Kernels>
TensorLists gae_backward(const at::Tensor& grad_rel, const std::vector<at::Tensor>& A,
                         const std::vector<at::Tensor>& G, int64_t start_layer, bool attn_needs_grad,
                         bool grad_needs_grad, const std::optional<at::Tensor>& saved_levels,
                         const KeptBlocks& kept = {}) {
  GaeDims d(A[0]);
  std::vector<at::Tensor> dA = block_grads(A, start_layer, attn_needs_grad);
  std::vector<at::Tensor> dG = block_grads(G, start_layer, grad_needs_grad);
  const int64_t outputs = static_cast<int64_t>(A.size() - start_layer) * (attn_needs_grad + grad_needs_grad);
  d.stream_outputs = outputs * A[0].numel() * A[0].element_size() >= kStreamOutputBytes;
  if (d.B == 0) return {dA, dG};  // nothing to write (and CUDA rejects empty grids)
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, A[0].scalar_type(), "_gae_relevance_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_opts = accumulation_options<scalar_t>(A[0]);
    using K = Kernels<scalar_t, acc_t>;
    // Returns the gradient reaching the row vector after the last block.
    const auto run = [&](const at::Tensor& levels, bool use_kept) {
      at::Tensor g = initial_row_grad(grad_rel, acc_opts);
      at::Tensor g_next = at::empty_like(g);
      for (size_t l = start_layer; l < A.size(); ++l) {
        if constexpr (K::kKeepsBlocks) {
          if (use_kept && l + 1 < A.size()) {
            const int64_t k = static_cast<int64_t>(l) - start_layer;
            K::backward_block_kept(G[l].data_ptr<scalar_t>(), kept.signs[k].data_ptr<int32_t>(),
                                   kept.abar[k].data_ptr<acc_t>(), levels[l + 1].data_ptr<acc_t>(),
                                   g.data_ptr<acc_t>(), g_next.data_ptr<acc_t>(), dA[l].data_ptr<scalar_t>(), d);
            std::swap(g, g_next);
            continue;
          }
        }
        K::backward_block(A[l].data_ptr<scalar_t>(), G[l].data_ptr<scalar_t>(), levels[l + 1].data_ptr<acc_t>(),
                          g.data_ptr<acc_t>(), g_next.data_ptr<acc_t>(),
                          attn_needs_grad ? dA[l].data_ptr<scalar_t>() : nullptr,
                          grad_needs_grad ? dG[l].data_ptr<scalar_t>() : nullptr, d);
        std::swap(g, g_next);
      }
      return g;
    };
    const auto every_row = [&] {
      return cls_row_levels<Kernels, scalar_t, acc_t>(A, G, start_layer + 1, false, d, acc_opts);
    };
    if (!saved_levels.has_value() || !saved_levels->defined()) {
      run(every_row(), false);
      return;
    }
    const bool use_kept = kept.defined() && attn_needs_grad && !grad_needs_grad;
    const at::Tensor g_last = run(saved_levels->contiguous(), use_kept);
    const int64_t L = static_cast<int64_t>(A.size());
    if (L - 1 > start_layer && !g_last.narrow(1, 1, d.T - 1).isfinite().all().item<bool>()) run(every_row(), false);
  });
  return {dA, dG};
}

}  // namespace robustvit

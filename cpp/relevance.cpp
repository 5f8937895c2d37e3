// GAE relevance of the CLS token (method.md section 1): CPU kernels, Meta kernels and the Autograd kernel.
//
//   Abar_l = mean_h(clamp(G_l * A_l, min=0)),  rel = e0^T (I + Abar_{L-1}) ... (I + Abar_s), columns 1..T-1
//
// Only the CLS row is carried: v <- v + v Abar_l from the last block to the first, O(L H T^2). Abar is never
// materialised; each kernel reads A and G once per block.
#include "ops.h"
#include "gae_kernels.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

// Function versions for the vector widths of x86-64 CPUs, picked when the library loads (GCC and Clang).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ROBUSTVIT_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ROBUSTVIT_VECTOR_CLONES
#endif

namespace robustvit {
namespace {

// The CPU loops of the drivers in gae_kernels.h.
template <typename scalar_t, typename acc_t>
struct CpuKernels {
  // v_out[b,j] = v_in[b,j] + (1/H) sum_{h, i < rows} v_in[b,i] * max(G*A, 0)[b,h,i,j]
  // One task per (b,h) streams its [rows,T] slices row by row into partial[b,h,:]; the heads are summed after.
  // Inner loops are branch-free and contiguous so they vectorise (the sign of G*A is random).
  static void row_step(const scalar_t* A, const scalar_t* G, const acc_t* v_in, acc_t* v_out, int64_t rows,
                       const GaeDims& d) {
    std::vector<acc_t> partial(d.B * d.H * d.T, acc_t(0));
    at::parallel_for(0, d.B * d.H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
        row_task(A + bh * d.T * d.T, G + bh * d.T * d.T, v_in + (bh / d.H) * d.T, partial.data() + bh * d.T, rows,
                 d.T);
      }
    });
    for (int64_t b = 0; b < d.B; ++b) {
      for (int64_t j = 0; j < d.T; ++j) {
        acc_t sum = 0;
        for (int64_t h = 0; h < d.H; ++h) sum += partial[(b * d.H + h) * d.T + j];
        v_out[b * d.T + j] = v_in[b * d.T + j] + sum / acc_t(d.H);
      }
    }
  }

  // p[j] += sum_{i < rows} v[i] * max(G*A, 0)[i,j] over one (b,h)'s [T,T] slices.
  ROBUSTVIT_VECTOR_CLONES static void row_task(const scalar_t* A, const scalar_t* G, const acc_t* v, acc_t* p,
                                               int64_t rows, int64_t T) {
    for (int64_t i = 0; i < rows; ++i) {
      const acc_t vi = v[i];
      const scalar_t* __restrict__ a = A + i * T;
      const scalar_t* __restrict__ g = G + i * T;
      acc_t* __restrict__ out = p;
      for (int64_t j = 0; j < T; ++j) out[j] += vi * clamp_min0(acc_t(g[j]) * acc_t(a[j]));
    }
  }

  // One block of the backward pass, fused over A and G. With v = levels[l+1] and g the gradient reaching
  // the row vector after block l:
  //   dA[b,h,i,j] = [G*A >= 0] * G * v_i * g_j / H,  dG likewise with A   (clamp passes the gradient at 0)
  //   g_next[b,i] = g_i + (1/H) sum_{h,j} max(G*A, 0)[b,h,i,j] g_j         (g (I + Abar)^T)
  // The head-summed row max(G*A, 0)[b,:,i,:] is gathered first, so g_next needs one dot product of
  // length T per row rather than a reduction over H*T (which the compiler cannot vectorise).
  static void backward_block(const scalar_t* A, const scalar_t* G, const acc_t* v, const acc_t* g, acc_t* g_next,
                             scalar_t* dA, scalar_t* dG, const GaeDims& d) {
    if (dA && dG) return backward_rows<true, true>(A, G, v, g, g_next, dA, dG, d);
    if (dA) return backward_rows<true, false>(A, G, v, g, g_next, dA, dG, d);
    if (dG) return backward_rows<false, true>(A, G, v, g, g_next, dA, dG, d);
    backward_rows<false, false>(A, G, v, g, g_next, dA, dG, d);
  }

  // backward_block for the outputs asked for: one loop per combination, with restrict-qualified rows and no
  // conditional load, so that the compiler vectorises it (with build.rs's -fno-trapping-math).
  template <bool kWriteA, bool kWriteG>
  static void backward_rows(const scalar_t* A, const scalar_t* G, const acc_t* v, const acc_t* g, acc_t* g_next,
                            scalar_t* dA, scalar_t* dG, const GaeDims& d) {
    // Tasks of kRows consecutive rows i of one sample, head by head: each head's rows are contiguous, so A, G
    // and dA stream in three runs at a time (the heads of one row at a time made 3H strided streams, more than
    // the prefetcher follows). The head sums of max(G*A, 0) for the task's rows stay in L1 for g_next.
    const int64_t chunks = (d.T + kRows - 1) / kRows;
    at::parallel_for(0, d.B * chunks, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> abar_rows(kRows * d.T);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / chunks, i0 = (task % chunks) * kRows;
        backward_task<kWriteA, kWriteG>(A, G, v, g, g_next, dA, dG, d, b, i0, abar_rows.data());
      }
    });
  }

  static constexpr int64_t kRows = 16;

  // Rows [i0, i0 + kRows) of sample b (fewer at the end), every head. Built for AVX-512 and AVX2 too, chosen
  // at load time by the CPU (the rest of the build targets the x86-64 baseline, SSE2).
  template <bool kWriteA, bool kWriteG>
  ROBUSTVIT_VECTOR_CLONES static void backward_task(const scalar_t* A, const scalar_t* G, const acc_t* v,
                                                    const acc_t* g, acc_t* g_next, scalar_t* dA, scalar_t* dG,
                                                    const GaeDims& d, int64_t b, int64_t i0, acc_t* abar_rows) {
    const acc_t inv_h = acc_t(1) / acc_t(d.H);
    const int64_t rows = std::min(kRows, d.T - i0);
    const acc_t* __restrict__ gb = g + b * d.T;
    std::fill(abar_rows, abar_rows + kRows * d.T, acc_t(0));
    for (int64_t h = 0; h < d.H; ++h) {
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r, row = ((b * d.H + h) * d.T + i) * d.T;
        const acc_t vi = v[b * d.T + i] * inv_h;
        const scalar_t* __restrict__ a = A + row;
        const scalar_t* __restrict__ gg = G + row;
        scalar_t* __restrict__ da = kWriteA ? dA + row : nullptr;
        scalar_t* __restrict__ dg = kWriteG ? dG + row : nullptr;
        acc_t* __restrict__ abar = abar_rows + r * d.T;
        for (int64_t j = 0; j < d.T; ++j) {
          const acc_t av = acc_t(a[j]), gv = acc_t(gg[j]);
          const acc_t w = gv * av;
          // Both sides computed unconditionally so that the select becomes a blend.
          const acc_t upstream = vi * gb[j];
          const acc_t pass = w >= acc_t(0) ? upstream : acc_t(0);
          if constexpr (kWriteA) da[j] = scalar_t(pass * gv);
          if constexpr (kWriteG) dg[j] = scalar_t(pass * av);
          abar[j] += clamp_min0(w);
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const acc_t* __restrict__ abar = abar_rows + r * d.T;
      acc_t acc = 0;
      for (int64_t j = 0; j < d.T; ++j) acc += abar[j] * gb[j];
      g_next[b * d.T + i0 + r] = gb[i0 + r] + acc * inv_h;
    }
  }
};

// The backward written with differentiable ATen ops, used when autograd records the backward itself
// (create_graph=True), so that double backward works. Same formulas as backward_block.
TensorLists backward_composite(const at::Tensor& grad_rel, const std::vector<at::Tensor>& A,
                               const std::vector<at::Tensor>& G, int64_t start, bool need_a, bool need_g) {
  const int64_t L = static_cast<int64_t>(A.size());
  const c10::SymInt H = A[0].sym_size(1);
  std::vector<at::Tensor> abar(L);
  for (int64_t l = start; l < L; ++l) abar[l] = (G[l] * A[l]).clamp_min(0).mean(1);
  // levels[l] as in cls_row_levels (gae_kernels.h); levels[L] = e0.
  std::vector<at::Tensor> levels(L + 1);
  levels[L] = at::zeros_like(A[0].select(1, 0).select(1, 0));
  levels[L].select(1, 0).fill_(1);
  for (int64_t l = L - 1; l > start; --l) levels[l] = levels[l + 1] + at::bmm(levels[l + 1].unsqueeze(1), abar[l]).squeeze(1);
  at::Tensor g = at::cat({at::zeros_like(grad_rel.narrow(1, 0, 1)), grad_rel}, 1);
  std::vector<at::Tensor> dA, dG;
  for (int64_t l = 0; l < L; ++l) {
    if (l < start) {
      if (need_a) dA.push_back(at::zeros_like(A[l]));
      if (need_g) dG.push_back(at::zeros_like(G[l]));
      continue;
    }
    // where, not a product with the 0/1 mask: the clamp passes exactly 0 where G*A < 0 (or NaN), whatever the
    // outer product holds, as in the fused kernel and torch's clamp backward.
    const at::Tensor common =
        at::where((G[l] * A[l]).ge(0), (levels[l + 1].unsqueeze(2) * g.unsqueeze(1)).unsqueeze(1) / H, 0);
    if (need_a) dA.push_back(common * G[l]);
    if (need_g) dG.push_back(common * A[l]);
    if (l + 1 < L) g = g + at::bmm(abar[l], g.unsqueeze(2)).squeeze(2);
  }
  return {dA, dG};
}

class GaeRelevanceFunction : public torch::autograd::Function<GaeRelevanceFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::TensorList attn, at::TensorList grad,
                            int64_t start_layer) {
    at::Tensor rel, levels;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      static auto op = op_handle<std::tuple<at::Tensor, at::Tensor>(at::TensorList, at::TensorList, int64_t)>(
          "robustvit::_gae_relevance_forward");
      std::tie(rel, levels) = op.call(attn, grad, start_layer);
    }
    std::vector<at::Tensor> saved(attn.begin(), attn.end());
    saved.insert(saved.end(), grad.begin(), grad.end());
    saved.push_back(levels);
    ctx->save_for_backward(saved);
    ctx->saved_data["start_layer"] = start_layer;
    return rel;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const size_t L = (saved.size() - 1) / 2;
    const at::Tensor& levels = saved.back();
    const std::vector<at::Tensor> attn(saved.begin(), saved.begin() + L), grad(saved.begin() + L, saved.begin() + 2 * L);
    const int64_t start = ctx->saved_data["start_layer"].toInt();
    bool need_a = false, need_g = false;
    for (size_t l = 0; l < L; ++l) {
      need_a = need_a || ctx->needs_input_grad(l);
      need_g = need_g || ctx->needs_input_grad(L + l);
    }
    TensorLists d;
    if (at::GradMode::is_enabled()) {
      d = backward_composite(grad_outputs[0], attn, grad, start, need_a, need_g);
    } else {
      static auto op = op_handle<TensorLists(const at::Tensor&, at::TensorList, at::TensorList, int64_t, bool, bool,
                                             const std::optional<at::Tensor>&)>("robustvit::_gae_relevance_backward");
      d = op.call(grad_outputs[0], attn, grad, start, need_a, need_g, levels);
    }
    torch::autograd::variable_list out(2 * L + 1);
    for (size_t l = 0; l < L; ++l) {
      if (need_a) out[l] = std::get<0>(d)[l];
      if (need_g) out[L + l] = std::get<1>(d)[l];
    }
    return out;
  }
};

}  // namespace

std::tuple<at::Tensor, at::Tensor> gae_relevance_forward_cpu(at::TensorList attn, at::TensorList grad,
                                                             int64_t start_layer) {
  check_gae_inputs("gae_relevance", attn, grad, start_layer);  // its only caller is gae_relevance's autograd
  return gae_forward<CpuKernels>(contiguous(attn), contiguous(grad), start_layer);
}

at::Tensor gae_relevance_cpu(at::TensorList attn, at::TensorList grad, int64_t start_layer) {
  check_gae_inputs("gae_relevance", attn, grad, start_layer);
  return std::get<0>(gae_forward<CpuKernels>(contiguous(attn), contiguous(grad), start_layer));
}

TensorLists gae_relevance_backward_cpu(const at::Tensor& grad_rel, at::TensorList attn, at::TensorList grad,
                                       int64_t start_layer, bool attn_needs_grad, bool grad_needs_grad,
                                       const std::optional<at::Tensor>& levels) {
  check_gae_inputs("_gae_relevance_backward", attn, grad, start_layer);
  check_gae_backward_grad(grad_rel, attn[0]);
  check_gae_levels(levels, attn);
  return gae_backward<CpuKernels>(grad_rel, contiguous(attn), contiguous(grad), start_layer, attn_needs_grad,
                                  grad_needs_grad, levels);
}

std::tuple<at::Tensor, at::Tensor> gae_relevance_forward_meta(at::TensorList attn, at::TensorList grad,
                                                              int64_t start_layer) {
  check_gae_inputs("gae_relevance", attn, grad, start_layer);  // its only caller is gae_relevance's autograd
  const at::Tensor& a = attn[0];
  return {at::empty_symint({a.sym_size(0), a.sym_size(3) - 1}, a.options()),
          at::empty_symint({c10::SymInt(static_cast<int64_t>(attn.size()) + 1), a.sym_size(0), a.sym_size(3)},
                           a.options().dtype(at::toOpMathType(a.scalar_type())))};
}

at::Tensor gae_relevance_meta(at::TensorList attn, at::TensorList grad, int64_t start_layer) {
  return std::get<0>(gae_relevance_forward_meta(attn, grad, start_layer));
}

TensorLists gae_relevance_backward_meta(const at::Tensor& grad_rel, at::TensorList attn, at::TensorList grad,
                                        int64_t start_layer, bool attn_needs_grad, bool grad_needs_grad,
                                        const std::optional<at::Tensor>& levels) {
  check_gae_inputs("_gae_relevance_backward", attn, grad, start_layer);
  check_gae_backward_grad(grad_rel, attn[0]);
  check_gae_levels(levels, attn);
  std::vector<at::Tensor> dA, dG;
  for (size_t l = 0; l < attn.size(); ++l) {
    if (attn_needs_grad) dA.push_back(at::empty_like(attn[l]));
    if (grad_needs_grad) dG.push_back(at::empty_like(grad[l]));
  }
  return {dA, dG};
}

at::Tensor gae_relevance_no_kernel(at::TensorList attn, at::TensorList grad, int64_t start_layer) {
  check_gae_inputs("gae_relevance", attn, grad, start_layer);
  TORCH_CHECK(false, "robustvit::gae_relevance: no kernel for tensors on ", attn[0].device(), "; this build has CPU",
              has_cuda_kernel("robustvit::gae_relevance") ? " and CUDA" : " only (rebuild with nvcc for CUDA)");
}

// Autograd's path to the kernels: the same checks and message as gae_relevance's.
std::tuple<at::Tensor, at::Tensor> gae_relevance_forward_no_kernel(at::TensorList attn, at::TensorList grad,
                                                                   int64_t start_layer) {
  return {gae_relevance_no_kernel(attn, grad, start_layer), at::Tensor()};
}

at::Tensor gae_relevance_autograd(at::TensorList attn, at::TensorList grad, int64_t start_layer) {
  return GaeRelevanceFunction::apply(attn, grad, start_layer);
}

}  // namespace robustvit

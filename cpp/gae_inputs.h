// The inputs of the gae_relevance kernels (CPU, CUDA, Meta): validation, dimensions, contiguous copies.
#pragma once

#include "checks.h"

#include <string>
#include <vector>

namespace robustvit {

// Validates the per-block attention and gradient lists of gae_relevance: L >= 1 blocks, each [B,H,T,T]
// with one shape, dtype and device throughout, and 0 <= start_layer < L.
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

struct GaeDims {
  int64_t B, H, T;
  explicit GaeDims(const at::Tensor& attn0) : B(attn0.size(0)), H(attn0.size(1)), T(attn0.size(2)) {}
};

inline std::vector<at::Tensor> contiguous(at::TensorList ts) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const auto& t : ts) out.push_back(t.contiguous());
  return out;
}

}  // namespace robustvit

// Argument checks shared by every kernel of an op (CPU, CUDA, Meta), so a bad call fails with the same
// message whichever backend receives it. Messages name the op, the argument and the expected shape.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace robustvit {

inline void check_float(const char* op, const char* arg, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), "robustvit::", op, ": argument '", arg, "' is an undefined tensor");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "robustvit::", op, ": argument '", arg,
              "' must be a floating-point tensor, got dtype ", t.scalar_type());
}

inline void check_rank(const char* op, const char* arg, const at::Tensor& t, int64_t rank,
                       const char* expected) {
  TORCH_CHECK(t.dim() == rank, "robustvit::", op, ": argument '", arg, "' must have shape ", expected,
              " (rank ", rank, "), got shape ", t.sym_sizes());
}

inline void check_same_shape(const char* op, const char* arg, const at::Tensor& t, const char* other,
                             const at::Tensor& ref) {
  TORCH_CHECK(t.sym_sizes() == ref.sym_sizes(), "robustvit::", op, ": argument '", arg,
              "' must have the shape of '", other, "' ", ref.sym_sizes(), ", got ", t.sym_sizes());
}

inline void check_same_device_dtype(const char* op, const char* arg, const at::Tensor& t,
                                    const char* other, const at::Tensor& ref) {
  TORCH_CHECK(t.device() == ref.device(), "robustvit::", op, ": argument '", arg, "' is on ", t.device(),
              " but '", other, "' is on ", ref.device(), "; move both to one device");
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "robustvit::", op, ": argument '", arg, "' has dtype ",
              t.scalar_type(), " but '", other, "' has dtype ", ref.scalar_type());
}

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

}  // namespace robustvit

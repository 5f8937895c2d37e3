// Argument checks shared by every kernel of an op (CPU, CUDA, Meta), so a bad call fails with the same
// message whichever backend receives it. Messages name the op, the argument and the expected shape.
#pragma once

#include <ATen/ATen.h>

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

}  // namespace robustvit

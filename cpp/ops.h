// Kernel entry points of the robustvit ops, one line per (op, dispatch key); cpp/register.cpp binds them, except
// the CUDA kernels of gae_relevance, which cpp/relevance_cuda.cu registers itself (linking it enables CUDA).
// Schemas and semantics: cpp/register.cpp and ../shared/method.md sections 1-4.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>
#include <vector>

namespace robustvit {

using TensorLists = std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>>;
// _gae_relevance_forward's relevance, levels, and kept blocks' Abar and sign bits (cpp/gae_kernels.h).
using GaeForward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// GAE relevance of the CLS token (cpp/relevance.cpp).
at::Tensor gae_relevance_cpu(at::TensorList attn, at::TensorList grad, int64_t start_layer);
at::Tensor gae_relevance_meta(at::TensorList attn, at::TensorList grad, int64_t start_layer);
at::Tensor gae_relevance_autograd(at::TensorList attn, at::TensorList grad, int64_t start_layer);
// Catch-all for calls no backend kernel takes: empty lists (no tensor to dispatch on) or an unsupported device.
at::Tensor gae_relevance_no_kernel(at::TensorList attn, at::TensorList grad, int64_t start_layer);
// Internal: the relevance and what its backward reuses (cpp/gae_kernels.h: gae_forward).
GaeForward gae_relevance_forward_cpu(at::TensorList attn, at::TensorList grad, int64_t start_layer,
                                     bool keep_blocks);
GaeForward gae_relevance_forward_meta(at::TensorList attn, at::TensorList grad, int64_t start_layer,
                                      bool keep_blocks);
GaeForward gae_relevance_forward_no_kernel(at::TensorList attn, at::TensorList grad, int64_t start_layer,
                                           bool keep_blocks);
TensorLists gae_relevance_backward_cpu(const at::Tensor& grad_rel, at::TensorList attn, at::TensorList grad,
                                       int64_t start_layer, bool attn_needs_grad, bool grad_needs_grad,
                                       const std::optional<at::Tensor>& levels, const std::optional<at::Tensor>& abar,
                                       const std::optional<at::Tensor>& signs);
TensorLists gae_relevance_backward_meta(const at::Tensor& grad_rel, at::TensorList attn, at::TensorList grad,
                                        int64_t start_layer, bool attn_needs_grad, bool grad_needs_grad,
                                        const std::optional<at::Tensor>& levels,
                                        const std::optional<at::Tensor>& abar,
                                        const std::optional<at::Tensor>& signs);
// Relevance map (cpp/relevance_map.cpp). The kernel is device-generic ATen code: CPU, CUDA and Meta.
at::Tensor relevance_map_kernel(const at::Tensor& rel, int64_t grid_h, int64_t grid_w, int64_t out_h,
                                int64_t out_w, double eps);
at::Tensor relevance_map_autograd(const at::Tensor& rel, int64_t grid_h, int64_t grid_w, int64_t out_h,
                                  int64_t out_w, double eps);

// Losses (cpp/losses.cpp), device-generic ATen kernels like relevance_map.
std::tuple<at::Tensor, at::Tensor, at::Tensor> relevance_loss_kernel(const at::Tensor& map, const at::Tensor& mask,
                                                                     double lambda_bg, double lambda_fg);
std::tuple<at::Tensor, at::Tensor, at::Tensor> relevance_loss_autograd(const at::Tensor& map,
                                                                       const at::Tensor& mask, double lambda_bg,
                                                                       double lambda_fg);
at::Tensor confidence_loss_kernel(const at::Tensor& logits, double temperature);
at::Tensor confidence_loss_autograd(const at::Tensor& logits, double temperature);
at::Tensor gradmask_loss_kernel(const at::Tensor& input_grad, const at::Tensor& mask);
at::Tensor gradmask_loss_autograd(const at::Tensor& input_grad, const at::Tensor& mask);
at::Tensor rrr_loss_kernel(const at::Tensor& input_grad, const at::Tensor& mask);
at::Tensor rrr_loss_autograd(const at::Tensor& input_grad, const at::Tensor& mask);

// The registered op `robustvit::<name>` with signature Sig, for calls through the dispatcher.
template <class Sig>
c10::TypedOperatorHandle<Sig> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// Whether the registered op `robustvit::<name>` has its own kernel for CUDA tensors, asked of the dispatcher at
// run time: for gae_relevance, whether cpp/relevance_cuda.cu is linked into the loaded library.
inline bool has_cuda_kernel(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").hasKernelForDispatchKey(c10::DispatchKey::CUDA);
}

}  // namespace robustvit

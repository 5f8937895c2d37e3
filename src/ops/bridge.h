// The cxx bridge's C++ side: thin wrappers that call the robustvit ops through the dispatcher, so autograd
// applies to calls from Rust exactly as from Python. Kept apart from cpp/, which knows nothing of cxx.
#pragma once

// The tensor type alone: this header is parsed again by the cxx-generated code.
#include <ATen/core/Tensor.h>

#include <c10/util/Exception.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

// cxx turns C++ exceptions into Rust errors; report c10::Error without its C++ backtrace.
namespace rust {
namespace behavior {
template <typename Try, typename Fail>
static void trycatch(Try&& func, Fail&& fail) noexcept try {
  func();
} catch (const c10::Error& e) {
  fail(e.what_without_backtrace());
} catch (const std::exception& e) {
  fail(e.what());
}
}  // namespace behavior
}  // namespace rust

namespace robustvit {
namespace bridge {

// A list of tensors crossing the bridge (cxx has no slices of opaque C++ types).
class TensorList {
 public:
  void push(const at::Tensor& t);
  std::unique_ptr<at::Tensor> take(size_t i);
  const std::vector<at::Tensor>& items() const { return items_; }
  explicit TensorList(std::vector<at::Tensor> items = {}) : items_(std::move(items)) {}

 private:
  std::vector<at::Tensor> items_;
};

std::unique_ptr<TensorList> new_tensor_list();
std::unique_ptr<at::Tensor> gae_relevance(const TensorList& attn, const TensorList& grad, int64_t start_layer);
std::unique_ptr<at::Tensor> relevance_map(const at::Tensor& rel, int64_t grid_h, int64_t grid_w, int64_t out_h,
                                          int64_t out_w, double eps);
std::unique_ptr<TensorList> relevance_loss(const at::Tensor& map, const at::Tensor& mask, double lambda_bg,
                                           double lambda_fg);
std::unique_ptr<at::Tensor> confidence_loss(const at::Tensor& logits, double temperature);
std::unique_ptr<at::Tensor> gradmask_loss(const at::Tensor& input_grad, const at::Tensor& mask);
std::unique_ptr<at::Tensor> rrr_loss(const at::Tensor& input_grad, const at::Tensor& mask);
bool built_with_cuda();
// Drops the tensors' .grad (PyTorch's zero_grad(set_to_none=True)): the next backward hands its gradients
// over instead of adding them to zeros.
void clear_grads(const TensorList& params);
// One AdamW step over every tensor at once: torch.optim.AdamW(fused=True)'s kernel (at::_fused_adamw_), with
// `step` the step count after this update.
void fused_adamw(const TensorList& params, const TensorList& grads, const TensorList& exp_avgs,
                 const TensorList& exp_avg_sqs, int64_t step, double lr, double beta1, double beta2,
                 double weight_decay, double eps);
// Turns autocast to bf16 on or off for CPU or CUDA on this thread; returns the previous state. Entering
// (off -> on) and leaving (on -> off) count autocast's nesting, and the last leave clears its cast cache.
bool set_autocast_bf16(bool cuda, bool enabled);
// Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), by libtorch's own detection.
bool cpu_has_bf16();

}  // namespace bridge
}  // namespace robustvit

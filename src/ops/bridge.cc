#include "robustvit/src/ops/bridge.h"

#include "ops.h"

#include <ATen/autocast_mode.h>
#include <ATen/cpu/Utils.h>

namespace robustvit {
namespace bridge {
namespace {

std::unique_ptr<at::Tensor> boxed(at::Tensor t) { return std::make_unique<at::Tensor>(std::move(t)); }

using InputGradLoss = at::Tensor(const at::Tensor&, const at::Tensor&);

}  // namespace

void TensorList::push(const at::Tensor& t) { items_.push_back(t); }
std::unique_ptr<at::Tensor> TensorList::take(size_t i) {
  TORCH_CHECK(i < items_.size(), "TensorList::take: index ", i, " out of range for ", items_.size(), " tensors");
  return boxed(std::move(items_[i]));
}

std::unique_ptr<TensorList> new_tensor_list() { return std::make_unique<TensorList>(); }

std::unique_ptr<at::Tensor> gae_relevance(const TensorList& attn, const TensorList& grad, int64_t start_layer) {
  static auto op = op_handle<at::Tensor(at::TensorList, at::TensorList, int64_t)>("robustvit::gae_relevance");
  return boxed(op.call(attn.items(), grad.items(), start_layer));
}

std::unique_ptr<at::Tensor> relevance_map(const at::Tensor& rel, int64_t grid_h, int64_t grid_w, int64_t out_h,
                                          int64_t out_w, double eps) {
  static auto op = op_handle<at::Tensor(const at::Tensor&, int64_t, int64_t, int64_t, int64_t, double)>(
      "robustvit::relevance_map");
  return boxed(op.call(rel, grid_h, grid_w, out_h, out_w, eps));
}

std::unique_ptr<TensorList> relevance_loss(const at::Tensor& map, const at::Tensor& mask, double lambda_bg,
                                           double lambda_fg) {
  static auto op = op_handle<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                           double, double)>(
      "robustvit::relevance_loss");
  auto [total, bg, fg] = op.call(map, mask, lambda_bg, lambda_fg);
  return std::make_unique<TensorList>(std::vector<at::Tensor>{total, bg, fg});
}

std::unique_ptr<at::Tensor> confidence_loss(const at::Tensor& logits, double temperature) {
  static auto op = op_handle<at::Tensor(const at::Tensor&, double)>("robustvit::confidence_loss");
  return boxed(op.call(logits, temperature));
}

std::unique_ptr<at::Tensor> gradmask_loss(const at::Tensor& input_grad, const at::Tensor& mask) {
  static auto op = op_handle<InputGradLoss>("robustvit::gradmask_loss");
  return boxed(op.call(input_grad, mask));
}

std::unique_ptr<at::Tensor> rrr_loss(const at::Tensor& input_grad, const at::Tensor& mask) {
  static auto op = op_handle<InputGradLoss>("robustvit::rrr_loss");
  return boxed(op.call(input_grad, mask));
}

bool built_with_cuda() { return has_cuda_kernel("robustvit::gae_relevance"); }

void clear_grads(const TensorList& params) {
  for (const auto& p : params.items()) p.mutable_grad().reset();
}

void fused_adamw(const TensorList& params, const TensorList& grads, const TensorList& exp_avgs,
                 const TensorList& exp_avg_sqs, int64_t step, double lr, double beta1, double beta2,
                 double weight_decay, double eps) {
  if (params.items().empty()) return;
  at::NoGradGuard no_grad;
  // The kernel reads each tensor's step count from its own entry; one tensor serves them all.
  const at::Tensor count = at::full({}, static_cast<double>(step), params.items()[0].options().dtype(at::kFloat));
  const std::vector<at::Tensor> steps(params.items().size(), count);
  at::_fused_adamw_(params.items(), grads.items(), exp_avgs.items(), exp_avg_sqs.items(), {}, steps, lr, beta1,
                    beta2, weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false);
}

bool set_autocast_bf16(bool cuda, bool enabled) {
  const at::DeviceType device = cuda ? at::kCUDA : at::kCPU;
  const bool previous = at::autocast::is_autocast_enabled(device);
  if (enabled && !previous) {
    at::autocast::set_autocast_dtype(device, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  at::autocast::set_autocast_enabled(device, enabled);
  if (!enabled && previous && at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  return previous;
}

bool cpu_has_bf16() {
  const auto caps = at::cpu::get_cpu_capabilities();
  const auto has = [&](const char* key) {
    const auto it = caps.find(key);
    return it != caps.end() && it->second.isBool() && it->second.toBool();
  };
  return has("avx512_bf16") || has("amx_bf16");
}

}  // namespace bridge
}  // namespace robustvit

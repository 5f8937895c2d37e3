// Losses of the method and of the baselines (method.md sections 3 and 4). Kernels are device-generic ATen
// code; each Autograd kernel's backward is written with differentiable ATen ops, so double backward works.
#include "ops.h"
#include "checks.h"

#include <torch/csrc/autograd/custom_function.h>

namespace robustvit {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor grad_or_zero(const at::Tensor& g, const at::Tensor& like) {
  return g.defined() ? g : at::zeros({}, like.options());
}

// ---- relevance_loss: L_bg = mean((map * (1-S))^2), L_fg = mean((map*S - S)^2), total = lbg*L_bg + lfg*L_fg

void check_relevance_loss_args(const at::Tensor& map, const at::Tensor& mask) {
  check_float("relevance_loss", "map", map);
  check_float("relevance_loss", "mask", mask);
  check_rank("relevance_loss", "map", map, 4, "[B,1,H,W]");
  TORCH_CHECK(map.sym_size(1) == 1, "robustvit::relevance_loss: argument 'map' must have shape [B,1,H,W], got ",
              map.sym_sizes());
  check_same_shape("relevance_loss", "mask", mask, "map", map);
  check_same_device_dtype("relevance_loss", "mask", mask, "map", map);
}

class RelevanceLossFunction : public torch::autograd::Function<RelevanceLossFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& map, const at::Tensor& mask, double lambda_bg,
                               double lambda_fg) {
    std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      static auto op = op_handle<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                               double, double)>(
          "robustvit::relevance_loss");
      out = op.call(map, mask, lambda_bg, lambda_fg);
    }
    ctx->save_for_backward({map, mask});
    ctx->saved_data["lambda_bg"] = lambda_bg;
    ctx->saved_data["lambda_fg"] = lambda_fg;
    return {std::get<0>(out), std::get<1>(out), std::get<2>(out)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list go) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &map = saved[0], &mask = saved[1];
    const double lambda_bg = ctx->saved_data["lambda_bg"].toDouble();
    const double lambda_fg = ctx->saved_data["lambda_fg"].toDouble();
    const at::Tensor g_total = grad_or_zero(go[0], map);
    // Each term's total upstream gradient, pre-scaled by d(mean(x^2))/dx = 2x/N.
    const c10::Scalar n(map.sym_numel());
    const at::Tensor c_bg = (g_total * lambda_bg + grad_or_zero(go[1], map)) * 2.0 / n;
    const at::Tensor c_fg = (g_total * lambda_fg + grad_or_zero(go[2], map)) * 2.0 / n;
    const at::Tensor background = 1 - mask;
    at::Tensor d_map, d_mask;
    if (ctx->needs_input_grad(0)) d_map = c_bg * map * background.square() + c_fg * (map - 1) * mask.square();
    if (ctx->needs_input_grad(1)) d_mask = -c_bg * map.square() * background + c_fg * mask * (map - 1).square();
    return {d_map, d_mask, at::Tensor(), at::Tensor()};
  }
};

// ---- confidence_loss: CE(logits / T, argmax(logits)), mean over the batch; the target is a constant.

void check_confidence_args(const at::Tensor& logits, double temperature) {
  check_float("confidence_loss", "logits", logits);
  check_rank("confidence_loss", "logits", logits, 2, "[B,C]");
  TORCH_CHECK(logits.sym_size(0) > 0 && logits.sym_size(1) > 0,
              "robustvit::confidence_loss: argument 'logits' must have shape [B,C] with B, C > 0, got ",
              logits.sym_sizes());
  TORCH_CHECK(temperature > 0, "robustvit::confidence_loss: argument 'temperature' must be > 0, got ", temperature);
}

class ConfidenceLossFunction : public torch::autograd::Function<ConfidenceLossFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits, double temperature) {
    at::Tensor loss;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      static auto op = op_handle<at::Tensor(const at::Tensor&, double)>("robustvit::confidence_loss");
      loss = op.call(logits, temperature);
    }
    ctx->save_for_backward({logits});
    ctx->saved_data["temperature"] = temperature;
    return loss;
  }

  // d/dlogits = (softmax(logits/T) - onehot(argmax)) / (T B)
  static variable_list backward(AutogradContext* ctx, variable_list go) {
    const at::Tensor logits = ctx->get_saved_variables()[0];
    const double t = ctx->saved_data["temperature"].toDouble();
    const at::Tensor target = at::zeros_like(logits).scatter(1, logits.argmax(1, true), 1.0);
    const at::Tensor d = (at::softmax(logits / t, 1) - target) * (go[0] / t / c10::Scalar(logits.sym_size(0)));
    return {d, at::Tensor()};
  }
};

// ---- gradmask_loss / rrr_loss: mean or sum of (g * (1 - S))^2, S [B,1,H,W] broadcast over channels.

enum class Reduce { Mean, Sum };

const char* reduce_op_name(Reduce r) { return r == Reduce::Mean ? "gradmask_loss" : "rrr_loss"; }

void check_input_grad_args(Reduce r, const at::Tensor& g, const at::Tensor& mask) {
  const char* op = reduce_op_name(r);
  check_float(op, "input_grad", g);
  check_float(op, "mask", mask);
  check_rank(op, "input_grad", g, 4, "[B,C,H,W]");
  check_rank(op, "mask", mask, 4, "[B,1,H,W]");
  TORCH_CHECK(mask.sym_size(0) == g.sym_size(0) && mask.sym_size(1) == 1 && mask.sym_size(2) == g.sym_size(2) &&
                  mask.sym_size(3) == g.sym_size(3),
              "robustvit::", op, ": argument 'mask' must have shape [B,1,H,W] = [", g.sym_size(0), ",1,",
              g.sym_size(2), ",", g.sym_size(3), "] to match 'input_grad' ", g.sym_sizes(), ", got ",
              mask.sym_sizes());
  check_same_device_dtype(op, "mask", mask, "input_grad", g);
}

at::Tensor input_grad_loss(Reduce r, const at::Tensor& g, const at::Tensor& mask) {
  check_input_grad_args(r, g, mask);
  const at::Tensor sq = (g * (1 - mask)).square();
  return r == Reduce::Mean ? sq.mean() : sq.sum();
}

class InputGradLossFunction : public torch::autograd::Function<InputGradLossFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& g, const at::Tensor& mask, bool mean) {
    at::Tensor loss;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      static auto gradmask = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&)>("robustvit::gradmask_loss");
      static auto rrr = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&)>("robustvit::rrr_loss");
      loss = (mean ? gradmask : rrr).call(g, mask);
    }
    ctx->save_for_backward({g, mask});
    ctx->saved_data["mean"] = mean;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list go) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &g = saved[0], &mask = saved[1];
    const at::Tensor scale = ctx->saved_data["mean"].toBool() ? go[0] * 2.0 / c10::Scalar(g.sym_numel()) : go[0] * 2.0;
    const at::Tensor background = 1 - mask;
    at::Tensor d_g, d_mask;
    if (ctx->needs_input_grad(0)) d_g = scale * g * background.square();
    if (ctx->needs_input_grad(1)) d_mask = -scale * (g.square() * background).sum(1, true);
    return {d_g, d_mask, at::Tensor()};
  }
};

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> relevance_loss_kernel(const at::Tensor& map, const at::Tensor& mask,
                                                                     double lambda_bg, double lambda_fg) {
  check_relevance_loss_args(map, mask);
  const at::Tensor bg = (map * (1 - mask)).square().mean();
  const at::Tensor fg = (map * mask - mask).square().mean();
  return {bg * lambda_bg + fg * lambda_fg, bg, fg};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> relevance_loss_autograd(const at::Tensor& map, const at::Tensor& mask,
                                                                       double lambda_bg, double lambda_fg) {
  const auto out = RelevanceLossFunction::apply(map, mask, lambda_bg, lambda_fg);
  return {out[0], out[1], out[2]};
}

at::Tensor confidence_loss_kernel(const at::Tensor& logits, double temperature) {
  check_confidence_args(logits, temperature);
  const at::Tensor target = logits.argmax(1, true);
  return -at::log_softmax(logits / temperature, 1).gather(1, target).mean();
}

at::Tensor confidence_loss_autograd(const at::Tensor& logits, double temperature) {
  return ConfidenceLossFunction::apply(logits, temperature);
}

at::Tensor gradmask_loss_kernel(const at::Tensor& g, const at::Tensor& mask) {
  return input_grad_loss(Reduce::Mean, g, mask);
}
at::Tensor rrr_loss_kernel(const at::Tensor& g, const at::Tensor& mask) {
  return input_grad_loss(Reduce::Sum, g, mask);
}
at::Tensor gradmask_loss_autograd(const at::Tensor& g, const at::Tensor& mask) {
  return InputGradLossFunction::apply(g, mask, true);
}
at::Tensor rrr_loss_autograd(const at::Tensor& g, const at::Tensor& mask) {
  return InputGradLossFunction::apply(g, mask, false);
}

}  // namespace robustvit

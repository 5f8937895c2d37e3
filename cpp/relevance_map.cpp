// Relevance map (method.md section 2): reshape [B,P] -> [B,1,gh,gw], bilinear upsample
// (align_corners=False), per-sample min-max to [0,1] with eps in the denominator (our decision: the
// reference divides by zero for a constant map). Min and max are not detached.
#include "ops.h"
#include "checks.h"

#include <torch/csrc/autograd/custom_function.h>

namespace robustvit {
namespace {

void check_map_args(const at::Tensor& rel, int64_t grid_h, int64_t grid_w, int64_t out_h, int64_t out_w,
                    double eps) {
  check_float("relevance_map", "rel", rel);
  check_rank("relevance_map", "rel", rel, 2, "[B,P] with P = grid_h*grid_w");
  TORCH_CHECK(grid_h > 0 && grid_w > 0 && out_h > 0 && out_w > 0,
              "robustvit::relevance_map: grid_h, grid_w, out_h, out_w must be positive, got ", grid_h, ", ",
              grid_w, ", ", out_h, ", ", out_w);
  TORCH_CHECK(rel.sym_size(1) == grid_h * grid_w, "robustvit::relevance_map: argument 'rel' must have shape [B,",
              grid_h * grid_w, "] (grid ", grid_h, "x", grid_w, "), got ", rel.sym_sizes());
  TORCH_CHECK(eps >= 0, "robustvit::relevance_map: argument 'eps' must be >= 0, got ", eps);
}

at::Tensor upsample(const at::Tensor& rel, int64_t grid_h, int64_t grid_w, int64_t out_h, int64_t out_w) {
  const at::Tensor grid = rel.reshape_symint({rel.sym_size(0), 1, grid_h, grid_w});
  return at::upsample_bilinear2d_symint(grid, {out_h, out_w}, /*align_corners=*/false);
}

// The [out, in] matrix of 1-D linear interpolation with align_corners=False (PyTorch's source index
// max((dst + 0.5) * in/out - 0.5, 0)). Bilinear upsampling is W_h X W_w^T, so its adjoint is W_h^T dY W_w.
// Built from ATen ops (not upsample_bilinear2d_backward, whose meta kernel rejects symbolic batch sizes).
at::Tensor interpolation_matrix(int64_t out, int64_t in, const at::TensorOptions& opts) {
  const at::Tensor src =
      ((at::arange(out, opts) + 0.5) * (static_cast<double>(in) / static_cast<double>(out)) - 0.5).clamp_min(0);
  const at::Tensor lo = src.floor().clamp_max(in - 1);
  const at::Tensor hi = (lo + 1).clamp_max(in - 1);
  const at::Tensor frac = (src - lo).unsqueeze(1);
  const at::Tensor cols = at::arange(in, opts).unsqueeze(0);
  return lo.unsqueeze(1).eq(cols) * (1 - frac) + hi.unsqueeze(1).eq(cols) * frac;
}

class RelevanceMapFunction : public torch::autograd::Function<RelevanceMapFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& rel, int64_t grid_h,
                            int64_t grid_w, int64_t out_h, int64_t out_w, double eps) {
    at::Tensor map;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      static auto op = op_handle<at::Tensor(const at::Tensor&, int64_t, int64_t, int64_t, int64_t, double)>(
          "robustvit::relevance_map");
      map = op.call(rel, grid_h, grid_w, out_h, out_w, eps);
    }
    ctx->save_for_backward({rel});
    ctx->saved_data["grid_h"] = grid_h;
    ctx->saved_data["grid_w"] = grid_w;
    ctx->saved_data["out_h"] = out_h;
    ctx->saved_data["out_w"] = out_w;
    ctx->saved_data["eps"] = eps;
    return map;
  }

  // out = (y - m) / (M - m + eps) with y the upsampled map, m = min(y), M = max(y) per sample. The
  // gradients of m and M go to the pixels that attain them, split evenly between ties (as amin/amax do).
  // Written with differentiable ATen ops, so double backward works.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor rel = ctx->get_saved_variables()[0];
    const int64_t grid_h = ctx->saved_data["grid_h"].toInt(), grid_w = ctx->saved_data["grid_w"].toInt();
    const int64_t out_h = ctx->saved_data["out_h"].toInt(), out_w = ctx->saved_data["out_w"].toInt();
    const double eps = ctx->saved_data["eps"].toDouble();
    const at::Tensor& go = grad_outputs[0];
    const std::vector<int64_t> dims{1, 2, 3};
    const at::Tensor y = upsample(rel, grid_h, grid_w, out_h, out_w);
    const at::Tensor m = y.amin(dims, true), M = y.amax(dims, true);
    const at::Tensor denom = M - m + eps;
    const at::Tensor centred = y - m;
    const at::Tensor g_max = -(go * centred).sum(dims, true) / denom.square();
    const at::Tensor g_min = -go.sum(dims, true) / denom - g_max;
    const at::Tensor at_min = y.eq(m).to(y.scalar_type()), at_max = y.eq(M).to(y.scalar_type());
    const at::Tensor dy = go / denom + at_min * (g_min / at_min.sum(dims, true)) +
                          at_max * (g_max / at_max.sum(dims, true));
    const at::Tensor w_h = interpolation_matrix(out_h, grid_h, rel.options());
    const at::Tensor w_w = interpolation_matrix(out_w, grid_w, rel.options());
    const at::Tensor drel = at::matmul(at::matmul(w_h.t(), dy), w_w);
    return {drel.reshape_symint(rel.sym_sizes()), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

at::Tensor relevance_map_kernel(const at::Tensor& rel, int64_t grid_h, int64_t grid_w, int64_t out_h,
                                int64_t out_w, double eps) {
  check_map_args(rel, grid_h, grid_w, out_h, out_w, eps);
  const at::Tensor y = upsample(rel, grid_h, grid_w, out_h, out_w);
  const std::vector<int64_t> dims{1, 2, 3};
  const at::Tensor m = y.amin(dims, true);
  return (y - m) / (y.amax(dims, true) - m + eps);
}

at::Tensor relevance_map_autograd(const at::Tensor& rel, int64_t grid_h, int64_t grid_w, int64_t out_h,
                                  int64_t out_w, double eps) {
  return RelevanceMapFunction::apply(rel, grid_h, grid_w, out_h, out_w, eps);
}

}  // namespace robustvit

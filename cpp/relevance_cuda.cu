// GAE relevance of the CLS token (method.md section 1): CUDA kernels. Same formulas and conventions as the CPU
// kernels in cpp/relevance.cpp (the clamp passes the gradient at G*A == 0; NaN and Inf as at the top of
// gae_kernels.h); only the summation order differs. Each kernel reads a block's A and G once; no [B,H,T,T]
// intermediate is created. They register for the CUDA key at the bottom of this file, so linking this object is
// what enables CUDA.
#include "ops.h"
#include "gae_kernels.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <climits>
#include <utility>

namespace robustvit {
namespace {

// Forward: a warp reads kTileCols consecutive columns of one row (coalesced), kRowWarps warps split the rows.
constexpr int kTileCols = 32;
constexpr int kRowWarps = 8;
// Backward: one block per (b, i) row; its threads stride over the row's columns j, each through all heads.
constexpr int kRowThreads = 256;
constexpr int kWarp = 32;
// cls_row_finish_kernel: one thread per (b, j).
constexpr int kThreads = 256;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

unsigned int grid_size(int64_t blocks) {
  TORCH_CHECK(blocks <= INT_MAX, "robustvit: input too large for one CUDA grid (", blocks, " blocks)");
  return static_cast<unsigned int>(blocks);
}

// partial[b,h,j] = sum_{i < rows} v[b,i] * max(G*A, 0)[b,h,i,j] over one tile of columns j; blockIdx.x =
// (b*H + h)*tiles + tile. Splitting the reduction by head gives B*H*tiles blocks (672 at ViT-B shapes) instead
// of B*tiles.
template <typename scalar_t, typename acc_t>
__global__ void cls_row_partial_kernel(const scalar_t* __restrict__ A, const scalar_t* __restrict__ G,
                                       const acc_t* __restrict__ v, acc_t* __restrict__ partial, int64_t H,
                                       int64_t T, int64_t rows, int64_t tiles) {
  const int64_t bh = blockIdx.x / tiles;
  const int64_t j = (blockIdx.x % tiles) * kTileCols + threadIdx.x;
  const acc_t* vb = v + (bh / H) * T;
  acc_t acc = 0;
  if (j < T) {
    const scalar_t* a = A + bh * T * T + j;
    const scalar_t* g = G + bh * T * T + j;
    for (int64_t i = threadIdx.y; i < rows; i += kRowWarps) {
      acc += vb[i] * clamp_min0(acc_t(g[i * T]) * acc_t(a[i * T]));
    }
  }
  __shared__ acc_t sums[kRowWarps][kTileCols];
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < T) {
    for (int r = 1; r < kRowWarps; ++r) acc += sums[r][threadIdx.x];
    partial[bh * T + j] = acc;
  }
}

// v_out[b,j] = v_in[b,j] + (1/H) sum_h partial[b,h,j]
template <typename acc_t>
__global__ void cls_row_finish_kernel(const acc_t* __restrict__ partial, const acc_t* __restrict__ v_in,
                                      acc_t* __restrict__ v_out, int64_t B, int64_t H, int64_t T) {
  const int64_t bj = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bj >= B * T) return;
  const int64_t b = bj / T, j = bj % T;
  acc_t acc = 0;
  for (int64_t h = 0; h < H; ++h) acc += partial[(b * H + h) * T + j];
  v_out[bj] = v_in[bj] + acc / acc_t(H);
}

// Sum over the block's kRowThreads threads; the result is valid in thread 0.
template <typename acc_t>
__device__ acc_t block_sum(acc_t x) {
  __shared__ acc_t warp_sums[kRowThreads / kWarp];
  for (int o = kWarp / 2; o > 0; o /= 2) x += __shfl_down_sync(0xffffffffu, x, o);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    x = lane < kRowThreads / kWarp ? warp_sums[lane] : acc_t(0);
    for (int o = kWarp / 2; o > 0; o /= 2) x += __shfl_down_sync(0xffffffffu, x, o);
  }
  return x;
}

// One block of the backward pass, one CUDA block per row (b, i). With v = levels[l+1] and g the gradient
// reaching the row vector after block l:
//   dA[b,h,i,j] = [G*A >= 0] * G * v_i * g_j / H,  dG likewise with A   (clamp passes the gradient at 0)
//   g_next[b,i] = g_i + (1/H) sum_{h,j} max(G*A, 0)[b,h,i,j] g_j         (g (I + Abar)^T)
// dA / dG are null when not requested. As on the CPU, the heads are summed before the product with g_j, so Inf * 0
// turns into NaN at the same entries (a head's 0 times an Inf g_j is NaN; the head sum may be positive).
template <typename scalar_t, typename acc_t>
__global__ void backward_row_kernel(const scalar_t* __restrict__ A, const scalar_t* __restrict__ G,
                                    const acc_t* __restrict__ v, const acc_t* __restrict__ g,
                                    acc_t* __restrict__ g_next, scalar_t* __restrict__ dA,
                                    scalar_t* __restrict__ dG, int64_t H, int64_t T) {
  const int64_t bi = blockIdx.x;
  const int64_t b = bi / T, i = bi % T;
  const acc_t inv_h = acc_t(1) / acc_t(H);
  const acc_t vi = v[bi] * inv_h;
  const acc_t* gb = g + b * T;
  acc_t acc = 0;
  for (int64_t j = threadIdx.x; j < T; j += kRowThreads) {
    const acc_t gj = gb[j];
    acc_t abar = 0;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t idx = ((b * H + h) * T + i) * T + j;
      const acc_t a = acc_t(A[idx]), gg = acc_t(G[idx]);
      const acc_t w = gg * a;
      const acc_t pass = w >= acc_t(0) ? vi * gj : acc_t(0);
      if (dA) dA[idx] = scalar_t(pass * gg);
      if (dG) dG[idx] = scalar_t(pass * a);
      abar += clamp_min0(w);
    }
    acc += abar * gj;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) g_next[bi] = gb[i] + acc * inv_h;
}

// The CUDA launches of the drivers in gae_kernels.h, on the current stream. B*H > 0 (the drivers return
// before launching on an empty batch; CUDA rejects empty grids).
template <typename scalar_t, typename acc_t>
struct CudaKernels {
  static constexpr bool kKeepsBlocks = false;

  static void row_step(const scalar_t* A, const scalar_t* G, const acc_t* v_in, acc_t* v_out, int64_t rows,
                       const GaeDims& d) {
    const auto stream = at::cuda::getCurrentCUDAStream();
    const int64_t tiles = ceil_div(d.T, kTileCols);
    const at::Tensor partial =
        at::empty({d.B, d.H, d.T}, at::TensorOptions().device(at::kCUDA, c10::cuda::current_device())
                                       .dtype(c10::CppTypeToScalarType<acc_t>::value));
    cls_row_partial_kernel<scalar_t, acc_t><<<grid_size(d.B * d.H * tiles), dim3(kTileCols, kRowWarps), 0, stream>>>(
        A, G, v_in, partial.data_ptr<acc_t>(), d.H, d.T, rows, tiles);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    cls_row_finish_kernel<acc_t><<<grid_size(ceil_div(d.B * d.T, kThreads)), kThreads, 0, stream>>>(
        partial.data_ptr<acc_t>(), v_in, v_out, d.B, d.H, d.T);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  static void backward_block(const scalar_t* A, const scalar_t* G, const acc_t* v, const acc_t* g, acc_t* g_next,
                             scalar_t* dA, scalar_t* dG, const GaeDims& d) {
    backward_row_kernel<scalar_t, acc_t><<<grid_size(d.B * d.T), kRowThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        A, G, v, g, g_next, dA, dG, d.H, d.T);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

GaeForward gae_relevance_forward_cuda(at::TensorList attn, at::TensorList grad, int64_t start_layer,
                                      bool keep_blocks) {
  check_gae_inputs("gae_relevance", attn, grad, start_layer);  // its only caller is gae_relevance's autograd
  TORCH_CHECK(!keep_blocks, "robustvit::_gae_relevance_forward: keep_blocks is for CPU tensors only");
  const c10::cuda::CUDAGuard device_guard(attn[0].device());
  return gae_forward<CudaKernels>(contiguous(attn), contiguous(grad), start_layer, false);
}

at::Tensor gae_relevance_cuda(at::TensorList attn, at::TensorList grad, int64_t start_layer) {
  check_gae_inputs("gae_relevance", attn, grad, start_layer);
  const c10::cuda::CUDAGuard device_guard(attn[0].device());
  return std::get<0>(gae_forward<CudaKernels>(contiguous(attn), contiguous(grad), start_layer, false));
}

TensorLists gae_relevance_backward_cuda(const at::Tensor& grad_rel, at::TensorList attn, at::TensorList grad,
                                        int64_t start_layer, bool attn_needs_grad, bool grad_needs_grad,
                                        const std::optional<at::Tensor>& levels, const std::optional<at::Tensor>& abar,
                                        const std::optional<at::Tensor>& signs) {
  check_gae_inputs("_gae_relevance_backward", attn, grad, start_layer);
  check_gae_backward_grad(grad_rel, attn[0]);
  check_gae_levels(levels, attn);
  check_gae_kept(abar, signs, attn, start_layer);  // valid, and unused: the CUDA kernels read A
  const c10::cuda::CUDAGuard device_guard(attn[0].device());
  return gae_backward<CudaKernels>(grad_rel, contiguous(attn), contiguous(grad), start_layer, attn_needs_grad,
                                   grad_needs_grad, levels);
}

}  // namespace
}  // namespace robustvit

TORCH_LIBRARY_IMPL(robustvit, CUDA, m) {
  m.impl("gae_relevance", &robustvit::gae_relevance_cuda);
  m.impl("_gae_relevance_forward", &robustvit::gae_relevance_forward_cuda);
  m.impl("_gae_relevance_backward", &robustvit::gae_relevance_backward_cuda);
}

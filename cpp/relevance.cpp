// GAE relevance of the CLS token (method.md section 1): CPU kernels, Meta kernels and the Autograd kernel.
//
//   Abar_l = mean_h(clamp(G_l * A_l, min=0)),  rel = e0^T (I + Abar_{L-1}) ... (I + Abar_s), columns 1..T-1
//
// Only the CLS row is carried: v <- v + v Abar_l from the last block to the first, O(L H T^2). Each kernel reads
// A and G once per block; when the backward will want dA alone (G constant, the training default), the forward
// also keeps each block's Abar and the signs of G*A (KeptBlocks), and the backward reads those and G, not A.
#include "ops.h"
#include "gae_kernels.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

// Function versions for the vector widths of x86-64 CPUs, picked when the library loads (GCC and Clang).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ROBUSTVIT_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ROBUSTVIT_VECTOR_CLONES
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ROBUSTVIT_STREAMING_STORES 1
#endif

namespace robustvit {
namespace {

#ifdef ROBUSTVIT_STREAMING_STORES
// Writes one [T,T] fp32 slice of dA row by row with streaming stores, which skip reading each line before
// writing it: a quarter less memory traffic for a backward that streams A and G in and dA out. Used only for
// outputs larger than a last-level cache (GaeDims::stream_outputs), which would leave the cache before being
// read anyway.
//
// Rows of T floats do not start on cache lines, and a line written partly by streaming stores and partly by
// ordinary ones is slow (each costs a partial write to memory; tried: 1.8x slower than ordinary stores alone).
// So each row goes first to a staging buffer in L1 (T + 16 floats) and the slice is written out as one flat
// run of whole 64-byte lines, with ordinary stores only before its first line boundary and after its last.
class StreamedSlice {
 public:
  __attribute__((target("avx2"))) StreamedSlice(float* out, int64_t size, float* stage)
      : out_(out),
        stage_(stage),
        // out[0, head_), before the first line boundary, gets ordinary stores (out is float-aligned).
        head_(std::min<int64_t>(size, static_cast<int64_t>((64 - (reinterpret_cast<uintptr_t>(out) & 63)) & 63) /
                                          4)) {}

  // Where the next row of `n` floats goes; commit(n) once it is written.
  float* row() { return stage_ + pending_; }

  __attribute__((target("avx2"))) void commit(int64_t n) {
    pending_ += n;
    // Out: the ordinary head once, then whole lines; what is left (under a line) moves to the stage's front.
    int64_t k = 0;
    for (; k < pending_ && done_ + k < head_; ++k) out_[done_ + k] = stage_[k];
    if (done_ + k >= head_) {
      for (; k + 16 <= pending_; k += 16) {
        _mm256_stream_ps(out_ + done_ + k, _mm256_loadu_ps(stage_ + k));
        _mm256_stream_ps(out_ + done_ + k + 8, _mm256_loadu_ps(stage_ + k + 8));
      }
    }
    std::copy(stage_ + k, stage_ + pending_, stage_);
    done_ += k;
    pending_ -= k;
  }

  // The tail after the last whole line; streaming stores are weakly ordered: make them visible before the task
  // ends.
  __attribute__((target("avx2"))) void finish() {
    std::copy(stage_, stage_ + pending_, out_ + done_);
    _mm_sfence();
  }

 private:
  float* out_;
  float* stage_;
  int64_t head_;
  int64_t done_ = 0;     // out[0, done_) is written
  int64_t pending_ = 0;  // stage[0, pending_) holds out[done_, done_ + pending_)
};

// CpuKernels::backward_task for fp32 dA alone (the training default: G constant), in AVX2, dA through
// StreamedSlice. The same operations per element as backward_task, so the same values, NaN and Inf included;
// only the order of the dot products' sums differs.
__attribute__((target("avx2"))) void backward_task_streaming(const float* A, const float* G, const float* v,
                                                             const float* g, float* dA, float* dots, int64_t T,
                                                             float inv_h, float* stage) {
  const __m256 zero = _mm256_setzero_ps();
  StreamedSlice out(dA, T * T, stage);
  for (int64_t i = 0; i < T; ++i) {
    const float vi = v[i] * inv_h;
    const float* a = A + i * T;
    const float* gg = G + i * T;
    float* row = out.row();
    const __m256 vi8 = _mm256_set1_ps(vi);
    __m256 acc = zero;
    int64_t j = 0;
    for (; j + 8 <= T; j += 8) {
      const __m256 av = _mm256_loadu_ps(a + j), gv = _mm256_loadu_ps(gg + j), gj = _mm256_loadu_ps(g + j);
      const __m256 w = _mm256_mul_ps(gv, av);
      // w >= 0 (false for NaN) passes vi * g_j; clamp_min0 keeps w unless w < 0 (false for NaN).
      const __m256 pass = _mm256_and_ps(_mm256_cmp_ps(w, zero, _CMP_GE_OQ), _mm256_mul_ps(vi8, gj));
      _mm256_storeu_ps(row + j, _mm256_mul_ps(pass, gv));
      const __m256 clamped = _mm256_andnot_ps(_mm256_cmp_ps(w, zero, _CMP_LT_OQ), w);
      acc = _mm256_add_ps(acc, _mm256_mul_ps(clamped, gj));
    }
    float dot = 0;
    for (; j < T; ++j) {
      const float w = gg[j] * a[j];
      const float pass = w >= 0.0f ? vi * g[j] : 0.0f;
      row[j] = pass * gg[j];
      dot += clamp_min0(w) * g[j];
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    for (float lane : lanes) dot += lane;
    dots[i] = dot;
    out.commit(T);
  }
  out.finish();
}

// How far ahead kept_task_streaming asks for G, in floats. G is its only input stream, and one stream alone
// keeps fewer loads in flight than the two of backward_task_streaming (`perf annotate`: stalled on G's loads):
// without the prefetch the kept backward took 0.82-0.87x the time of the one reading A and G in three
// processes, with it 0.65-0.84x in six (ViT-B shapes, 2 threads, the two alternating in each process).
constexpr int64_t kKeptPrefetch = 256;

// CpuKernels::kept_task for fp32, in AVX2, dA through StreamedSlice: the same values.
__attribute__((target("avx2"))) void kept_task_streaming(const float* G, const int32_t* signs, const float* v,
                                                         const float* g, float* dA, int64_t T, int64_t W,
                                                         float inv_h, float* stage) {
  // Lane k of a group of 8 tests bit k of the group's byte.
  const __m256i lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  StreamedSlice out(dA, T * T, stage);
  for (int64_t i = 0; i < T; ++i) {
    const float vi = v[i] * inv_h;
    const float* gg = G + i * T;
    const uint32_t* s = reinterpret_cast<const uint32_t*>(signs + i * W);
    float* row = out.row();
    const __m256 vi8 = _mm256_set1_ps(vi);
    int64_t j = 0;
    for (; j + 8 <= T; j += 8) {
      if ((j & 15) == 0) _mm_prefetch(reinterpret_cast<const char*>(gg + j + kKeptPrefetch), _MM_HINT_T0);
      const int byte = static_cast<int>((s[j >> 5] >> (j & 31)) & 0xff);  // j % 8 == 0: one word holds the group
      const __m256 keep = _mm256_castsi256_ps(
          _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(byte), lane_bits), lane_bits));
      const __m256 pass = _mm256_and_ps(keep, _mm256_mul_ps(vi8, _mm256_loadu_ps(g + j)));
      _mm256_storeu_ps(row + j, _mm256_mul_ps(pass, _mm256_loadu_ps(gg + j)));
    }
    for (; j < T; ++j) {
      const float pass = (s[j >> 5] >> (j & 31)) & 1u ? vi * g[j] : 0.0f;
      row[j] = pass * gg[j];
    }
    out.commit(T);
  }
  out.finish();
}
#endif

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
        v_out[b * d.T + j] = v_in[b * d.T + j] + sum_parts(partial, d.H, b, j, d.T) / acc_t(d.H);
      }
    }
  }

  // sum_p parts[b,p,j] for parts laid out [B,n,T]: the tasks' partial rows of sample b added in task order.
  static acc_t sum_parts(const std::vector<acc_t>& parts, int64_t n, int64_t b, int64_t j, int64_t T) {
    acc_t sum = 0;
    for (int64_t p = 0; p < n; ++p) sum += parts[(b * n + p) * T + j];
    return sum;
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

  static constexpr bool kKeepsBlocks = true;

  // row_step over every row, also keeping the block's Abar and the bits [G*A >= 0] (KeptBlocks), so that the
  // backward reads G alone. One task per (b, run of rows) goes through the heads one after another, each a
  // contiguous run of A and G (H interleaved runs, one per head, stall the prefetcher); the run's rows of
  // sum_h max(G*A, 0) stay in cache between heads, and are scaled to Abar and applied to v_in after the last.
  static void row_step_keeping(const scalar_t* A, const scalar_t* G, const acc_t* v_in, acc_t* v_out, acc_t* abar,
                               int32_t* signs, const GaeDims& d) {
    const int64_t W = sign_words(d.T);
    // Whole slices while the batch alone gives every thread two tasks.
    const int64_t runs = std::min<int64_t>(d.T, (2 * at::get_num_threads() + d.B - 1) / d.B);
    const int64_t run_rows = (d.T + runs - 1) / runs;
    std::vector<acc_t> partial(d.B * runs * d.T, acc_t(0));
    at::parallel_for(0, d.B * runs, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> sum(run_rows * d.T);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / runs, i0 = (task % runs) * run_rows, rows = std::min(run_rows, d.T - i0);
        if (rows <= 0) continue;
        for (int64_t h = 0; h < d.H; ++h) {
          const int64_t row0 = (b * d.H + h) * d.T + i0;  // the run's first row in [B,H,T]
          keep_task(A + row0 * d.T, G + row0 * d.T, sum.data(), signs + row0 * W, rows, d.T, W, h == 0);
        }
        apply_task(sum.data(), abar + (b * d.T + i0) * d.T, v_in + b * d.T + i0, partial.data() + task * d.T, rows,
                   d.T, acc_t(1) / acc_t(d.H));
      }
    });
    for (int64_t b = 0; b < d.B; ++b) {
      for (int64_t j = 0; j < d.T; ++j) v_out[b * d.T + j] = v_in[b * d.T + j] + sum_parts(partial, runs, b, j, d.T);
    }
  }

  // sum[i,j] (+)= max(G*A, 0)[i,j] and the bits [G*A >= 0] over `rows` rows of one head.
  ROBUSTVIT_VECTOR_CLONES static void keep_task(const scalar_t* A, const scalar_t* G, acc_t* sum, int32_t* signs,
                                                int64_t rows, int64_t T, int64_t W, bool first) {
    for (int64_t i = 0; i < rows; ++i) {
      const scalar_t* __restrict__ a = A + i * T;
      const scalar_t* __restrict__ g = G + i * T;
      acc_t* __restrict__ out = sum + i * T;
      uint32_t* __restrict__ bits = reinterpret_cast<uint32_t*>(signs + i * W);
      for (int64_t k = 0; k < W; ++k) {
        const int64_t j0 = k * 32, n = std::min<int64_t>(32, T - j0);
        uint32_t word = 0;
        for (int64_t t = 0; t < n; ++t) {
          const acc_t w = acc_t(g[j0 + t]) * acc_t(a[j0 + t]);
          out[j0 + t] = (first ? acc_t(0) : out[j0 + t]) + clamp_min0(w);
          word |= uint32_t(w >= acc_t(0)) << t;
        }
        bits[k] = word;
      }
    }
  }

  // abar = sum * inv_h over `rows` rows, and p[j] = sum_i v[i] * abar[i,j].
  ROBUSTVIT_VECTOR_CLONES static void apply_task(const acc_t* sum, acc_t* abar, const acc_t* v, acc_t* p,
                                                 int64_t rows, int64_t T, acc_t inv_h) {
    for (int64_t i = 0; i < rows; ++i) {
      const acc_t vi = v[i];
      const acc_t* __restrict__ s = sum + i * T;
      acc_t* __restrict__ out = abar + i * T;
      acc_t* __restrict__ pp = p;
      for (int64_t j = 0; j < T; ++j) {
        out[j] = s[j] * inv_h;
        pp[j] += vi * out[j];
      }
    }
  }

  // backward_block for dA alone from the kept blocks: dA as there, with the bits for [G*A >= 0], and
  // g_next[b,i] = g_i + sum_j Abar[b,i,j] g_j. One task per (b,h) for dA, as backward_slices.
  static void backward_block_kept(const scalar_t* G, const int32_t* signs, const acc_t* abar, const acc_t* v,
                                  const acc_t* g, acc_t* g_next, scalar_t* dA, const GaeDims& d) {
    const acc_t inv_h = acc_t(1) / acc_t(d.H);
    const int64_t slice = d.T * d.T, W = sign_words(d.T);
    bool stream = false;
#ifdef ROBUSTVIT_STREAMING_STORES
    if constexpr (std::is_same_v<scalar_t, float>) stream = d.stream_outputs && __builtin_cpu_supports("avx2");
#endif
    at::parallel_for(0, d.B * d.H, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> stage(stream ? d.T + 16 : 0);
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / d.H;
#ifdef ROBUSTVIT_STREAMING_STORES
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (stream) {
            kept_task_streaming(G + bh * slice, signs + bh * d.T * W, v + b * d.T, g + b * d.T, dA + bh * slice, d.T,
                                W, inv_h, stage.data());
            continue;
          }
        }
#endif
        kept_task(G + bh * slice, signs + bh * d.T * W, v + b * d.T, g + b * d.T, dA + bh * slice, d.T, W, inv_h);
      }
    });
    at::parallel_for(0, d.B * d.T, 64, [&](int64_t begin, int64_t end) {
      for (int64_t bi = begin; bi < end; ++bi) {
        const int64_t b = bi / d.T;
        g_next[bi] = g[bi] + dot_task(abar + bi * d.T, g + b * d.T, d.T);
      }
    });
  }

  // One (b,h)'s [T,T] slice of dA from G and the bits.
  ROBUSTVIT_VECTOR_CLONES static void kept_task(const scalar_t* G, const int32_t* signs, const acc_t* v,
                                                const acc_t* g, scalar_t* dA, int64_t T, int64_t W, acc_t inv_h) {
    for (int64_t i = 0; i < T; ++i) {
      const acc_t vi = v[i] * inv_h;
      const scalar_t* __restrict__ gg = G + i * T;
      const uint32_t* __restrict__ bits = reinterpret_cast<const uint32_t*>(signs + i * W);
      scalar_t* __restrict__ da = dA + i * T;
      for (int64_t j = 0; j < T; ++j) {
        const acc_t pass = (bits[j >> 5] >> (j & 31)) & 1u ? vi * g[j] : acc_t(0);
        da[j] = scalar_t(pass * acc_t(gg[j]));
      }
    }
  }

  // sum_j x[j] y[j] in kLanes independent partial sums, so that it vectorises without reassociation flags.
  ROBUSTVIT_VECTOR_CLONES static acc_t dot_task(const acc_t* x, const acc_t* y, int64_t T) {
    acc_t lanes[kLanes] = {};
    int64_t j = 0;
    for (; j + kLanes <= T; j += kLanes) {
      for (int64_t k = 0; k < kLanes; ++k) lanes[k] += x[j + k] * y[j + k];
    }
    acc_t dot = 0;
    for (; j < T; ++j) dot += x[j] * y[j];
    for (int64_t k = 0; k < kLanes; ++k) dot += lanes[k];
    return dot;
  }

  // One block of the backward pass, fused over A and G. With v = levels[l+1] and g the gradient reaching
  // the row vector after block l:
  //   dA[b,h,i,j] = [G*A >= 0] * G * v_i * g_j / H,  dG likewise with A   (clamp passes the gradient at 0)
  //   g_next[b,i] = g_i + (1/H) sum_{h,j} max(G*A, 0)[b,h,i,j] g_j         (g (I + Abar)^T)
  // One task per (b,h) streams its [T,T] slices of A, G and dA front to back, as the forward and the memory
  // floor do (a task of a few rows across every head made 3H short runs, which the prefetcher followed less
  // well). Each row's dot product with g goes to dots[b,h,i]; the heads are summed after.
  static void backward_block(const scalar_t* A, const scalar_t* G, const acc_t* v, const acc_t* g, acc_t* g_next,
                             scalar_t* dA, scalar_t* dG, const GaeDims& d) {
    if (dA && dG) return backward_slices<true, true>(A, G, v, g, g_next, dA, dG, d);
    if (dA) return backward_slices<true, false>(A, G, v, g, g_next, dA, dG, d);
    if (dG) return backward_slices<false, true>(A, G, v, g, g_next, dA, dG, d);
    backward_slices<false, false>(A, G, v, g, g_next, dA, dG, d);
  }

  // backward_block for the outputs asked for: one loop per combination, with restrict-qualified rows and no
  // conditional load, so that the compiler vectorises it (with build.rs's -fno-trapping-math).
  template <bool kWriteA, bool kWriteG>
  static void backward_slices(const scalar_t* A, const scalar_t* G, const acc_t* v, const acc_t* g, acc_t* g_next,
                              scalar_t* dA, scalar_t* dG, const GaeDims& d) {
    const acc_t inv_h = acc_t(1) / acc_t(d.H);
    const int64_t slice = d.T * d.T;
    std::vector<acc_t> dots(d.B * d.H * d.T);
    // fp32 dA alone (the training default) with streaming stores, where the outputs outgrow the cache.
    bool stream = false;
#ifdef ROBUSTVIT_STREAMING_STORES
    if constexpr (std::is_same_v<scalar_t, float> && kWriteA && !kWriteG) {
      stream = d.stream_outputs && __builtin_cpu_supports("avx2");
    }
#endif
    at::parallel_for(0, d.B * d.H, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> stage(stream ? d.T + 16 : 0);  // a row and under a line of the last
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / d.H;
#ifdef ROBUSTVIT_STREAMING_STORES
        if constexpr (std::is_same_v<scalar_t, float> && kWriteA && !kWriteG) {
          if (stream) {
            backward_task_streaming(A + bh * slice, G + bh * slice, v + b * d.T, g + b * d.T, dA + bh * slice,
                                    dots.data() + bh * d.T, d.T, inv_h, stage.data());
            continue;
          }
        }
#endif
        backward_task<kWriteA, kWriteG>(A + bh * slice, G + bh * slice, v + b * d.T, g + b * d.T,
                                        kWriteA ? dA + bh * slice : nullptr, kWriteG ? dG + bh * slice : nullptr,
                                        dots.data() + bh * d.T, d.T, inv_h);
      }
    });
    for (int64_t b = 0; b < d.B; ++b) {
      for (int64_t i = 0; i < d.T; ++i) g_next[b * d.T + i] = g[b * d.T + i] + sum_parts(dots, d.H, b, i, d.T) * inv_h;
    }
  }

  // Independent partial sums per row, so that the dot product vectorises without reassociation flags.
  static constexpr int64_t kLanes = 16;

  // One (b,h)'s [T,T] slices: dA and dG written in full, dots[i] = sum_j max(G*A, 0)[i,j] g[j]. Built for
  // AVX-512 and AVX2 too, chosen at load time by the CPU (the rest of the build targets the x86-64 baseline).
  template <bool kWriteA, bool kWriteG>
  ROBUSTVIT_VECTOR_CLONES static void backward_task(const scalar_t* A, const scalar_t* G, const acc_t* v,
                                                    const acc_t* g, scalar_t* dA, scalar_t* dG, acc_t* dots,
                                                    int64_t T, acc_t inv_h) {
    const acc_t* __restrict__ gb = g;
    for (int64_t i = 0; i < T; ++i) {
      const acc_t vi = v[i] * inv_h;
      const scalar_t* __restrict__ a = A + i * T;
      const scalar_t* __restrict__ gg = G + i * T;
      scalar_t* __restrict__ da = kWriteA ? dA + i * T : nullptr;
      scalar_t* __restrict__ dg = kWriteG ? dG + i * T : nullptr;
      // Both sides of the select computed unconditionally so that it becomes a blend.
      const auto element = [&](int64_t j) {
        const acc_t av = acc_t(a[j]), gv = acc_t(gg[j]);
        const acc_t w = gv * av;
        const acc_t pass = w >= acc_t(0) ? vi * gb[j] : acc_t(0);
        if constexpr (kWriteA) da[j] = scalar_t(pass * gv);
        if constexpr (kWriteG) dg[j] = scalar_t(pass * av);
        return clamp_min0(w) * gb[j];
      };
      acc_t lanes[kLanes] = {};
      int64_t j = 0;
      for (; j + kLanes <= T; j += kLanes) {
        for (int64_t k = 0; k < kLanes; ++k) lanes[k] += element(j + k);
      }
      acc_t dot = 0;
      for (; j < T; ++j) dot += element(j);
      for (int64_t k = 0; k < kLanes; ++k) dot += lanes[k];
      dots[i] = dot;
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
  // keep_blocks: have the forward keep the blocks that spare the backward a read of A (KeptBlocks).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::TensorList attn, at::TensorList grad,
                            int64_t start_layer, bool keep_blocks) {
    at::Tensor rel, levels, abar, signs;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      static auto op = op_handle<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
          at::TensorList, at::TensorList, int64_t, bool)>("robustvit::_gae_relevance_forward");
      std::tie(rel, levels, abar, signs) = op.call(attn, grad, start_layer, keep_blocks);
    }
    std::vector<at::Tensor> saved(attn.begin(), attn.end());
    saved.insert(saved.end(), grad.begin(), grad.end());
    saved.insert(saved.end(), {levels, abar, signs});
    ctx->save_for_backward(saved);
    ctx->saved_data["start_layer"] = start_layer;
    ctx->saved_data["keep_blocks"] = keep_blocks;
    return rel;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const size_t L = (saved.size() - 3) / 2;
    const at::Tensor &levels = saved[2 * L], &abar = saved[2 * L + 1], &signs = saved[2 * L + 2];
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
                                             const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                             const std::optional<at::Tensor>&)>("robustvit::_gae_relevance_backward");
      const bool kept = ctx->saved_data["keep_blocks"].toBool();
      d = op.call(grad_outputs[0], attn, grad, start, need_a, need_g, levels,
                  kept ? std::optional<at::Tensor>(abar) : std::nullopt,
                  kept ? std::optional<at::Tensor>(signs) : std::nullopt);
    }
    torch::autograd::variable_list out(2 * L + 2);
    for (size_t l = 0; l < L; ++l) {
      if (need_a) out[l] = std::get<0>(d)[l];
      if (need_g) out[L + l] = std::get<1>(d)[l];
    }
    return out;
  }
};

}  // namespace

GaeForward gae_relevance_forward_cpu(at::TensorList attn, at::TensorList grad, int64_t start_layer,
                                     bool keep_blocks) {
  check_gae_inputs("gae_relevance", attn, grad, start_layer);  // its only caller is gae_relevance's autograd
  return gae_forward<CpuKernels>(contiguous(attn), contiguous(grad), start_layer, keep_blocks);
}

at::Tensor gae_relevance_cpu(at::TensorList attn, at::TensorList grad, int64_t start_layer) {
  check_gae_inputs("gae_relevance", attn, grad, start_layer);
  return std::get<0>(gae_forward<CpuKernels>(contiguous(attn), contiguous(grad), start_layer, false));
}

TensorLists gae_relevance_backward_cpu(const at::Tensor& grad_rel, at::TensorList attn, at::TensorList grad,
                                       int64_t start_layer, bool attn_needs_grad, bool grad_needs_grad,
                                       const std::optional<at::Tensor>& levels, const std::optional<at::Tensor>& abar,
                                       const std::optional<at::Tensor>& signs) {
  check_gae_inputs("_gae_relevance_backward", attn, grad, start_layer);
  check_gae_backward_grad(grad_rel, attn[0]);
  check_gae_levels(levels, attn);
  check_gae_kept(abar, signs, attn, start_layer);
  const KeptBlocks kept =
      abar.has_value() && abar->defined() ? KeptBlocks{abar->contiguous(), signs->contiguous()} : KeptBlocks{};
  return gae_backward<CpuKernels>(grad_rel, contiguous(attn), contiguous(grad), start_layer, attn_needs_grad,
                                  grad_needs_grad, levels, kept);
}

GaeForward gae_relevance_forward_meta(at::TensorList attn, at::TensorList grad, int64_t start_layer,
                                      bool keep_blocks) {
  check_gae_inputs("gae_relevance", attn, grad, start_layer);  // its only caller is gae_relevance's autograd
  const at::Tensor& a = attn[0];
  const KeptBlocks kept = kept_blocks(a, static_cast<int64_t>(attn.size()), start_layer, keep_blocks);
  return {at::empty_symint({a.sym_size(0), a.sym_size(3) - 1}, a.options()),
          at::empty_symint({c10::SymInt(static_cast<int64_t>(attn.size()) + 1), a.sym_size(0), a.sym_size(3)},
                           a.options().dtype(at::toOpMathType(a.scalar_type()))),
          kept.abar, kept.signs};
}

at::Tensor gae_relevance_meta(at::TensorList attn, at::TensorList grad, int64_t start_layer) {
  return std::get<0>(gae_relevance_forward_meta(attn, grad, start_layer, false));
}

TensorLists gae_relevance_backward_meta(const at::Tensor& grad_rel, at::TensorList attn, at::TensorList grad,
                                        int64_t start_layer, bool attn_needs_grad, bool grad_needs_grad,
                                        const std::optional<at::Tensor>& levels,
                                        const std::optional<at::Tensor>& abar,
                                        const std::optional<at::Tensor>& signs) {
  check_gae_inputs("_gae_relevance_backward", attn, grad, start_layer);
  check_gae_backward_grad(grad_rel, attn[0]);
  check_gae_levels(levels, attn);
  check_gae_kept(abar, signs, attn, start_layer);
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
GaeForward gae_relevance_forward_no_kernel(at::TensorList attn, at::TensorList grad, int64_t start_layer,
                                           bool /*keep_blocks*/) {
  return {gae_relevance_no_kernel(attn, grad, start_layer), at::Tensor(), at::Tensor(), at::Tensor()};
}

at::Tensor gae_relevance_autograd(at::TensorList attn, at::TensorList grad, int64_t start_layer) {
  // The CPU kernels keep blocks for a backward that returns dA alone (G constant, the training default).
  const auto requires_grad = [](at::TensorList ts) {
    return std::any_of(ts.begin(), ts.end(), [](const at::Tensor& t) { return t.requires_grad(); });
  };
  const bool keep = at::GradMode::is_enabled() && !attn.empty() && attn[0].device().is_cpu() &&
                    requires_grad(attn) && !requires_grad(grad);
  return GaeRelevanceFunction::apply(attn, grad, start_layer, keep);
}

}  // namespace robustvit

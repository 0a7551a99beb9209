// CPU kernels of WTConv's, OctaveConv's and DRConv's fast paths (convzoo_mm/ops/cpu_kernels.py).
//
// 1. Weight gradient of a stride-1 depthwise conv. Why: PyTorch's CPU depthwise conv runs the
// weight gradient through oneDNN, which is 5-40x slower than the forward at WTConv's shapes (many
// channels, small maps): it dominates a WTConv training step, in our layer and in the published
// one alike. Here the reduction
//     dW[c, ty, tx] = sum_{n, y, x} g[n, c, y, x] * input[n, c, y + ty*d - pad, x + tx*d - pad]
// runs on channels_last data: channels are contiguous, so for one tap and one output row the
// sum over x is a run of fused multiply-adds on whole vectors of channels, kept in registers.
// Rows are split between threads, each with its own (k*k, C) accumulator, added at the end
// in double precision. On x86-64 an AVX2+FMA build of the kernel runs where the CPU has them.
//
// 2. One Haar level and its inverse in one pass each. Why: as tensor ops the 2x2 butterflies are
// ~10 full-size passes (slices, adds, stacks); here each output element is written once, odd
// sizes are zero-padded implicitly (no padded copy) and the inverse crops as it writes.
//
// 3. OctaveConv's resampling (pool 2x2 in ceil mode, nearest x2 upsampling cropped, and their
// adjoints, written or added into channel slices). Why: as tensor ops each is 2-4 strided passes
// with inner loops of stride 2; the drop-in 1x1 layer is memory-bound and these passes decided
// whether it beats the plain conv.
//
// 4. DRConv's region tap mix (region_kernel.h): the paper generator's filter of one (sample,
// region) is W^T = coef^T @ bank, so a region's output is U @ bank with U = coef mixing the k*k
// taps of each position. Why: as tensor ops U needs an im2col copy, a row gather per region and a
// batched matmul of tiny (B x k*k) matrices, together ~30% of DRConv's forward at m=8; here U
// is written in one pass straight from the padded input. Its two adjoints (dL/dxp added straight
// into the padded gradient, dL/dcoef per position) serve the backward: as tensor ops they need
// an im2col of the input and one of its gradient (memory), row gathers and scatters, col2im and
// two einsums of tiny per-position matrices.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#define CONVZOO_X86 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "depthwise_kernel.h"
#include "region_kernel.h"
}  // namespace avx2
#pragma GCC pop_options
#endif

namespace base {
#include "depthwise_kernel.h"
#include "region_kernel.h"
}  // namespace base

// ISA_CALL(kernel, args...): the AVX2+FMA build of a kernel where the CPU has them, else the
// baseline build.
#ifdef CONVZOO_X86
static bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#define ISA_CALL(FN, ...) (has_avx2() ? avx2::FN(__VA_ARGS__) : base::FN(__VA_ARGS__))
#else
#define ISA_CALL(FN, ...) base::FN(__VA_ARGS__)
#endif

template <typename T>
void accumulate(const T* g, const T* in, T* acc, int64_t r0, int64_t r1, int64_t H, int64_t W,
                int64_t C, int64_t k, int64_t d, int64_t pad) {
  ISA_CALL(accumulate_rows_k<T>, g, in, acc, r0, r1, H, W, C, k, d, pad);
}

// grad, input: (N, C, H, W) on CPU, same size (stride 1, 'same' padding), float32 or float64.
// Returns the weight gradient (C, 1, k, k) of conv2d(input, weight, stride=1, padding=pad,
// dilation=d, groups=C).
at::Tensor depthwise_weight_grad(const at::Tensor& grad, const at::Tensor& input, int64_t k,
                                 int64_t dilation, int64_t pad) {
  TORCH_CHECK(grad.device().is_cpu() && input.device().is_cpu(), "CPU tensors only");
  TORCH_CHECK(grad.dim() == 4 && grad.sizes() == input.sizes(),
              "grad and input must be (N, C, H, W) of the same size, got ", grad.sizes(),
              " and ", input.sizes());
  TORCH_CHECK(grad.scalar_type() == input.scalar_type(), "grad and input dtypes differ");
  TORCH_CHECK(k >= 1 && dilation >= 1 && pad >= 0, "bad k/dilation/pad");
  const auto fmt = at::MemoryFormat::ChannelsLast;
  const at::Tensor g = grad.contiguous(fmt), x = input.contiguous(fmt);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t rows = N * H, taps = k * k;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
  at::Tensor out = at::zeros({taps, C}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "depthwise_weight_grad", [&] {
    std::vector<std::vector<scalar_t>> acc(parts, std::vector<scalar_t>(taps * C, 0));
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p)
        accumulate<scalar_t>(gp, xp, acc[p].data(), rows * p / parts, rows * (p + 1) / parts,
                             H, W, C, k, dilation, pad);
    });
    double* o = out.data_ptr<double>();
    for (int64_t p = 0; p < parts; ++p)
      for (int64_t i = 0; i < taps * C; ++i) o[i] += acc[p][i];
  });
  return out.t().reshape({C, 1, k, k}).to(x.scalar_type());
}

// ---------------------------------------------------------------------------- Haar transforms
// x: (N, C, H, W) with strides (sn, sc, sh, sw) -> bands (N, h, w, C, 4), h = ceil(H/2),
// w = ceil(W/2); band order LL, b1, b2, b3 as convzoo_mm.layers.wtconv.haar_analysis, missing odd
// rows/columns read as 0. Any strides: the LL band of the previous level (channel stride 4) is
// read in place.
template <typename T>
void haar_analysis_rows(const T* x, int64_t sn, int64_t sc, int64_t sh, int64_t sw, T* out,
                        int64_t r0, int64_t r1, int64_t H, int64_t W, int64_t C, int64_t h,
                        int64_t w) {
  const T half = T(0.5);
  for (int64_t r = r0; r < r1; ++r) {            // r = n * h + u
    const int64_t n = r / h, u = r % h;
    const T* row0 = x + n * sn + 2 * u * sh;
    const bool has1 = 2 * u + 1 < H;
    T* o = out + r * w * C * 4;
    for (int64_t v = 0; v < w; ++v, o += 4 * C) {
      const T* a = row0 + 2 * v * sw;
      const bool right = 2 * v + 1 < W;
      for (int64_t c = 0; c < C; ++c) {
        const T* pc = a + c * sc;
        const T p00 = pc[0], p01 = right ? pc[sw] : T(0);
        const T p10 = has1 ? pc[sh] : T(0), p11 = (has1 && right) ? pc[sh + sw] : T(0);
        const T s1 = p00 + p01, d1 = p00 - p01, s2 = p10 + p11, d2 = p10 - p11;
        o[4 * c] = (s1 + s2) * half;
        o[4 * c + 1] = (s1 - s2) * half;
        o[4 * c + 2] = (d1 + d2) * half;
        o[4 * c + 3] = (d1 - d2) * half;
      }
    }
  }
}

// y: (N, h, w, C, 4) contiguous; extra: (N, h, w, C) at strides (en, eh, ew, 1) added to the
// LL band, or null; add: (N, H, W, C) at strides (an, ah, aw, 1) added to the output, or null
// -> out (N, H, W, C), H <= 2h, W <= 2w (the crop of the inverse transform).
template <typename T>
void haar_synthesis_rows(const T* y, const T* extra, int64_t en, int64_t eh, int64_t ew,
                         const T* add, int64_t an, int64_t ah, int64_t aw, T* out, int64_t r0,
                         int64_t r1, int64_t H, int64_t W, int64_t C, int64_t h, int64_t w) {
  const T half = T(0.5);
  for (int64_t r = r0; r < r1; ++r) {            // r = n * h + u
    const int64_t n = r / h, u = r % h;
    const bool has1 = 2 * u + 1 < H;
    T* row0 = out + (n * H + 2 * u) * W * C;
    T* row1 = row0 + W * C;
    const T* yr = y + r * w * C * 4;
    for (int64_t v = 0; v < w; ++v) {
      const T* f = yr + v * C * 4;
      const T* e = extra ? extra + n * en + u * eh + v * ew : nullptr;
      const T* a0 = add ? add + n * an + 2 * u * ah + 2 * v * aw : nullptr;
      const bool right = 2 * v + 1 < W;
      T* o0 = row0 + 2 * v * C;
      T* o1 = row1 + 2 * v * C;
      for (int64_t c = 0; c < C; ++c) {
        const T f0 = e ? f[4 * c] + e[c] : f[4 * c];
        const T p = f0 + f[4 * c + 1], q = f0 - f[4 * c + 1];
        const T rr = f[4 * c + 2] + f[4 * c + 3], t = f[4 * c + 2] - f[4 * c + 3];
        T v00 = (p + rr) * half, v01 = (p - rr) * half, v10 = (q + t) * half, v11 = (q - t) * half;
        if (a0) {
          v00 = a0[c] + v00;
          if (right) v01 = a0[aw + c] + v01;
          if (has1) v10 = a0[ah + c] + v10;
          if (has1 && right) v11 = a0[ah + aw + c] + v11;
        }
        o0[c] = v00;
        if (right) o0[C + c] = v01;
        if (has1) {
          o1[c] = v10;
          if (right) o1[C + c] = v11;
        }
      }
    }
  }
}

at::Tensor haar_analysis(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4, "haar_analysis: x must be (N, C, H, W) on CPU");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t h = (H + 1) / 2, w = (W + 1) / 2;
  at::Tensor out = at::empty({N, h, w, C, 4}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "haar_analysis", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, N * h, 1, [&](int64_t r0, int64_t r1) {
      haar_analysis_rows<scalar_t>(xp, x.stride(0), x.stride(1), x.stride(2), x.stride(3), op, r0,
                                   r1, H, W, C, h, w);
    });
  });
  return out;
}

// A (N, C, H', W') map as channels-last data: itself if its channel stride is 1, else a copy.
static at::Tensor channels_last(const c10::optional<at::Tensor>& t, int64_t N, int64_t C,
                                int64_t H, int64_t W, at::ScalarType dtype, const char* name) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  TORCH_CHECK(t->dim() == 4 && t->size(0) == N && t->size(1) == C && t->size(2) == H &&
              t->size(3) == W && t->scalar_type() == dtype, "haar_synthesis: ", name,
              " must be (", N, ", ", C, ", ", H, ", ", W, "), got ", t->sizes());
  return t->stride(1) == 1 ? *t : t->contiguous(at::MemoryFormat::ChannelsLast);
}

// bands: (N, h, w, C, 4); extra: (N, C, h, w) or None; add: (N, C, H, W) or None.
at::Tensor haar_synthesis(const at::Tensor& bands, const c10::optional<at::Tensor>& extra_opt,
                          const c10::optional<at::Tensor>& add_opt, int64_t H, int64_t W) {
  TORCH_CHECK(bands.device().is_cpu() && bands.dim() == 5 && bands.size(4) == 4,
              "haar_synthesis: bands must be (N, h, w, C, 4) on CPU");
  const at::Tensor y = bands.contiguous();
  const int64_t N = y.size(0), h = y.size(1), w = y.size(2), C = y.size(3);
  TORCH_CHECK(H <= 2 * h && W <= 2 * w && H > 2 * h - 2 && W > 2 * w - 2,
              "haar_synthesis: output size (", H, ", ", W, ") does not fit bands of ", h, "x", w);
  const at::Tensor e = channels_last(extra_opt, N, C, h, w, y.scalar_type(), "extra");
  const at::Tensor a = channels_last(add_opt, N, C, H, W, y.scalar_type(), "add");
  at::Tensor out = at::empty({N, H, W, C}, y.options());
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "haar_synthesis", [&] {
    const scalar_t* ep = e.defined() ? e.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ap = a.defined() ? a.data_ptr<scalar_t>() : nullptr;
    const int64_t en = ep ? e.stride(0) : 0, eh = ep ? e.stride(2) : 0, ew = ep ? e.stride(3) : 0;
    const int64_t an = ap ? a.stride(0) : 0, ah = ap ? a.stride(2) : 0, aw = ap ? a.stride(3) : 0;
    const scalar_t* yp = y.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, N * h, 1, [&](int64_t r0, int64_t r1) {
      haar_synthesis_rows<scalar_t>(yp, ep, en, eh, ew, ap, an, ah, aw, op, r0, r1, H, W, C, h,
                                    w);
    });
  });
  return out;
}

// ------------------------------------------------------------------ OctaveConv resampling
// (N, C, H, W) tensors with contiguous rows (stride(3) == 1) and any other strides (e.g. channel
// slices of NCHW maps). The low size of H is ceil(H/2): a window at an odd border covers 1 or 2
// pixels and the mean divides by that count (avg_pool2d, ceil_mode, count_include_pad=False).
static void check_rows(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == 4 && (t.stride(3) == 1 || t.size(3) == 1),
              "octave resampling: ", name, " must be a 4-d CPU tensor with contiguous rows, got ",
              t.sizes(), " with strides ", t.strides());
}

static void check_pair(const at::Tensor& low, const at::Tensor& high) {
  check_rows(low, "the low map");
  check_rows(high, "the high map");
  TORCH_CHECK(low.scalar_type() == high.scalar_type() && low.size(0) == high.size(0) &&
              low.size(1) == high.size(1) && low.size(2) == (high.size(2) + 1) / 2 &&
              low.size(3) == (high.size(3) + 1) / 2,
              "octave resampling: low map ", low.sizes(), " is not the ceil-half of ",
              high.sizes());
}

// out (N, C, ceil(H/2), ceil(W/2)) = 2x2 means of x (N, C, H, W).
void octave_pool(const at::Tensor& x, at::Tensor out) {
  check_pair(out, x);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t h = out.size(2), w2 = W / 2;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "octave_pool", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, N * C * h, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / (C * h), c = (r / h) % C, i = r % h;
        const scalar_t* a = xp + n * x.stride(0) + c * x.stride(1) + 2 * i * x.stride(2);
        scalar_t* o = op + n * out.stride(0) + c * out.stride(1) + i * out.stride(2);
        if (2 * i + 1 < H) {
          const scalar_t* b = a + x.stride(2);
          for (int64_t j = 0; j < w2; ++j)
            o[j] = (a[2 * j] + a[2 * j + 1] + b[2 * j] + b[2 * j + 1]) * scalar_t(0.25);
          if (W % 2) o[w2] = (a[W - 1] + b[W - 1]) * scalar_t(0.5);
        } else {
          for (int64_t j = 0; j < w2; ++j) o[j] = (a[2 * j] + a[2 * j + 1]) * scalar_t(0.5);
          if (W % 2) o[w2] = a[W - 1];
        }
      }
    });
  });
}

// One output row of octave_spread: o[x] = (or +=, if Acc) l[x / 2] * s, s_last at the odd last
// column.
template <bool Acc, typename T>
inline void spread_row(const T* l, T* o, int64_t W, T s, T s_last) {
  const int64_t w2 = W / 2;
  for (int64_t j = 0; j < w2; ++j) {
    const T v = l[j] * s;
    if (Acc) {
      o[2 * j] += v;
      o[2 * j + 1] += v;
    } else {
      o[2 * j] = v;
      o[2 * j + 1] = v;
    }
  }
  if (W % 2) {
    if (Acc)
      o[W - 1] += l[w2] * s_last;
    else
      o[W - 1] = l[w2] * s_last;
  }
}

// out (N, C, H, W) = (or +=, if accumulate) scale * low[.., y / 2, x / 2], with scale = alpha,
// divided by the window's pixel count if mean_adjoint (then it is the adjoint of octave_pool).
void octave_spread(const at::Tensor& low, at::Tensor out, double alpha, bool accumulate,
                   bool mean_adjoint) {
  check_pair(low, out);
  const int64_t N = out.size(0), C = out.size(1), H = out.size(2), W = out.size(3);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "octave_spread", [&] {
    const scalar_t* lp = low.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, N * C * H, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / (C * H), c = (r / H) % C, y = r % H;
        const scalar_t* l = lp + n * low.stride(0) + c * low.stride(1) + (y / 2) * low.stride(2);
        scalar_t* o = op + n * out.stride(0) + c * out.stride(1) + y * out.stride(2);
        // full windows: 4 pixels (2 at the last row of an odd height); the odd last column: half
        const bool full_rows = 2 * (y / 2) + 1 < H;
        const scalar_t s = scalar_t(mean_adjoint ? alpha / (full_rows ? 4 : 2) : alpha);
        const scalar_t s_last = mean_adjoint ? s * scalar_t(2) : s;
        if (accumulate)
          spread_row<true>(l, o, W, s, s_last);
        else
          spread_row<false>(l, o, W, s, s_last);
      }
    });
  });
}

// ------------------------------------------------------------------------ DRConv region tap mix
// xp: padded samples (N, Hp, Wp, C) contiguous, or one sample (Hp, Wp, C); pos: (J,) int64
// output positions n * Ho * Wo + y * Wo + x (n = 0 for one sample); coef: (N, B, k*k), or (B, k*k)
// for one sample; u / du: (G, J, B, C/G). See region_kernel.h.

// Checks the arguments every tap-mix kernel shares; returns N.
static int64_t check_tap_args(const char* name, const at::Tensor& xp, const at::Tensor& pos,
                              int64_t k, int64_t stride, int64_t dilation, int64_t Ho, int64_t Wo,
                              int64_t groups) {
  TORCH_CHECK(xp.device().is_cpu() && (xp.dim() == 3 || xp.dim() == 4) && xp.is_contiguous(),
              name, ": xp must be a contiguous (N, Hp, Wp, C) or (Hp, Wp, C) CPU tensor");
  TORCH_CHECK(pos.dim() == 1 && pos.scalar_type() == at::kLong && pos.is_contiguous(),
              name, ": pos must be a contiguous int64 vector");
  const int64_t N = xp.dim() == 4 ? xp.size(0) : 1;
  const int64_t Hp = xp.size(-3), Wp = xp.size(-2), C = xp.size(-1);
  TORCH_CHECK(k >= 1 && stride >= 1 && dilation >= 1 && groups >= 1 && C % groups == 0 &&
              Ho >= 1 && Wo >= 1 && (Ho - 1) * stride + (k - 1) * dilation < Hp &&
              (Wo - 1) * stride + (k - 1) * dilation < Wp,
              name, ": bad k/stride/dilation/groups/output size for xp ", xp.sizes());
  const int64_t* pp = pos.data_ptr<int64_t>();
  for (int64_t j = 0; j < pos.size(0); ++j)
    TORCH_CHECK(pp[j] >= 0 && pp[j] < N * Ho * Wo, name, ": position out of range");
  return N;
}

static void check_coef(const char* name, const at::Tensor& coef, const at::Tensor& xp, int64_t N,
                       int64_t k) {
  TORCH_CHECK(coef.dim() == xp.dim() - 1 && (coef.dim() == 2 || coef.size(0) == N) &&
                  coef.size(-1) == k * k && coef.scalar_type() == xp.scalar_type(),
              name, ": coef must be (N, B, k*k) (or (B, k*k) for one sample) of xp's dtype, "
              "got ", coef.sizes());
}

static void check_du(const char* name, const at::Tensor& du, const at::Tensor& xp, int64_t groups,
                     int64_t J, int64_t B) {
  TORCH_CHECK(du.is_contiguous() && du.scalar_type() == xp.scalar_type() && du.device().is_cpu() &&
                  du.dim() == 4 && du.size(0) == groups && du.size(1) == J &&
                  (B < 0 || du.size(2) == B) && du.size(3) == xp.size(-1) / groups,
              name, ": du must be a contiguous (", groups, ", ", J, ", B, ", xp.size(-1) / groups,
              ") CPU tensor of xp's dtype", B < 0 ? "" : " with B = coef.size(-2)", ", got ",
              du.sizes());
}

at::Tensor region_tap_mix(const at::Tensor& xp, const at::Tensor& pos, const at::Tensor& coef,
                          int64_t k, int64_t stride, int64_t dilation, int64_t Ho, int64_t Wo,
                          int64_t groups, const c10::optional<at::Tensor>& out) {
  const int64_t N = check_tap_args("region_tap_mix", xp, pos, k, stride, dilation, Ho, Wo, groups);
  check_coef("region_tap_mix", coef, xp, N, k);
  const int64_t Hp = xp.size(-3), Wp = xp.size(-2), C = xp.size(-1);
  const int64_t J = pos.size(0), B = coef.size(-2);
  const int64_t* pp = pos.data_ptr<int64_t>();
  const at::Tensor cf = coef.contiguous();
  const std::vector<int64_t> shape{groups, J, B, C / groups};
  at::Tensor u;
  if (out.has_value()) {
    u = *out;
    TORCH_CHECK(u.is_contiguous() && u.scalar_type() == xp.scalar_type() && u.device().is_cpu() &&
                    u.sizes() == at::IntArrayRef(shape),
                "region_tap_mix: out must be a contiguous (", groups, ", ", J, ", ", B, ", ",
                C / groups, ") CPU tensor of xp's dtype, got ", u.sizes());
  } else {
    u = at::empty(shape, xp.options());
  }
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "region_tap_mix", [&] {
    const scalar_t* x = xp.data_ptr<scalar_t>();
    const scalar_t* c = cf.data_ptr<scalar_t>();
    scalar_t* o = u.data_ptr<scalar_t>();
    at::parallel_for(0, J, 16, [&](int64_t j0, int64_t j1) {
      ISA_CALL(region_tap_mix_rows<scalar_t>, x, Hp, Wp, C, pp, j0, j1, J, Ho, Wo, c, B, k,
               stride, dilation, groups, o);
    });
  });
  return u;
}

// grad_xp (same layout as xp) += the adjoint of region_tap_mix applied to du.
void region_tap_mix_grad_input(const at::Tensor& grad_xp, const at::Tensor& pos,
                               const at::Tensor& coef, const at::Tensor& du, int64_t k,
                               int64_t stride, int64_t dilation, int64_t Ho, int64_t Wo,
                               int64_t groups) {
  const char* name = "region_tap_mix_grad_input";
  const int64_t N = check_tap_args(name, grad_xp, pos, k, stride, dilation, Ho, Wo, groups);
  check_coef(name, coef, grad_xp, N, k);
  const int64_t J = pos.size(0), B = coef.size(-2);
  check_du(name, du, grad_xp, groups, J, B);
  const int64_t Hp = grad_xp.size(-3), Wp = grad_xp.size(-2), C = grad_xp.size(-1);
  const int64_t Cg = C / groups;
  const int64_t* pp = pos.data_ptr<int64_t>();
  const at::Tensor cf = coef.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad_xp.scalar_type(), "region_tap_mix_grad_input", [&] {
    scalar_t* gx = grad_xp.data_ptr<scalar_t>();
    const scalar_t* c = cf.data_ptr<scalar_t>();
    const scalar_t* d = du.data_ptr<scalar_t>();
    const int64_t lanes = 32 / sizeof(scalar_t), vecs = (Cg + lanes - 1) / lanes;
    // threads split the channels (whole vectors): nearby positions' windows overlap
    at::parallel_for(0, vecs, 4, [&](int64_t v0, int64_t v1) {
      const int64_t c0 = v0 * lanes, c1 = std::min(v1 * lanes, Cg);
      ISA_CALL(region_tap_spread_rows<scalar_t>, gx, Hp, Wp, C, pp, J, Ho, Wo, c, d, B, k,
               stride, dilation, groups, c0, c1);
    });
  });
}

// The gradient of region_tap_mix's coefficients, per position: (J, B, k*k).
at::Tensor region_tap_mix_grad_coef(const at::Tensor& xp, const at::Tensor& pos,
                                    const at::Tensor& du, int64_t k, int64_t stride,
                                    int64_t dilation, int64_t Ho, int64_t Wo, int64_t groups) {
  const char* name = "region_tap_mix_grad_coef";
  check_tap_args(name, xp, pos, k, stride, dilation, Ho, Wo, groups);
  const int64_t J = pos.size(0);
  check_du(name, du, xp, groups, J, -1);
  const int64_t Hp = xp.size(-3), Wp = xp.size(-2), C = xp.size(-1), B = du.size(2);
  const int64_t* pp = pos.data_ptr<int64_t>();
  at::Tensor out = at::empty({J, B, k * k}, xp.options());
  AT_DISPATCH_FLOATING_TYPES(xp.scalar_type(), "region_tap_mix_grad_coef", [&] {
    const scalar_t* x = xp.data_ptr<scalar_t>();
    const scalar_t* d = du.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, J, 16, [&](int64_t j0, int64_t j1) {
      ISA_CALL(region_tap_coef_grad_rows<scalar_t>, x, Hp, Wp, C, pp, j0, j1, J, Ho, Wo, d, B,
               k, stride, dilation, groups, o);
    });
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("depthwise_weight_grad", &depthwise_weight_grad,
        "weight gradient of a stride-1 'same' depthwise conv2d (CPU, any memory format)",
        pybind11::arg("grad"), pybind11::arg("input"), pybind11::arg("kernel_size"),
        pybind11::arg("dilation"), pybind11::arg("padding"));
  m.def("haar_analysis", &haar_analysis,
        "one Haar level of x (N, C, H, W) -> bands (N, ceil(H/2), ceil(W/2), C, 4)");
  m.def("haar_synthesis", &haar_synthesis,
        "inverse Haar level of bands (N, h, w, C, 4), extra added to LL first, cropped to "
        "(height, width), plus add -> (N, height, width, C)",
        pybind11::arg("bands"), pybind11::arg("extra"), pybind11::arg("add"),
        pybind11::arg("height"), pybind11::arg("width"));
  m.def("octave_pool", &octave_pool,
        "out = 2x2 means of x in ceil mode (both with contiguous rows, any other strides)",
        pybind11::arg("x"), pybind11::arg("out"));
  m.def("octave_spread", &octave_spread,
        "out (+)= alpha * nearest x2 upsampling of low cropped to out (divided by each window's "
        "pixel count if mean_adjoint: the adjoint of octave_pool)",
        pybind11::arg("low"), pybind11::arg("out"), pybind11::arg("alpha"),
        pybind11::arg("accumulate"), pybind11::arg("mean_adjoint"));
  m.def("region_tap_mix", &region_tap_mix,
        "DRConv: u[g, j, b, c] = sum_t coef[n, b, t] * tap t of output position pos[j] (of "
        "sample n) in the padded channels-last samples xp",
        pybind11::arg("xp"), pybind11::arg("pos"), pybind11::arg("coef"),
        pybind11::arg("kernel_size"), pybind11::arg("stride"), pybind11::arg("dilation"),
        pybind11::arg("out_height"), pybind11::arg("out_width"), pybind11::arg("groups"),
        pybind11::arg("out") = pybind11::none());
  m.def("region_tap_mix_grad_input", &region_tap_mix_grad_input,
        "DRConv: grad_xp += the adjoint of region_tap_mix applied to du (G, J, B, C/G)",
        pybind11::arg("grad_xp"), pybind11::arg("pos"), pybind11::arg("coef"), pybind11::arg("du"),
        pybind11::arg("kernel_size"), pybind11::arg("stride"), pybind11::arg("dilation"),
        pybind11::arg("out_height"), pybind11::arg("out_width"), pybind11::arg("groups"));
  m.def("region_tap_mix_grad_coef", &region_tap_mix_grad_coef,
        "DRConv: the gradient (J, B, k*k) of region_tap_mix's coefficients for du (G, J, B, C/G), "
        "per position",
        pybind11::arg("xp"), pybind11::arg("pos"), pybind11::arg("du"),
        pybind11::arg("kernel_size"), pybind11::arg("stride"), pybind11::arg("dilation"),
        pybind11::arg("out_height"), pybind11::arg("out_width"), pybind11::arg("groups"));
}

// DRConv's region tap mix and its two adjoints (see cpu_kernels.cpp). Included twice by it after
// depthwise_kernel.h (whose Vec it uses): once for the build's baseline instruction set, once for
// AVX2+FMA.
// No include guard on purpose.
//
// For output positions pos[j0..j1) of a batch of padded channels-last samples xp (N, Hp, Wp, C):
//     u[g, j, b, c] = sum_t coef[n, b, t] * xp[n, y(j) + ty * d, x(j) + tx * d, g * Cg + c]
// with n = pos[j] / (Ho * Wo), yx = pos[j] % (Ho * Wo), y(j) = (yx / Wo) * s, x(j) = (yx % Wo) * s,
// t = ty * k + tx, and u laid out (G, J, B, Cg).

// The window of output position p (see above): returns its sample n and writes off[t], the
// offset of tap t within that padded sample (channel 0).
inline int64_t window(int64_t p, int64_t Ho, int64_t Wo, int64_t Wp, int64_t C, int64_t k,
                      int64_t s, int64_t d, int64_t* off) {
  const int64_t n = p / (Ho * Wo), yx = p % (Ho * Wo);
  const int64_t y = (yx / Wo) * s, x = (yx % Wo) * s;
  for (int64_t t = 0; t < k * k; ++t) off[t] = ((y + (t / k) * d) * Wp + x + (t % k) * d) * C;
  return n;
}

// Splits `total` items (bases or taps) into even chunks of at most 8 (one register each in the
// kernels below) and calls fn(first, std::integral_constant<int, count>) for each chunk.
template <typename Fn>
inline void in_chunks_of_8(int64_t total, Fn&& fn) {
  const int64_t chunks = (total + 7) / 8;
  for (int64_t q = 0; q < chunks; ++q) {
    const int64_t first = total * q / chunks, count = total * (q + 1) / chunks - first;
    switch (count) {
      case 1: fn(first, std::integral_constant<int, 1>{}); break;
      case 2: fn(first, std::integral_constant<int, 2>{}); break;
      case 3: fn(first, std::integral_constant<int, 3>{}); break;
      case 4: fn(first, std::integral_constant<int, 4>{}); break;
      case 5: fn(first, std::integral_constant<int, 5>{}); break;
      case 6: fn(first, std::integral_constant<int, 6>{}); break;
      case 7: fn(first, std::integral_constant<int, 7>{}); break;
      default: fn(first, std::integral_constant<int, 8>{}); break;
    }
  }
}

// The tap mix. Per vector of channels, up to 8 bases are summed over all taps in registers (each
// tap's load shared by them), then written once.
template <typename T, int NB>
inline void mix_bases(const T* const* src, const T* cf, int64_t taps, int64_t Cg, T* u) {
  using V = Vec<T>;
  int64_t c0 = 0;
  for (; c0 + V::lanes <= Cg; c0 += V::lanes) {
    typename V::type acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = typename V::type{};
    for (int64_t t = 0; t < taps; ++t) {
      const typename V::type s = V::load(src[t] + c0);
      for (int b = 0; b < NB; ++b) acc[b] += cf[b * taps + t] * s;
    }
    for (int b = 0; b < NB; ++b) std::memcpy(u + b * Cg + c0, &acc[b], sizeof(acc[b]));
  }
  for (; c0 < Cg; ++c0)
    for (int b = 0; b < NB; ++b) {
      T a = T(0);
      for (int64_t t = 0; t < taps; ++t) a += cf[b * taps + t] * src[t][c0];
      u[b * Cg + c0] = a;
    }
}

template <typename T>
void region_tap_mix_rows(const T* xp, int64_t Hp, int64_t Wp, int64_t C, const int64_t* pos,
                         int64_t j0, int64_t j1, int64_t J, int64_t Ho, int64_t Wo, const T* coef,
                         int64_t B, int64_t k, int64_t s, int64_t d, int64_t G, T* u) {
  const int64_t Cg = C / G, taps = k * k;
  std::vector<int64_t> off(taps);
  std::vector<const T*> src(taps);
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t n = window(pos[j], Ho, Wo, Wp, C, k, s, d, off.data());
    const T* cn = coef + n * B * taps;
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t t = 0; t < taps; ++t) src[t] = xp + n * Hp * Wp * C + off[t] + g * Cg;
      T* uj = u + (g * J + j) * B * Cg;
      in_chunks_of_8(B, [&](int64_t b0, auto nb) {
        mix_bases<T, decltype(nb)::value>(src.data(), cn + b0 * taps, taps, Cg, uj + b0 * Cg);
      });
    }
  }
}

// The adjoint of the tap mix (dL/dxp from dL/du), for the channels [c0, c1) of every group:
//     grad_xp[n, y(j) + ty * d, x(j) + tx * d, g * Cg + c] += sum_b coef[n, b, t] * du[g, j, b, c]
// Threads take disjoint channel ranges (the windows of nearby positions overlap). Per vector of
// channels the bases' du vectors are loaded once and mixed into each tap's destination.
template <typename T, int NB>
inline void spread_bases(const T* du, const T* cf, int64_t taps, T* const* dst, int64_t Cg,
                         int64_t c0, int64_t c1) {
  using V = Vec<T>;
  int64_t c = c0;
  for (; c + V::lanes <= c1; c += V::lanes) {
    typename V::type dv[NB];
    for (int b = 0; b < NB; ++b) dv[b] = V::load(du + b * Cg + c);
    for (int64_t t = 0; t < taps; ++t) {
      typename V::type acc = V::load(dst[t] + c);
      for (int b = 0; b < NB; ++b) acc += cf[b * taps + t] * dv[b];
      std::memcpy(dst[t] + c, &acc, sizeof(acc));
    }
  }
  for (; c < c1; ++c)
    for (int64_t t = 0; t < taps; ++t) {
      T a = dst[t][c];
      for (int b = 0; b < NB; ++b) a += cf[b * taps + t] * du[b * Cg + c];
      dst[t][c] = a;
    }
}

template <typename T>
void region_tap_spread_rows(T* gxp, int64_t Hp, int64_t Wp, int64_t C, const int64_t* pos,
                            int64_t J, int64_t Ho, int64_t Wo, const T* coef, const T* du,
                            int64_t B, int64_t k, int64_t s, int64_t d, int64_t G, int64_t c0,
                            int64_t c1) {
  const int64_t Cg = C / G, taps = k * k;
  std::vector<int64_t> off(taps);
  std::vector<T*> dst(taps);
  for (int64_t j = 0; j < J; ++j) {
    const int64_t n = window(pos[j], Ho, Wo, Wp, C, k, s, d, off.data());
    const T* cn = coef + n * B * taps;
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t t = 0; t < taps; ++t) dst[t] = gxp + n * Hp * Wp * C + off[t] + g * Cg;
      const T* dj = du + (g * J + j) * B * Cg;
      in_chunks_of_8(B, [&](int64_t b0, auto nb) {
        spread_bases<T, decltype(nb)::value>(dj + b0 * Cg, cn + b0 * taps, taps, dst.data(), Cg,
                                             c0, c1);
      });
    }
  }
}

// The coefficient gradient of the tap mix, per position (summed over the groups):
//     out[j, b, t] += sum_{g, c} du[g, j, b, c] * xp[n, y(j) + ty * d, x(j) + tx * d, g * Cg + c]
// NT taps at once: NT dot products over the channels in registers, each du load shared by them.
template <typename T, int NT>
inline void dot_taps(const T* du, const T* const* src, int64_t Cg, T* out) {
  using V = Vec<T>;
  typename V::type acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = typename V::type{};
  int64_t c = 0;
  for (; c + V::lanes <= Cg; c += V::lanes) {
    const typename V::type dv = V::load(du + c);
    for (int t = 0; t < NT; ++t) acc[t] += dv * V::load(src[t] + c);
  }
  for (int t = 0; t < NT; ++t) {
    T sum = T(0);
    for (int l = 0; l < V::lanes; ++l) sum += acc[t][l];
    for (int64_t cc = c; cc < Cg; ++cc) sum += du[cc] * src[t][cc];
    out[t] += sum;
  }
}

template <typename T>
void region_tap_coef_grad_rows(const T* xp, int64_t Hp, int64_t Wp, int64_t C, const int64_t* pos,
                               int64_t j0, int64_t j1, int64_t J, int64_t Ho, int64_t Wo,
                               const T* du, int64_t B, int64_t k, int64_t s, int64_t d, int64_t G,
                               T* out) {
  const int64_t Cg = C / G, taps = k * k;
  std::vector<int64_t> off(taps);
  std::vector<const T*> src(taps);
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t n = window(pos[j], Ho, Wo, Wp, C, k, s, d, off.data());
    T* oj = out + j * B * taps;
    std::fill(oj, oj + B * taps, T(0));
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t t = 0; t < taps; ++t) src[t] = xp + n * Hp * Wp * C + off[t] + g * Cg;
      for (int64_t b = 0; b < B; ++b) {
        const T* db = du + ((g * J + j) * B + b) * Cg;
        in_chunks_of_8(taps, [&](int64_t t0, auto nt) {
          dot_taps<T, decltype(nt)::value>(db, src.data() + t0, Cg, oj + b * taps + t0);
        });
      }
    }
  }
}

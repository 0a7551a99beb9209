// DRConv's region tap mix (see cpu_kernels.cpp). Included twice by it after depthwise_kernel.h
// (whose Vec it uses): once for the build's baseline instruction set, once for AVX2+FMA.
// No include guard on purpose.
//
// For output positions pos[j0..j1) of a batch of padded channels-last samples xp (N, Hp, Wp, C):
//     u[g, j, b, c] = sum_t coef[n, b, t] * xp[n, y(j) + ty * d, x(j) + tx * d, g * Cg + c]
// with n = pos[j] / (Ho * Wo), yx = pos[j] % (Ho * Wo), y(j) = (yx / Wo) * s, x(j) = (yx % Wo) * s,
// t = ty * k + tx, and u laid out (G, J, B, Cg). Per vector of channels, up to 8 bases are
// summed over all taps in registers (each tap's load shared by them), then written once.
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
  std::vector<const T*> src(taps);
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t n = pos[j] / (Ho * Wo), yx = pos[j] % (Ho * Wo);
    const int64_t y = (yx / Wo) * s, x = (yx % Wo) * s;
    const T* xn = xp + n * Hp * Wp * C;
    const T* cn = coef + n * B * taps;
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t t = 0; t < taps; ++t)
        src[t] = xn + ((y + (t / k) * d) * Wp + x + (t % k) * d) * C + g * Cg;
      T* uj = u + (g * J + j) * B * Cg;
      const int64_t chunks = (B + 7) / 8;  // bases in even chunks of at most 8
      for (int64_t q = 0; q < chunks; ++q) {
        const int64_t b0 = B * q / chunks, nb = B * (q + 1) / chunks - b0;
        const T* cf = cn + b0 * taps;
        T* ub = uj + b0 * Cg;
        switch (nb) {
          case 1: mix_bases<T, 1>(src.data(), cf, taps, Cg, ub); break;
          case 2: mix_bases<T, 2>(src.data(), cf, taps, Cg, ub); break;
          case 3: mix_bases<T, 3>(src.data(), cf, taps, Cg, ub); break;
          case 4: mix_bases<T, 4>(src.data(), cf, taps, Cg, ub); break;
          case 5: mix_bases<T, 5>(src.data(), cf, taps, Cg, ub); break;
          case 6: mix_bases<T, 6>(src.data(), cf, taps, Cg, ub); break;
          case 7: mix_bases<T, 7>(src.data(), cf, taps, Cg, ub); break;
          default: mix_bases<T, 8>(src.data(), cf, taps, Cg, ub); break;
        }
      }
    }
  }
}

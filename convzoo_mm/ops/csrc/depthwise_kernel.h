// The depthwise weight-gradient kernel (see cpu_kernels.cpp). Included twice by it: once
// compiled for the build's baseline instruction set, once for AVX2+FMA (picked at run time).
// No include guard on purpose.
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int lanes = 32 / sizeof(T);
  static inline type load(const T* p) { type v; std::memcpy(&v, p, sizeof(v)); return v; }
  static inline void add_to(T* p, type v) {
    for (int j = 0; j < lanes; ++j) p[j] += v[j];
  }
};

// All K taps of one kernel row at once, one vector of channels at a time: K independent FMA
// chains in registers, each g load shared by the K taps. Edge columns check each tap.
template <typename T, int K>
inline void row_taps(const T* g_row, const T* in_row, T* acc, int64_t W, int64_t C, int64_t d,
                     int64_t pad, int64_t c_end) {
  using V = Vec<T>;
  // columns [xi0, xi1) have every tap inside the row
  const int64_t xi0 = std::min<int64_t>(W, pad);
  const int64_t xi1 = std::max<int64_t>(xi0, W - ((K - 1) * d - pad));
  for (int64_t c0 = 0; c0 < c_end; c0 += V::lanes) {
    typename V::type r[K];
    for (int t = 0; t < K; ++t) r[t] = typename V::type{};
    auto edge = [&](int64_t x) {
      const typename V::type gv = V::load(g_row + x * C + c0);
      for (int t = 0; t < K; ++t) {
        const int64_t xx = x + t * d - pad;
        if (xx >= 0 && xx < W) r[t] += gv * V::load(in_row + xx * C + c0);
      }
    };
    for (int64_t x = 0; x < xi0; ++x) edge(x);
    const T* ip = in_row - pad * C + c0;
    for (int64_t x = xi0; x < xi1; ++x) {
      const typename V::type gv = V::load(g_row + x * C + c0);
      for (int t = 0; t < K; ++t) r[t] += gv * V::load(ip + (x + t * d) * C);
    }
    for (int64_t x = xi1; x < W; ++x) edge(x);
    for (int t = 0; t < K; ++t) V::add_to(acc + t * C + c0, r[t]);
  }
}

template <typename T, int K>
void accumulate_rows(const T* g, const T* in, T* acc, int64_t r0, int64_t r1, int64_t H,
                     int64_t W, int64_t C, int64_t k, int64_t d, int64_t pad) {
  const int64_t c_vec = K ? C / Vec<T>::lanes * Vec<T>::lanes : 0;
  for (int64_t r = r0; r < r1; ++r) {            // r = n * H + y
    const int64_t n = r / H, y = r % H;
    const T* g_row = g + r * W * C;
    for (int64_t ty = 0; ty < k; ++ty) {
      const int64_t yy = y + ty * d - pad;
      if (yy < 0 || yy >= H) continue;
      const T* in_row = in + (n * H + yy) * W * C;
      T* a_row = acc + ty * k * C;
      if (K) row_taps<T, K ? K : 1>(g_row, in_row, a_row, W, C, d, pad, c_vec);
      // channels left over (all of them when k has no unrolled version): one tap at a time
      for (int64_t tx = 0; tx < k; ++tx) {
        const int64_t off = tx * d - pad;
        const int64_t x0 = std::max<int64_t>(0, -off), x1 = std::min<int64_t>(W, W - off);
        T* a = a_row + tx * C;
        for (int64_t c = c_vec; c < C; ++c) {
          T s = 0;
          for (int64_t x = x0; x < x1; ++x) s += g_row[x * C + c] * in_row[(x + off) * C + c];
          a[c] += s;
        }
      }
    }
  }
}

template <typename T>
void accumulate_rows_k(const T* g, const T* in, T* acc, int64_t r0, int64_t r1, int64_t H,
                       int64_t W, int64_t C, int64_t k, int64_t d, int64_t pad) {
  switch (k) {
    case 3: return accumulate_rows<T, 3>(g, in, acc, r0, r1, H, W, C, k, d, pad);
    case 5: return accumulate_rows<T, 5>(g, in, acc, r0, r1, H, W, C, k, d, pad);
    case 7: return accumulate_rows<T, 7>(g, in, acc, r0, r1, H, W, C, k, d, pad);
    default: return accumulate_rows<T, 0>(g, in, acc, r0, r1, H, W, C, k, d, pad);
  }
}

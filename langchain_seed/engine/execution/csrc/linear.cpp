// Linear layers over prepacked weights: seed::linear (see common.h).
#include "common.h"

namespace seed {

constexpr int64_t NB = 16;  // output columns per packed weight block (16 fp32 lanes)
constexpr int64_t GB = 4;   // blocks a group: a group's k-rows are contiguous (64 columns)
constexpr int64_t GW = GB * NB;
constexpr int64_t PREFETCH = 16;  // weight rows (of one block) fetched ahead of their use

// Weights are prepacked once (kernels.py, pack_weight) in groups of 64 output columns, each
// group's rows contiguous (one stream for the prefetchers): fp32 as [N/64, K, 64] (the 64
// columns side by side per k); bf16 as [N/64, K/2, 64, 2] (pairs of consecutive k per
// column: the operand layout of the AVX512-BF16 dot product). One output element is
// accumulated in fp32 in k order, the same for every row count.

template <int MB, int NV, typename T>
static inline void tile_generic(const T* x, int64_t ldx, const T* wp, int64_t K, int64_t nb0,
                                int64_t kstride, float* acc_out, int64_t ld_acc) {
  // generic kernel (fp32 FMA, or bf16 widened to fp32): rows x[0..MB), blocks nb0..nb0+NV
  v16f acc[MB][NV];
  for (int m = 0; m < MB; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = v16f{} ;
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t k = 0; k < K; ++k) {
      v16f w[NV];
      for (int v = 0; v < NV; ++v) w[v] = load16(wp + ((nb0 / GB) * kstride + k) * GW + v * NB);
      for (int m = 0; m < MB; ++m) {
        float xv = x[m * ldx + k];
        for (int v = 0; v < NV; ++v) acc[m][v] += xv * w[v];
      }
    }
  } else {  // bf16 pairs [K/2][16][2], widened: same pairing order as the dot product
    const uint16_t* xh = reinterpret_cast<const uint16_t*>(x);
    const uint16_t* wh = reinterpret_cast<const uint16_t*>(wp);
    for (int64_t k2 = 0; k2 < K / 2; ++k2) {
      v16f w0[NV], w1[NV];
      for (int v = 0; v < NV; ++v) {
        const uint16_t* p = wh + (((nb0 / GB) * kstride + k2) * GW + v * NB) * 2;
        v16i raw;
        std::memcpy(&raw, p, 64);
        v16i lo = raw << 16, hi = raw & (int32_t)0xFFFF0000;
        std::memcpy(&w0[v], &lo, 64);
        std::memcpy(&w1[v], &hi, 64);
      }
      for (int m = 0; m < MB; ++m) {
        float x0 = bf16_to_f(xh[m * ldx + 2 * k2]), x1 = bf16_to_f(xh[m * ldx + 2 * k2 + 1]);
        for (int v = 0; v < NV; ++v) acc[m][v] = acc[m][v] + (x0 * w0[v] + x1 * w1[v]);
      }
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int v = 0; v < NV; ++v) store16(acc_out + m * ld_acc + v * NB, acc[m][v]);
}

#if defined(__AVX512BF16__)
template <int MB, int NV>
static inline void tile_dpbf16(const at::BFloat16* x, int64_t ldx, const at::BFloat16* wp,
                               int64_t K, int64_t nb0, int64_t kstride, float* acc_out,
                               int64_t ld_acc) {
  __m512 acc[MB][NV];
  for (int m = 0; m < MB; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_setzero_ps();
  const int32_t* xi[MB];
  for (int m = 0; m < MB; ++m) xi[m] = reinterpret_cast<const int32_t*>(x + m * ldx);
  const int32_t* wi = reinterpret_cast<const int32_t*>(wp);
  for (int64_t k2 = 0; k2 < K / 2; ++k2) {
    __m512bh w[NV];
    for (int v = 0; v < NV; ++v) {
      const int32_t* at = wi + ((nb0 / GB) * kstride + k2) * GW + v * NB;
      _mm_prefetch(reinterpret_cast<const char*>(at + PREFETCH * GW), _MM_HINT_T0);
      w[v] = (__m512bh)_mm512_loadu_si512(at);
    }
    for (int m = 0; m < MB; ++m) {
      __m512bh xb = (__m512bh)_mm512_set1_epi32(xi[m][k2]);
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_dpbf16_ps(acc[m][v], xb, w[v]);
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(acc_out + m * ld_acc + v * NB, acc[m][v]);
}
#endif

#if defined(__AVX512F__)
template <int MB, int NV>
static inline void tile_fma512(const float* x, int64_t ldx, const float* wp, int64_t K,
                               int64_t nb0, int64_t kstride, float* acc_out, int64_t ld_acc) {
  __m512 acc[MB][NV];
  for (int m = 0; m < MB; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 w[NV];
    for (int v = 0; v < NV; ++v) w[v] = _mm512_loadu_ps(wp + ((nb0 / GB) * kstride + k) * GW + v * NB);
    for (int m = 0; m < MB; ++m) {
      const __m512 xb = _mm512_set1_ps(x[m * ldx + k]);
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_fmadd_ps(xb, w[v], acc[m][v]);
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(acc_out + m * ld_acc + v * NB, acc[m][v]);
}
#endif

template <typename T, int MB, int NV>
static void tile(const T* x, int64_t ldx, const T* wp, int64_t K, int64_t nb0, int64_t kstride,
                 float* acc, int64_t ld_acc) {
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, at::BFloat16>) {
    tile_dpbf16<MB, NV>(x, ldx, wp, K, nb0, kstride, acc, ld_acc);
    return;
  }
#endif
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    tile_fma512<MB, NV>(x, ldx, wp, K, nb0, kstride, acc, ld_acc);
    return;
  }
#endif
  tile_generic<MB, NV, T>(x, ldx, wp, K, nb0, kstride, acc, ld_acc);
}

template <typename T, int NV>
static void rows_tile(int rows, const T* x, int64_t ldx, const T* wp, int64_t K, int64_t nb0,
                      int64_t kstride, float* acc, int64_t ld_acc) {
  switch (rows) {
    case 6: tile<T, 6, NV>(x, ldx, wp, K, nb0, kstride, acc, ld_acc); break;
    case 5: tile<T, 5, NV>(x, ldx, wp, K, nb0, kstride, acc, ld_acc); break;
    case 4: tile<T, 4, NV>(x, ldx, wp, K, nb0, kstride, acc, ld_acc); break;
    case 3: tile<T, 3, NV>(x, ldx, wp, K, nb0, kstride, acc, ld_acc); break;
    case 2: tile<T, 2, NV>(x, ldx, wp, K, nb0, kstride, acc, ld_acc); break;
    default: tile<T, 1, NV>(x, ldx, wp, K, nb0, kstride, acc, ld_acc); break;
  }
}

template <typename T, typename O>
static void linear_impl(const T* x, int64_t M, int64_t K, const T* wp, int64_t N,
                        const float* bias, O* out) {
  constexpr int NV = GB;  // a tile is a packed group: 64 output columns
  // Rows a tile: 6 x 4 vectors = 24 accumulators + 4 weight vectors + 1 broadcast, within
  // AVX-512's 32 registers. Measured against 4 rows (one thread, bf16, the embedded
  // model's shapes): 8 rows 5.0 -> 4.2 ms, 11 rows 6.2 -> 5.0, 16 rows 7.3 -> 6.5.
#if defined(__AVX512F__)
  constexpr int MB = 6;
#else
  constexpr int MB = 2;  // AVX2: 16 registers of 8 lanes (not measured here: no such CPU)
#endif
  const int64_t nblocks = (N + GW - 1) / GW * GB;  // the last group is padded with zeros
  const int64_t groups = (nblocks + NV - 1) / NV;
  const int64_t kstride = std::is_same_v<T, float> ? K : K / 2;
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    float acc[MB * NV * NB];
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t nb0 = g * NV;
      const int nv = static_cast<int>(std::min<int64_t>(NV, nblocks - nb0));
      for (int64_t m0 = 0; m0 < M; m0 += MB) {
        const int rows = static_cast<int>(std::min<int64_t>(MB, M - m0));
        const T* xr = x + m0 * K;
        rows_tile<T, NV>(rows, xr, K, wp, K, nb0, kstride, acc, NV * NB);  // padded groups
        for (int m = 0; m < rows; ++m) {
          O* o = out + (m0 + m) * N + nb0 * NB;
          const float* a = acc + m * NV * NB;
          const int64_t width = std::min<int64_t>(nv * NB, N - nb0 * NB);
          for (int64_t j = 0; j < width; ++j) {
            float val = a[j] + (bias ? bias[nb0 * NB + j] : 0.0f);
            if constexpr (std::is_same_v<O, float>) {
              o[j] = val;
            } else {
              reinterpret_cast<uint16_t*>(o)[j] = f_to_bf16(val);
            }
          }
        }
      }
    }
  });
}

// x [M, K] (fp32 or bf16, contiguous), packed weight (pack_weight), N outputs.
// out_float: fp32 output (else x's dtype). bias: fp32 [N] or undefined.
at::Tensor linear(const at::Tensor& x, const at::Tensor& packed, int64_t N,
                  const std::optional<at::Tensor>& bias, bool out_float) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "seed::linear: x must be [M, K] contiguous");
  TORCH_CHECK(packed.scalar_type() == x.scalar_type(), "seed::linear: dtype mismatch");
  const int64_t M = x.size(0), K = x.size(1);
  TORCH_CHECK(packed.numel() == (N + GW - 1) / GW * GW * K, "seed::linear: packed weight shape");
  const float* b = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == N, "seed::linear: bias");
    b = bias->data_ptr<float>();
  }
  auto out = at::empty({M, N}, x.options().dtype(out_float ? at::kFloat : x.scalar_type()));
  if (M == 0) return out;
  if (x.scalar_type() == at::kFloat) {
    linear_impl<float, float>(x.data_ptr<float>(), M, K, packed.data_ptr<float>(), N, b,
                              out.data_ptr<float>());
  } else {
    TORCH_CHECK(x.scalar_type() == at::kBFloat16, "seed::linear: fp32 or bf16 only");
    TORCH_CHECK(K % 2 == 0, "seed::linear: bf16 needs an even K");
    const auto* xp = x.data_ptr<at::BFloat16>();
    const auto* wp = packed.data_ptr<at::BFloat16>();
    if (out_float)
      linear_impl<at::BFloat16, float>(xp, M, K, wp, N, b, out.data_ptr<float>());
    else
      linear_impl<at::BFloat16, at::BFloat16>(xp, M, K, wp, N, b, out.data_ptr<at::BFloat16>());
  }
  return out;
}


bool has_avx512_bf16() {
#if defined(__AVX512BF16__)
  return true;
#else
  return false;
#endif
}


}  // namespace seed

// Kernels of the engine's own CPU execution path (see kernels.py for the Python side).
//
// Every kernel computes each output row on its own, with one fixed order of arithmetic
// that does not depend on how many rows run beside it: a row's result is the same alone
// or in a batch of 32 (the engine's batch invariance rests on this).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace seed {

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

constexpr int64_t NB = 16;  // output columns per packed weight block (16 fp32 lanes)
constexpr int64_t GB = 4;   // blocks a group: a group's k-rows are contiguous (64 columns)
constexpr int64_t GW = GB * NB;
constexpr int64_t PREFETCH = 16;  // weight rows (of one block) fetched ahead of their use

static inline float bf16_to_f(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static inline uint16_t f_to_bf16(float f) {  // round to nearest even, as PyTorch
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return 0x7FC0;
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

static inline v16f load16(const float* p) {
  v16f v;
  std::memcpy(&v, p, 64);
  return v;
}
static inline v16f load16(const uint16_t* p) {  // 16 bf16 widened to fp32 (exact)
#if defined(__AVX512F__)
  const __m512i i = _mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16);
  return reinterpret_cast<v16f>(_mm512_castsi512_ps(i));
#else
  v16h h;
  std::memcpy(&h, p, 32);
  v16i i = __builtin_convertvector(h, v16i) << 16;
  v16f v;
  std::memcpy(&v, &i, 64);
  return v;
#endif
}
static inline void store16(float* p, v16f v) { std::memcpy(p, &v, 64); }

// Sum of 16 lanes in one fixed order (a tree), whatever the caller.
static inline float hsum16(v16f v) {
  typedef float v8f __attribute__((vector_size(32)));
  typedef float v4f __attribute__((vector_size(16)));
  v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
  v8f b = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  a = a + b;
  v4f c = __builtin_shufflevector(a, a, 0, 1, 2, 3);
  v4f d = __builtin_shufflevector(a, a, 4, 5, 6, 7);
  c = c + d;
  return (c[0] + c[2]) + (c[1] + c[3]);
}

// ---------------------------------------------------------------- linear layers
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
  constexpr int MB = 4;
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


// ---------------------------------------------------------------- elementwise
// exp for x <= 0 (softmax after the max is taken, silu's exp(-|x|)): 2^n * p(f), fixed
// polynomial, ~2 ulp; the same arithmetic for every lane and call.
static inline v16f exp16(v16f x) {
  v16f n;
  for (int i = 0; i < 16; ++i) {
    x[i] = x[i] < -87.0f ? -87.0f : x[i];  // below, exp underflows (to ~1e-38)
    n[i] = __builtin_rintf(x[i] * 1.44269504088896341f);
  }
  const v16f f = x - n * 0.693359375f - n * -2.12194440e-4f;  // x - n ln 2, in two parts
  v16f p = v16f{} + 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  p = p * f * f + f + 1.0f;
  const v16i e = (__builtin_convertvector(n, v16i) + 127) << 23;  // 2^n
  v16f scale;
  std::memcpy(&scale, &e, 64);
  return p * scale;
}

template <typename T>
static inline float to_f(T v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else return bf16_to_f(reinterpret_cast<const uint16_t&>(v));
}
// Round a float to T and back (identity for fp32): where the reference rounds.
template <typename T>
static inline float rnd(float v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else return bf16_to_f(f_to_bf16(v));
}
template <typename T>
static inline void put(T* p, float v) {
  if constexpr (std::is_same_v<T, float>) *p = v;
  else *reinterpret_cast<uint16_t*>(p) = f_to_bf16(v);
}

// Sum of squares of n values, 16 lanes in index order then the fixed tree.
template <typename T>
static inline float sumsq(const T* x, int64_t n) {
  v16f acc{};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    v16f v;
    if constexpr (std::is_same_v<T, float>) v = load16(x + i);
    else v = load16(reinterpret_cast<const uint16_t*>(x) + i);
    acc += v * v;
  }
  float s = hsum16(acc);
  for (; i < n; ++i) s += to_f(x[i]) * to_f(x[i]);
  return s;
}

// RMSNorm as the reference computes it: h = round(x * rsqrt(mean(x^2) + eps)),
// out = round(w * h) (rounding to T where the reference rounds).
template <typename T>
static inline void rms_row(const T* x, const T* w, T* out, int64_t n, float eps) {
  const float r = 1.0f / std::sqrt(sumsq(x, n) / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) put(out + i, to_f(w[i]) * rnd<T>(to_f(x[i]) * r));
}

// x [T, n] (updated in place to x + y when y is given: the residual stream), w [n].
// Returns RMSNorm(x) [T, n].
at::Tensor add_rms_norm(at::Tensor x, const std::optional<at::Tensor>& y, const at::Tensor& w,
                        double eps) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && w.is_contiguous(), "seed::add_rms_norm");
  const int64_t T = x.size(0), n = x.size(1);
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "add_rms_norm", [&] {
    scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* yp = (y.has_value() && y->defined()) ? y->data_ptr<scalar_t>() : nullptr;
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, T, 8, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        scalar_t* row = xp + t * n;
        if (yp)
          for (int64_t i = 0; i < n; ++i) put(row + i, to_f(row[i]) + to_f(yp[t * n + i]));
        rms_row(row, wp, op + t * n, n, static_cast<float>(eps));
      }
    });
  });
  return out;
}

// SiLU(gate) * up for gu [T, 2I] (gate first): round(round(silu(g)) * u).
at::Tensor silu_mul(const at::Tensor& gu) {
  TORCH_CHECK(gu.dim() == 2 && gu.is_contiguous() && gu.size(1) % 2 == 0, "seed::silu_mul");
  const int64_t T = gu.size(0), I = gu.size(1) / 2;
  auto out = at::empty({T, I}, gu.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, gu.scalar_type(), "silu_mul", [&] {
    const scalar_t* g = gu.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, T, 4, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const scalar_t* gr = g + t * 2 * I;
        const scalar_t* ur = gr + I;
        int64_t i = 0;
        for (; i + 16 <= I; i += 16) {
          v16f x, u;
          for (int l = 0; l < 16; ++l) { x[l] = to_f(gr[i + l]); u[l] = to_f(ur[i + l]); }
          v16f ax;  // silu(x) = x / (1 + exp(-x)), exp of -|x| only (no overflow)
          for (int l = 0; l < 16; ++l) ax[l] = x[l] < 0 ? x[l] : -x[l];
          v16f e = exp16(ax);
          for (int l = 0; l < 16; ++l) {
            float s = x[l] < 0 ? x[l] * e[l] / (1.0f + e[l]) : x[l] / (1.0f + e[l]);
            put(o + t * I + i + l, rnd<scalar_t>(s) * u[l]);
          }
        }
        for (; i < I; ++i) {
          float x = to_f(gr[i]);
          float s = x / (1.0f + std::exp(-x));
          put(o + t * I + i, rnd<scalar_t>(s) * to_f(ur[i]));
        }
      }
    });
  });
  return out;
}

// RoPE on q and k of qkv [T, (H + 2 KVH) * D], k and v stored in the KV pools.
// cos/sin: [P, D/2] fp32 tables (the reference's values, rounded to T as it rounds them);
// pos [T], row [T]: each token's position and pool row; kc/vc [R, KVH, CAP, D].
// qn/kn: optional per-head RMSNorm weights [D] applied before RoPE (Qwen3).
// Returns q [T, H, D].
at::Tensor rope_store(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                      const at::Tensor& pos, const at::Tensor& row, at::Tensor kc, at::Tensor vc,
                      int64_t H, int64_t KVH, const std::optional<at::Tensor>& qn,
                      const std::optional<at::Tensor>& kn, double eps) {
  TORCH_CHECK(qkv.is_contiguous() && kc.is_contiguous() && vc.is_contiguous(), "seed::rope_store");
  const int64_t T = qkv.size(0), D = kc.size(3), CAP = kc.size(2), half = D / 2;
  TORCH_CHECK(qkv.size(1) == (H + 2 * KVH) * D && kc.size(1) == KVH, "seed::rope_store shapes");
  auto q = at::empty({T, H, D}, qkv.options());
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.size(1) == D / 2,
              "seed::rope_store: cos/sin tables [P, D/2]");
  const int64_t table = cos.size(0);
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  const int64_t* pp = pos.data_ptr<int64_t>();
  const int64_t* rp = row.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, qkv.scalar_type(), "rope_store", [&] {
    const scalar_t* src = qkv.data_ptr<scalar_t>();
    scalar_t* qo = q.data_ptr<scalar_t>();
    scalar_t* kp = kc.data_ptr<scalar_t>();
    scalar_t* vp = vc.data_ptr<scalar_t>();
    const scalar_t* qnw = (qn.has_value() && qn->defined()) ? qn->data_ptr<scalar_t>() : nullptr;
    const scalar_t* knw = (kn.has_value() && kn->defined()) ? kn->data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, T, 4, [&](int64_t t0, int64_t t1) {
      std::vector<scalar_t> tmp(D);
      for (int64_t t = t0; t < t1; ++t) {
        TORCH_CHECK(pp[t] >= 0 && pp[t] < table, "seed::rope_store: position past the RoPE table");
        const float* c = cp + pp[t] * half;
        const float* s = sp + pp[t] * half;
        auto rope = [&](const scalar_t* x, const scalar_t* nw, scalar_t* out) {
          if (nw) {
            rms_row(x, nw, tmp.data(), D, static_cast<float>(eps));
            x = tmp.data();
          }
          for (int64_t i = 0; i < D; ++i) {
            const float ci = rnd<scalar_t>(c[i % half]), si = rnd<scalar_t>(s[i % half]);
            const float rot = i < half ? -to_f(x[i + half]) : to_f(x[i - half]);
            put(out + i, rnd<scalar_t>(to_f(x[i]) * ci) + rnd<scalar_t>(rot * si));
          }
        };
        const scalar_t* base = src + t * (H + 2 * KVH) * D;
        for (int64_t h = 0; h < H; ++h) rope(base + h * D, qnw, qo + (t * H + h) * D);
        const int64_t slot = pp[t];
        TORCH_CHECK(slot < CAP, "seed::rope_store: position past the row capacity");
        for (int64_t h = 0; h < KVH; ++h) {
          const int64_t at_ = ((rp[t] * KVH + h) * CAP + slot) * D;
          rope(base + (H + h) * D, knw, kp + at_);
          std::memcpy(vp + at_, base + (H + KVH + h) * D, D * sizeof(scalar_t));
        }
      }
    });
  });
  return q;
}

// ---------------------------------------------------------------- attention
// Packed queries over the KV pools, per-row lengths, no mask tensor.
// q [T, H, D]; kc/vc [R, KVH, CAP, D]; per packed row i: pool row rows[i], its queries at
// q[qstart[i] .. qstart[i] + qlen[i]), and ctx[i] keys cached before them: query j of the
// row (position ctx + j) sees keys max(0, ctx + j + 1 - window) .. ctx + j (window 0: all).
// The g = H / KVH query heads of a key/value head read its keys once (grouped-query
// attention without repeating heads). Every query's arithmetic is its own and in key
// order: a score is one dot product (fixed lane tree), the softmax takes the query's own
// max and sums its own keys lane-wise in key order, values are accumulated in key order.
// Neighbouring queries and rows never change it (batch invariance).

constexpr int QG = 4;  // queries whose accumulators stay in registers together

template <typename T, int DV>
struct KeyVec {  // one key or value vector, widened to fp32 (DV x 16 lanes)
  v16f v[DV];
  inline void load(const T* p) {
    for (int c = 0; c < DV; ++c) {
      if constexpr (std::is_same_v<T, float>) v[c] = load16(p + c * 16);
      else v[c] = load16(reinterpret_cast<const uint16_t*>(p) + c * 16);
    }
  }
};

// Dot products of one query with 4 keys, reduced together: lane i of (lo256 + hi256),
// then lo128 + hi128, then (0 + 2) + (1 + 3): the same tree as hsum16, so a score is the
// same number whichever path computes it.
static inline void hsum4(v16f a0, v16f a1, v16f a2, v16f a3, float* out) {
#if defined(__AVX512F__)
  const __m512 b0 = reinterpret_cast<__m512>(a0), b1 = reinterpret_cast<__m512>(a1);
  const __m512 b2 = reinterpret_cast<__m512>(a2), b3 = reinterpret_cast<__m512>(a3);
  // [a0.lo + a0.hi | a1.lo + a1.hi] (256-bit halves)
  const __m512 x = _mm512_add_ps(_mm512_shuffle_f32x4(b0, b1, 0x44), _mm512_shuffle_f32x4(b0, b1, 0xEE));
  const __m512 y = _mm512_add_ps(_mm512_shuffle_f32x4(b2, b3, 0x44), _mm512_shuffle_f32x4(b2, b3, 0xEE));
  // 128-bit lanes: [a0 | a1 | a2 | a3], each lo128 + hi128 of its 256
  const __m512 z = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD));
  const __m512 w = _mm512_add_ps(z, _mm512_permute_ps(z, 0x4E));   // (0 + 2), (1 + 3)
  const __m512 t = _mm512_add_ps(w, _mm512_permute_ps(w, 0xB1));   // (0 + 2) + (1 + 3)
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, t);
  out[0] = lanes[0];
  out[1] = lanes[4];
  out[2] = lanes[8];
  out[3] = lanes[12];
#else
  out[0] = hsum16(a0);
  out[1] = hsum16(a1);
  out[2] = hsum16(a2);
  out[3] = hsum16(a3);
#endif
}

// One query's dot product with one key, fp32 lanes (the key widened to fp32): products
// summed in pairs, then pairs of pairs (a fixed tree), never contracted into FMAs.
template <int DV>
static inline v16f dot_lanes(const v16f* qv, const v16f* kv) {
  v16f p[DV];
  for (int c = 0; c < DV; ++c) p[c] = qv[c] * kv[c];
  for (int width = 1; width < DV; width *= 2)
    for (int c = 0; c + width < DV; c += 2 * width) p[c] = p[c] + p[c + width];
  return p[0];
}

// Scores of N <= QG queries (qf: fp32 [N][D]) against keys [k0, k1) into S rows.
template <typename T, int DV, int N>
static inline void scores_n(const float* qf, const T* K, int64_t k0, int64_t k1, float* S,
                            int64_t ldS, int64_t kbeg, float scale) {
  constexpr int n = N;
  v16f qv[N][DV];
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < DV; ++c) qv[r][c] = load16(qf + r * DV * 16 + c * 16);
  KeyVec<T, DV> key[4];
  int64_t k = k0;
  for (; k + 4 <= k1; k += 4) {
    for (int u = 0; u < 4; ++u) key[u].load(K + (k + u) * DV * 16);
    for (int r = 0; r < n; ++r) {
      float out[4];
      hsum4(dot_lanes<DV>(qv[r], key[0].v), dot_lanes<DV>(qv[r], key[1].v),
            dot_lanes<DV>(qv[r], key[2].v), dot_lanes<DV>(qv[r], key[3].v), out);
      for (int u = 0; u < 4; ++u) S[r * ldS + (k + u - kbeg)] = out[u] * scale;
    }
  }
  for (; k < k1; ++k) {
    key[0].load(K + k * DV * 16);
    for (int r = 0; r < n; ++r)
      S[r * ldS + (k - kbeg)] = hsum16(dot_lanes<DV>(qv[r], key[0].v)) * scale;
  }
}

// Softmax of one query's scores s[lo, hi) in place (zero elsewhere in [0, ns)); returns
// the sum of its exponentials.
static inline float softmax_row(float* s, int64_t lo, int64_t hi, int64_t ns) {
  v16f mv = v16f{} - INFINITY;
  int64_t k = lo;
  for (; k + 16 <= hi; k += 16) {
    v16f x = load16(s + k);
    for (int l = 0; l < 16; ++l) mv[l] = x[l] > mv[l] ? x[l] : mv[l];
  }
  float m = -INFINITY;
  for (int l = 0; l < 16; ++l) m = mv[l] > m ? mv[l] : m;
  for (int64_t t = k; t < hi; ++t) m = s[t] > m ? s[t] : m;
  v16f sum{};
  k = lo;
  for (; k + 16 <= hi; k += 16) {
    v16f e = exp16(load16(s + k) - m);
    store16(s + k, e);
    sum += e;
  }
  if (k < hi) {  // the tail, as one padded vector
    v16f x = v16f{} - 87.0f - m;
    for (int64_t t = k; t < hi; ++t) x[t - k] = s[t] - m;
    v16f e = exp16(x);
    for (int l = static_cast<int>(hi - k); l < 16; ++l) e[l] = 0.0f;
    for (int64_t t = k; t < hi; ++t) s[t] = e[t - k];
    sum += e;
  }
  for (int64_t t = 0; t < lo; ++t) s[t] = 0.0f;
  for (int64_t t = hi; t < ns; ++t) s[t] = 0.0f;
  return hsum16(sum);
}

// out rows (N <= QG queries) = sum_k p[r][k] v_k / denom[r], keys [kbeg, kend).
template <typename T, int DV, int N>
static inline void values_n(const float* S, int64_t ldS, const T* V, int64_t kbeg, int64_t kend,
                            const float* denom, T* const* dst) {
  constexpr int n = N;
  v16f acc[N][DV];
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < DV; ++c) acc[r][c] = v16f{};
  KeyVec<T, DV> val;
  for (int64_t k = kbeg; k < kend; ++k) {
    val.load(V + k * DV * 16);
    for (int r = 0; r < n; ++r) {
      const float p = S[r * ldS + (k - kbeg)];
      for (int c = 0; c < DV; ++c) acc[r][c] += p * val.v[c];
    }
  }
  for (int r = 0; r < n; ++r) {
    const float inv = 1.0f / denom[r];
    for (int c = 0; c < DV; ++c)
      for (int l = 0; l < 16; ++l) put(dst[r] + c * 16 + l, acc[r][c][l] * inv);
  }
}

#if defined(__AVX512BF16__)
// bf16 rows of the pool with the CPU's bf16 dot product (DV even: 32 values a register).
// Scores: q . k over pairs of dimensions, 16 fp32 lanes, then the hsum tree.
template <int DV, int N>
static inline void scores_dp(const at::BFloat16* const* qb, const at::BFloat16* K, int64_t k0,
                             int64_t k1, float* S, int64_t ldS, int64_t kbeg, float scale) {
  constexpr int W = DV / 2;  // registers of 32 bf16 a row
  __m512bh qv[N][W];
  for (int r = 0; r < N; ++r)
    for (int c = 0; c < W; ++c) qv[r][c] = (__m512bh)_mm512_loadu_si512(qb[r] + c * 32);
  auto dot = [&](int r, const __m512bh* kv) {
    __m512 a = _mm512_dpbf16_ps(_mm512_setzero_ps(), qv[r][0], kv[0]);
    for (int c = 1; c < W; ++c) a = _mm512_dpbf16_ps(a, qv[r][c], kv[c]);
    return reinterpret_cast<v16f>(a);
  };
  int64_t k = k0;
  for (; k + 4 <= k1; k += 4) {
    __m512bh kv[4][W];
    for (int u = 0; u < 4; ++u)
      for (int c = 0; c < W; ++c)
        kv[u][c] = (__m512bh)_mm512_loadu_si512(K + (k + u) * DV * 16 + c * 32);
    for (int r = 0; r < N; ++r) {
      float out[4];
      hsum4(dot(r, kv[0]), dot(r, kv[1]), dot(r, kv[2]), dot(r, kv[3]), out);
      for (int u = 0; u < 4; ++u) S[r * ldS + (k + u - kbeg)] = out[u] * scale;
    }
  }
  for (; k < k1; ++k) {
    __m512bh kv[W];
    for (int c = 0; c < W; ++c) kv[c] = (__m512bh)_mm512_loadu_si512(K + k * DV * 16 + c * 32);
    for (int r = 0; r < N; ++r) S[r * ldS + (k - kbeg)] = hsum16(dot(r, kv)) * scale;
  }
}

// Values: sum over pairs of keys (2m, 2m + 1), counted from key 0 so that a query's pairs
// never depend on its block, of p (rounded to bf16, as the reference's bf16 attention
// rounds its probabilities) times v, with the bf16 dot product. A key outside [kbeg, kend)
// in a pair contributes a zero vector. unpacklo/hi interleave two keys per 128-bit lane:
// lane j of `lo` holds dimension 8 (j / 4) + j % 4, of `hi` 8 (j / 4) + 4 + j % 4.
template <int DV, int N>
static inline void values_dp(const float* S, int64_t ldS, const at::BFloat16* V, int64_t kbeg,
                             int64_t kend, const float* denom, at::BFloat16* const* dst) {
  constexpr int W = DV / 2;
  __m512 acc[N][W][2];
  for (int r = 0; r < N; ++r)
    for (int c = 0; c < W; ++c) acc[r][c][0] = acc[r][c][1] = _mm512_setzero_ps();
  auto prob = [&](int r, int64_t k) -> uint32_t {  // bf16 bits of p, 0 outside the keys
    return (k < kbeg || k >= kend) ? 0u : f_to_bf16(S[r * ldS + (k - kbeg)]);
  };
  for (int64_t k = kbeg & ~int64_t(1); k < kend; k += 2) {
    __m512i lo[W], hi[W];
    for (int c = 0; c < W; ++c) {
      const __m512i a = k >= kbeg ? _mm512_loadu_si512(V + k * DV * 16 + c * 32)
                                  : _mm512_setzero_si512();
      const __m512i b = k + 1 < kend ? _mm512_loadu_si512(V + (k + 1) * DV * 16 + c * 32)
                                     : _mm512_setzero_si512();
      lo[c] = _mm512_unpacklo_epi16(a, b);
      hi[c] = _mm512_unpackhi_epi16(a, b);
    }
    for (int r = 0; r < N; ++r) {
      const __m512bh pp = (__m512bh)_mm512_set1_epi32(
          static_cast<int32_t>(prob(r, k) | (prob(r, k + 1) << 16)));
      for (int c = 0; c < W; ++c) {
        acc[r][c][0] = _mm512_dpbf16_ps(acc[r][c][0], pp, (__m512bh)lo[c]);
        acc[r][c][1] = _mm512_dpbf16_ps(acc[r][c][1], pp, (__m512bh)hi[c]);
      }
    }
  }
  for (int r = 0; r < N; ++r) {
    const float inv = 1.0f / denom[r];
    for (int c = 0; c < W; ++c)
      for (int half = 0; half < 2; ++half) {
        alignas(64) float lanes[16];
        _mm512_store_ps(lanes, acc[r][c][half]);
        for (int j = 0; j < 16; ++j)
          put(dst[r] + c * 32 + 8 * (j / 4) + 4 * half + j % 4, lanes[j] * inv);
      }
  }
}
#endif

template <typename T, int DV>
static void scores(const float* qf, int n, const T* K, int64_t k0, int64_t k1, float* S,
                   int64_t ldS, int64_t kbeg, float scale) {
  switch (n) {
    case 4: scores_n<T, DV, 4>(qf, K, k0, k1, S, ldS, kbeg, scale); break;
    case 3: scores_n<T, DV, 3>(qf, K, k0, k1, S, ldS, kbeg, scale); break;
    case 2: scores_n<T, DV, 2>(qf, K, k0, k1, S, ldS, kbeg, scale); break;
    default: scores_n<T, DV, 1>(qf, K, k0, k1, S, ldS, kbeg, scale); break;
  }
}

template <typename T, int DV>
static void values(const float* S, int n, int64_t ldS, const T* V, int64_t kbeg, int64_t kend,
                   const float* denom, T* const* dst) {
  switch (n) {
    case 4: values_n<T, DV, 4>(S, ldS, V, kbeg, kend, denom, dst); break;
    case 3: values_n<T, DV, 3>(S, ldS, V, kbeg, kend, denom, dst); break;
    case 2: values_n<T, DV, 2>(S, ldS, V, kbeg, kend, denom, dst); break;
    default: values_n<T, DV, 1>(S, ldS, V, kbeg, kend, denom, dst); break;
  }
}

template <typename T, int DV>
static void attention_impl(const T* q, const T* kc, const T* vc, T* out, const int64_t* rows,
                           const int64_t* qstart, const int64_t* qlen, const int64_t* ctx,
                           int64_t B, int64_t H, int64_t KVH, int64_t CAP, int64_t window,
                           float scale) {
  constexpr int64_t D = DV * 16;
  const int64_t G = H / KVH;
  constexpr int64_t QB = 8;  // query tokens a block (G * QB queries share each key load)
  at::parallel_for(0, B * KVH, 1, [&](int64_t w0, int64_t w1) {
    std::vector<float> S, qf, denom;
    std::vector<int64_t> lo, hi;
    std::vector<T*> dst;
    std::vector<const T*> qsrc;
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t i = w / KVH, h = w % KVH;
      const T* K = kc + (rows[i] * KVH + h) * CAP * D;
      const T* V = vc + (rows[i] * KVH + h) * CAP * D;
      for (int64_t j0 = 0; j0 < qlen[i]; j0 += QB) {
        const int64_t nq = std::min<int64_t>(QB, qlen[i] - j0);
        const int64_t R = nq * G;  // queries of the block: token-major, then head
        lo.resize(R);
        hi.resize(R);
        dst.resize(R);
        qsrc.resize(R);
        qf.resize(R * D);
        denom.resize(R);
        for (int64_t jj = 0; jj < nq; ++jj) {
          const int64_t end = ctx[i] + j0 + jj + 1;  // keys this token sees: [.., end)
          for (int64_t g = 0; g < G; ++g) {
            const int64_t r = jj * G + g;
            hi[r] = end;
            lo[r] = window > 0 ? std::max<int64_t>(0, end - window) : 0;
            const T* src = q + ((qstart[i] + j0 + jj) * H + h * G + g) * D;
            dst[r] = out + ((qstart[i] + j0 + jj) * H + h * G + g) * D;
            qsrc[r] = src;
            for (int64_t d = 0; d < D; ++d) qf[r * D + d] = to_f(src[d]);
          }
        }
        // Every key in [kbeg, kend) was written (cached, or stored by this step), so the
        // scores of keys a query does not see are finite; its softmax zeroes them.
        const int64_t kbeg = lo[0], kend = hi[R - 1], ns = kend - kbeg;
        S.resize(R * ns);
        for (int64_t r0 = 0; r0 < R; r0 += QG) {
          const int n = static_cast<int>(std::min<int64_t>(QG, R - r0));
#if defined(__AVX512BF16__)
          if constexpr (std::is_same_v<T, at::BFloat16> && DV % 2 == 0) {
            const T* qb[QG];
            for (int u = 0; u < n; ++u) qb[u] = qsrc[r0 + u];
            switch (n) {
              case 4: scores_dp<DV, 4>(qb, K, kbeg, kend, S.data() + r0 * ns, ns, kbeg, scale); break;
              case 3: scores_dp<DV, 3>(qb, K, kbeg, kend, S.data() + r0 * ns, ns, kbeg, scale); break;
              case 2: scores_dp<DV, 2>(qb, K, kbeg, kend, S.data() + r0 * ns, ns, kbeg, scale); break;
              default: scores_dp<DV, 1>(qb, K, kbeg, kend, S.data() + r0 * ns, ns, kbeg, scale); break;
            }
            continue;
          }
#endif
          scores<T, DV>(qf.data() + r0 * D, n, K, kbeg, kend, S.data() + r0 * ns, ns, kbeg,
                        scale);
        }
        for (int64_t r = 0; r < R; ++r)
          denom[r] = softmax_row(S.data() + r * ns, lo[r] - kbeg, hi[r] - kbeg, ns);
        for (int64_t r0 = 0; r0 < R; r0 += QG) {
          const int n = static_cast<int>(std::min<int64_t>(QG, R - r0));
#if defined(__AVX512BF16__)
          if constexpr (std::is_same_v<T, at::BFloat16> && DV % 2 == 0) {
            const float* Sr = S.data() + r0 * ns;
            T* const* d = dst.data() + r0;
            switch (n) {
              case 4: values_dp<DV, 4>(Sr, ns, V, kbeg, kend, denom.data() + r0, d); break;
              case 3: values_dp<DV, 3>(Sr, ns, V, kbeg, kend, denom.data() + r0, d); break;
              case 2: values_dp<DV, 2>(Sr, ns, V, kbeg, kend, denom.data() + r0, d); break;
              default: values_dp<DV, 1>(Sr, ns, V, kbeg, kend, denom.data() + r0, d); break;
            }
            continue;
          }
#endif
          values<T, DV>(S.data() + r0 * ns, n, ns, V, kbeg, kend, denom.data() + r0,
                        dst.data() + r0);
        }
      }
    }
  });
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& kc, const at::Tensor& vc,
                     const at::Tensor& rows, const at::Tensor& qstart, const at::Tensor& qlen,
                     const at::Tensor& ctx, int64_t window, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.is_contiguous() && kc.is_contiguous() && vc.is_contiguous(),
              "seed::attention: contiguous q [T, H, D] and pools [R, KVH, CAP, D]");
  const int64_t H = q.size(1), D = q.size(2), KVH = kc.size(1), CAP = kc.size(2);
  TORCH_CHECK(D % 16 == 0 && D <= 128 && H % KVH == 0, "seed::attention: head_dim 16..128");
  auto out = at::empty_like(q);
  const int64_t B = rows.numel();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "attention", [&] {
    auto run = [&](auto dv) {
      attention_impl<scalar_t, decltype(dv)::value>(
          q.data_ptr<scalar_t>(), kc.data_ptr<scalar_t>(), vc.data_ptr<scalar_t>(),
          out.data_ptr<scalar_t>(), rows.data_ptr<int64_t>(), qstart.data_ptr<int64_t>(),
          qlen.data_ptr<int64_t>(), ctx.data_ptr<int64_t>(), B, H, KVH, CAP, window,
          static_cast<float>(scale));
    };
    switch (D / 16) {
      case 1: run(std::integral_constant<int, 1>{}); break;
      case 2: run(std::integral_constant<int, 2>{}); break;
      case 3: run(std::integral_constant<int, 3>{}); break;
      case 4: run(std::integral_constant<int, 4>{}); break;
      case 5: run(std::integral_constant<int, 5>{}); break;
      case 6: run(std::integral_constant<int, 6>{}); break;
      case 7: run(std::integral_constant<int, 7>{}); break;
      default: run(std::integral_constant<int, 8>{}); break;
    }
  });
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

TORCH_LIBRARY(seed, m) {
  m.def("linear(Tensor x, Tensor packed, int N, Tensor? bias, bool out_float) -> Tensor");
  m.def("has_avx512_bf16() -> bool", &seed::has_avx512_bf16);
  m.def("add_rms_norm(Tensor(a!) x, Tensor? y, Tensor w, float eps) -> Tensor");
  m.def("silu_mul(Tensor gu) -> Tensor");
  m.def("rope_store(Tensor qkv, Tensor cos, Tensor sin, Tensor pos, Tensor row, Tensor(a!) kc, "
        "Tensor(b!) vc, int H, int KVH, Tensor? qn, Tensor? kn, float eps) -> Tensor");
  m.def("attention(Tensor q, Tensor kc, Tensor vc, Tensor rows, Tensor qstart, Tensor qlen, "
        "Tensor ctx, int window, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(seed, CPU, m) {
  m.impl("linear", &seed::linear);
  m.impl("add_rms_norm", &seed::add_rms_norm);
  m.impl("silu_mul", &seed::silu_mul);
  m.impl("rope_store", &seed::rope_store);
  m.impl("attention", &seed::attention);
}

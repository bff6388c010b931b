// Attention over the KV pools: seed::attention (see common.h).
#include "common.h"

namespace seed {

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
//
// Scores, 16 keys at a time: each query's 16 dot-product vectors (16 fp32 lanes each) are
// reduced together by a transposing tree whose lane u ends as key u's score. Every key
// takes the same tree, lanes ((0 + 2) + (1 + 3)) within each 128-bit block, then
// (block 0 + block 1) + (block 2 + block 3), whichever of the 16 places it holds; a last
// partial block is padded with zero keys, so a score never depends on where its block
// starts or how many keys follow (batch invariance). One block of keys serves every query
// of the group while it is in L1.
static inline __m512 pair_sum(__m512 a, __m512 b) {  // [a0+a2, b0+b2, a1+a3, b1+b3] a block
  return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
}
static inline __m512 quad_sum(__m512 ab, __m512 cd) {  // block L: [a, b, c, d] over block L
  return _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));
}
static inline __m512 block_sum(__m512 x, __m512 y) {  // [x0+x1, x2+x3, y0+y1, y2+y3] blocks
  return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD));
}
static inline __m512 reduce16(const __m512* d) {  // lane u: the sum of d[u]'s 16 lanes
  __m512 q[4];
  for (int j = 0; j < 4; ++j)
    q[j] = quad_sum(pair_sum(d[4 * j], d[4 * j + 1]), pair_sum(d[4 * j + 2], d[4 * j + 3]));
  return block_sum(block_sum(q[0], q[1]), block_sum(q[2], q[3]));
}

template <int DV>
static inline void scores_dp(const at::BFloat16* const* qb, int n, const at::BFloat16* K,
                             int64_t k0, int64_t k1, float* S, int64_t ldS, int64_t kbeg,
                             float scale) {
  constexpr int W = DV / 2;  // registers of 32 bf16 a row
  const __m512 sc = _mm512_set1_ps(scale);
  __m512bh qv[QG][W];
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < W; ++c) qv[r][c] = (__m512bh)_mm512_loadu_si512(qb[r] + c * 32);
  for (int64_t k = k0; k < k1; k += 16) {
    const int m = static_cast<int>(std::min<int64_t>(16, k1 - k));
    const __mmask16 valid = static_cast<__mmask16>((1u << m) - 1);
    for (int r = 0; r < n; ++r) {
      __m512 d[16];
      for (int u = 0; u < 16; ++u) {
        d[u] = _mm512_setzero_ps();
        if (u < m)
          for (int c = 0; c < W; ++c)
            d[u] = _mm512_dpbf16_ps(
                d[u], qv[r][c], (__m512bh)_mm512_loadu_si512(K + (k + u) * DV * 16 + c * 32));
      }
      _mm512_mask_storeu_ps(S + r * ldS + (k - kbeg), valid, _mm512_mul_ps(reduce16(d), sc));
    }
  }
}

// Values: sum over pairs of keys (2m, 2m + 1), counted from key 0 so that a query's pairs
// never depend on its block, of p (rounded to bf16, as the reference's bf16 attention
// rounds its probabilities) times v, with the bf16 dot product. P holds each query's
// probabilities as bf16 from key kbeg rounded down to even (zero outside its keys); a key
// outside [kbeg, kend) in a pair contributes a zero vector. unpacklo/hi interleave two
// keys per 128-bit lane: lane j of `lo` holds dimension 8 (j / 4) + j % 4, of `hi`
// 8 (j / 4) + 4 + j % 4.
template <int DV, int N>
static inline void values_dp(const uint16_t* P, int64_t ldP, const at::BFloat16* V,
                             int64_t kbeg, int64_t kend, const float* denom,
                             at::BFloat16* const* dst) {
  constexpr int W = DV / 2;
  __m512 acc[N][W][2];
  for (int r = 0; r < N; ++r)
    for (int c = 0; c < W; ++c) acc[r][c][0] = acc[r][c][1] = _mm512_setzero_ps();
  const int64_t kb2 = kbeg & ~int64_t(1);
  for (int64_t k = kb2; k < kend; k += 2) {
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
      uint32_t bits;
      std::memcpy(&bits, P + r * ldP + (k - kb2), 4);
      const __m512bh pp = (__m512bh)_mm512_set1_epi32(static_cast<int32_t>(bits));
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

// One query's probabilities S[0, ns) (keys kbeg ..) as bf16 bits from key kbeg & ~1,
// rounded as f_to_bf16, zero-padded to an even count.
static inline void bf16_probs(const float* S, int64_t ns, int64_t kbeg, uint16_t* P) {
  const int64_t off = kbeg & 1;  // P[0] is key kbeg - 1 when kbeg is odd
  if (off) P[0] = 0;
  int64_t t = 0;
  for (; t + 16 <= ns; t += 16) store16(P + off + t, load16(S + t));
  for (; t < ns; ++t) P[off + t] = f_to_bf16(S[t]);
  if ((off + ns) & 1) P[off + ns] = 0;
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
    std::vector<uint16_t> P;
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
            scores_dp<DV>(qsrc.data() + r0, n, K, kbeg, kend, S.data() + r0 * ns, ns, kbeg,
                          scale);
            continue;
          }
#endif
          scores<T, DV>(qf.data() + r0 * D, n, K, kbeg, kend, S.data() + r0 * ns, ns, kbeg,
                        scale);
        }
        for (int64_t r = 0; r < R; ++r)
          denom[r] = softmax_row(S.data() + r * ns, lo[r] - kbeg, hi[r] - kbeg, ns);
        const int64_t ldP = ns + 2;  // bf16 probabilities from an even key (bf16 path)
#if defined(__AVX512BF16__)
        if constexpr (std::is_same_v<T, at::BFloat16> && DV % 2 == 0) {
          P.resize(R * ldP);
          for (int64_t r = 0; r < R; ++r)
            bf16_probs(S.data() + r * ns, ns, kbeg, P.data() + r * ldP);
        }
#endif
        for (int64_t r0 = 0; r0 < R; r0 += QG) {
          const int n = static_cast<int>(std::min<int64_t>(QG, R - r0));
#if defined(__AVX512BF16__)
          if constexpr (std::is_same_v<T, at::BFloat16> && DV % 2 == 0) {
            const uint16_t* Pr = P.data() + r0 * ldP;
            T* const* d = dst.data() + r0;
            switch (n) {
              case 4: values_dp<DV, 4>(Pr, ldP, V, kbeg, kend, denom.data() + r0, d); break;
              case 3: values_dp<DV, 3>(Pr, ldP, V, kbeg, kend, denom.data() + r0, d); break;
              case 2: values_dp<DV, 2>(Pr, ldP, V, kbeg, kend, denom.data() + r0, d); break;
              default: values_dp<DV, 1>(Pr, ldP, V, kbeg, kend, denom.data() + r0, d); break;
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
  TORCH_CHECK((D == 16 || D == 32 || D == 64 || D == 128) && H % KVH == 0,
              "seed::attention: head_dim 16, 32, 64 or 128");
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
    switch (D) {  // the head sizes of the families (each one compiled: build time)
      case 16: run(std::integral_constant<int, 1>{}); break;
      case 32: run(std::integral_constant<int, 2>{}); break;
      case 64: run(std::integral_constant<int, 4>{}); break;
      default: run(std::integral_constant<int, 8>{}); break;
    }
  });
  return out;
}

}  // namespace seed

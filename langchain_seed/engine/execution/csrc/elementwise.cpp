// Per-token operations: seed::add_rms_norm, seed::silu_mul, seed::rope_store (see common.h).
//
// Each rounds its intermediates to the compute dtype where the reference (transformers'
// Llama modules) rounds them, 16 lanes at a time; a row's arithmetic never depends on the
// other rows.
#include "common.h"

namespace seed {

// Rows a thread takes at least: a parallel region costs a few microseconds (more when the
// other core is busy), so a step's small row counts run on one thread.
static inline int64_t grain(int64_t elements_per_row) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, elements_per_row));
}

// Sum of squares of n values: 16 lanes in index order, then the fixed tree.
template <typename T>
static inline float sumsq(const T* x, int64_t n) {
  v16f acc{};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const v16f v = vload(x + i);
    acc += v * v;
  }
  float s = hsum16(acc);
  for (; i < n; ++i) s += to_f(x[i]) * to_f(x[i]);
  return s;
}

// RMSNorm as the reference computes it: h = round(x * rsqrt(mean(x^2) + eps)),
// out = round(w * h).
template <typename T>
static inline void rms_row(const T* x, const T* w, T* out, int64_t n, float eps) {
  const float r = 1.0f / std::sqrt(sumsq(x, n) / static_cast<float>(n) + eps);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) vstore(out + i, vload(w + i) * vround<T>(vload(x + i) * r));
  for (; i < n; ++i) put(out + i, to_f(w[i]) * rnd<T>(to_f(x[i]) * r));
}

// x [T, n] (updated in place to round(x + y) when y is given: the residual stream), w [n].
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
    at::parallel_for(0, T, grain(n), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        scalar_t* row = xp + t * n;
        if (yp) {
          const scalar_t* add = yp + t * n;
          int64_t i = 0;
          for (; i + 16 <= n; i += 16) vstore(row + i, vload(row + i) + vload(add + i));
          for (; i < n; ++i) put(row + i, to_f(row[i]) + to_f(add[i]));
        }
        rms_row(row, wp, op + t * n, n, static_cast<float>(eps));
      }
    });
  });
  return out;
}

// silu(x) = x / (1 + exp(-x)), with exp of -|x| only (it never overflows):
// x / (1 + e) for x >= 0, x e / (1 + e) for x < 0 (e = exp(-|x|)).
static inline v16f silu16(v16f x) {
  const v16f e = exp16(x < 0 ? x : -x);
  return (x < 0 ? x * e : x) / (1.0f + e);
}

// SiLU(gate) * up for gu [T, 2I] (gate first): round(round(silu(g)) * u).
at::Tensor silu_mul(const at::Tensor& gu) {
  TORCH_CHECK(gu.dim() == 2 && gu.is_contiguous() && gu.size(1) % 2 == 0, "seed::silu_mul");
  const int64_t T = gu.size(0), I = gu.size(1) / 2;
  auto out = at::empty({T, I}, gu.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, gu.scalar_type(), "silu_mul", [&] {
    const scalar_t* g = gu.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, T, grain(2 * I), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const scalar_t* gate = g + t * 2 * I;
        const scalar_t* up = gate + I;
        scalar_t* dst = o + t * I;
        int64_t i = 0;
        for (; i + 16 <= I; i += 16)
          vstore(dst + i, vround<scalar_t>(silu16(vload(gate + i))) * vload(up + i));
        if (i < I) {  // the tail through the same vector arithmetic, lane by lane
          v16f x{};
          for (int64_t j = i; j < I; ++j) x[j - i] = to_f(gate[j]);
          const v16f s = silu16(x);
          for (int64_t j = i; j < I; ++j) put(dst + j, rnd<scalar_t>(s[j - i]) * to_f(up[j]));
        }
      }
    });
  });
  return out;
}

// RoPE of one head x [D] (rotate-half layout) into out: for i < D/2
//   out[i] = round(round(x[i] c[i]) + round(-x[i + D/2] s[i]))
//   out[i + D/2] = round(round(x[i + D/2] c[i]) + round(x[i] s[i]))
// with c, s the token's cos/sin already rounded to T (as the reference casts them).
template <typename T>
static inline void rope_head(const T* x, const float* c, const float* s, T* out, int64_t D) {
  const int64_t half = D / 2;
  int64_t j = 0;
  for (; j + 16 <= half; j += 16) {
    const v16f a = vload(x + j), b = vload(x + j + half);
    const v16f cj = load16(c + j), sj = load16(s + j);
    vstore(out + j, vround<T>(a * cj) + vround<T>(-b * sj));
    vstore(out + j + half, vround<T>(b * cj) + vround<T>(a * sj));
  }
  for (; j < half; ++j) {
    const float a = to_f(x[j]), b = to_f(x[j + half]);
    put(out + j, rnd<T>(a * c[j]) + rnd<T>(-b * s[j]));
    put(out + j + half, rnd<T>(b * c[j]) + rnd<T>(a * s[j]));
  }
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
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous() && cos.size(1) == half,
              "seed::rope_store: cos/sin tables [P, D/2]");
  const int64_t table = cos.size(0);
  auto q = at::empty({T, H, D}, qkv.options());
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
    at::parallel_for(0, T, grain((H + 2 * KVH) * D), [&](int64_t t0, int64_t t1) {
      std::vector<scalar_t> normed(D);
      std::vector<float> c(half), s(half);
      for (int64_t t = t0; t < t1; ++t) {
        TORCH_CHECK(pp[t] >= 0 && pp[t] < table, "seed::rope_store: position past the table");
        TORCH_CHECK(pp[t] < CAP, "seed::rope_store: position past the row capacity");
        for (int64_t j = 0; j < half; ++j) {  // the reference casts cos/sin to T first
          c[j] = rnd<scalar_t>(cp[pp[t] * half + j]);
          s[j] = rnd<scalar_t>(sp[pp[t] * half + j]);
        }
        auto rope = [&](const scalar_t* x, const scalar_t* norm, scalar_t* out) {
          if (norm) {
            rms_row(x, norm, normed.data(), D, static_cast<float>(eps));
            x = normed.data();
          }
          rope_head(x, c.data(), s.data(), out, D);
        };
        const scalar_t* base = src + t * (H + 2 * KVH) * D;
        for (int64_t h = 0; h < H; ++h) rope(base + h * D, qnw, qo + (t * H + h) * D);
        for (int64_t h = 0; h < KVH; ++h) {
          const int64_t at_ = ((rp[t] * KVH + h) * CAP + pp[t]) * D;
          rope(base + (H + h) * D, knw, kp + at_);
          std::memcpy(vp + at_, base + (H + KVH + h) * D, D * sizeof(scalar_t));
        }
      }
    });
  });
  return q;
}

}  // namespace seed

// Weight-only quantized multiplies for the native decode step (quantization_bit 8 and 4; see
// lmchat.engines.hf.quant for the layouts and docs/architecture-hf-engine.md for the design).
//
// int8: codes [N, K] int8 and one scale per output row, w = code * scale.
// int4: groups of 32 along K, 16 bytes per group (byte i holds k = i in its low nibble and k = 16 + i in its high
// nibble), a scale and a minimum per group, w = code * scale + min (codes 0..15).
// Below gemm_rows(bits) input rows every output is summed in the same order (vector lanes over k, then a fixed
// tree) whatever the number of rows and the tile it falls in, so one row alone gives the same numbers as in any such
// batch; the GEMM for more rows sums each output over k in order, the same for every batch size it serves.
#pragma once

#include <torch/extension.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace {

enum class Store { Set, Add };

inline void store(float* y, int64_t n, float value, const float* bias, Store mode) {
  value += bias ? bias[n] : 0.0f;
  y[n] = mode == Store::Add ? y[n] + value : value;
}

#if defined(__AVX512F__)
#define LMCHAT_V 16
#else
#define LMCHAT_V 8
#endif
constexpr int V = LMCHAT_V;
constexpr int64_t Q4_GROUP = 32;
typedef float vf __attribute__((vector_size(V * sizeof(float))));

inline vf load_f(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline vf splat(float s) {  // a broadcast (vbroadcastss from memory where s is loaded), no add of +0.0 first
#if defined(__AVX512F__)
  return (vf)_mm512_set1_ps(s);
#elif defined(__AVX__)
  return (vf)_mm256_set1_ps(s);
#else
  return vf{} + s;
#endif
}
inline vf fma_v(vf a, vf b, vf c) {  // a * b + c, fused where the ISA has it (the same on every path)
#if defined(__AVX512F__)
  return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__)
  return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}
// the lanes' sum by a fixed tree: the halves, then the halves of that, ... (the same order on every path)
inline float hsum(vf v) {
#if defined(__AVX__)
#if defined(__AVX512F__)
  const __m512d x = _mm512_castps_pd((__m512)v);
  const __m256 s = _mm256_add_ps(_mm256_castpd_ps(_mm512_castpd512_pd256(x)),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(x, 1)));
#else
  const __m256 s = (__m256)v;
#endif
  __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  t = _mm_add_ps(t, _mm_movehl_ps(t, t));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
#else
  float a[V];
  std::memcpy(a, &v, sizeof a);
  for (int width = V / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) a[j] += a[j + width];
  return a[0];
#endif
}
// V int8 codes as floats
inline vf load_q8(const int8_t* p) {
#if defined(__AVX512F__)
  return (vf)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#elif defined(__AVX2__)
  return (vf)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#else
  float f[V];
  for (int j = 0; j < V; ++j) f[j] = static_cast<float>(p[j]);
  return load_f(f);
#endif
}

// one int4 group (16 bytes) as 32 / V float vectors of codes, k in order
inline void unpack_q4(const uint8_t* p, vf out[Q4_GROUP / V]) {
#if defined(__AVX2__)
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(15);
  const __m128i lo = _mm_and_si128(bytes, mask), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
#if defined(__AVX512F__)
  out[0] = (vf)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), out[1] = (vf)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
#else
  out[0] = (vf)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
  out[1] = (vf)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
  out[2] = (vf)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
  out[3] = (vf)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
#endif
#else
  float f[Q4_GROUP];
  for (int j = 0; j < 16; ++j) f[j] = static_cast<float>(p[j] & 15), f[16 + j] = static_cast<float>(p[j] >> 4);
  for (int j = 0; j < Q4_GROUP / V; ++j) out[j] = load_f(f + j * V);
#endif
}

struct QWeight {
  int bits = 0;  // 0: not quantized
  int64_t N = 0, K = 0;
  const int8_t* q8 = nullptr;
  const uint8_t* q4 = nullptr;
  const float *scales = nullptr, *mins = nullptr;
};

// out[b][r] = row n0 + r of the weight . x[b] for NB input rows and NR weight rows (no scale for int8 yet)
template <int NB, int NR>
inline void q8_tile(const QWeight& w, int64_t n0, const float* const* x, float out[NB][NR]) {
  vf acc[NB][NR] = {};
  const int64_t K = w.K, KV = K / V * V;
  for (int64_t k = 0; k < KV; k += V) {
    vf xv[NB];
    for (int b = 0; b < NB; ++b) xv[b] = load_f(x[b] + k);
    for (int r = 0; r < NR; ++r) {
      const vf wv = load_q8(w.q8 + (n0 + r) * K + k);
      for (int b = 0; b < NB; ++b) acc[b][r] = fma_v(wv, xv[b], acc[b][r]);
    }
  }
  for (int b = 0; b < NB; ++b)
    for (int r = 0; r < NR; ++r) {
      float sum = hsum(acc[b][r]);
      for (int64_t k = KV; k < K; ++k) sum += static_cast<float>(w.q8[(n0 + r) * K + k]) * x[b][k];
      out[b][r] = sum * w.scales[n0 + r];
    }
}

// the same for int4; xsum[b][g] is the sum of x[b] over group g (the minimums' share)
template <int NB, int NR>
inline void q4_tile(const QWeight& w, int64_t n0, const float* const* x, const float* const* xsum,
                    float out[NB][NR]) {
  vf acc[NB][NR] = {};
  float low[NB][NR] = {};
  const int64_t groups = w.K / Q4_GROUP;
  for (int64_t g = 0; g < groups; ++g) {
    for (int r = 0; r < NR; ++r) {
      const int64_t at = (n0 + r) * groups + g;
      vf codes[Q4_GROUP / V];
      unpack_q4(w.q4 + at * (Q4_GROUP / 2), codes);
      const vf scale = splat(w.scales[at]);
      const float min = w.mins[at];
      for (int b = 0; b < NB; ++b) {
        const float* xg = x[b] + g * Q4_GROUP;
        vf part = codes[0] * load_f(xg);
        for (int j = 1; j < Q4_GROUP / V; ++j) part = fma_v(codes[j], load_f(xg + j * V), part);
        acc[b][r] = fma_v(part, scale, acc[b][r]);
        low[b][r] = std::fma(min, xsum[b][g], low[b][r]);
      }
    }
  }
  for (int b = 0; b < NB; ++b)
    for (int r = 0; r < NR; ++r) out[b][r] = hsum(acc[b][r]) + low[b][r];
}

#if LMCHAT_V == 16
constexpr int TILE_N = 4;  // weight rows per tile
#else
constexpr int TILE_N = 2;
#endif
constexpr int TILE_B = 4;  // input rows per tile
constexpr int ONE_ROW_N = 8;  // weight rows per tile for one input row: 8 independent FMA chains hide the latency

// rows [b0, b0 + NB) of x times weight rows [n0, n0 + nr) (nr is TN, or 1 for the last rows); the tile's width
// changes how many outputs are summed side by side, never the order in which one output is summed
template <int NB, int TN>
inline void q_tile(const QWeight& w, int64_t n0, int nr, const float* const* x, const float* const* xsum,
                   float* const* y, const float* bias, Store mode) {
  if (nr == TN) {
    float out[NB][TN];
    w.bits == 8 ? q8_tile<NB, TN>(w, n0, x, out) : q4_tile<NB, TN>(w, n0, x, xsum, out);
    for (int b = 0; b < NB; ++b)
      for (int r = 0; r < TN; ++r) store(y[b], n0 + r, out[b][r], bias, mode);
    return;
  }
  for (int r = 0; r < nr; ++r) {
    float out[NB][1];
    w.bits == 8 ? q8_tile<NB, 1>(w, n0 + r, x, out) : q4_tile<NB, 1>(w, n0 + r, x, xsum, out);
    for (int b = 0; b < NB; ++b) store(y[b], n0 + r, out[b][0], bias, mode);
  }
}

// the weight rows in tiles of TN over the threads, the input rows in tiles of TILE_B
template <int TN>
void q_tiles(const QWeight& w, int64_t B, const float* x, const float* xsum, float* y, int64_t ldy,
             const float* bias, Store mode) {
  const int64_t groups = w.K / Q4_GROUP, tiles = (w.N + TN - 1) / TN;
#pragma omp for schedule(static)
  for (int64_t tile = 0; tile < tiles; ++tile) {
    const int64_t n0 = tile * TN;
    const int nr = static_cast<int>(std::min<int64_t>(TN, w.N - n0));
    for (int64_t b = 0; b < B; b += TILE_B) {
      const float* xs[TILE_B];
      const float* sums[TILE_B];
      float* ys[TILE_B];
      const int nb = static_cast<int>(std::min<int64_t>(TILE_B, B - b));
      for (int i = 0; i < nb; ++i) xs[i] = x + (b + i) * w.K, sums[i] = xsum + (b + i) * groups, ys[i] = y + (b + i) * ldy;
      switch (nb) {
        case 4: q_tile<4, TN>(w, n0, nr, xs, sums, ys, bias, mode); break;
        case 3: q_tile<3, TN>(w, n0, nr, xs, sums, ys, bias, mode); break;
        case 2: q_tile<2, TN>(w, n0, nr, xs, sums, ys, bias, mode); break;
        default: q_tile<1, TN>(w, n0, nr, xs, sums, ys, bias, mode);
      }
    }
  }
}

// y[b] (=|+=) W x[b] (+ bias) for B rows x [B, K] and y [B, ldy], the weight rows split over the threads; call
// inside an omp parallel region (it ends with a barrier). ``xsum`` is scratch for B * K / 32 floats (int4).
void q_linear(const QWeight& w, int64_t B, const float* x, float* y, int64_t ldy, const float* bias, Store mode,
              float* xsum) {
  const int64_t groups = w.K / Q4_GROUP;
  if (w.bits == 4) {
#pragma omp for schedule(static)
    for (int64_t item = 0; item < B * groups; ++item) {
      const float* xg = x + (item / groups) * w.K + (item % groups) * Q4_GROUP;
      float sum = 0.0f;
      for (int64_t k = 0; k < Q4_GROUP; ++k) sum += xg[k];
      xsum[item] = sum;
    }
  }
  if (B == 1) q_tiles<ONE_ROW_N>(w, B, x, xsum, y, ldy, bias, mode);
  else q_tiles<TILE_N>(w, B, x, xsum, y, ldy, bias, mode);
}

// A quantized weight's tensors, checked: int8 codes [N, K] with scales [N], or int4 codes [N, K / 2] (uint8) with
// scales and mins [N, K / 32]
QWeight quantized(const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& mins, const std::string& what) {
  QWeight w;
  TORCH_CHECK(codes.dim() == 2 && codes.is_contiguous() && scales.is_contiguous() && scales.scalar_type() == at::kFloat,
              what, ": quantized codes [N, K] and float32 scales, contiguous");
  w.N = codes.size(0);
  w.scales = scales.data_ptr<float>();
  if (codes.scalar_type() == at::kChar) {
    w.bits = 8, w.K = codes.size(1), w.q8 = codes.data_ptr<int8_t>();
    TORCH_CHECK(scales.numel() == w.N && !mins.defined(), what, ": int8 codes take one scale per row and no mins");
  } else {
    TORCH_CHECK(codes.scalar_type() == at::kByte && mins.defined() && mins.is_contiguous() &&
                mins.scalar_type() == at::kFloat, what, ": int4 codes are uint8 and need float32 mins");
    w.bits = 4, w.K = codes.size(1) * 2, w.q4 = codes.data_ptr<uint8_t>(), w.mins = mins.data_ptr<float>();
    TORCH_CHECK(w.K % Q4_GROUP == 0 && scales.numel() == w.N * (w.K / Q4_GROUP) && mins.numel() == scales.numel(),
                what, ": int4 takes groups of 32 inputs, one scale and min per group");
  }
  return w;
}

// One multiply of the step: a float32 weight (with its oneDNN-packed copy for batches) or a quantized one.
// --- many rows: a small GEMM over dequantized blocks ----------------------------------------------------------
// From gemm_rows(bits) input rows on, x is transposed once per call (xT [K][BP]: k-major, BP = B rounded up to V,
// zero padded) and each thread takes panels of weight rows: it dequantizes the panel's weights with vector
// operations into a row-major buffer (MJ x K floats for K <= KC) and runs a micro-kernel of MJ weight rows x NH
// vectors of input rows: per k, one broadcast weight (from memory) per weight row times NH vectors of x; each
// output is summed over k in order, one FMA per weight per input row, and written once. It replaced a k-major panel
// kernel whose scalar dequantization, blocks of 256 inputs (y read and written again per block) and an add before
// every broadcast left int4 at 64 rows 30 % behind float32's oneDNN GEMM (docs/benchmarks.md, bench_qgemm.py).
constexpr int MJ = 12;                 // weight rows per panel for up to V input rows (12 accumulators)
constexpr int MJ2 = 6;                 // ... for more (6 x 2 accumulator vectors)
constexpr int64_t KC = 2048;  // inputs per block (a multiple of 32): the models' K fit one block, y is written once
// from how many input rows q_gemm beats the row-major tiles (benchmarks/bench_qgemm.py, AVX2 and AVX-512 alike)
inline int64_t gemm_rows(int bits) { return bits == 4 ? 6 : 10; }

inline void store_f(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

// out[k] = w[n][k0 + k] for k < kc (for int4, k0 and kc are multiples of 32), with vector operations
inline void dequantize_row(const QWeight& w, int64_t n, int64_t k0, int64_t kc, float* out) {
  if (w.bits == 8) {
    const int8_t* codes = w.q8 + n * w.K + k0;
    const float scale = w.scales[n];
    int64_t k = 0;
    for (; k + V <= kc; k += V) store_f(out + k, load_q8(codes + k) * splat(scale));
    for (; k < kc; ++k) out[k] = static_cast<float>(codes[k]) * scale;
    return;
  }
  const int64_t groups = w.K / Q4_GROUP;
  for (int64_t g = k0 / Q4_GROUP; g < (k0 + kc) / Q4_GROUP; ++g) {
    const int64_t at = n * groups + g;
    vf codes[Q4_GROUP / V];
    unpack_q4(w.q4 + at * (Q4_GROUP / 2), codes);
    const vf scale = splat(w.scales[at]), min = splat(w.mins[at]);
    float* group = out + (g * Q4_GROUP - k0);
    for (int v = 0; v < Q4_GROUP / V; ++v) store_f(group + v * V, fma_v(codes[v], scale, min));
  }
}

// buffer[j * kc + k] = w[n0 + j][k0 + k] for j < mj (0 past N), k < kc
inline void dequantize_block(const QWeight& w, int64_t n0, int mj, int64_t k0, int64_t kc, float* buffer) {
  for (int j = 0; j < mj; ++j) {
    if (n0 + j < w.N) dequantize_row(w, n0 + j, k0, kc, buffer + j * kc);
    else std::memset(buffer + j * kc, 0, kc * sizeof(float));
  }
}

// y[i][j] (=|+=) sum over k < kc of buffer[j][k] * xT[k][i], for i < ni <= NH * V input rows and j < nj <= MJ
// weight rows (first block of k: set, later: add)
template <int MJ, int NH>
inline void micro(const float* buffer, int64_t kc, const float* xT, int64_t ldx, float* y, int64_t ldy, int ni,
                  int nj, bool first) {
  vf acc[MJ][NH] = {};
  for (int64_t k = 0; k < kc; ++k) {
    vf xv[NH];
    for (int h = 0; h < NH; ++h) xv[h] = load_f(xT + k * ldx + h * V);
    for (int j = 0; j < MJ; ++j) {
      const vf wj = splat(buffer[j * kc + k]);
      for (int h = 0; h < NH; ++h) acc[j][h] = fma_v(wj, xv[h], acc[j][h]);
    }
  }
  for (int j = 0; j < nj; ++j) {
    float out[NH * V];
    for (int h = 0; h < NH; ++h) std::memcpy(out + h * V, &acc[j][h], sizeof(vf));
    for (int i = 0; i < ni; ++i) {
      float* cell = y + i * ldy + j;
      *cell = first ? out[i] : *cell + out[i];
    }
  }
}

// the scratch q_gemm needs for B rows of K inputs (xT)
inline int64_t gemm_scratch(int64_t B, int64_t K) { return K * ((B + V - 1) / V * V); }

// y [B, ldy] = x [B, K] W^T (+ bias) for B >= gemm_rows(bits); call inside an omp parallel region (ends with a barrier).
// ``xT`` is scratch for gemm_scratch(B, K) floats.
void q_gemm(const QWeight& w, int64_t B, const float* x, float* xT, float* y, int64_t ldy, const float* bias) {
  const int64_t BP = (B + V - 1) / V * V;
#pragma omp for schedule(static)
  for (int64_t k = 0; k < w.K; ++k) {
    float* row = xT + k * BP;
    for (int64_t i = 0; i < B; ++i) row[i] = x[i * w.K + k];
    for (int64_t i = B; i < BP; ++i) row[i] = 0.0f;
  }
  alignas(64) float buffer[MJ * KC];
  const int mj = BP <= V ? MJ : MJ2;  // one vector of input rows: twice the weight rows, to fill the FMA pipes
  const int64_t panels = (w.N + mj - 1) / mj;
#pragma omp for schedule(static)
  for (int64_t panel = 0; panel < panels; ++panel) {
    const int64_t n0 = panel * mj;
    const int nj = static_cast<int>(std::min<int64_t>(mj, w.N - n0));
    for (int64_t k0 = 0; k0 < w.K; k0 += KC) {
      const int64_t kc = std::min<int64_t>(KC, w.K - k0);
      dequantize_block(w, n0, mj, k0, kc, buffer);
      for (int64_t i0 = 0; i0 < B; i0 += 2 * V) {
        const int ni = static_cast<int>(std::min<int64_t>(2 * V, B - i0));
        const float* xb = xT + k0 * BP + i0;
        float* yb = y + i0 * ldy + n0;
        if (mj == MJ) micro<MJ, 1>(buffer, kc, xb, BP, yb, ldy, ni, nj, k0 == 0);
        else if (ni > V) micro<MJ2, 2>(buffer, kc, xb, BP, yb, ldy, ni, nj, k0 == 0);
        else micro<MJ2, 1>(buffer, kc, xb, BP, yb, ldy, ni, nj, k0 == 0);
      }
    }
    if (bias)
      for (int64_t b = 0; b < B; ++b)
        for (int j = 0; j < nj; ++j) y[b * ldy + n0 + j] += bias[n0 + j];
  }
}

}  // namespace

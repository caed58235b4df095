// Weight-only quantized multiplies for the native decode step (quantization_bit 8 and 4; see
// lmchat.engines.hf.quant for the layouts and docs/architecture-hf-engine.md for the design).
//
// int8: codes [N, K] int8 and one scale per output row, w = code * scale.
// int4: groups of 32 along K, 16 bytes per group (byte i holds k = i in its low nibble and k = 16 + i in its high
// nibble), a scale and a minimum per group, w = code * scale + min (codes 0..15).
// Every output is summed in the same order (vector lanes over k, then a fixed tree) whatever the number of rows and
// the tile it falls in, so one row alone gives the same numbers as in any batch.
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
inline vf splat(float s) { return vf{} + s; }
inline vf fma_v(vf a, vf b, vf c) {  // a * b + c, fused where the ISA has it (the same on every path)
#if defined(__AVX512F__)
  return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__)
  return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}
inline float hsum(vf v) {
  float a[V];
  std::memcpy(a, &v, sizeof a);
  for (int width = V / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) a[j] += a[j + width];
  return a[0];
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
// --- many rows: a small GEMM over dequantized panels ----------------------------------------------------------
// From GEMM_ROWS input rows on, each thread takes panels of NR output rows: it dequantizes a KC-long block of the
// panel into a float buffer (k-major, NR floats per k: it stays in L1) and runs a broadcast micro-kernel, MR input
// rows x NR outputs, one FMA per weight per row, summing over k in order. A weight is converted once per call,
// not once per input row; the row-major tiles above convert it once per 4 rows and suit few rows.
constexpr int NR = 2 * V;        // outputs per panel (two vectors)
constexpr int MR = 6;            // input rows per micro-kernel call (12 accumulators)
constexpr int64_t KC = 8192 / NR;  // inputs per block: the buffer is KC * NR floats (32 KiB)
constexpr int64_t GEMM_ROWS = 24;

// out[k * stride] = w[n][k0 + k] for k < kc (for int4, k0 and kc are multiples of 32)
inline void dequantize_row(const QWeight& w, int64_t n, int64_t k0, int64_t kc, float* out, int64_t stride) {
  if (w.bits == 8) {
    const int8_t* codes = w.q8 + n * w.K + k0;
    const float scale = w.scales[n];
    for (int64_t k = 0; k < kc; ++k) out[k * stride] = static_cast<float>(codes[k]) * scale;
    return;
  }
  const int64_t groups = w.K / Q4_GROUP;
  for (int64_t g = k0 / Q4_GROUP; g < (k0 + kc) / Q4_GROUP; ++g) {
    const uint8_t* bytes = w.q4 + (n * groups + g) * (Q4_GROUP / 2);
    const float scale = w.scales[n * groups + g], min = w.mins[n * groups + g];
    float* group = out + (g * Q4_GROUP - k0) * stride;
    for (int64_t i = 0; i < Q4_GROUP / 2; ++i) {
      group[i * stride] = std::fma(static_cast<float>(bytes[i] & 15), scale, min);
      group[(i + Q4_GROUP / 2) * stride] = std::fma(static_cast<float>(bytes[i] >> 4), scale, min);
    }
  }
}

// buffer[k][j] = w[n0 + j][k0 + k] for j < NR (0 past N), k < kc
inline void dequantize_panel(const QWeight& w, int64_t n0, int64_t k0, int64_t kc, float* buffer) {
  for (int j = 0; j < NR; ++j) {
    if (n0 + j < w.N) {
      dequantize_row(w, n0 + j, k0, kc, buffer + j, NR);
    } else {
      for (int64_t k = 0; k < kc; ++k) buffer[k * NR + j] = 0.0f;
    }
  }
}

// acc[i] (+)= x[i][k0..k0+kc) . buffer for M <= MR rows; stored to y rows (first block: set, later: add)
template <int M>
inline void micro(const float* buffer, int64_t kc, const float* x, int64_t ldx, float* y, int64_t ldy, int nr,
                  bool first) {
  vf acc[M][2] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const vf w0 = load_f(buffer + k * NR), w1 = load_f(buffer + k * NR + V);
    for (int i = 0; i < M; ++i) {
      const vf xi = splat(x[i * ldx + k]);
      acc[i][0] = fma_v(w0, xi, acc[i][0]);
      acc[i][1] = fma_v(w1, xi, acc[i][1]);
    }
  }
  for (int i = 0; i < M; ++i) {
    float out[NR];
    std::memcpy(out, &acc[i][0], sizeof(vf));
    std::memcpy(out + V, &acc[i][1], sizeof(vf));
    float* row = y + i * ldy;
    for (int j = 0; j < nr; ++j) row[j] = first ? out[j] : row[j] + out[j];
  }
}

// y [B, ldy] = x [B, K] W^T (+ bias) for B >= GEMM_ROWS; call inside an omp parallel region (ends with a barrier)
void q_gemm(const QWeight& w, int64_t B, const float* x, float* y, int64_t ldy, const float* bias) {
  alignas(64) float buffer[KC * NR];
  const int64_t panels = (w.N + NR - 1) / NR;
#pragma omp for schedule(static)
  for (int64_t panel = 0; panel < panels; ++panel) {
    const int64_t n0 = panel * NR;
    const int nr = static_cast<int>(std::min<int64_t>(NR, w.N - n0));
    for (int64_t k0 = 0; k0 < w.K; k0 += KC) {
      const int64_t kc = std::min<int64_t>(KC, w.K - k0);
      dequantize_panel(w, n0, k0, kc, buffer);
      for (int64_t b = 0; b < B; b += MR) {
        const float* xb = x + b * w.K + k0;
        float* yb = y + b * ldy + n0;
        switch (std::min<int64_t>(MR, B - b)) {
          case 6: micro<6>(buffer, kc, xb, w.K, yb, ldy, nr, k0 == 0); break;
          case 5: micro<5>(buffer, kc, xb, w.K, yb, ldy, nr, k0 == 0); break;
          case 4: micro<4>(buffer, kc, xb, w.K, yb, ldy, nr, k0 == 0); break;
          case 3: micro<3>(buffer, kc, xb, w.K, yb, ldy, nr, k0 == 0); break;
          case 2: micro<2>(buffer, kc, xb, w.K, yb, ldy, nr, k0 == 0); break;
          default: micro<1>(buffer, kc, xb, w.K, yb, ldy, nr, k0 == 0);
        }
      }
    }
    if (bias)
      for (int64_t b = 0; b < B; ++b)
        for (int j = 0; j < nr; ++j) y[b * ldy + n0 + j] += bias[n0 + j];
  }
}

}  // namespace

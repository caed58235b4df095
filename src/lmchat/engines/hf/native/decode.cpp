// The decode step of a Llama-family model in float32 on the CPU, as one native call.
//
// A one-token step of a small model is bound by reading the weights once (a GEMV per projection). Between
// those reads, the framework runs ~25 small tensor ops per layer; each weight read has just flushed the CPU
// caches, so every op starts cold, and they cost about a third of the step. Here a layer is a handful of tight
// loops inside one OpenMP region (PyTorch's own libgomp pool): GEMVs split by output rows over the threads,
// RMSNorm, RoPE, attention over the slot cache, SiLU-gate.
//
// Every output is computed the same way whatever the other rows of the batch are (fixed summation order per
// output), so a sequence's logits do not depend on who else is decoding. Built on first use by
// lmchat.engines.hf.native (torch.utils.cpp_extension); see docs/architecture-hf-engine.md.

#include <torch/extension.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t LANES = 16;  // one 512-bit (or two 256-bit) vector of floats per accumulator
constexpr int MAX_ROWS = 4;    // batch rows one weight pass serves

struct Layer {
  const float *norm1, *qkv, *qkv_bias, *out, *norm2, *gate_up, *down;
};

// sum of w[0:K] * x[0:K] for R weight rows and B inputs; lanes reduced in a fixed order
template <int R, int B>
inline void dot_block(const float* w, int64_t K, const float* x, int64_t x_stride, float out[R][B]) {
  float acc[R][B][LANES] = {};
  int64_t k = 0;
  for (; k + LANES <= K; k += LANES) {
    for (int r = 0; r < R; ++r) {
      const float* wr = w + r * K + k;
      for (int b = 0; b < B; ++b) {
        const float* xb = x + b * x_stride + k;
#pragma omp simd
        for (int64_t j = 0; j < LANES; ++j) acc[r][b][j] += wr[j] * xb[j];
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int b = 0; b < B; ++b) {
      float* a = acc[r][b];
      for (int64_t width = LANES / 2; width > 0; width /= 2)
        for (int64_t j = 0; j < width; ++j) a[j] += a[j + width];
      float sum = a[0];
      for (int64_t t = k; t < K; ++t) sum += w[r * K + t] * x[b * x_stride + t];
      out[r][b] = sum;
    }
  }
}

enum class Store { Set, Add };

// y[b, n] (=|+=) W[n] . x[b] (+ bias[n]) for the rows n of W; call inside an omp parallel region (ends with a
// barrier: y is complete for every thread afterwards)
template <int B>
void gemv(const float* W, const float* bias, int64_t N, int64_t K, const float* x, float* y, Store store) {
  constexpr int R = B <= 2 ? 4 : 2;  // weight rows per pass: as many accumulators as registers allow
  const int64_t blocks = N / R;
#pragma omp for schedule(static) nowait
  for (int64_t block = 0; block < blocks; ++block) {
    float out[R][B];
    dot_block<R, B>(W + block * R * K, K, x, K, out);
    for (int r = 0; r < R; ++r) {
      const int64_t n = block * R + r;
      for (int b = 0; b < B; ++b) {
        const float value = out[r][b] + (bias ? bias[n] : 0.0f);
        y[b * N + n] = store == Store::Add ? y[b * N + n] + value : value;
      }
    }
  }
#pragma omp for schedule(static)
  for (int64_t n = blocks * R; n < N; ++n) {
    float out[1][B];
    dot_block<1, B>(W + n * K, K, x, K, out);
    for (int b = 0; b < B; ++b) {
      const float value = out[0][b] + (bias ? bias[n] : 0.0f);
      y[b * N + n] = store == Store::Add ? y[b * N + n] + value : value;
    }
  }
}

void rms_norm(const float* x, const float* weight, int64_t D, float eps, float* out) {
  float sum = 0.0f;
  for (int64_t i = 0; i < D; ++i) sum += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(sum / static_cast<float>(D) + eps);
  for (int64_t i = 0; i < D; ++i) out[i] = weight[i] * (x[i] * scale);
}

// x * cos + rotate_half(x) * sin, with ``sin`` carrying rotate_half's sign (see lean._grow_rope)
void rope(const float* x, const float* cos, const float* sin, int64_t dim, float* out) {
  const int64_t half = dim / 2;
  for (int64_t i = 0; i < dim; ++i) out[i] = x[i] * cos[i] + x[i < half ? i + half : i - half] * sin[i];
}

class Decoder {
 public:
  Decoder(std::vector<at::Tensor> tensors, at::Tensor embed, at::Tensor norm, at::Tensor head,
          std::vector<int64_t> sizes, std::vector<double> scalars)
      : tensors_(std::move(tensors)), embed_(std::move(embed)), norm_(std::move(norm)), head_(std::move(head)) {
    heads_ = sizes.at(0), kv_heads_ = sizes.at(1), head_dim_ = sizes.at(2), inter_ = sizes.at(3);
    scaling_ = static_cast<float>(scalars.at(0)), eps_ = static_cast<float>(scalars.at(1));
    hidden_ = embed_.size(1), vocab_ = head_.size(0);
    TORCH_CHECK(tensors_.size() % 7 == 0, "7 tensors per layer");
    for (const auto& t : tensors_) TORCH_CHECK(!t.defined() || t.numel() == 0 || (t.is_contiguous() &&
                                                t.scalar_type() == at::kFloat), "contiguous float32 weights");
    for (size_t i = 0; i < tensors_.size(); i += 7) {
      auto ptr = [&](size_t j) { return tensors_[i + j].numel() ? tensors_[i + j].data_ptr<float>() : nullptr; };
      layers_.push_back({ptr(0), ptr(1), ptr(2), ptr(3), ptr(4), ptr(5), ptr(6)});
    }
  }

  // tokens [B], positions [B]; batch row b is cache row row_start + b and attends to positions 0..positions[b]
  at::Tensor step(const at::Tensor& tokens, const at::Tensor& positions, int64_t row_start,
                  const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values, const at::Tensor& cos,
                  const at::Tensor& sin) {
    const int64_t rows = tokens.size(0);
    TORCH_CHECK(rows >= 1 && rows <= MAX_ROWS, "the native step takes 1 to ", MAX_ROWS, " rows");
    switch (rows) {
      case 1: return run<1>(tokens, positions, row_start, keys, values, cos, sin);
      case 2: return run<2>(tokens, positions, row_start, keys, values, cos, sin);
      case 3: return run<3>(tokens, positions, row_start, keys, values, cos, sin);
      default: return run<4>(tokens, positions, row_start, keys, values, cos, sin);
    }
  }

 private:
  template <int B>
  at::Tensor run(const at::Tensor& tokens_t, const at::Tensor& positions_t, int64_t row_start,
                 const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values, const at::Tensor& cos_t,
                 const at::Tensor& sin_t) {
    TORCH_CHECK(keys.size() == layers_.size() && values.size() == layers_.size(), "one key/value tensor per layer");
    const int64_t D = hidden_, H = heads_, KV = kv_heads_, hd = head_dim_, I = inter_;
    const int64_t groups = H / KV, qkv_size = (H + 2 * KV) * hd;
    auto tokens = tokens_t.contiguous().to(at::kLong), positions = positions_t.contiguous().to(at::kLong);
    const int64_t* tok = tokens.data_ptr<int64_t>();
    const int64_t* pos = positions.data_ptr<int64_t>();
    int64_t max_length = 0;
    for (int b = 0; b < B; ++b) {
      TORCH_CHECK(tok[b] >= 0 && tok[b] < embed_.size(0), "token id out of range");
      TORCH_CHECK(pos[b] >= 0 && pos[b] < cos_t.size(0), "position beyond the rotary table");
      max_length = std::max(max_length, pos[b] + 1);
    }
    for (size_t l = 0; l < keys.size(); ++l) {
      for (const auto* cache : {&keys[l], &values[l]}) {
        TORCH_CHECK(cache->is_contiguous() && cache->scalar_type() == at::kFloat && cache->dim() == 4 &&
                    cache->size(0) >= row_start + B && cache->size(1) == KV && cache->size(2) >= max_length &&
                    cache->size(3) == hd, "slot cache layout [rows, kv_heads, capacity, head_dim] float32");
      }
    }
    auto options = at::TensorOptions().dtype(at::kFloat);
    at::Tensor logits_t = at::empty({B, vocab_}, options);
    std::vector<float> hidden(B * D), x(B * D), qkv(B * qkv_size), query(B * H * hd), attended(B * H * hd),
        gate_up(B * 2 * I), act(B * I), scores(B * H * max_length);
    const float* embed = embed_.data_ptr<float>();
    const float* cos = cos_t.data_ptr<float>();
    const float* sin = sin_t.data_ptr<float>();
    const int64_t capacity = keys[0].size(2), row_stride = KV * capacity * hd, head_stride = capacity * hd;
    float* logits = logits_t.data_ptr<float>();
    for (int b = 0; b < B; ++b) std::copy_n(embed + tok[b] * D, D, hidden.data() + b * D);

#pragma omp parallel num_threads(at::get_num_threads())
    {
      for (size_t l = 0; l < layers_.size(); ++l) {
        const Layer& layer = layers_[l];
        float* kcache = keys[l].data_ptr<float>() + row_start * row_stride;
        float* vcache = values[l].data_ptr<float>() + row_start * row_stride;
#pragma omp for schedule(static)
        for (int b = 0; b < B; ++b) rms_norm(hidden.data() + b * D, layer.norm1, D, eps_, x.data() + b * D);
        gemv<B>(layer.qkv, layer.qkv_bias, qkv_size, D, x.data(), qkv.data(), Store::Set);
        // RoPE on queries and keys; keys and values go to each row's own position in the cache
#pragma omp for schedule(static)
        for (int64_t item = 0; item < B * (H + KV); ++item) {
          const int64_t b = item / (H + KV), head = item % (H + KV);
          const float* src = qkv.data() + b * qkv_size + head * hd;
          const float* c = cos + pos[b] * hd;
          const float* s = sin + pos[b] * hd;
          if (head < H) {
            rope(src, c, s, hd, query.data() + (b * H + head) * hd);
          } else {
            const int64_t offset = b * row_stride + (head - H) * head_stride + pos[b] * hd;
            rope(src, c, s, hd, kcache + offset);
            std::copy_n(src + KV * hd, hd, vcache + offset);
          }
        }
#pragma omp for schedule(static)
        for (int64_t item = 0; item < B * H; ++item) {
          const int64_t b = item / H, head = item % H, length = pos[b] + 1;
          const float* q = query.data() + item * hd;
          const float* kbase = kcache + b * row_stride + (head / groups) * head_stride;
          const float* vbase = vcache + b * row_stride + (head / groups) * head_stride;
          float* score = scores.data() + item * max_length;
          float top = -INFINITY;
          for (int64_t j = 0; j < length; ++j) {
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t d = 0; d < hd; ++d) dot += q[d] * kbase[j * hd + d];
            score[j] = dot * scaling_;
            top = std::max(top, score[j]);
          }
          float total = 0.0f;
          for (int64_t j = 0; j < length; ++j) total += (score[j] = std::exp(score[j] - top));
          float* out = attended.data() + item * hd;
          std::fill_n(out, hd, 0.0f);
          for (int64_t j = 0; j < length; ++j) {
            const float weight = score[j] / total;
#pragma omp simd
            for (int64_t d = 0; d < hd; ++d) out[d] += weight * vbase[j * hd + d];
          }
        }
        gemv<B>(layer.out, nullptr, D, H * hd, attended.data(), hidden.data(), Store::Add);
#pragma omp for schedule(static)
        for (int b = 0; b < B; ++b) rms_norm(hidden.data() + b * D, layer.norm2, D, eps_, x.data() + b * D);
        gemv<B>(layer.gate_up, nullptr, 2 * I, D, x.data(), gate_up.data(), Store::Set);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < B * I; ++item) {
          const int64_t b = item / I, i = item % I;
          const float g = gate_up[b * 2 * I + i];
          act[item] = g / (1.0f + std::exp(-g)) * gate_up[b * 2 * I + I + i];
        }
        gemv<B>(layer.down, nullptr, D, I, act.data(), hidden.data(), Store::Add);
      }
#pragma omp for schedule(static)
      for (int b = 0; b < B; ++b) rms_norm(hidden.data() + b * D, norm_.data_ptr<float>(), D, eps_, x.data() + b * D);
      gemv<B>(head_.data_ptr<float>(), nullptr, vocab_, D, x.data(), logits, Store::Set);
    }
    return logits_t;
  }

  std::vector<at::Tensor> tensors_;
  at::Tensor embed_, norm_, head_;
  std::vector<Layer> layers_;
  int64_t heads_ = 0, kv_heads_ = 0, head_dim_ = 0, inter_ = 0, hidden_ = 0, vocab_ = 0;
  float scaling_ = 1.0f, eps_ = 1e-6f;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.attr("MAX_ROWS") = MAX_ROWS;
  pybind11::class_<Decoder>(m, "Decoder")
      .def(pybind11::init<std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor, std::vector<int64_t>,
                          std::vector<double>>())
      .def("step", &Decoder::step, pybind11::call_guard<pybind11::gil_scoped_release>());
}

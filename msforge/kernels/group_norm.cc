// GroupNorm forward and backward on CPU, float32, channels-first (N, C, *), for ops.Custom(func_type="aot").
//
// Why: MindSpore 2.10's CPU GroupNorm / GroupNormGrad take ~8-9 ms each on a 16x128x16x16 tensor (2 MB), longer
// than the convolution that produced it. The float sums within a channel are vectorised by `omp simd reduction`
// (-fopenmp-simd, no OpenMP runtime; without it the compiler keeps them in order, one add at a time), and the groups
// are spread over msforge's thread pool (thread_pool.h) when the tensor is large enough to pay for waking a worker.
// bench/layers.py times them against MindSpore's.
//
// Signature (MindSpore's aot convention): int f(nparam, params, ndims, shapes, dtypes, stream, extra); params holds
// the inputs then the outputs. The number of groups G is read from the shape of the `mean` tensor, (N, G).
// Sums run in float within a channel and in double across channels (group_norm.h, shared with lstm_gates.cc).
#include <cmath>
#include <cstdint>
#include <vector>

#include "group_norm.h"
#include "thread_pool.h"

namespace {

int64_t Numel(const int64_t* shape, int ndim) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

}  // namespace

// inputs: x (N, C, *), gamma (C), beta (C), eps (1); outputs: y (like x), mean (N, G), rstd (N, G)
extern "C" int GroupNormForward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                void* stream, void* extra) {
  if (nparam != 7) return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* gamma = static_cast<const float*>(params[1]);
  const float* beta = static_cast<const float*>(params[2]);
  const float eps = *static_cast<const float*>(params[3]);
  float* y = static_cast<float*>(params[4]);
  float* mean = static_cast<float*>(params[5]);
  float* rstd = static_cast<float*>(params[6]);
  const int64_t n = shapes[0][0], c = shapes[0][1], g = shapes[5][1];
  if (n * c == 0 || g <= 0 || c % g) return 2;
  const int64_t hw = Numel(shapes[0], ndims[0]) / (n * c), cpg = c / g, m = cpg * hw;
  msforge::ParallelRanges(msforge::Parts(n * g, n * c * hw), n * g, [&](int, int64_t begin, int64_t end) {
    for (int64_t ng = begin; ng < end; ++ng) {
      const float* xs = x + ng * m;
      msforge::GroupStatistics(xs, cpg, hw, eps, &mean[ng], &rstd[ng]);
      const float mu = mean[ng], r = rstd[ng];
      const int64_t c0 = (ng % g) * cpg;
      for (int64_t k = 0; k < cpg; ++k) {
        const float a = r * gamma[c0 + k], b = beta[c0 + k] - mu * a;
        const float* xk = xs + k * hw;
        float* yk = y + ng * m + k * hw;
        for (int64_t i = 0; i < hw; ++i) yk[i] = xk[i] * a + b;
      }
    }
  });
  return 0;
}

// inputs: dy (like x), x, gamma (C), mean (N, G), rstd (N, G); outputs: dx (like x), dgamma (C), dbeta (C)
extern "C" int GroupNormBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                 void* stream, void* extra) {
  if (nparam != 8) return 1;
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  const float* gamma = static_cast<const float*>(params[2]);
  const float* mean = static_cast<const float*>(params[3]);
  const float* rstd = static_cast<const float*>(params[4]);
  float* dx = static_cast<float*>(params[5]);
  float* dgamma = static_cast<float*>(params[6]);
  float* dbeta = static_cast<float*>(params[7]);
  const int64_t n = shapes[1][0], c = shapes[1][1], g = shapes[3][1];
  if (n * c == 0 || g <= 0 || c % g) return 2;
  const int64_t hw = Numel(shapes[1], ndims[1]) / (n * c), cpg = c / g, m = cpg * hw;
  // each part sums dgamma and dbeta over its own groups; the parts are added in order, so the result does not depend
  // on which thread ran which part
  const int parts = msforge::Parts(n * g, 2 * n * c * hw);
  std::vector<std::vector<double>> sum_g(parts, std::vector<double>(c, 0.0)), sum_b(sum_g);
  msforge::ParallelRanges(parts, n * g, [&](int part, int64_t begin, int64_t end) {
    std::vector<double>& part_g = sum_g[part];
    std::vector<double>& part_b = sum_b[part];
    for (int64_t ng = begin; ng < end; ++ng) {
      const float mu = mean[ng], r = rstd[ng];
      const int64_t c0 = (ng % g) * cpg, base = ng * m;
      double s1 = 0.0, s2 = 0.0;  // sums over the group of dxhat = dy * gamma and of dxhat * xhat
      for (int64_t k = 0; k < cpg; ++k) {
        const float* dyk = dy + base + k * hw;
        const float* xk = x + base + k * hw;
        float sb = 0.0f, sg = 0.0f;
#pragma omp simd reduction(+ : sb, sg)
        for (int64_t i = 0; i < hw; ++i) {
          sb += dyk[i];
          sg += dyk[i] * (xk[i] - mu);
        }
        sg *= r;  // sum of dy * xhat
        part_b[c0 + k] += sb;
        part_g[c0 + k] += sg;
        s1 += static_cast<double>(sb) * gamma[c0 + k];
        s2 += static_cast<double>(sg) * gamma[c0 + k];
      }
      const float a1 = static_cast<float>(s1 / m), a2 = static_cast<float>(s2 / m);
      for (int64_t k = 0; k < cpg; ++k) {
        const int64_t at = base + k * hw;
        msforge::ChannelInputGradient(dy + at, x + at, dx + at, hw, gamma[c0 + k], mu, r, a1, a2);
      }
    }
  });
  msforge::AddPartSums(sum_g, sum_b, c, dgamma, dbeta);
  return 0;
}

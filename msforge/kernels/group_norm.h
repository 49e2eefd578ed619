// GroupNorm's arithmetic, shared by group_norm.cc and lstm_gates.cc's GroupNorm + LSTM update: a group's statistics,
// a channel's input gradient, and dgamma / dbeta from the per-part sums. Sums run in float within a channel (vectorised
// by `omp simd reduction`) and in double across channels.
#ifndef MSFORGE_KERNELS_GROUP_NORM_H_
#define MSFORGE_KERNELS_GROUP_NORM_H_
#include <cmath>
#include <cstdint>
#include <vector>

namespace msforge {
namespace {

// Mean and 1 / sqrt(variance + eps) of a group: `channels` rows of `hw` floats from x, the variance from the
// deviations (two passes).
void GroupStatistics(const float* x, int64_t channels, int64_t hw, float eps, float* mean, float* rstd) {
  const int64_t m = channels * hw;
  double sum = 0.0;
  for (int64_t k = 0; k < channels; ++k) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < hw; ++i) s += x[k * hw + i];
    sum += s;
  }
  const float mu = static_cast<float>(sum / m);
  double sq = 0.0;
  for (int64_t k = 0; k < channels; ++k) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < hw; ++i) {
      const float d = x[k * hw + i] - mu;
      s += d * d;
    }
    sq += s;
  }
  *mean = mu;
  *rstd = static_cast<float>(1.0 / std::sqrt(sq / m + eps));
}

// One channel's input gradient: dx = r * (dy * gamma - a1 - (x - mu) * r * a2), a1 and a2 the group's means of
// dy * gamma and of dy * gamma * xhat. dy may be dx itself.
void ChannelInputGradient(const float* dy, const float* x, float* dx, int64_t hw, float gamma, float mu, float r,
                          float a1, float a2) {
#pragma omp simd
  for (int64_t i = 0; i < hw; ++i) dx[i] = r * (dy[i] * gamma - a1 - (x[i] - mu) * r * a2);
}

// dgamma and dbeta: each part's per-channel sums added in part order, so the result does not depend on which thread
// ran which part.
void AddPartSums(const std::vector<std::vector<double>>& sum_g, const std::vector<std::vector<double>>& sum_b,
                 int64_t channels, float* dgamma, float* dbeta) {
  for (int64_t ch = 0; ch < channels; ++ch) {
    double total_g = 0.0, total_b = 0.0;
    for (size_t part = 0; part < sum_g.size(); ++part) {
      total_g += sum_g[part][ch];
      total_b += sum_b[part][ch];
    }
    dgamma[ch] = static_cast<float>(total_g);
    dbeta[ch] = static_cast<float>(total_b);
  }
}

}  // namespace
}  // namespace msforge
#endif  // MSFORGE_KERNELS_GROUP_NORM_H_

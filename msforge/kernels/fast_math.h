// Float functions for msforge's elementwise kernels, written so that loops over them vectorise (the C library's expf
// and erff are scalar calls). Included by lstm_gates.cc and activations.cc.
//
// Exp is Cephes' expf (range reduction to [-ln2/2, ln2/2], degree-7 polynomial, relative error ~1e-7) in plain float
// arithmetic. (The floor and the float->int conversion vectorise only under -fno-trapping-math, one of
// msforge.kernels' flags.) Inputs are clamped to [-87, 88], where exp stays a normal float; NaN stays NaN.
#ifndef MSFORGE_KERNELS_FAST_MATH_H_
#define MSFORGE_KERNELS_FAST_MATH_H_

#include <cmath>
#include <cstdint>

namespace msforge {
namespace {

inline float Exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);  // x = n * ln2 + r
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;     // ln2 in two parts, for precision
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  return er * __builtin_bit_cast(float, bits);
}

inline float Sigmoid(float x) { return 1.0f / (1.0f + Exp(-x)); }

// tanh(x) = 2 * sigmoid(2x) - 1 (models/convlstm.py and msforge.layers.tanh compute it the same way, because
// MindSpore 2.10's CPU Tanh is off by up to 1e-4).
inline float Tanh(float x) { return 2.0f * Sigmoid(2.0f * x) - 1.0f; }

// The standard normal CDF Phi(x) and density phi(x) together (they share exp(-x^2/2)). erf from Abramowitz and
// Stegun, Handbook of Mathematical Functions (1964), formula 7.1.26: for z >= 0, erf(z) = 1 - poly(t) exp(-z^2) with
// t = 1 / (1 + 0.3275911 z), absolute error <= 1.5e-7. With z = |x| / sqrt(2), Phi(x) = 0.5 (1 + sign(x) erf(z)):
// for x < 0 it is 0.5 poly(t) exp(-x^2/2) directly, so the left tail keeps its relative precision.
inline void NormalCdfPdf(float x, float* cdf, float* pdf) {
  const float z = std::fabs(x) * 0.70710678118654752f;
  const float t = 1.0f / (1.0f + 0.3275911f * z);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float e = Exp(-0.5f * x * x);
  const float tail = 0.5f * p * t * e;  // Phi(-|x|)
  *cdf = x < 0.0f ? tail : 1.0f - tail;
  *pdf = 0.39894228040143268f * e;  // 1 / sqrt(2 pi)
}

}  // namespace
}  // namespace msforge

#endif  // MSFORGE_KERNELS_FAST_MATH_H_

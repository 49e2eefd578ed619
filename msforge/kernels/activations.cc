// Elementwise activations on CPU, float32, forward and backward, for ops.Custom(func_type="aot"):
//   GELU (exact, x * Phi(x)),  SiLU (x * sigmoid(x)),  GLU over axis 1 (first half * sigmoid(second half)).
//
// Why: MindSpore 2.10 builds each of them from several elementwise kernels forward and more backward (exact GELU:
// Erf, Mul, Add, Div forward; Exp, Pow, Neg, Mul backward), each a pass over memory. SimVP's training step spent
// ~30% of its op time in them (bench/profile_step.py --config mmnist_2h_anneal.yaml: Mul, Sigmoid, Erf, Div, Pow,
// SigmoidGrad, Exp, StridedSlice). Here each is one pass each way; the backward recomputes what it needs from the
// input instead of keeping intermediates. exp, sigmoid and Phi are fast_math.h's (Phi within 1.5e-7).
//
// Signature (MindSpore's aot convention): int f(nparam, params, ndims, shapes, dtypes, stream, extra); params holds
// the inputs then the outputs.
#include <cstdint>

#include "fast_math.h"
#include "thread_pool.h"

namespace {

using msforge::NormalCdfPdf;
using msforge::Sigmoid;

int64_t Numel(const int64_t* shape, int ndim) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

// fn(begin, end) over [0, n) elements, split over the pool's threads when n is large enough.
template <typename Fn>
void Elementwise(int64_t n, int cost, Fn fn) {
  msforge::ParallelRanges(msforge::Parts(n, cost * n), n, [&](int, int64_t begin, int64_t end) { fn(begin, end); });
}

}  // namespace

namespace {

// y = f(x), elementwise.
template <typename F>
int Forward(int nparam, void** params, int* ndims, int64_t** shapes, int cost, F f) {
  if (nparam != 2) return 1;
  const float* x = static_cast<const float*>(params[0]);
  float* y = static_cast<float*>(params[1]);
  Elementwise(Numel(shapes[0], ndims[0]), cost, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t k = begin; k < end; ++k) y[k] = f(x[k]);
  });
  return 0;
}

// dx = dy * f'(x), elementwise, from inputs dy and x.
template <typename F>
int Backward(int nparam, void** params, int* ndims, int64_t** shapes, int cost, F derivative) {
  if (nparam != 3) return 1;
  const int64_t n = Numel(shapes[1], ndims[1]);
  if (Numel(shapes[0], ndims[0]) != n) return 2;
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  float* dx = static_cast<float*>(params[2]);
  Elementwise(n, cost, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t k = begin; k < end; ++k) dx[k] = dy[k] * derivative(x[k]);
  });
  return 0;
}

inline float Gelu(float x) {
  float cdf, pdf;
  NormalCdfPdf(x, &cdf, &pdf);
  return x * cdf;
}

inline float GeluDerivative(float x) {  // Phi(x) + x * phi(x)
  float cdf, pdf;
  NormalCdfPdf(x, &cdf, &pdf);
  return cdf + x * pdf;
}

inline float Silu(float x) { return x * Sigmoid(x); }

inline float SiluDerivative(float x) {  // s * (1 + x * (1 - s)), s = sigmoid(x)
  const float s = Sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

}  // namespace

// inputs: x; outputs: y = x * Phi(x)
extern "C" int GeluForward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                           void* extra) {
  return Forward(nparam, params, ndims, shapes, 4, [](float x) { return Gelu(x); });
}

// inputs: dy, x; outputs: dx = dy * (Phi(x) + x * phi(x))
extern "C" int GeluBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                            void* stream, void* extra) {
  return Backward(nparam, params, ndims, shapes, 4, [](float x) { return GeluDerivative(x); });
}

// inputs: x; outputs: y = x * sigmoid(x)
extern "C" int SiluForward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                           void* extra) {
  return Forward(nparam, params, ndims, shapes, 3, [](float x) { return Silu(x); });
}

// inputs: dy, x; outputs: dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x)
extern "C" int SiluBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                            void* stream, void* extra) {
  return Backward(nparam, params, ndims, shapes, 3, [](float x) { return SiluDerivative(x); });
}

namespace {

// x (N, 2C, *): the elements per sample of each half (C * trailing size), or -1 when axis 1 cannot be halved.
int64_t HalfSize(const int64_t* shape, int ndim) {
  if (ndim < 2 || shape[0] <= 0 || shape[1] % 2 != 0) return -1;
  return Numel(shape, ndim) / shape[0] / 2;
}

}  // namespace

// inputs: x (N, 2C, *) = [a, b] on axis 1; outputs: y (N, C, *) = a * sigmoid(b)
extern "C" int GluForward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                          void* extra) {
  if (nparam != 2) return 1;
  const int64_t m = HalfSize(shapes[0], ndims[0]);
  if (m < 0 || Numel(shapes[1], ndims[1]) != shapes[0][0] * m) return 2;
  const float* x = static_cast<const float*>(params[0]);
  float* y = static_cast<float*>(params[1]);
  const int64_t n = shapes[0][0];
  msforge::ParallelRanges(msforge::Parts(n, 3 * n * m), n, [&](int, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float *a = x + 2 * i * m, *b = a + m;
      float* yi = y + i * m;
#pragma omp simd
      for (int64_t k = 0; k < m; ++k) yi[k] = a[k] * Sigmoid(b[k]);
    }
  });
  return 0;
}

// inputs: dy (N, C, *), x (N, 2C, *); outputs: dx (N, 2C, *) = [dy * s, dy * a * s * (1 - s)], s = sigmoid(b)
extern "C" int GluBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                           void* extra) {
  if (nparam != 3) return 1;
  const int64_t m = HalfSize(shapes[1], ndims[1]);
  if (m < 0 || Numel(shapes[0], ndims[0]) != shapes[1][0] * m) return 2;
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  float* dx = static_cast<float*>(params[2]);
  const int64_t n = shapes[1][0];
  msforge::ParallelRanges(msforge::Parts(n, 4 * n * m), n, [&](int, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float *a = x + 2 * i * m, *b = a + m, *dyi = dy + i * m;
      float *da = dx + 2 * i * m, *db = da + m;
#pragma omp simd
      for (int64_t k = 0; k < m; ++k) {
        const float s = Sigmoid(b[k]);
        da[k] = dyi[k] * s;
        db[k] = dyi[k] * a[k] * s * (1.0f - s);
      }
    }
  });
  return 0;
}

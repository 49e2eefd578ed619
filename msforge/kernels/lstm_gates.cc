// The LSTM cell's pointwise part on CPU, float32, forward and backward, for ops.Custom(func_type="aot"):
// from the pre-activation gates (i, f, g, o stacked on axis 1) and the cell state c,
//   i, f, o = sigmoid(.), g = tanh(.);  c' = f * c + i * g;  h' = o * tanh(c').
//
// Why: written in MindSpore ops this is ~10 elementwise kernels forward and ~20 backward, each a pass over memory
// plus a kernel launch; the default ConvLSTM spent ~60 ms of a ~0.4 s training step in them (Sigmoid, SigmoidGrad,
// Mul, Split, AddN in bench/profile_step.py). Here it is one pass each way; the backward recomputes the activations
// from the gates instead of keeping them. The batch is spread over msforge's thread pool (thread_pool.h).
//
// sigmoid, tanh and exp are fast_math.h's.
//
// Signature (MindSpore's aot convention): int f(nparam, params, ndims, shapes, dtypes, stream, extra); params holds
// the inputs then the outputs.
#include <cmath>
#include <cstdint>

#include "fast_math.h"
#include "thread_pool.h"

namespace {

using msforge::Sigmoid;
using msforge::Tanh;

int64_t Numel(const int64_t* shape, int ndim) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

// Shapes: gates (N, 4H, *), states (N, H, *) with the same trailing size. Elements per sample of a state, or -1.
int64_t StateSize(const int64_t* gates, int gates_ndim, const int64_t* state, int state_ndim) {
  if (gates_ndim < 2 || gates_ndim != state_ndim || gates[0] != state[0] || state[0] <= 0) return -1;
  if (Numel(gates, gates_ndim) != 4 * Numel(state, state_ndim)) return -1;
  return Numel(state, state_ndim) / state[0];
}

}  // namespace

// inputs: gates (N, 4H, *), c (N, H, *); outputs: h (N, H, *), c_next (N, H, *)
extern "C" int LstmGatesForward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                void* stream, void* extra) {
  if (nparam != 4) return 1;
  const int64_t m = StateSize(shapes[0], ndims[0], shapes[1], ndims[1]);
  if (m < 0) return 2;
  const float* gates = static_cast<const float*>(params[0]);
  const float* c = static_cast<const float*>(params[1]);
  float* h_next = static_cast<float*>(params[2]);
  float* c_next = static_cast<float*>(params[3]);
  const int64_t n = shapes[1][0];
  msforge::ParallelRanges(msforge::Parts(n, 7 * n * m), n, [&](int, int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float *gi = gates + 4 * b * m, *gf = gi + m, *gg = gi + 2 * m, *go = gi + 3 * m, *cb = c + b * m;
      float *hb = h_next + b * m, *cnb = c_next + b * m;
#pragma omp simd
      for (int64_t k = 0; k < m; ++k) {
        const float cn = Sigmoid(gf[k]) * cb[k] + Sigmoid(gi[k]) * Tanh(gg[k]);
        cnb[k] = cn;
        hb[k] = Sigmoid(go[k]) * Tanh(cn);
      }
    }
  });
  return 0;
}

// inputs: dh_next (N, H, *), dc_next (N, H, *), gates (N, 4H, *), c (N, H, *); outputs: dgates, dc
extern "C" int LstmGatesBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                 void* stream, void* extra) {
  if (nparam != 6) return 1;
  const int64_t m = StateSize(shapes[2], ndims[2], shapes[3], ndims[3]);
  if (m < 0) return 2;
  const float* dh_next = static_cast<const float*>(params[0]);
  const float* dc_next = static_cast<const float*>(params[1]);
  const float* gates = static_cast<const float*>(params[2]);
  const float* c = static_cast<const float*>(params[3]);
  float* dgates = static_cast<float*>(params[4]);
  float* dc = static_cast<float*>(params[5]);
  const int64_t n = shapes[3][0];
  msforge::ParallelRanges(msforge::Parts(n, 12 * n * m), n, [&](int, int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float *gi = gates + 4 * b * m, *gf = gi + m, *gg = gi + 2 * m, *go = gi + 3 * m, *cb = c + b * m;
      const float *dhb = dh_next + b * m, *dcnb = dc_next + b * m;
      float *di = dgates + 4 * b * m, *df = di + m, *dg = di + 2 * m, *dout = di + 3 * m, *dcb = dc + b * m;
#pragma omp simd
      for (int64_t k = 0; k < m; ++k) {
        const float i = Sigmoid(gi[k]), f = Sigmoid(gf[k]), g = Tanh(gg[k]), o = Sigmoid(go[k]);
        const float tc = Tanh(f * cb[k] + i * g);
        const float dcn = dcnb[k] + dhb[k] * o * (1.0f - tc * tc);  // all the gradient reaching c'
        di[k] = dcn * g * i * (1.0f - i);
        df[k] = dcn * cb[k] * f * (1.0f - f);
        dg[k] = dcn * i * (1.0f - g * g);
        dout[k] = dhb[k] * tc * o * (1.0f - o);
        dcb[k] = dcn * f;
      }
    }
  });
  return 0;
}

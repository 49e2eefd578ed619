// The LSTM cell's pointwise part on CPU, float32, forward and backward, for ops.Custom(func_type="aot"):
// from the pre-activation gates (i, f, g, o stacked on axis 1) and the cell state c,
//   i, f, o = sigmoid(.), g = tanh(.);  c' = f * c + i * g;  h' = o * tanh(c').
//
// Why: written in MindSpore ops this is ~10 elementwise kernels forward and ~20 backward, each a pass over memory
// plus a kernel launch; the default ConvLSTM spent ~60 ms of a ~0.4 s training step in them (Sigmoid, SigmoidGrad,
// Mul, Split, AddN in bench/profile_step.py). Here it is one pass each way; the backward recomputes the activations
// from the gates instead of keeping them. The batch is spread over msforge's thread pool (thread_pool.h).
//
// GroupNormLstmGates{Forward,Backward} put a GroupNorm of the gates in front, in the same single pass over the
// update (ConvLSTM normalises its gates): the separate GroupNorm kernel wrote the normalised gates, which this one
// read back, and their gradient likewise; fused, each way reads the gates once and keeps a sample's data in cache.
// The normalised gates are x * a + s per channel, a = rstd * gamma and s = beta - mean * a, as group_norm.cc; the
// group statistics, the input gradient and dgamma / dbeta are group_norm.h's, shared with group_norm.cc.
//
// sigmoid, tanh and exp are fast_math.h's.
//
// Signature (MindSpore's aot convention): int f(nparam, params, ndims, shapes, dtypes, stream, extra); params holds
// the inputs then the outputs.
#include <cmath>
#include <cstdint>
#include <vector>

#include "fast_math.h"
#include "group_norm.h"
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

namespace {

// The per-channel affine of the normalised gates of sample b: a[ch] = rstd * gamma[ch], s[ch] = beta[ch] - mean * a.
void GroupAffine(int64_t b, int64_t channels, int64_t groups, const float* gamma, const float* beta,
                 const float* mean, const float* rstd, float* a, float* s) {
  const int64_t per_group = channels / groups;
  for (int64_t ch = 0; ch < channels; ++ch) {
    const int64_t g = b * groups + ch / per_group;
    a[ch] = rstd[g] * gamma[ch];
    s[ch] = beta[ch] - mean[g] * a[ch];
  }
}

}  // namespace

// inputs: gates (N, 4H, *), c (N, H, *), gamma (4H), beta (4H), eps (1); outputs: h (N, H, *), c_next (N, H, *),
// mean (N, G), rstd (N, G). G, the GroupNorm's number of groups, is read from the shape of `mean`.
extern "C" int GroupNormLstmGatesForward(int nparam, void** params, int* ndims, int64_t** shapes,
                                         const char** dtypes, void* stream, void* extra) {
  if (nparam != 9) return 1;
  const int64_t m = StateSize(shapes[0], ndims[0], shapes[1], ndims[1]);
  const int64_t n = shapes[1][0], channels = shapes[0][1], groups = shapes[7][1];
  if (m < 0 || groups <= 0 || channels % groups || shapes[2][0] != channels) return 2;
  const float* gates = static_cast<const float*>(params[0]);
  const float* c = static_cast<const float*>(params[1]);
  const float* gamma = static_cast<const float*>(params[2]);
  const float* beta = static_cast<const float*>(params[3]);
  const float eps = *static_cast<const float*>(params[4]);
  float* h_next = static_cast<float*>(params[5]);
  float* c_next = static_cast<float*>(params[6]);
  float* mean = static_cast<float*>(params[7]);
  float* rstd = static_cast<float*>(params[8]);
  const int64_t hidden = channels / 4, hw = m / hidden, group_size = 4 * m / groups;
  msforge::ParallelRanges(msforge::Parts(n, 9 * n * m), n, [&](int, int64_t begin, int64_t end) {
    std::vector<float> a(channels), s(channels);
    for (int64_t b = begin; b < end; ++b) {
      const float* x = gates + 4 * b * m;
      for (int64_t g = 0; g < groups; ++g) {  // a group is contiguous, as in group_norm.cc
        msforge::GroupStatistics(x + g * group_size, group_size / hw, hw, eps, &mean[b * groups + g],
                                 &rstd[b * groups + g]);
      }
      GroupAffine(b, channels, groups, gamma, beta, mean, rstd, a.data(), s.data());
      for (int64_t j = 0; j < hidden; ++j) {  // the update, one state channel at a time
        const int64_t ci = j, cf = hidden + j, cg = 2 * hidden + j, co = 3 * hidden + j;
        const float *xi = x + ci * hw, *xf = x + cf * hw, *xg = x + cg * hw, *xo = x + co * hw;
        const float *cb = c + b * m + j * hw;
        float *hb = h_next + b * m + j * hw, *cnb = c_next + b * m + j * hw;
        const float ai = a[ci], si = s[ci], af = a[cf], sf = s[cf], ag = a[cg], sg = s[cg], ao = a[co], so = s[co];
#pragma omp simd
        for (int64_t k = 0; k < hw; ++k) {
          const float cn = Sigmoid(xf[k] * af + sf) * cb[k] + Sigmoid(xi[k] * ai + si) * Tanh(xg[k] * ag + sg);
          cnb[k] = cn;
          hb[k] = Sigmoid(xo[k] * ao + so) * Tanh(cn);
        }
      }
    }
  });
  return 0;
}

// inputs: dh_next (N, H, *), dc_next (N, H, *), gates (N, 4H, *), c (N, H, *), gamma (4H), beta (4H), mean (N, G),
// rstd (N, G); outputs: dgates (N, 4H, *), dgamma (4H), dbeta (4H), dc (N, H, *).
// dgates first holds the gradient reaching the normalised gates, then, in place, the gradient of the gates.
extern "C" int GroupNormLstmGatesBackward(int nparam, void** params, int* ndims, int64_t** shapes,
                                          const char** dtypes, void* stream, void* extra) {
  if (nparam != 12) return 1;
  const int64_t m = StateSize(shapes[2], ndims[2], shapes[3], ndims[3]);
  const int64_t n = shapes[3][0], channels = shapes[2][1], groups = shapes[6][1];
  if (m < 0 || groups <= 0 || channels % groups || shapes[4][0] != channels) return 2;
  const float* dh_next = static_cast<const float*>(params[0]);
  const float* dc_next = static_cast<const float*>(params[1]);
  const float* gates = static_cast<const float*>(params[2]);
  const float* c = static_cast<const float*>(params[3]);
  const float* gamma = static_cast<const float*>(params[4]);
  const float* beta = static_cast<const float*>(params[5]);
  const float* mean = static_cast<const float*>(params[6]);
  const float* rstd = static_cast<const float*>(params[7]);
  float* dgates = static_cast<float*>(params[8]);
  float* dgamma = static_cast<float*>(params[9]);
  float* dbeta = static_cast<float*>(params[10]);
  float* dc = static_cast<float*>(params[11]);
  const int64_t hidden = channels / 4, hw = m / hidden, per_group = channels / groups, group_size = 4 * m / groups;
  // each part sums dgamma and dbeta over its own samples; the parts are added in order, so the result does not
  // depend on which thread ran which part
  const int parts = msforge::Parts(n, 16 * n * m);
  std::vector<std::vector<double>> sum_g(parts, std::vector<double>(channels, 0.0)), sum_b(sum_g);
  msforge::ParallelRanges(parts, n, [&](int part, int64_t begin, int64_t end) {
    std::vector<float> a(channels), s(channels), sb(channels), sg(channels);
    for (int64_t b = begin; b < end; ++b) {
      const float* x = gates + 4 * b * m;
      float* dx = dgates + 4 * b * m;
      GroupAffine(b, channels, groups, gamma, beta, mean, rstd, a.data(), s.data());
      for (int64_t j = 0; j < hidden; ++j) {  // LSTMGates' backward on the normalised gates, and their sums
        const int64_t ci = j, cf = hidden + j, cg = 2 * hidden + j, co = 3 * hidden + j;
        const float *xi = x + ci * hw, *xf = x + cf * hw, *xg = x + cg * hw, *xo = x + co * hw;
        const float *cb = c + b * m + j * hw, *dhb = dh_next + b * m + j * hw, *dcnb = dc_next + b * m + j * hw;
        float *di = dx + ci * hw, *df = dx + cf * hw, *dg = dx + cg * hw, *dout = dx + co * hw;
        float* dcb = dc + b * m + j * hw;
        const float ai = a[ci], si = s[ci], af = a[cf], sf = s[cf], ag = a[cg], sg_ = s[cg], ao = a[co], so = s[co];
        const float mi = mean[b * groups + ci / per_group], mf = mean[b * groups + cf / per_group];
        const float mg = mean[b * groups + cg / per_group], mo = mean[b * groups + co / per_group];
        float bi = 0.0f, bf = 0.0f, bg = 0.0f, bo = 0.0f, gi = 0.0f, gf = 0.0f, gg = 0.0f, go = 0.0f;
#pragma omp simd reduction(+ : bi, bf, bg, bo, gi, gf, gg, go)
        for (int64_t k = 0; k < hw; ++k) {
          const float i = Sigmoid(xi[k] * ai + si), f = Sigmoid(xf[k] * af + sf), g = Tanh(xg[k] * ag + sg_);
          const float o = Sigmoid(xo[k] * ao + so);
          const float tc = Tanh(f * cb[k] + i * g);
          const float dcn = dcnb[k] + dhb[k] * o * (1.0f - tc * tc);  // all the gradient reaching c'
          const float vi = dcn * g * i * (1.0f - i), vf = dcn * cb[k] * f * (1.0f - f);
          const float vg = dcn * i * (1.0f - g * g), vo = dhb[k] * tc * o * (1.0f - o);
          di[k] = vi;
          df[k] = vf;
          dg[k] = vg;
          dout[k] = vo;
          dcb[k] = dcn * f;
          bi += vi;
          bf += vf;
          bg += vg;
          bo += vo;
          gi += vi * (xi[k] - mi);
          gf += vf * (xf[k] - mf);
          gg += vg * (xg[k] - mg);
          go += vo * (xo[k] - mo);
        }
        sb[ci] = bi, sb[cf] = bf, sb[cg] = bg, sb[co] = bo;
        sg[ci] = gi, sg[cf] = gf, sg[cg] = gg, sg[co] = go;
      }
      for (int64_t g = 0; g < groups; ++g) {  // GroupNorm's backward, as group_norm.cc
        const float mu = mean[b * groups + g], r = rstd[b * groups + g];
        double s1 = 0.0, s2 = 0.0;
        for (int64_t ch = g * per_group; ch < (g + 1) * per_group; ++ch) {
          const float xhat_sum = sg[ch] * r;  // sum of dy * xhat
          sum_b[part][ch] += sb[ch];
          sum_g[part][ch] += xhat_sum;
          s1 += static_cast<double>(sb[ch]) * gamma[ch];
          s2 += static_cast<double>(xhat_sum) * gamma[ch];
        }
        const float a1 = static_cast<float>(s1 / group_size), a2 = static_cast<float>(s2 / group_size);
        for (int64_t ch = g * per_group; ch < (g + 1) * per_group; ++ch) {
          msforge::ChannelInputGradient(dx + ch * hw, x + ch * hw, dx + ch * hw, hw, gamma[ch], mu, r, a1, a2);
        }
      }
    }
  });
  msforge::AddPartSums(sum_g, sum_b, channels, dgamma, dbeta);
  return 0;
}

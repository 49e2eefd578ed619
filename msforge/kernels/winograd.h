// Winograd F(4x4, 3x3) convolutions (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016)
// for conv2d.cc: float32, 3x3, stride 1, padding 1 on every side, no dilation or groups, input and output channels
// multiples of 16, NCHW in and out, AVX-512. Each 4x4 block of outputs (a tile) takes 36 products per channel pair
// where the direct convolution takes 144: 4x fewer multiplications, for transforms of the tiles and kernels. The
// weight gradient takes F(3x3, 4x4) on the same points (Conv3x3::WeightGradient), also 4x fewer.
//
// Why: oneDNN 3.10 has no x64 Winograd kernels, and its direct kernels already run the ConvLSTMs' 3x3 convolutions at
// about the cores' FMA peak. An earlier try that transformed whole tensors and multiplied them with sgemm moved 2.25x
// the data through memory and was no faster (bench/README "Tried and dropped for the convolutions"). Here the
// transforms are fused with the products over blocks of kTilesPerBlock tiles, whose transformed inputs (v) and products
// (m) stay in L2 between the three steps; the 36 products of a block run on a 6 x 64 register block (RegisterBlock,
// shared by all three passes).
//
// Layouts: the input is first copied to 16-channel blocks (n, c / 16, h, w, 16) so that one vector holds 16 channels of
// a pixel; the kernels are transformed to u[36][c][k]; the output transform transposes each tile's 16 x 16 block
// (positions x channels) in registers and writes NCHW directly. The input gradient is the same convolution with the
// kernel flipped and its channels swapped (`transposed`); the backward pass copies dy to blocks once for it and the
// weight gradient. Every sum runs in a fixed order (input channels, then the fixed transforms), and each tile is
// computed by one thread (each of the weight gradient's 36 sums likewise): results do not depend on the number of
// threads.
#ifndef MSFORGE_KERNELS_WINOGRAD_H_
#define MSFORGE_KERNELS_WINOGRAD_H_
#ifdef __AVX512F__
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "thread_pool.h"

namespace msforge {
namespace {
namespace winograd {

// r[i] lane j -> r[j] lane i.
inline void Transpose16(__m512* r) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]), c = _mm512_castps_pd(t[i + 2]),
            d = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

// o = B^T d for one 6-vector (the input transform, one direction).
inline void InputRow(__m512 d0, __m512 d1, __m512 d2, __m512 d3, __m512 d4, __m512 d5, __m512* o) {
  const __m512 two = _mm512_set1_ps(2), four = _mm512_set1_ps(4), five = _mm512_set1_ps(5);
  o[0] = _mm512_add_ps(_mm512_fnmadd_ps(five, d2, _mm512_mul_ps(four, d0)), d4);
  o[1] = _mm512_fnmadd_ps(four, _mm512_add_ps(d1, d2), _mm512_add_ps(d3, d4));
  o[2] = _mm512_fmadd_ps(four, _mm512_sub_ps(d1, d2), _mm512_sub_ps(d4, d3));
  const __m512 a = _mm512_sub_ps(d4, d2), b = _mm512_mul_ps(two, _mm512_sub_ps(d3, d1));
  o[3] = _mm512_add_ps(a, b);
  o[4] = _mm512_sub_ps(a, b);
  o[5] = _mm512_add_ps(_mm512_fnmadd_ps(five, d3, _mm512_mul_ps(four, d1)), d5);
}

// o = A^T m for one 6-vector (the output transform, one direction).
inline void OutputRow(const __m512* m, __m512* o) {
  const __m512 two = _mm512_set1_ps(2), four = _mm512_set1_ps(4), eight = _mm512_set1_ps(8);
  const __m512 s12 = _mm512_add_ps(m[1], m[2]), d12 = _mm512_sub_ps(m[1], m[2]);
  const __m512 s34 = _mm512_add_ps(m[3], m[4]), d34 = _mm512_sub_ps(m[3], m[4]);
  o[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
  o[1] = _mm512_fmadd_ps(two, d34, d12);
  o[2] = _mm512_fmadd_ps(four, s34, s12);
  o[3] = _mm512_add_ps(_mm512_fmadd_ps(eight, d34, d12), m[5]);
}

// Lanes 4i..4i+3 of v.
inline __m128 Quarter(__m512 v, int64_t i) {
  switch (i) {
    case 0: return _mm512_extractf32x4_ps(v, 0);
    case 1: return _mm512_extractf32x4_ps(v, 1);
    case 2: return _mm512_extractf32x4_ps(v, 2);
    default: return _mm512_extractf32x4_ps(v, 3);
  }
}

// o = G g for one 3-vector (the kernel transform, one direction).
inline void KernelRow(__m512 g0, __m512 g1, __m512 g2, __m512* o) {
  const __m512 q = _mm512_set1_ps(0.25f), s = _mm512_set1_ps(1.f / 6), t = _mm512_set1_ps(1.f / 12),
               u = _mm512_set1_ps(1.f / 24);
  const __m512 sum = _mm512_add_ps(g0, g2);
  o[0] = _mm512_mul_ps(q, g0);
  o[1] = _mm512_mul_ps(_mm512_set1_ps(-1.f / 6), _mm512_add_ps(sum, g1));
  o[2] = _mm512_mul_ps(s, _mm512_sub_ps(g1, sum));
  const __m512 a = _mm512_fmadd_ps(u, g0, _mm512_mul_ps(s, g2)), b = _mm512_mul_ps(t, g1);
  o[3] = _mm512_add_ps(a, b);
  o[4] = _mm512_sub_ps(a, b);
  o[5] = g2;
}

// o = G' g for one 4-vector: the weight gradient's transform of a 4x4 output-gradient tile, F(3x3, 4x4) on the same
// points as F(4x4, 3x3) (G' = the points' powers 0..3, scaled as G's rows).
inline void GradientRow(__m512 g0, __m512 g1, __m512 g2, __m512 g3, __m512* o) {
  const __m512 sixth = _mm512_set1_ps(-1.f / 6), twentyfourth = _mm512_set1_ps(1.f / 24);
  const __m512 two = _mm512_set1_ps(2), four = _mm512_set1_ps(4), eight = _mm512_set1_ps(8);
  const __m512 even = _mm512_add_ps(g0, g2), odd = _mm512_add_ps(g1, g3);
  const __m512 even2 = _mm512_fmadd_ps(four, g2, g0), odd2 = _mm512_fmadd_ps(eight, g3, _mm512_mul_ps(two, g1));
  o[0] = _mm512_mul_ps(_mm512_set1_ps(0.25f), g0);
  o[1] = _mm512_mul_ps(sixth, _mm512_add_ps(even, odd));
  o[2] = _mm512_mul_ps(sixth, _mm512_sub_ps(even, odd));
  o[3] = _mm512_mul_ps(twentyfourth, _mm512_add_ps(even2, odd2));
  o[4] = _mm512_mul_ps(twentyfourth, _mm512_sub_ps(even2, odd2));
  o[5] = g3;
}

// o = A'^T m for one 6-vector: the weight gradient's output transform, 3 of the 3x3 taps.
inline void WeightRow(const __m512* m, __m512* o) {
  const __m512 two = _mm512_set1_ps(2), four = _mm512_set1_ps(4);
  const __m512 s12 = _mm512_add_ps(m[1], m[2]), s34 = _mm512_add_ps(m[3], m[4]);
  o[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
  o[1] = _mm512_fmadd_ps(two, _mm512_sub_ps(m[3], m[4]), _mm512_sub_ps(m[1], m[2]));
  o[2] = _mm512_add_ps(_mm512_fmadd_ps(four, s34, s12), m[5]);
}

// dst (n, channels / 16, h, w, 16) from src (n, channels, h, w), one row r = (n, channels / 16, h) of it.
inline void Block16(int64_t channels, int64_t h, int64_t w, const float* src, float* dst, int64_t r) {
  const int64_t row = r % h, cb = r / h % (channels / 16), n = r / h / (channels / 16);
  src += ((n * channels + cb * 16) * h + row) * w;
  dst += r * w * 16;
  for (int64_t w0 = 0; w0 < w; w0 += 16) {
    const int64_t width = w - w0 < 16 ? w - w0 : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << width) - 1);
    __m512 v[16];
    for (int i = 0; i < 16; ++i) v[i] = _mm512_maskz_loadu_ps(mask, src + i * h * w + w0);
    Transpose16(v);
    for (int j = 0; j < width; ++j) _mm512_storeu_ps(dst + (w0 + j) * 16, v[j]);
  }
}

// store(e, B^T d B [e]) for the 36 values of the 6x6 patch d at (y0, x0) of a (h, w, 16) plane, zeros outside it.
template <typename Store>
inline void InputTile(const float* plane, int64_t h, int64_t w, int64_t y0, int64_t x0, Store store) {
  const bool inside = y0 >= 0 && x0 >= 0 && y0 + 6 <= h && x0 + 6 <= w;
  __m512 rows[6][6];
  for (int i = 0; i < 6; ++i) {
    __m512 d[6];
    for (int j = 0; j < 6; ++j) {
      const int64_t yy = y0 + i, xx = x0 + j;
      d[j] = inside || (yy >= 0 && yy < h && xx >= 0 && xx < w) ? _mm512_loadu_ps(plane + (yy * w + xx) * 16)
                                                                  : _mm512_setzero_ps();
    }
    InputRow(d[0], d[1], d[2], d[3], d[4], d[5], rows[i]);
  }
  for (int j = 0; j < 6; ++j) {
    __m512 o[6];
    InputRow(rows[0][j], rows[1][j], rows[2][j], rows[3][j], rows[4][j], rows[5][j], o);
    for (int i = 0; i < 6; ++i) store(i * 6 + j, o[i]);
  }
}

// store(e, G' g G'^T [e]) for the 36 values of the 4x4 patch g at (y0, x0) of a (h, w, 16) plane, zeros outside it.
template <typename Store>
inline void GradientTile(const float* plane, int64_t h, int64_t w, int64_t y0, int64_t x0, Store store) {
  __m512 rows[4][6];
  for (int i = 0; i < 4; ++i) {
    __m512 g[4];
    for (int j = 0; j < 4; ++j) {
      const int64_t yy = y0 + i, xx = x0 + j;
      g[j] = yy < h && xx < w ? _mm512_loadu_ps(plane + (yy * w + xx) * 16) : _mm512_setzero_ps();
    }
    GradientRow(g[0], g[1], g[2], g[3], rows[i]);
  }
  for (int j = 0; j < 6; ++j) {
    __m512 o[6];
    GradientRow(rows[0][j], rows[1][j], rows[2][j], rows[3][j], o);
    for (int i = 0; i < 6; ++i) store(i * 6 + j, o[i]);
  }
}

constexpr int kTilesPerBlock = 32;  // tiles whose transforms and products stay in L2 together
constexpr int kGradientTilesPerBlock = 64;  // the same for the weight gradient (64 measured faster than 32 and 128)
constexpr int kRows = 6, kColumns = 4;  // the register block: 6 rows x 4 vectors (64 channels), 24 accumulators
constexpr int64_t kPlanePad = 48;        // floats between two of the 36 planes, off multiples of 4 KiB
constexpr size_t kKeptKernels = 32;      // kernel transforms kept between calls (2.4 MB each at 64 -> 128 channels)

struct Shape {
  int64_t n, c, h, w, k;  // input (n, c, h, w), output (n, k, h, w)
  int64_t tile_rows() const { return (h + 3) / 4; }
  int64_t tile_columns() const { return (w + 3) / 4; }
  int64_t tiles() const { return n * tile_rows() * tile_columns(); }
  // Tile t's image and the top-left output of its 4x4 block.
  void TileOrigin(int64_t t, int64_t* image, int64_t* y0, int64_t* x0) const {
    *image = t / (tile_rows() * tile_columns());
    *y0 = t / tile_columns() % tile_rows() * 4;
    *x0 = t % tile_columns() * 4;
  }
};

// Lane i holds i * stride: gather and scatter offsets of 16 channels `stride` floats apart.
inline __m512i LaneOffsets(int64_t stride) {
  return _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                            _mm512_set1_epi32(static_cast<int>(stride)));
}

// The channels this path computes: multiples of 16 (one vector).
inline bool Supported(int64_t in_channels, int64_t out_channels) {
  return in_channels % 16 == 0 && out_channels % 16 == 0 && in_channels > 0 && out_channels > 0;
}

// The products' register block: m[r][16 j + lane] = (or, when accumulate, +=) the sum over s < steps of
// a[r * a_row + s * a_step] * b[s * b_step + 16 j + lane], for r < R rows and j < V vectors: R x V accumulators,
// V vector loads and R broadcasts per step.
template <int R, int V>
void RegisterBlock(const float* a, int64_t a_row, int64_t a_step, const float* b, int64_t b_step, float* m,
                   int64_t m_row, int64_t steps, bool accumulate) {
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < V; ++j) acc[r][j] = accumulate ? _mm512_loadu_ps(m + r * m_row + 16 * j) : _mm512_setzero_ps();
  for (int64_t step = 0; step < steps; ++step) {
    __m512 w[V];
    for (int j = 0; j < V; ++j) w[j] = _mm512_loadu_ps(b + step * b_step + 16 * j);
    for (int r = 0; r < R; ++r) {
      const __m512 broadcast = _mm512_set1_ps(a[r * a_row + step * a_step]);
      for (int j = 0; j < V; ++j) acc[r][j] = _mm512_fmadd_ps(broadcast, w[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < V; ++j) _mm512_storeu_ps(m + r * m_row + 16 * j, acc[r][j]);
}

using RegisterBlockFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t, int64_t, bool);

template <int R>
RegisterBlockFn RegisterBlockOfRows(int vectors) {
  switch (vectors) {
    case 1: return RegisterBlock<R, 1>;
    case 2: return RegisterBlock<R, 2>;
    case 3: return RegisterBlock<R, 3>;
    default: return RegisterBlock<R, 4>;
  }
}

// The register block for `rows` (1..kRows) and `vectors` (1..kColumns): full blocks and the edges.
inline RegisterBlockFn RegisterBlockFor(int rows, int vectors) {
  switch (rows) {
    case 1: return RegisterBlockOfRows<1>(vectors);
    case 2: return RegisterBlockOfRows<2>(vectors);
    case 3: return RegisterBlockOfRows<3>(vectors);
    case 4: return RegisterBlockOfRows<4>(vectors);
    case 5: return RegisterBlockOfRows<5>(vectors);
    default: return RegisterBlockOfRows<6>(vectors);
  }
}

class Conv3x3 {
 public:
  // y = conv(x, weight) + bias with the layer's weight (k, c, 3, 3).
  void Forward(const Shape& s, const float* x, const float* weight, const float* bias, float* y) {
    Convolve(s, x, weight, false, bias, y, &xb_);
  }

  // The gradients of y = conv(x, weight) + bias from dy: dx (the convolution transposed: with the weight flipped and
  // its channels swapped), dweight and dbias. dy is copied to 16-channel blocks once, for both.
  void Backward(const Shape& s, const float* x, const float* weight, const float* dy, float* dx, float* dweight,
                float* dbias) {
    Convolve({s.n, s.k, s.h, s.w, s.c}, dy, weight, true, nullptr, dx, &gb_);
    WeightGradient(s, x, dy, dweight, dbias);
  }

 private:
  // out = conv(in, weight) + bias, or with `transposed` the convolution whose weight is weight's flipped transpose
  // (weight (c, k, 3, 3), no bias); `in` is copied to 16-channel blocks in *blocked.
  void Convolve(const Shape& s, const float* in, const float* weight, bool transposed, const float* bias, float* out,
                std::vector<float>* blocked) {
    ThreadPool& pool = Pool();
    const int threads = pool.Threads();
    TransformedKernel& kernel = Kernel(s, weight, transposed);
    blocked->resize(s.n * s.c * s.h * s.w);
    scratch_.resize(threads);
    for (auto& buffer : scratch_) buffer.resize(36 * (kTilesPerBlock * (s.c + s.k) + 2 * kPlanePad));
    const int64_t kernel_jobs = kernel.fresh ? s.k / 16 * s.c : 0;
    const int64_t tiles = s.tiles(), blocks = (tiles + kTilesPerBlock - 1) / kTilesPerBlock;
    pool.ParallelFor(threads, [&](int part, int parts) {
      for (int64_t j = kernel_jobs * part / parts; j < kernel_jobs * (part + 1) / parts; ++j)
        TransformKernel(s, weight, transposed, j / s.c * 16, j % s.c, kernel.u.data());
      const int64_t rows = s.n * (s.c / 16) * s.h;
      for (int64_t r = rows * part / parts; r < rows * (part + 1) / parts; ++r)
        Block16(s.c, s.h, s.w, in, blocked->data(), r);
    });
    pool.ParallelFor(threads, [&](int part, int parts) {
      float* scratch = scratch_[part].data();
      for (int64_t b = blocks * part / parts; b < blocks * (part + 1) / parts; ++b) {
        const int64_t t0 = b * kTilesPerBlock, t1 = t0 + kTilesPerBlock < tiles ? t0 + kTilesPerBlock : tiles;
        Tiles(s, blocked->data(), kernel.u.data(), bias, out, t0, t1, scratch);
      }
    });
  }

  // dweight (k, c, 3, 3) and dbias (k) of y = conv(x, weight) + bias from x (n, c, h, w) and dy (n, k, h, w), dy
  // already in 16-channel blocks in gb_ (Backward), by
  // F(3x3, 4x4): per tile, the 3x3 weight gradient is A'^T [(G' dy G'^T) * (B^T x B)] A', and the sum over tiles
  // runs on the 36 products before the one output transform per (k, c). Each thread owns some of the 36 products and
  // sums them over all tiles in tile order (transforming every tile, keeping its own values), so no sum depends on
  // the number of threads.
  void WeightGradient(const Shape& s, const float* x, const float* dy, float* dweight, float* dbias) {
    ThreadPool& pool = Pool();
    const int threads = pool.Threads();
    const int64_t tiles = s.tiles(), C = s.c, K = s.k, plane = s.h * s.w;
    xb_.resize(s.n * C * plane);
    m_.resize(36 * K * C);  // each product's first block of tiles writes it, the others add to it
    scratch_.resize(threads);
    for (auto& buffer : scratch_) buffer.resize(36 * (kGradientTilesPerBlock * (C + K) + 2 * kPlanePad));
    pool.ParallelFor(threads, [&](int part, int parts) {
      const int64_t x_rows = s.n * (C / 16) * s.h;
      for (int64_t r = x_rows * part / parts; r < x_rows * (part + 1) / parts; ++r)
        Block16(C, s.h, s.w, x, xb_.data(), r);
      for (int64_t k = K * part / parts; k < K * (part + 1) / parts; ++k) {  // dbias: in double, in batch order
        double sum = 0;
        for (int64_t n = 0; n < s.n; ++n) {
          const float* values = dy + (n * K + k) * plane;
          float partial = 0;
          for (int64_t i = 0; i < plane; ++i) partial += values[i];
          sum += partial;
        }
        dbias[k] = static_cast<float>(sum);
      }
    });
    pool.ParallelFor(threads, [&](int part, int parts) {
      const int e0 = 36 * part / parts, e1 = 36 * (part + 1) / parts;
      if (e0 == e1) return;
      float* scratch = scratch_[part].data();
      for (int64_t t0 = 0; t0 < tiles; t0 += kGradientTilesPerBlock) {
        const int64_t t1 = t0 + kGradientTilesPerBlock < tiles ? t0 + kGradientTilesPerBlock : tiles;
        GradientTiles(s, t0, t1, e0, e1, t0 == 0, scratch);
      }
    });
    const int64_t jobs = K * (C / 16);
    pool.ParallelFor(threads, [&](int part, int parts) {
      for (int64_t j = jobs * part / parts; j < jobs * (part + 1) / parts; ++j)
        WeightOutput(s, j / (C / 16), j % (C / 16) * 16, dweight);
    });
  }

  // m_[e][k][c] += sum over tiles [t0, t1) of d[e][t][k] v[e][t][c], for the products e0 <= e < e1 (= when first).
  void GradientTiles(const Shape& s, int64_t t0, int64_t t1, int e0, int e1, bool first, float* scratch) {
    const int64_t T = t1 - t0, C = s.c, K = s.k, vs = T * C + kPlanePad, ds = T * K + kPlanePad;
    float* v = scratch;
    float* d = scratch + (e1 - e0) * vs;
    for (int64_t t = 0; t < T; ++t) {
      int64_t n, y0, x0;
      s.TileOrigin(t0 + t, &n, &y0, &x0);
      for (int64_t cb = 0; cb < C / 16; ++cb) {
        float* out = v + t * C + cb * 16;
        InputTile(&xb_[(n * (C / 16) + cb) * s.h * s.w * 16], s.h, s.w, y0 - 1, x0 - 1, [&](int e, __m512 value) {
          if (e >= e0 && e < e1) _mm512_storeu_ps(out + (e - e0) * vs, value);
        });
      }
      for (int64_t kb = 0; kb < K / 16; ++kb) {
        float* out = d + t * K + kb * 16;
        GradientTile(&gb_[(n * (K / 16) + kb) * s.h * s.w * 16], s.h, s.w, y0, x0, [&](int e, __m512 value) {
          if (e >= e0 && e < e1) _mm512_storeu_ps(out + (e - e0) * ds, value);
        });
      }
    }
    for (int e = e0; e < e1; ++e) {
      const float* ve = v + (e - e0) * vs;
      const float* de = d + (e - e0) * ds;
      float* me = &m_[e * K * C];
      for (int64_t c0 = 0; c0 < C; c0 += 16 * kColumns) {
        const int columns = (C - c0) / 16 < kColumns ? static_cast<int>((C - c0) / 16) : kColumns;
        for (int64_t k0 = 0; k0 < K; k0 += kRows) {
          const int rows = K - k0 < kRows ? static_cast<int>(K - k0) : kRows;
          // rows of k (d[t][k], one apart), vectors of c (v[t][c]), summed over the block's tiles
          RegisterBlockFor(rows, columns)(de + k0, 1, K, ve + c0, C, me + k0 * C + c0, C, T, !first);
        }
      }
    }
  }

  // dweight[k][c..c + 16][3][3] = A'^T m_[.][k][c..c + 16] A'.
  void WeightOutput(const Shape& s, int64_t k, int64_t c, float* dweight) {
    const int64_t C = s.c, K = s.k;
    __m512 rows[6][3];
    for (int i = 0; i < 6; ++i) {
      __m512 mv[6];
      for (int j = 0; j < 6; ++j) mv[j] = _mm512_loadu_ps(&m_[((i * 6 + j) * K + k) * C + c]);
      WeightRow(mv, rows[i]);
    }
    const __m512i nine = LaneOffsets(9);
    for (int b = 0; b < 3; ++b) {
      const __m512 column[6] = {rows[0][b], rows[1][b], rows[2][b], rows[3][b], rows[4][b], rows[5][b]};
      __m512 o[3];
      WeightRow(column, o);
      for (int a = 0; a < 3; ++a) _mm512_i32scatter_ps(dweight + (k * C + c) * 9 + a * 3 + b, nine, o[a], 4);
    }
  }

  // A weight's transform, u[e][ci][co], and the weight it was made from.
  struct TransformedKernel {
    std::vector<float> weight, u;
    int64_t c = 0, k = 0;
    uint64_t last_use = 0;
    bool fresh = false;  // u is to be (re)made from weight in this call
  };

  // The transform of `weight` for this call: kept from an earlier call when the weight's values are the same, bit for
  // bit (a recurrent layer convolves with the same weight at every time step: 10 calls a training step each way in
  // the ConvLSTMs here, where the transform took ~15-20% of a forward call), else to be made (fresh). At most
  // kKeptKernels are kept, the least recently used dropped first.
  TransformedKernel& Kernel(const Shape& s, const float* weight, bool transposed) {
    const size_t count = static_cast<size_t>(s.c * s.k * 9);
    TransformedKernel& kernel = kernels_[std::make_pair(weight, transposed)];
    kernel.last_use = ++uses_;
    kernel.fresh = kernel.c != s.c || kernel.k != s.k ||
                   std::memcmp(kernel.weight.data(), weight, count * sizeof(float)) != 0;
    if (kernel.fresh) {
      kernel.c = s.c, kernel.k = s.k;
      kernel.weight.assign(weight, weight + count);
      kernel.u.resize(36 * s.c * s.k);
    }
    while (kernels_.size() > kKeptKernels) {
      auto oldest = kernels_.begin();
      for (auto it = kernels_.begin(); it != kernels_.end(); ++it)
        if (it->second.last_use < oldest->second.last_use) oldest = it;
      kernels_.erase(oldest);  // never this call's: it was used last
    }
    return kernel;
  }

  // u[e][ci][co] for 16 output channels from co0, input channel ci.
  void TransformKernel(const Shape& s, const float* weight, bool transposed, int64_t co0, int64_t ci, float* u) {
    // forward: weight (k, c, 3, 3), tap t of (co, ci) at (co * c + ci) * 9 + t; transposed: weight (c, k, 3, 3)
    // holds the forward layer's (ci as its output, co as its input), flipped: (ci * k + co) * 9 + 8 - t
    const int64_t stride = transposed ? 9 : s.c * 9, base = transposed ? (ci * s.k + co0) * 9 : co0 * s.c * 9 + ci * 9;
    const __m512i index = LaneOffsets(stride);
    __m512 g[9];
    for (int t = 0; t < 9; ++t) g[t] = _mm512_i32gather_ps(index, weight + base + (transposed ? 8 - t : t), 4);
    __m512 rows[3][6];
    for (int j = 0; j < 3; ++j) KernelRow(g[j], g[3 + j], g[6 + j], rows[j]);  // columns: G g
    for (int i = 0; i < 6; ++i) {
      __m512 o[6];
      KernelRow(rows[0][i], rows[1][i], rows[2][i], o);  // (G g) G^T
      for (int j = 0; j < 6; ++j) _mm512_storeu_ps(u + ((i * 6 + j) * s.c + ci) * s.k + co0, o[j]);
    }
  }

  // The tiles [t0, t1) of y: input transform of the blocked input, products with the kernel transform u, output
  // transform.
  void Tiles(const Shape& s, const float* blocked, const float* u, const float* bias, float* y, int64_t t0, int64_t t1,
             float* scratch) {
    const int64_t T = t1 - t0, C = s.c, K = s.k, vs = T * C + kPlanePad, ms = T * K + kPlanePad;
    float* v = scratch;
    float* m = scratch + 36 * vs;
    // input transform: v[e][t][c]
    for (int64_t t = 0; t < T; ++t) {
      int64_t n, y0, x0;
      s.TileOrigin(t0 + t, &n, &y0, &x0);
      for (int64_t cb = 0; cb < C / 16; ++cb) {
        float* out = v + t * C + cb * 16;
        InputTile(blocked + (n * (C / 16) + cb) * s.h * s.w * 16, s.h, s.w, y0 - 1, x0 - 1,
                  [&](int e, __m512 value) { _mm512_storeu_ps(out + e * vs, value); });
      }
    }
    // products: m[e][t][k] = sum_c v[e][t][c] u[e][c][k]
    for (int e = 0; e < 36; ++e) {
      const float* ue = u + e * C * K;
      const float* ve = v + e * vs;
      float* me = m + e * ms;
      for (int64_t k0 = 0; k0 < K; k0 += 16 * kColumns) {
        const int columns = (K - k0) / 16 < kColumns ? static_cast<int>((K - k0) / 16) : kColumns;
        for (int64_t r0 = 0; r0 < T; r0 += kRows) {
          const int rows = T - r0 < kRows ? static_cast<int>(T - r0) : kRows;
          // rows of tiles (v[t][c], C apart), vectors of k (u[c][k]), summed over the input channels
          RegisterBlockFor(rows, columns)(ve + r0 * C, C, 1, ue + k0, K, me + r0 * K + k0, K, C, false);
        }
      }
    }
    // output transform, plus bias, transposed to (k, 4 x 4) and written to y (n, k, h, w)
    for (int64_t t = 0; t < T; ++t) {
      int64_t n, y0, x0;
      s.TileOrigin(t0 + t, &n, &y0, &x0);
      const int64_t rows_out = s.h - y0 < 4 ? s.h - y0 : 4, cols_out = s.w - x0 < 4 ? s.w - x0 : 4;
      const __mmask8 mask = static_cast<__mmask8>((1u << cols_out) - 1);
      for (int64_t kb = 0; kb < K; kb += 16) {
        __m512 rows[6][4];
        for (int i = 0; i < 6; ++i) {
          __m512 mv[6];
          for (int j = 0; j < 6; ++j) mv[j] = _mm512_loadu_ps(m + (i * 6 + j) * ms + t * K + kb);
          OutputRow(mv, rows[i]);
        }
        const __m512 b = bias ? _mm512_loadu_ps(bias + kb) : _mm512_setzero_ps();
        __m512 out[16];
        for (int j = 0; j < 4; ++j) {
          const __m512 column[6] = {rows[0][j], rows[1][j], rows[2][j], rows[3][j], rows[4][j], rows[5][j]};
          __m512 o[4];
          OutputRow(column, o);
          for (int i = 0; i < 4; ++i) out[i * 4 + j] = _mm512_add_ps(o[i], b);
        }
        Transpose16(out);  // out[kk] lanes: the tile's 16 outputs of channel kb + kk
        for (int kk = 0; kk < 16; ++kk) {
          float* dst = y + ((n * K + kb + kk) * s.h + y0) * s.w + x0;
          for (int i = 0; i < rows_out; ++i) {
            const __m128 row = Quarter(out[kk], i);
            if (cols_out == 4) {
              _mm_storeu_ps(dst + i * s.w, row);
            } else {
              _mm_mask_storeu_ps(dst + i * s.w, mask, row);
            }
          }
        }
      }
    }
  }

  std::map<std::pair<const float*, bool>, TransformedKernel> kernels_;
  uint64_t uses_ = 0;
  std::vector<float> xb_, gb_, m_;  // x and dy in 16-channel blocks; the weight gradient's 36 sums
  std::vector<std::vector<float>> scratch_;
};

}  // namespace winograd
}  // namespace
}  // namespace msforge
#endif  // __AVX512F__
#endif  // MSFORGE_KERNELS_WINOGRAD_H_

// 2-D convolution forward and backward on CPU, float32, NCHW, any stride, dilation and groups, zero padding
// (symmetric on the top/left, what the output size leaves on the bottom/right), for ops.Custom(func_type="aot").
// Computed by the oneDNN library that MindSpore ships (mindspore/lib/libdnnl.so.3, compiled in as
// MSFORGE_ONEDNN_PATH), loaded at run time.
//
// Why: MindSpore 2.10's CPU Conv2D, Conv2DBackpropInput and Conv2DBackpropFilter hand oneDNN plain NCHW tensors,
// and on plain NCHW oneDNN picks im2col + sgemm (`x64:gemm:jit`), whose backward-data pass runs at less than half
// the speed of the rest. Asking oneDNN for the layout it prefers (`format_tag_any`: channel-blocked, `nChw8c` on
// AVX2) selects its direct JIT kernels; the inputs are reordered into that layout and the results back, inside
// each call. The bias add and its gradient are fused into the convolution primitives. bench/conv2d.py measures it.
//
// A private instance: msforge caps MindSpore's oneDNN at AVX2 (ONEDNN_MAX_CPU_ISA), because above AVX2 oneDNN gives
// MindSpore's plain-NCHW convolutions a reference kernel ~100x slower; on the blocked layout the AVX-512 kernels are
// the fastest. The cap is per library instance, so this file loads a copy of the library (MSFORGE_ONEDNN_COPY, a
// byte-for-byte copy in msforge's cache: the same file would be the same instance) with RTLD_DEEPBIND, so that the
// copy's calls to itself stay inside it, and lifts the copy's cap. dlmopen would isolate it further but also loads a
// second C library, whose uninitialised locale crashes oneDNN's verbose printing (ONEDNN_VERBOSE=1), seen here.
// MSFORGE_ONEDNN_PRIVATE=0, or no copy (msforge.kernels makes it after the build), uses MindSpore's own instance.
//
// oneDNN's headers are not part of MindSpore's wheel, so the few C API entries used here are declared below; their
// values are those of oneDNN 3.x's public headers (dnnl_types.h, dnnl_common_types.h), stable across 3.x, and
// MsforgeOneDnnVersion lets the caller refuse any other major version. The library was built with the threadpool
// runtime: parallel regions run on the small thread pool below, handed to oneDNN through its threadpool interface.
//
// Signature (MindSpore's aot convention): int f(nparam, params, ndims, shapes, dtypes, stream, extra); params holds
// the inputs then the outputs. The last input is the convolution's geometry, an int64 vector
// (stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w, groups, flags); the output size must be
// (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1, and the bottom/right padding is what that leaves.
//
// flags bit 0 (bf16): the multiplications read bfloat16 (the reorders into the blocked layout round x, the weights
// and dy), the sums, the outputs and the gradients stay float32: Trainer(precision="bf16-mixed") on a CPU whose
// oneDNN has bfloat16 kernels (AVX512_BF16). Where oneDNN would run a bfloat16 shape on its reference kernel, float32
// is used.
// Dilated depthwise convolutions at stride 1 run on loops of this file instead of oneDNN (see DirectDepthwise below),
// in float32 whatever bf16 says; flags bit 1 gives them to oneDNN all the same (benches compare the two).
// 3x3 convolutions at stride 1 with padding 1 and channels in multiples of 16 compute y, dx and the weight gradient
// by Winograd's algorithm (winograd.h: 4x fewer multiplications) on AVX-512 CPUs, in float32 whatever bf16 says (as
// fast as oneDNN's bfloat16 kernels on the ConvLSTM here, and exact to float32); flags bit 2 gives them to oneDNN's
// direct kernels, in bfloat16 when bf16 says so.
#include <dlfcn.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "thread_pool.h"
#include "winograd.h"

extern "C" {
typedef int dnnl_status_t;  // dnnl_success = 0
typedef struct dnnl_engine* dnnl_engine_t;
typedef struct dnnl_stream* dnnl_stream_t;
typedef struct dnnl_memory_desc* dnnl_memory_desc_t;
typedef const struct dnnl_memory_desc* const_dnnl_memory_desc_t;
typedef struct dnnl_memory* dnnl_memory_t;
typedef struct dnnl_primitive_desc* dnnl_primitive_desc_t;
typedef const struct dnnl_primitive_desc* const_dnnl_primitive_desc_t;
typedef struct dnnl_primitive* dnnl_primitive_t;
typedef struct dnnl_primitive_attr* dnnl_primitive_attr_t;
typedef int64_t dnnl_dims_t[12];
typedef struct {
  int arg;
  dnnl_memory_t memory;
} dnnl_exec_arg_t;
typedef struct {
  int major, minor, patch;
  const char* hash;
  unsigned cpu_runtime, gpu_runtime;
} dnnl_version_t;

const dnnl_version_t* dnnl_version(void);
dnnl_status_t dnnl_set_max_cpu_isa(int isa);
int dnnl_get_effective_cpu_isa(void);
dnnl_status_t dnnl_engine_create(dnnl_engine_t* engine, int kind, size_t index);
dnnl_status_t dnnl_threadpool_interop_stream_create(dnnl_stream_t* stream, dnnl_engine_t engine, void* threadpool);
dnnl_status_t dnnl_stream_wait(dnnl_stream_t stream);
dnnl_status_t dnnl_memory_desc_create_with_tag(dnnl_memory_desc_t* md, int ndims, const dnnl_dims_t dims,
                                               int data_type, int tag);
int dnnl_memory_desc_equal(const_dnnl_memory_desc_t lhs, const_dnnl_memory_desc_t rhs);
dnnl_status_t dnnl_memory_create(dnnl_memory_t* memory, const_dnnl_memory_desc_t md, dnnl_engine_t engine,
                                 void* handle);
dnnl_status_t dnnl_memory_set_data_handle(dnnl_memory_t memory, void* handle);
dnnl_status_t dnnl_convolution_forward_primitive_desc_create(
    dnnl_primitive_desc_t* pd, dnnl_engine_t engine, int prop_kind, int alg_kind, const_dnnl_memory_desc_t src,
    const_dnnl_memory_desc_t weights, const_dnnl_memory_desc_t bias, const_dnnl_memory_desc_t dst,
    const dnnl_dims_t strides, const dnnl_dims_t dilates, const dnnl_dims_t padding_l, const dnnl_dims_t padding_r,
    const_dnnl_primitive_desc_t attr);
dnnl_status_t dnnl_convolution_backward_data_primitive_desc_create(
    dnnl_primitive_desc_t* pd, dnnl_engine_t engine, int alg_kind, const_dnnl_memory_desc_t diff_src,
    const_dnnl_memory_desc_t weights, const_dnnl_memory_desc_t diff_dst, const dnnl_dims_t strides,
    const dnnl_dims_t dilates, const dnnl_dims_t padding_l, const dnnl_dims_t padding_r,
    const_dnnl_primitive_desc_t hint_fwd_pd, const_dnnl_primitive_desc_t attr);
dnnl_status_t dnnl_convolution_backward_weights_primitive_desc_create(
    dnnl_primitive_desc_t* pd, dnnl_engine_t engine, int alg_kind, const_dnnl_memory_desc_t src,
    const_dnnl_memory_desc_t diff_weights, const_dnnl_memory_desc_t diff_bias, const_dnnl_memory_desc_t diff_dst,
    const dnnl_dims_t strides, const dnnl_dims_t dilates, const dnnl_dims_t padding_l, const dnnl_dims_t padding_r,
    const_dnnl_primitive_desc_t hint_fwd_pd, const_dnnl_primitive_desc_t attr);
dnnl_status_t dnnl_reorder_primitive_desc_create(dnnl_primitive_desc_t* pd, const_dnnl_memory_desc_t src_md,
                                                 dnnl_engine_t src_engine, const_dnnl_memory_desc_t dst_md,
                                                 dnnl_engine_t dst_engine, const_dnnl_primitive_desc_t attr);
const_dnnl_memory_desc_t dnnl_primitive_desc_query_md(const_dnnl_primitive_desc_t pd, int what, int index);
dnnl_status_t dnnl_primitive_desc_query(const_dnnl_primitive_desc_t pd, int what, int index, void* result);
dnnl_status_t dnnl_primitive_create(dnnl_primitive_t* primitive, const_dnnl_primitive_desc_t pd);
dnnl_status_t dnnl_primitive_destroy(dnnl_primitive_t primitive);
dnnl_status_t dnnl_primitive_desc_destroy(dnnl_primitive_desc_t pd);
dnnl_status_t dnnl_primitive_execute(const dnnl_primitive_t primitive, dnnl_stream_t stream, int nargs,
                                     const dnnl_exec_arg_t* args);
}

namespace dnnl {
namespace threadpool_interop {
// Layout of oneDNN 3.x's dnnl_threadpool_iface.hpp (virtual functions in this order).
struct threadpool_iface {
  virtual int get_num_threads() const = 0;
  virtual bool get_in_parallel() const = 0;
  virtual void parallel_for(int n, const std::function<void(int, int)>& fn) = 0;
  virtual uint64_t get_flags() const = 0;
  virtual void wait() = 0;
  virtual ~threadpool_iface() {}
};
}  // namespace threadpool_interop
}  // namespace dnnl

namespace {

// oneDNN 3.x enum values.
constexpr int kIsaAll = 0, kCpu = 1, kBf16 = 2, kF32 = 3, kTagAny = 1, kTagA = 2, kTagAbcd = 5, kTagAbcde = 6;
constexpr int kForwardTraining = 64, kConvolutionDirect = 1;
constexpr int kQueryImplInfo = 8, kQuerySrc = 129, kQueryDiffSrc = 130, kQueryWeights = 131, kQueryDiffWeights = 132,
              kQueryDst = 133, kQueryDiffDst = 134;
constexpr int kArgSrc = 1, kArgDst = 17, kArgWeights = 33, kArgBias = 41, kArgDiffSrc = 129, kArgDiffDst = 145,
              kArgDiffWeights = 161, kArgDiffBias = 169;
void* const kMemoryNone = nullptr;
void* const kMemoryAllocate = reinterpret_cast<void*>(static_cast<size_t>(-1));

// oneDNN's parallel regions run on msforge's pool (thread_pool.h), whose workers sleep between convolutions.
class OneDnnThreadPool : public dnnl::threadpool_interop::threadpool_iface {
 public:
  int get_num_threads() const override { return msforge::Pool().Threads(); }
  bool get_in_parallel() const override { return msforge::ThreadPool::InPool(); }
  uint64_t get_flags() const override { return 0; }  // synchronous: parallel_for returns when all is done
  void wait() override {}
  void parallel_for(int n, const std::function<void(int, int)>& fn) override { msforge::Pool().ParallelFor(n, fn); }
};

// The oneDNN functions used here, looked up in the loaded library.
#define MSFORGE_ONEDNN_FUNCTIONS(X)                                                                               \
  X(version) X(set_max_cpu_isa) X(get_effective_cpu_isa) X(engine_create) X(threadpool_interop_stream_create)    \
  X(stream_wait) X(memory_desc_create_with_tag) X(memory_desc_equal) X(memory_create) X(memory_set_data_handle)  \
  X(convolution_forward_primitive_desc_create) X(convolution_backward_data_primitive_desc_create)               \
  X(convolution_backward_weights_primitive_desc_create) X(reorder_primitive_desc_create) X(primitive_desc_query_md) \
  X(primitive_desc_query) X(primitive_desc_destroy) X(primitive_create) X(primitive_destroy) X(primitive_execute)

struct OneDnn {
#define MSFORGE_DECLARE(name) decltype(&dnnl_##name) name = nullptr;
  MSFORGE_ONEDNN_FUNCTIONS(MSFORGE_DECLARE)
#undef MSFORGE_DECLARE
  bool private_copy = false;

  // True when every function was found; sets private_copy.
  bool Load() {
    const char* choice = std::getenv("MSFORGE_ONEDNN_PRIVATE");
    void* library = nullptr;
    if (!(choice && std::string(choice) == "0")) {
      library = dlopen(MSFORGE_ONEDNN_COPY, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    }
    private_copy = library != nullptr;
    if (!library) library = dlopen(MSFORGE_ONEDNN_PATH, RTLD_NOW | RTLD_LOCAL);  // MindSpore's instance
    if (!library) return false;
#define MSFORGE_LOOK_UP(name) name = reinterpret_cast<decltype(&dnnl_##name)>(dlsym(library, "dnnl_" #name));
    MSFORGE_ONEDNN_FUNCTIONS(MSFORGE_LOOK_UP)
#undef MSFORGE_LOOK_UP
#define MSFORGE_FOUND(name) &&name
    return true MSFORGE_ONEDNN_FUNCTIONS(MSFORGE_FOUND);
#undef MSFORGE_FOUND
  }
};
OneDnn onednn;

struct Runtime {
  dnnl_engine_t engine = nullptr;
  dnnl_stream_t stream = nullptr;
  OneDnnThreadPool pool;
  bool ok = false;
  Runtime() {
    // the cap must be set before the library's first use; only the private copy's is ours to set
    ok = onednn.Load() && (!onednn.private_copy || onednn.set_max_cpu_isa(kIsaAll) == 0) &&
         onednn.engine_create(&engine, kCpu, 0) == 0 &&
         onednn.threadpool_interop_stream_create(&stream, engine, &pool) == 0;
  }
};

Runtime& GetRuntime() {
  static Runtime runtime;
  return runtime;
}

// Return false from the enclosing function, after one line on stderr, when a oneDNN call fails.
#define CHECK(call)                                                                          \
  do {                                                                                       \
    dnnl_status_t status_ = (call);                                                          \
    if (status_ != 0) {                                                                      \
      std::fprintf(stderr, "msforge conv2d: %s failed (oneDNN status %d)\n", #call, status_); \
      return false;                                                                          \
    }                                                                                        \
  } while (0)

// One tensor argument as MindSpore holds it (plain layout, its buffer) and, when the primitive wants another
// layout, a buffer in that layout and the reorder between the two.
struct Arg {
  dnnl_memory_t user = nullptr;    // plain layout; data handle set on each call
  dnnl_memory_t inner = nullptr;   // the primitive's layout, owned here; null when it is the plain one
  dnnl_primitive_t reorder = nullptr;

  // `to_inner`: reorder user -> inner (an input), else inner -> user (an output).
  bool Init(const_dnnl_memory_desc_t plain, const_dnnl_memory_desc_t wanted, bool to_inner) {
    Runtime& rt = GetRuntime();
    CHECK(onednn.memory_create(&user, plain, rt.engine, kMemoryNone));
    if (onednn.memory_desc_equal(plain, wanted)) return true;
    CHECK(onednn.memory_create(&inner, wanted, rt.engine, kMemoryAllocate));
    dnnl_primitive_desc_t pd;
    if (to_inner) {
      CHECK(onednn.reorder_primitive_desc_create(&pd, plain, rt.engine, wanted, rt.engine, nullptr));
    } else {
      CHECK(onednn.reorder_primitive_desc_create(&pd, wanted, rt.engine, plain, rt.engine, nullptr));
    }
    CHECK(onednn.primitive_create(&reorder, pd));
    return true;
  }
  dnnl_memory_t Inner() const { return inner ? inner : user; }
  bool Bind(void* data) {
    CHECK(onednn.memory_set_data_handle(user, data));
    return true;
  }
  bool In() {  // user -> inner
    if (!reorder) return true;
    dnnl_exec_arg_t args[2] = {{kArgSrc, user}, {kArgDst, inner}};
    CHECK(onednn.primitive_execute(reorder, GetRuntime().stream, 2, args));
    return true;
  }
  bool Out() {  // inner -> user
    if (!reorder) return true;
    dnnl_exec_arg_t args[2] = {{kArgSrc, inner}, {kArgDst, user}};
    CHECK(onednn.primitive_execute(reorder, GetRuntime().stream, 2, args));
    return true;
  }
};

// One convolution problem: input (n, c, h, w), output (n, o, oh, ow), kernel kh x kw, strides, dilations (1: none),
// top/left padding and what the output size leaves at the bottom/right, groups, bfloat16 multiplications or not.
struct Geometry {
  int64_t n, c, h, w, o, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw, ph_end, pw_end, groups, bf16, onednn_depthwise,
      onednn_winograd_shapes;
  std::vector<int64_t> Key() const { return {n, c, h, w, o, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw, groups, bf16}; }
};

// Bottom/right padding that gives `out` outputs from `in` inputs after `pad` at the top/left, or -1 when no padding
// >= 0 does (oneDNN's rule: out = (in + pad + end - reach) / stride + 1, rounded down).
int64_t EndPadding(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t dilation, int64_t pad) {
  const int64_t reach = dilation * (kernel - 1) + 1;
  const int64_t end = (out - 1) * stride + reach - in - pad;
  if (out < 1 || pad < 0 || end < 0) return -1;
  return (in + pad + end - reach) / stride + 1 == out ? end : -1;
}

// The geometry from the shapes of x (N, C, H, W), weight (O, C / groups, KH, KW), the output (N, O, OH, OW) and the
// int64 config (stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w, groups, flags: bf16 + 2 * onednn_depthwise
// + 4 * onednn_winograd_shapes); false when they disagree.
bool ReadGeometry(const int64_t* xs, const int64_t* ws, const int64_t* ys, const int64_t* config, Geometry* g) {
  *g = Geometry{xs[0], xs[1], xs[2], xs[3], ws[0], ys[2], ys[3], ws[2], ws[3], config[0], config[1], config[2],
                config[3], config[4], config[5], 0, 0, config[6], config[7] & 1, (config[7] >> 1) & 1,
                (config[7] >> 2) & 1};
  if (g->sh < 1 || g->sw < 1 || g->dh < 1 || g->dw < 1 || g->groups < 1) return false;
  if (config[7] < 0 || config[7] > 7) return false;
  if (g->c != ws[1] * g->groups || g->o % g->groups || ys[0] != g->n || ys[1] != g->o) return false;
  g->ph_end = EndPadding(g->h, g->oh, g->kh, g->sh, g->dh, g->ph);
  g->pw_end = EndPadding(g->w, g->ow, g->kw, g->sw, g->dw, g->pw);
  return g->ph_end >= 0 && g->pw_end >= 0;
}

// Everything oneDNN needs for one problem shape, made on the first call with that shape and kept.
struct Plan {
  dnnl_primitive_t forward = nullptr, backward_data = nullptr, backward_weights = nullptr;
  Arg x, w, b, y;                   // forward
  Arg dy_data, w_data, dx;          // backward data
  Arg x_weights, dy_weights, dw, db;  // backward weights
  dnnl_primitive_desc_t fwd = nullptr, bwd_data = nullptr, bwd_weights = nullptr;
  bool share_dy = false;
  bool bf16 = false;  // the multiplications read bfloat16
  const char* impl[3] = {"", "", ""};

  // bfloat16 where asked and oneDNN has a kernel for it (not its reference one), else float32.
  bool Init(const Geometry& g) {
    if (g.bf16 && Build(g, kBf16)) {
      bool reference = false;
      for (const char* name : impl) reference = reference || std::string(name).rfind("ref", 0) == 0;
      if (!reference) return Arguments(g, kBf16);
      for (dnnl_primitive_t p : {forward, backward_data, backward_weights}) onednn.primitive_destroy(p);
      for (dnnl_primitive_desc_t pd : {fwd, bwd_data, bwd_weights}) onednn.primitive_desc_destroy(pd);
      forward = backward_data = backward_weights = nullptr;
      fwd = bwd_data = bwd_weights = nullptr;
    }
    return Build(g, kF32) && Arguments(g, kF32);
  }

  // The three primitives with their multiplications reading `data` (kF32 or kBf16); sums and results float32.
  bool Build(const Geometry& g, int data) {
    Runtime& rt = GetRuntime();
    if (!rt.ok) return false;
    dnnl_dims_t src_dims = {g.n, g.c, g.h, g.w}, b_dims = {g.o}, dst_dims = {g.n, g.o, g.oh, g.ow};
    // grouped weights are 5-D for oneDNN, (groups, O / groups, C / groups, KH, KW): MindSpore's (O, C / groups, KH,
    // KW) buffer read as it lies
    dnnl_dims_t w_dims = {g.o, g.c, g.kh, g.kw}, w_grouped = {g.groups, g.o / g.groups, g.c / g.groups, g.kh, g.kw};
    const bool grouped = g.groups > 1;
    const int w_ndims = grouped ? 5 : 4;
    const int64_t* w_shape = grouped ? w_grouped : w_dims;
    dnnl_dims_t strides = {g.sh, g.sw}, dilates = {g.dh - 1, g.dw - 1}, padding_l = {g.ph, g.pw},
                padding_r = {g.ph_end, g.pw_end};
    // what the multiplications read (x, weights, dy) in `data`; what is written (y, dx, dweights) in float32
    dnnl_memory_desc_t b_plain, x_in, w_in, dy_in, y_out, dx_out, dw_out;
    CHECK(onednn.memory_desc_create_with_tag(&b_plain, 1, b_dims, kF32, kTagA));
    CHECK(onednn.memory_desc_create_with_tag(&x_in, 4, src_dims, data, kTagAny));
    CHECK(onednn.memory_desc_create_with_tag(&w_in, w_ndims, w_shape, data, kTagAny));
    CHECK(onednn.memory_desc_create_with_tag(&dy_in, 4, dst_dims, data, kTagAny));
    CHECK(onednn.memory_desc_create_with_tag(&y_out, 4, dst_dims, kF32, kTagAny));
    CHECK(onednn.memory_desc_create_with_tag(&dx_out, 4, src_dims, kF32, kTagAny));
    CHECK(onednn.memory_desc_create_with_tag(&dw_out, w_ndims, w_shape, kF32, kTagAny));
    CHECK(onednn.convolution_forward_primitive_desc_create(&fwd, rt.engine, kForwardTraining, kConvolutionDirect,
                                                            x_in, w_in, b_plain, y_out, strides, dilates,
                                                            padding_l, padding_r, nullptr));
    CHECK(onednn.convolution_backward_data_primitive_desc_create(&bwd_data, rt.engine, kConvolutionDirect, dx_out,
                                                                  w_in, dy_in, strides, dilates, padding_l,
                                                                  padding_r, fwd, nullptr));
    CHECK(onednn.convolution_backward_weights_primitive_desc_create(&bwd_weights, rt.engine, kConvolutionDirect,
                                                                     x_in, dw_out, b_plain, dy_in, strides,
                                                                     dilates, padding_l, padding_r, fwd, nullptr));
    CHECK(onednn.primitive_create(&forward, fwd));
    CHECK(onednn.primitive_create(&backward_data, bwd_data));
    CHECK(onednn.primitive_create(&backward_weights, bwd_weights));
    onednn.primitive_desc_query(fwd, kQueryImplInfo, 0, &impl[0]);
    onednn.primitive_desc_query(bwd_data, kQueryImplInfo, 0, &impl[1]);
    onednn.primitive_desc_query(bwd_weights, kQueryImplInfo, 0, &impl[2]);
    return true;
  }

  // The arguments of the primitives Build made: MindSpore's plain float32 buffers and the reorders to and from what
  // the primitives want.
  bool Arguments(const Geometry& g, int data) {
    dnnl_dims_t src_dims = {g.n, g.c, g.h, g.w}, b_dims = {g.o}, dst_dims = {g.n, g.o, g.oh, g.ow};
    dnnl_dims_t w_dims = {g.o, g.c, g.kh, g.kw}, w_grouped = {g.groups, g.o / g.groups, g.c / g.groups, g.kh, g.kw};
    const bool grouped = g.groups > 1;
    dnnl_memory_desc_t src_plain, w_plain, b_plain, dst_plain;
    CHECK(onednn.memory_desc_create_with_tag(&src_plain, 4, src_dims, kF32, kTagAbcd));
    CHECK(onednn.memory_desc_create_with_tag(&w_plain, grouped ? 5 : 4, grouped ? w_grouped : w_dims, kF32,
                                             grouped ? kTagAbcde : kTagAbcd));
    CHECK(onednn.memory_desc_create_with_tag(&b_plain, 1, b_dims, kF32, kTagA));
    CHECK(onednn.memory_desc_create_with_tag(&dst_plain, 4, dst_dims, kF32, kTagAbcd));
    auto md = [](dnnl_primitive_desc_t pd, int what) { return onednn.primitive_desc_query_md(pd, what, 0); };
    bf16 = data == kBf16;
    share_dy = onednn.memory_desc_equal(md(bwd_data, kQueryDiffDst), md(bwd_weights, kQueryDiffDst));
    return x.Init(src_plain, md(fwd, kQuerySrc), true) && w.Init(w_plain, md(fwd, kQueryWeights), true) &&
           b.Init(b_plain, b_plain, true) && y.Init(dst_plain, md(fwd, kQueryDst), false) &&
           dy_data.Init(dst_plain, md(bwd_data, kQueryDiffDst), true) &&
           w_data.Init(w_plain, md(bwd_data, kQueryWeights), true) &&
           dx.Init(src_plain, md(bwd_data, kQueryDiffSrc), false) &&
           x_weights.Init(src_plain, md(bwd_weights, kQuerySrc), true) &&
           dy_weights.Init(dst_plain, md(bwd_weights, kQueryDiffDst), true) &&
           dw.Init(w_plain, md(bwd_weights, kQueryDiffWeights), false) && db.Init(b_plain, b_plain, false);
  }
};

std::mutex mutex;  // MindSpore may launch kernels from several threads; each call uses every core anyway
std::map<std::vector<int64_t>, std::unique_ptr<Plan>> plans;

Plan* GetPlan(const Geometry& g) {
  std::vector<int64_t> key = g.Key();
  auto found = plans.find(key);
  if (found != plans.end()) return found->second.get();
  std::unique_ptr<Plan> plan(new Plan);
  if (!plan->Init(g)) return nullptr;
  return (plans[key] = std::move(plan)).get();
}

// Every tensor float32 with these numbers of dimensions, but the geometry input (at `config`): int64, 8 values.
bool Checked(int nparam, const int* ndims, int64_t** shapes, const char** dtypes, std::vector<int> expected,
             int config) {
  if (nparam != static_cast<int>(expected.size())) return false;
  for (int i = 0; i < nparam; ++i) {
    const char* dtype = i == config ? "int64" : "float32";
    if (std::string(dtypes[i]) != dtype || ndims[i] != expected[i]) return false;
  }
  return shapes[config][0] == 8;
}

// == dilated depthwise convolutions at stride 1, computed here ======================================================
// Why: oneDNN has no JIT kernel for a dilated depthwise convolution (groups = input channels = output channels) and
// runs it on im2col + sgemm, multiplying the padding too; on SimVP's and TAU's 8x8 translator maps most taps of
// their 7x7 convolution dilated by 3 read only padding. These loops skip every tap and row that reads padding
// (bench/depthwise.py: whole SimVP and TAU steps 1.13x). Undilated depthwise convolutions stay on oneDNN's JIT
// kernels: these loops were slower there (SimVP's step 0.93x with its 5x5 and 3x3 ones here too). Every sum runs
// in a fixed order (taps, rows, then the batch for the weight gradient), so the results do not depend on the number
// of threads. bench/depthwise.py times them
// against oneDNN (flags bit 1); tests/test_layers.py compares them with MindSpore's Conv2D.

bool DirectDepthwise(const Geometry& g) {
  const bool dilated = g.dh > 1 || g.dw > 1;
  return g.groups == g.c && g.o == g.c && g.sh == 1 && g.sw == 1 && dilated && !g.onednn_depthwise;
}

std::atomic<int64_t> direct_depthwise_calls{0};

// == 3x3 convolutions by Winograd's algorithm (winograd.h) ===========================================================
// A 3x3 convolution at stride 1 with padding 1 on every side, no dilation or groups, channels multiples of 16.
bool Winograd(const Geometry& g) {
#ifdef __AVX512F__
  return !g.onednn_winograd_shapes && g.groups == 1 && g.kh == 3 && g.kw == 3 && g.sh == 1 &&
         g.sw == 1 && g.dh == 1 && g.dw == 1 && g.ph == 1 && g.pw == 1 && g.ph_end == 1 && g.pw_end == 1 &&
         msforge::winograd::Supported(g.c, g.o);
#else
  return false;
#endif
}

std::atomic<int64_t> winograd_calls{0};

// y = conv(x, weight) + bias (forward), or dx from dy and dweight, dbias from x and dy (backward).
void RunWinograd(const Geometry& g, void** params, bool forward) {
#ifdef __AVX512F__
  static msforge::winograd::Conv3x3 conv;  // its buffers, kept between calls (under `mutex`)
  auto in = [&](int i) { return static_cast<const float*>(params[i]); };
  auto out = [&](int i) { return static_cast<float*>(params[i]); };
  const msforge::winograd::Shape shape{g.n, g.c, g.h, g.w, g.o};
  if (forward) {  // x, weight, bias, config -> y
    conv.Forward(shape, in(0), in(1), in(2), out(4));
  } else {  // dy, x, weight, config -> dx, dweight, dbias
    conv.Backward(shape, in(1), in(2), in(0), out(4), out(5), out(6));
  }
  ++winograd_calls;
#endif
}

// The outputs [begin, end) along one axis that a tap reads at input index output + offset, inside the input.
void TapRange(int64_t offset, int64_t in, int64_t out, int64_t* begin, int64_t* end) {
  *begin = offset < 0 ? -offset : 0;
  *end = out < in - offset ? out : in - offset;
}

// A tap of the kernel that reads inside the input: its index in the kernel, its offset (input row = output row +
// dy, column likewise) and the output rows [y0, y1) and columns [x0, x1) it reaches.
struct Tap {
  int64_t index, dy, dx, y0, y1, x0, x1;
};

// The taps that read at least one input value (the others read only padding and are skipped).
std::vector<Tap> Taps(const Geometry& g) {
  std::vector<Tap> taps;
  for (int64_t i = 0; i < g.kh; ++i) {
    for (int64_t j = 0; j < g.kw; ++j) {
      Tap t{i * g.kw + j, i * g.dh - g.ph, j * g.dw - g.pw, 0, 0, 0, 0};
      TapRange(t.dy, g.h, g.oh, &t.y0, &t.y1);
      TapRange(t.dx, g.w, g.ow, &t.x0, &t.x1);
      if (t.y0 < t.y1 && t.x0 < t.x1) taps.push_back(t);
    }
  }
  return taps;
}

// y = depthwise(x, w) + b, per (image, channel) plane.
void DepthwiseForward(const Geometry& g, const float* x, const float* w, const float* b, float* y) {
  const int64_t planes = g.n * g.c, in_size = g.h * g.w, out_size = g.oh * g.ow;
  const std::vector<Tap> taps = Taps(g);
  msforge::ParallelRanges(msforge::Parts(planes, planes * out_size * g.kh * g.kw), planes,
                          [&](int, int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t ch = p % g.c;
      const float* xp = x + p * in_size;
      float* yp = y + p * out_size;
      for (int64_t k = 0; k < out_size; ++k) yp[k] = b[ch];
      for (const Tap& t : taps) {
        const float wv = w[ch * g.kh * g.kw + t.index];
        for (int64_t oy = t.y0; oy < t.y1; ++oy) {
          const float* __restrict__ xr = xp + (oy + t.dy) * g.w + t.dx;
          float* __restrict__ yr = yp + oy * g.ow;
#pragma omp simd
          for (int64_t ox = t.x0; ox < t.x1; ++ox) yr[ox] += wv * xr[ox];
        }
      }
    }
  });
}

// dx from dy: each tap adds its weight times dy to the inputs it read.
void DepthwiseBackwardData(const Geometry& g, const float* dy, const float* w, float* dx) {
  const int64_t planes = g.n * g.c, in_size = g.h * g.w, out_size = g.oh * g.ow;
  const std::vector<Tap> taps = Taps(g);
  msforge::ParallelRanges(msforge::Parts(planes, planes * out_size * g.kh * g.kw), planes,
                          [&](int, int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t ch = p % g.c;
      const float* dyp = dy + p * out_size;
      float* dxp = dx + p * in_size;
      for (int64_t k = 0; k < in_size; ++k) dxp[k] = 0.0f;
      for (const Tap& t : taps) {
        const float wv = w[ch * g.kh * g.kw + t.index];
        for (int64_t oy = t.y0; oy < t.y1; ++oy) {
          const float* __restrict__ dyr = dyp + oy * g.ow;
          float* __restrict__ dxr = dxp + (oy + t.dy) * g.w + t.dx;
#pragma omp simd
          for (int64_t ox = t.x0; ox < t.x1; ++ox) dxr[ox] += wv * dyr[ox];
        }
      }
    }
  });
}

// dw and db, per channel: sums over the outputs each tap reached, in float within a plane and in double over the
// batch, in batch order; a tap that reads only padding gets 0.
void DepthwiseBackwardWeights(const Geometry& g, const float* dy, const float* x, float* dw, float* db) {
  const int64_t in_size = g.h * g.w, out_size = g.oh * g.ow, kernel = g.kh * g.kw;
  const std::vector<Tap> taps = Taps(g);
  msforge::ParallelRanges(msforge::Parts(g.c, g.n * g.c * out_size * kernel), g.c,
                          [&](int, int64_t begin, int64_t end) {
    std::vector<double> sums(kernel);
    for (int64_t ch = begin; ch < end; ++ch) {
      double bias_sum = 0.0;
      for (int64_t k = 0; k < kernel; ++k) sums[k] = 0.0;
      for (int64_t n = 0; n < g.n; ++n) {
        const float* xp = x + (n * g.c + ch) * in_size;
        const float* dyp = dy + (n * g.c + ch) * out_size;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t k = 0; k < out_size; ++k) s += dyp[k];
        bias_sum += s;
        for (const Tap& t : taps) {
          float tap = 0.0f;
          for (int64_t oy = t.y0; oy < t.y1; ++oy) {
            const float* xr = xp + (oy + t.dy) * g.w + t.dx;
            const float* dyr = dyp + oy * g.ow;
            float row = 0.0f;
#pragma omp simd reduction(+ : row)
            for (int64_t ox = t.x0; ox < t.x1; ++ox) row += dyr[ox] * xr[ox];
            tap += row;
          }
          sums[t.index] += tap;
        }
      }
      for (int64_t k = 0; k < kernel; ++k) dw[ch * kernel + k] = static_cast<float>(sums[k]);
      db[ch] = static_cast<float>(bias_sum);
    }
  });
}

}  // namespace

// major * 10000 + minor * 100 + patch of the oneDNN this library runs; negative when it cannot run.
extern "C" int MsforgeOneDnnVersion() {
  if (!GetRuntime().ok) return -1;
  const dnnl_version_t* v = onednn.version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}

// How many forward and backward calls the direct depthwise loops above have run in this process (tests read it to
// know which path a layer took).
extern "C" int64_t MsforgeDirectDepthwiseCalls() { return direct_depthwise_calls.load(); }

// How many forward and backward calls ran Winograd's algorithm in this process (tests read it likewise).
extern "C" int64_t MsforgeWinogradCalls() { return winograd_calls.load(); }

// Which instance runs the convolutions and its instruction set, e.g. "private isa=0x27" (0x27: AVX-512 core,
// 0x7: AVX2, oneDNN's dnnl_cpu_isa_t values), for tests and benches.
extern "C" const char* MsforgeOneDnnInstance() {
  static char text[64];
  if (!GetRuntime().ok) return "";
  std::snprintf(text, sizeof(text), "%s isa=0x%x", onednn.private_copy ? "private" : "shared",
                onednn.get_effective_cpu_isa());
  return text;
}

// The implementations oneDNN chose for a shape and the data type the multiplications read ("forward backward_data
// backward_weights f32|bf16"), for tests, benches and msforge.layers (which asks whether bfloat16 gets a kernel).
// Stride 1, no dilation or groups, square kernel k, padding p on every side, bf16 as in the geometry.
extern "C" const char* MsforgeConvImpl(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t k, int64_t p,
                                       int64_t bf16) {
  static std::string text;
  std::lock_guard<std::mutex> lock(mutex);
  const int64_t xs[4] = {n, c, h, w}, ws[4] = {o, c, k, k}, ys[4] = {n, o, h + 2 * p - k + 1, w + 2 * p - k + 1};
  const int64_t config[8] = {1, 1, 1, 1, p, p, 1, bf16};
  Geometry g;
  if (!ReadGeometry(xs, ws, ys, config, &g)) return "";
  Plan* plan = GetPlan(g);
  if (!plan) return "";
  text = std::string(plan->impl[0]) + " " + plan->impl[1] + " " + plan->impl[2] + (plan->bf16 ? " bf16" : " f32");
  return text.c_str();
}

// inputs: x (N, C, H, W), weight (O, C / groups, KH, KW), bias (O), config (8,); output: y (N, O, OH, OW)
extern "C" int Conv2dForward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                             void* stream, void* extra) {
  if (!Checked(nparam, ndims, shapes, dtypes, {4, 4, 1, 1, 4}, 3)) return 1;
  Geometry g;
  if (!ReadGeometry(shapes[0], shapes[1], shapes[4], static_cast<const int64_t*>(params[3]), &g) ||
      shapes[2][0] != g.o)
    return 2;
  if (g.n == 0) return 0;
  std::lock_guard<std::mutex> lock(mutex);
  if (DirectDepthwise(g)) {
    DepthwiseForward(g, static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
                     static_cast<const float*>(params[2]), static_cast<float*>(params[4]));
    ++direct_depthwise_calls;
    return 0;
  }
  if (Winograd(g)) {
    RunWinograd(g, params, true);
    return 0;
  }
  Plan* plan = GetPlan(g);
  if (!plan) return 3;
  Runtime& rt = GetRuntime();
  bool ok = plan->x.Bind(params[0]) && plan->w.Bind(params[1]) && plan->b.Bind(params[2]) &&
            plan->y.Bind(params[4]) && plan->x.In() && plan->w.In();
  dnnl_exec_arg_t args[4] = {{kArgSrc, plan->x.Inner()}, {kArgWeights, plan->w.Inner()},
                             {kArgBias, plan->b.Inner()}, {kArgDst, plan->y.Inner()}};
  ok = ok && onednn.primitive_execute(plan->forward, rt.stream, 4, args) == 0 && plan->y.Out() &&
       onednn.stream_wait(rt.stream) == 0;
  return ok ? 0 : 4;
}

// inputs: dy (N, O, OH, OW), x (N, C, H, W), weight (O, C / groups, KH, KW), config (8,); outputs: dx, dweight,
// dbias (O)
extern "C" int Conv2dBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                              void* stream, void* extra) {
  if (!Checked(nparam, ndims, shapes, dtypes, {4, 4, 4, 1, 4, 4, 1}, 3)) return 1;
  Geometry g;
  if (!ReadGeometry(shapes[1], shapes[2], shapes[0], static_cast<const int64_t*>(params[3]), &g)) return 2;
  if (g.n == 0) return 0;
  std::lock_guard<std::mutex> lock(mutex);
  if (DirectDepthwise(g)) {
    const float* dy = static_cast<const float*>(params[0]);
    DepthwiseBackwardData(g, dy, static_cast<const float*>(params[2]), static_cast<float*>(params[4]));
    DepthwiseBackwardWeights(g, dy, static_cast<const float*>(params[1]), static_cast<float*>(params[5]),
                             static_cast<float*>(params[6]));
    ++direct_depthwise_calls;
    return 0;
  }
  if (Winograd(g)) {
    RunWinograd(g, params, false);
    return 0;
  }
  Plan* plan = GetPlan(g);
  if (!plan) return 3;
  Runtime& rt = GetRuntime();
  bool ok = plan->dy_data.Bind(params[0]) && plan->w_data.Bind(params[2]) && plan->dx.Bind(params[4]) &&
            plan->x_weights.Bind(params[1]) && plan->dy_weights.Bind(params[0]) && plan->dw.Bind(params[5]) &&
            plan->db.Bind(params[6]) && plan->dy_data.In() && plan->w_data.In();
  dnnl_exec_arg_t data_args[3] = {{kArgDiffDst, plan->dy_data.Inner()}, {kArgWeights, plan->w_data.Inner()},
                                  {kArgDiffSrc, plan->dx.Inner()}};
  ok = ok && onednn.primitive_execute(plan->backward_data, rt.stream, 3, data_args) == 0 && plan->dx.Out();
  // Backward-weights usually wants dy in the layout backward-data wanted: then that reorder's result is reused.
  ok = ok && (plan->share_dy || plan->dy_weights.In()) && plan->x_weights.In();
  dnnl_memory_t dy = plan->share_dy ? plan->dy_data.Inner() : plan->dy_weights.Inner();
  dnnl_exec_arg_t weight_args[4] = {{kArgSrc, plan->x_weights.Inner()}, {kArgDiffDst, dy},
                                    {kArgDiffWeights, plan->dw.Inner()}, {kArgDiffBias, plan->db.Inner()}};
  ok = ok && onednn.primitive_execute(plan->backward_weights, rt.stream, 4, weight_args) == 0 && plan->dw.Out() &&
       onednn.stream_wait(rt.stream) == 0;
  return ok ? 0 : 4;
}

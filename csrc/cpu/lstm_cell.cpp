// CPU forward and backward of lstm_cell, over the shared math of
// wmkernels/lstm_math.h. Scalar loops for now; the per-row functions take raw
// row pointers so that a Vectorized<T> body can replace their inner loop.
#include "lstm_cell.h"

#include <algorithm>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <wmkernels/lstm_math.h>

namespace wmkernels {
namespace cpu {
namespace {

// ---- argument checks (defence in depth: Python checks these first) --------

void check_float_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), "wmkernels::lstm_cell: ", name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), "wmkernels::lstm_cell (CPU): ", name,
              " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK(t.layout() == at::kStrided, "wmkernels::lstm_cell: ", name,
              " must be a strided (dense) tensor, got layout ", t.layout());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "wmkernels::lstm_cell (CPU): ", name,
              " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 2, "wmkernels::lstm_cell: ", name,
              " must be 2-D, got shape ", t.sizes());
}

void check_same_dtype(const at::Tensor& t, const at::Tensor& ref,
                      const char* name, const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "wmkernels::lstm_cell: ",
              name, " has dtype ", t.scalar_type(), " but ", ref_name,
              " has dtype ", ref.scalar_type());
}

void check_shape(const at::Tensor& t, const char* name, int64_t rows,
                 int64_t cols) {
  TORCH_CHECK(t.size(0) == rows && t.size(1) == cols, "wmkernels::lstm_cell: ",
              name, " must have shape [", rows, ", ", cols, "], got ",
              t.sizes());
}

// Rows per parallel_for task: about kGrainElems elements per task (the
// value of at::internal::GRAIN_SIZE, which lives in TensorIterator.h).
constexpr int64_t kGrainElems = 32768;

int64_t row_grain(int64_t row_elems) {
  return std::max<int64_t>(1, kGrainElems / std::max<int64_t>(1, row_elems));
}

// ---- per-row kernels -------------------------------------------------------

template <typename T>
void forward_row(const T* gates, const T* c_prev, T* h, T* c, T* act,
                 int64_t H) {
  const T* gi = gates;
  const T* gf = gates + H;
  const T* gg = gates + 2 * H;
  const T* go = gates + 3 * H;
  T* ai = act;
  T* af = act + H;
  T* ag = act + 2 * H;
  T* ao = act + 3 * H;
  for (int64_t j = 0; j < H; ++j) {
    lstm_cell_forward_point<T>(gi[j], gf[j], gg[j], go[j], c_prev[j], ai[j],
                               af[j], ag[j], ao[j], c[j], h[j]);
  }
}

template <typename T>
void backward_row(const T* grad_h, const T* grad_c, const T* act,
                  const T* c_prev, const T* c, T* grad_gates, T* grad_c_prev,
                  int64_t H) {
  const T* ai = act;
  const T* af = act + H;
  const T* ag = act + 2 * H;
  const T* ao = act + 3 * H;
  T* di = grad_gates;
  T* df = grad_gates + H;
  T* dg = grad_gates + 2 * H;
  T* dout = grad_gates + 3 * H;
  for (int64_t j = 0; j < H; ++j) {
    lstm_cell_backward_point<T>(ai[j], af[j], ag[j], ao[j], c_prev[j], c[j],
                                grad_h[j], grad_c[j], di[j], df[j], dg[j],
                                dout[j], grad_c_prev[j]);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_cell_forward(
    const at::Tensor& gates_in, const at::Tensor& c_prev_in) {
  check_float_cpu(gates_in, "gates");
  check_float_cpu(c_prev_in, "c_prev");
  check_same_dtype(c_prev_in, gates_in, "c_prev", "gates");
  const int64_t B = c_prev_in.size(0);
  const int64_t H = c_prev_in.size(1);
  check_shape(gates_in, "gates", B, 4 * H);

  const at::Tensor gates = gates_in.contiguous();
  const at::Tensor c_prev = c_prev_in.contiguous();
  at::Tensor h = at::empty({B, H}, c_prev.options());
  at::Tensor c = at::empty({B, H}, c_prev.options());
  at::Tensor act = at::empty({B, 4 * H}, gates.options());
  if (B == 0 || H == 0) {
    return {h, c, act};
  }

  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "wmkernels_lstm_cell_forward", [&] {
    const scalar_t* gates_p = gates.const_data_ptr<scalar_t>();
    const scalar_t* c_prev_p = c_prev.const_data_ptr<scalar_t>();
    scalar_t* h_p = h.mutable_data_ptr<scalar_t>();
    scalar_t* c_p = c.mutable_data_ptr<scalar_t>();
    scalar_t* act_p = act.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(4 * H), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        forward_row<scalar_t>(gates_p + b * 4 * H, c_prev_p + b * H,
                              h_p + b * H, c_p + b * H, act_p + b * 4 * H, H);
      }
    });
  });
  return {h, c, act};
}

std::tuple<at::Tensor, at::Tensor> lstm_cell_backward(
    const at::Tensor& grad_h_in, const at::Tensor& grad_c_in,
    const at::Tensor& act_in, const at::Tensor& c_prev_in,
    const at::Tensor& c_in) {
  check_float_cpu(grad_h_in, "grad_h");
  check_float_cpu(grad_c_in, "grad_c");
  check_float_cpu(act_in, "act");
  check_float_cpu(c_prev_in, "c_prev");
  check_float_cpu(c_in, "c");
  check_same_dtype(grad_h_in, act_in, "grad_h", "act");
  check_same_dtype(grad_c_in, act_in, "grad_c", "act");
  check_same_dtype(c_prev_in, act_in, "c_prev", "act");
  check_same_dtype(c_in, act_in, "c", "act");
  const int64_t B = c_prev_in.size(0);
  const int64_t H = c_prev_in.size(1);
  check_shape(act_in, "act", B, 4 * H);
  check_shape(grad_h_in, "grad_h", B, H);
  check_shape(grad_c_in, "grad_c", B, H);
  check_shape(c_in, "c", B, H);

  const at::Tensor grad_h = grad_h_in.contiguous();
  const at::Tensor grad_c = grad_c_in.contiguous();
  const at::Tensor act = act_in.contiguous();
  const at::Tensor c_prev = c_prev_in.contiguous();
  const at::Tensor c = c_in.contiguous();
  at::Tensor grad_gates = at::empty({B, 4 * H}, act.options());
  at::Tensor grad_c_prev = at::empty({B, H}, c_prev.options());
  if (B == 0 || H == 0) {
    return {grad_gates, grad_c_prev};
  }

  AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "wmkernels_lstm_cell_backward", [&] {
    const scalar_t* grad_h_p = grad_h.const_data_ptr<scalar_t>();
    const scalar_t* grad_c_p = grad_c.const_data_ptr<scalar_t>();
    const scalar_t* act_p = act.const_data_ptr<scalar_t>();
    const scalar_t* c_prev_p = c_prev.const_data_ptr<scalar_t>();
    const scalar_t* c_p = c.const_data_ptr<scalar_t>();
    scalar_t* grad_gates_p = grad_gates.mutable_data_ptr<scalar_t>();
    scalar_t* grad_c_prev_p = grad_c_prev.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, row_grain(8 * H), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        backward_row<scalar_t>(grad_h_p + b * H, grad_c_p + b * H,
                               act_p + b * 4 * H, c_prev_p + b * H,
                               c_p + b * H, grad_gates_p + b * 4 * H,
                               grad_c_prev_p + b * H, H);
      }
    });
  });
  return {grad_gates, grad_c_prev};
}

}  // namespace cpu
}  // namespace wmkernels

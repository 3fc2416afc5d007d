// medkern::rnn_sequence and medkern::rnn_sequence_backward, device-independent part: argument
// checks, the buffers, the loop over steps with its GEMMs (ATen's: oneDNN/MKL on the CPU,
// cuBLAS on CUDA), and the weight gradients as one GEMM each over the whole sequence. The
// device's kernels (csrc/common/rnn.h) do the per-step pointwise work.

#include "rnn_op.h"

#include <cmath>
#include <string>

#include "common/checks.h"

namespace medkern {
namespace {

constexpr const char* kForward = "medkern::rnn_sequence";
constexpr const char* kBackward = "medkern::rnn_sequence_backward";

at::ScalarType opmath_of(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 ? at::kFloat : t;
}

const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }
void* mut_ptr_or_null(at::Tensor& t) { return t.defined() ? t.mutable_data_ptr() : nullptr; }

// `t` as a contiguous tensor of the op-math type (x's dtype or the op-math type accepted),
// checked for device and shape; undefined if absent.
at::Tensor opmath_arg(const char* op, const char* arg, const OptTensor& t, const at::Tensor& x,
                      at::IntArrayRef shape) {
  if (!t.has_value()) return {};
  check_floating(op, arg, *t);
  TORCH_CHECK_VALUE(t->device() == x.device(), op, ": ", arg, " must be on ", x.device(), " (the device of xproj), got ",
                    t->device());
  const auto acc = opmath_of(x.scalar_type());
  TORCH_CHECK_TYPE(t->scalar_type() == x.scalar_type() || t->scalar_type() == acc, op, ": ", arg, " must have dtype ",
                   x.scalar_type(), " (that of xproj)", acc != x.scalar_type() ? " or float32" : "", ", got ",
                   t->scalar_type());
  TORCH_CHECK_VALUE(t->sizes() == shape, op, ": ", arg, " must have shape ", shape, ", got ", t->sizes());
  return t->to(acc).contiguous();
}

// `t` checked to have xproj's dtype, device and `shape`; contiguous.
at::Tensor data_arg(const char* op, const char* arg, const at::Tensor& t, const at::Tensor& x, at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", arg, " must be on ", x.device(), " (the device of xproj), got ",
                    t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), op, ": ", arg, " must have dtype ", x.scalar_type(),
                   " (that of xproj), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.sizes() == shape, op, ": ", arg, " must have shape ", shape, ", got ", t.sizes());
  return t.contiguous();
}

at::Tensor lengths_arg(const char* op, const OptTensor& lengths, const at::Tensor& x, int64_t steps, int64_t batch) {
  if (!lengths.has_value()) return {};
  TORCH_CHECK_TYPE(lengths->scalar_type() == at::kLong, op, ": lengths must be int64, got ", lengths->scalar_type());
  TORCH_CHECK_VALUE(lengths->device() == x.device(), op, ": lengths must be on ", x.device(),
                    " (the device of xproj), got ", lengths->device());
  TORCH_CHECK_VALUE(lengths->dim() == 1 && lengths->size(0) == batch, op, ": lengths must be 1-d with ", batch,
                    " elements (the batch), got shape ", lengths->sizes());
  if (lengths->is_cpu() && batch > 0) {  // on a GPU, medkern.ops.rnn checks before moving them there
    const auto bounds = at::aminmax(*lengths);
    const int64_t lo = std::get<0>(bounds).item<int64_t>(), hi = std::get<1>(bounds).item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi <= steps, op, ": lengths must lie in [0, ", steps, "] (the steps of xproj), got ",
                      "values in [", lo, ", ", hi, "]");
  }
  return lengths->contiguous();
}

// What both ops share: the cell's shape, and the optional tensors in kernel form.
struct Call {
  RnnParams params;
  at::Tensor lengths, bias_hh, norm_h_weight, norm_h_bias, norm_c_weight, norm_c_bias, zoneout_h, zoneout_c, mask;

  void point_params() {
    params.lengths = lengths.defined() ? lengths.const_data_ptr<int64_t>() : nullptr;
    params.bias_hh = ptr_or_null(bias_hh);
    params.norm_h_weight = ptr_or_null(norm_h_weight);
    params.norm_h_bias = ptr_or_null(norm_h_bias);
    params.norm_c_weight = ptr_or_null(norm_c_weight);
    params.norm_c_bias = ptr_or_null(norm_c_bias);
  }
};

// Shapes, masks and norms, checked against a T x B x G problem whose state is P wide.
Call setup(const char* op, const at::Tensor& like, int64_t steps, int64_t batch, int64_t gates, int64_t state,
           c10::string_view cell_name, bool reverse, const OptTensor& lengths, bool proj,
           const OptTensor& norm_h_weight, const OptTensor& norm_h_bias, const OptTensor& norm_c_weight,
           const OptTensor& norm_c_bias, double eps, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
           const OptTensor& candidate_mask) {
  Call c;
  RnnShape& sh = c.params.shape;
  sh.cell = parse_cell(op, cell_name);
  const int64_t k = gate_count(sh.cell);
  TORCH_CHECK_VALUE(gates % k == 0, op, ": the last dim of xproj (", gates, ") must be ", k,
                    " * hidden_size for cell='", std::string(cell_name), "'");
  sh.steps = steps;
  sh.batch = batch;
  sh.hidden = gates / k;
  sh.state = state;
  sh.proj = proj;
  sh.reverse = reverse;
  TORCH_CHECK_VALUE(proj || state == sh.hidden, op, ": weight_hh must be (", gates, ", ", sh.hidden,
                    ") without a projection, got (", gates, ", ", state, ")");
  TORCH_CHECK_VALUE(!proj || sh.cell == Cell::kLstm, op, ": weight_hr (a projection) is for cell='lstm' only");
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps > 0, op, ": eps must be finite and > 0, got ", eps);
  c.params.eps = eps;
  c.lengths = lengths_arg(op, lengths, like, steps, batch);
  TORCH_CHECK_VALUE(norm_h_weight.has_value() == norm_h_bias.has_value(), op,
                    ": norm_h_weight and norm_h_bias must be given together");
  TORCH_CHECK_VALUE(norm_c_weight.has_value() == norm_c_bias.has_value(), op,
                    ": norm_c_weight and norm_c_bias must be given together");
  TORCH_CHECK_VALUE(!norm_c_weight.has_value() || sh.cell == Cell::kLstm, op,
                    ": norm_c_weight (the cell-state layer norm) is for cell='lstm' only");
  sh.norm_h = norm_h_weight.has_value();
  sh.norm_c = norm_c_weight.has_value();
  c.norm_h_weight = opmath_arg(op, "norm_h_weight", norm_h_weight, like, {gates});
  c.norm_h_bias = opmath_arg(op, "norm_h_bias", norm_h_bias, like, {gates});
  c.norm_c_weight = opmath_arg(op, "norm_c_weight", norm_c_weight, like, {sh.hidden});
  c.norm_c_bias = opmath_arg(op, "norm_c_bias", norm_c_bias, like, {sh.hidden});
  TORCH_CHECK_VALUE(!zoneout_c.has_value() || sh.cell == Cell::kLstm, op, ": zoneout_c is for cell='lstm' only");
  TORCH_CHECK_VALUE(!candidate_mask.has_value() || sh.cell == Cell::kLstm || sh.cell == Cell::kGru, op,
                    ": candidate_mask (recurrent dropout) is for cell='lstm' and 'gru' only");
  c.zoneout_h = opmath_arg(op, "zoneout_h", zoneout_h, like, {steps, batch, state});
  c.zoneout_c = opmath_arg(op, "zoneout_c", zoneout_c, like, {steps, batch, sh.hidden});
  c.mask = opmath_arg(op, "candidate_mask", candidate_mask, like, {steps, batch, sh.hidden});
  c.point_params();
  return c;
}

const void* step_of(const at::Tensor& t, int64_t s) { return t.defined() ? t.select(0, s).const_data_ptr() : nullptr; }

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_sequence_forward(
    const at::Tensor& xproj_in, const at::Tensor& weight_hh_in, const OptTensor& bias_hh, const at::Tensor& h0,
    const OptTensor& c0, const OptTensor& lengths, c10::string_view cell, bool reverse, const OptTensor& weight_hr_in,
    const OptTensor& norm_h_weight, const OptTensor& norm_h_bias, const OptTensor& norm_c_weight,
    const OptTensor& norm_c_bias, double eps, const OptTensor& zoneout_h, const OptTensor& zoneout_c,
    const OptTensor& candidate_mask, const RnnKernels& kernels) {
  const char* op = kForward;
  check_floating(op, "xproj", xproj_in);
  TORCH_CHECK_VALUE(xproj_in.dim() == 3, op, ": xproj must be (T, B, G), got shape ", xproj_in.sizes());
  TORCH_CHECK_VALUE(weight_hh_in.dim() == 2 && weight_hh_in.size(0) == xproj_in.size(2), op,
                    ": weight_hh must be (G, P) with G = ", xproj_in.size(2), " (the last dim of xproj), got shape ",
                    weight_hh_in.sizes());
  const at::Tensor xproj = xproj_in.contiguous();
  const int64_t T = xproj.size(0), B = xproj.size(1), G = xproj.size(2), P = weight_hh_in.size(1);
  const at::Tensor weight_hh = data_arg(op, "weight_hh", weight_hh_in, xproj, {G, P});
  Call c = setup(op, xproj, T, B, G, P, cell, reverse, lengths, weight_hr_in.has_value(), norm_h_weight, norm_h_bias,
                 norm_c_weight, norm_c_bias, eps, zoneout_h, zoneout_c, candidate_mask);
  const RnnShape& sh = c.params.shape;
  const int64_t H = sh.hidden;
  const bool lstm = sh.cell == Cell::kLstm;
  if (bias_hh.has_value()) {
    TORCH_CHECK_VALUE(!sh.norm_h, op, ": bias_hh must be None with a recurrent layer norm (norm_h_bias replaces it)");
    // added by the cell kernel: an addmm would cost a pass over pre per step
    c.bias_hh = data_arg(op, "bias_hh", *bias_hh, xproj, {G}).to(opmath_of(xproj.scalar_type())).contiguous();
    c.point_params();
  }
  const at::Tensor weight_hr = weight_hr_in.has_value() ? data_arg(op, "weight_hr", *weight_hr_in, xproj, {P, H})
                                                        : at::Tensor();
  const at::Tensor h_init = data_arg(op, "h0", h0, xproj, {B, P});
  TORCH_CHECK_VALUE(lstm == c0.has_value(), op, lstm ? ": c0 is required for cell='lstm'" : ": c0 is for cell='lstm' only");
  const at::Tensor c_init = opmath_arg(op, "c0", c0, xproj, {B, H});

  const auto acc = opmath_of(xproj.scalar_type());
  const auto acc_opts = xproj.options().dtype(acc);
  const WorkLayout lay = sh.layout();
  at::Tensor states = at::empty({T + 1, B, P}, xproj.options());
  states.select(0, 0).copy_(h_init);
  at::Tensor cells = lstm ? at::empty({T + 1, B, H}, acc_opts) : at::empty({0}, acc_opts);
  if (lstm) cells.select(0, 0).copy_(c_init);
  at::Tensor work = at::empty({T, B, lay.width}, acc_opts);
  at::Tensor pre = at::empty({B, G}, xproj.options());
  at::Tensor candidate = at::empty({B, H}, acc_opts);
  // with a projection: h~ = (o * u) @ weight_hr.T, in the data's dtype, then in U for the kernels
  const bool same_type = acc == xproj.scalar_type();
  at::Tensor projected = sh.proj ? at::empty({B, P}, acc_opts) : at::Tensor();
  at::Tensor hidden_data = sh.proj && !same_type ? at::empty({B, H}, xproj.options()) : at::Tensor();
  at::Tensor projected_data = sh.proj && !same_type ? at::empty({B, P}, xproj.options()) : at::Tensor();
  const auto recurrent_gemm = plan_fixed_right_gemm(kernels.plan_gemm, weight_hh.t(), B, T);
  const auto projection_gemm = sh.proj ? plan_fixed_right_gemm(kernels.plan_gemm, weight_hr.t(), B, T) : nullptr;

  RnnForwardStep st;
  st.xproj = xproj.const_data_ptr();
  st.pre = pre.const_data_ptr();
  st.candidate = candidate.mutable_data_ptr();
  for (int64_t s = 0; s < T; ++s) {
    const at::Tensor h_prev = states.select(0, s);
    recurrent_gemm->run(h_prev, pre);
    st.step = s;
    st.h_prev = h_prev.const_data_ptr();
    st.h_next = states.select(0, s + 1).mutable_data_ptr();
    st.c_prev = lstm ? cells.select(0, s).const_data_ptr() : nullptr;
    st.c_next = lstm ? cells.select(0, s + 1).mutable_data_ptr() : nullptr;
    st.work = work.select(0, s).mutable_data_ptr();
    st.zoneout_h = step_of(c.zoneout_h, s);
    st.zoneout_c = step_of(c.zoneout_c, s);
    st.mask = step_of(c.mask, s);
    kernels.cell_forward(xproj.scalar_type(), c.params, st);
    if (sh.proj) {
      if (same_type) {
        projection_gemm->run(candidate, projected);
      } else {
        hidden_data.copy_(candidate);
        projection_gemm->run(hidden_data, projected_data);
        projected.copy_(projected_data);
      }
      RnnForwardStep pst = st;
      pst.candidate = projected.mutable_data_ptr();
      kernels.state_forward(xproj.scalar_type(), c.params, pst);
    } else {
      kernels.state_forward(xproj.scalar_type(), c.params, st);
    }
  }
  return {states, cells, work};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
rnn_sequence_backward(const at::Tensor& grad_states_in, const OptTensor& grad_cells_in, const at::Tensor& states,
                      const at::Tensor& cells, const at::Tensor& work, const at::Tensor& weight_hh_in, bool has_bias_hh,
                      const OptTensor& lengths, c10::string_view cell, bool reverse, const OptTensor& weight_hr_in,
                      const OptTensor& norm_h_weight, const OptTensor& norm_c_weight, const OptTensor& zoneout_h,
                      const OptTensor& zoneout_c, const OptTensor& candidate_mask, const RnnKernels& kernels) {
  const char* op = kBackward;
  check_floating(op, "states", states);
  TORCH_CHECK_VALUE(states.dim() == 3 && states.size(0) >= 1, op, ": states must be (T + 1, B, P), got shape ",
                    states.sizes());
  TORCH_CHECK_VALUE(weight_hh_in.dim() == 2, op, ": weight_hh must be (G, P), got shape ", weight_hh_in.sizes());
  const int64_t T = states.size(0) - 1, B = states.size(1), P = states.size(2), G = weight_hh_in.size(0);
  const at::Tensor weight_hh = data_arg(op, "weight_hh", weight_hh_in, states, {G, P});
  // norm biases are not needed here: pass the weights for both, as the forward checks pairs
  Call c = setup(op, states, T, B, G, P, cell, reverse, lengths, weight_hr_in.has_value(), norm_h_weight,
                 norm_h_weight, norm_c_weight, norm_c_weight, 1.0, zoneout_h, zoneout_c, candidate_mask);
  const RnnShape& sh = c.params.shape;
  const int64_t H = sh.hidden;
  const bool lstm = sh.cell == Cell::kLstm;
  const auto dtype = states.scalar_type();
  const auto acc = opmath_of(dtype);
  const auto acc_opts = states.options().dtype(acc);
  const WorkLayout lay = sh.layout();
  const at::Tensor grad_states = data_arg(op, "grad_states", grad_states_in, states, states.sizes());
  TORCH_CHECK_VALUE(work.scalar_type() == acc && work.sizes() == at::IntArrayRef({T, B, lay.width}), op,
                    ": work must be the (", T, ", ", B, ", ", lay.width, ") ", acc, " tensor rnn_sequence returned, got ",
                    work.scalar_type(), " ", work.sizes());
  TORCH_CHECK_VALUE(!lstm || (cells.scalar_type() == acc && cells.sizes() == at::IntArrayRef({T + 1, B, H})), op,
                    ": cells must be the (", T + 1, ", ", B, ", ", H, ") ", acc, " tensor rnn_sequence returned");
  at::Tensor grad_cells;
  if (lstm && grad_cells_in.has_value()) grad_cells = opmath_arg(op, "grad_cells", grad_cells_in, states, cells.sizes());
  const at::Tensor weight_hr = weight_hr_in.has_value() ? data_arg(op, "weight_hr", *weight_hr_in, states, {P, H})
                                                        : at::Tensor();
  const at::Tensor work_c = work.contiguous(), cells_c = cells.contiguous(), states_c = states.contiguous();

  at::Tensor dxproj = at::empty({T, B, G}, states.options());
  // d pre = d xproj for lstm and Elman cells without a recurrent layer norm; forward in time, step
  // s reads time s, so the two are one tensor (the kernels then write it once)
  const bool dpre_is_dxproj = !sh.norm_h && sh.cell != Cell::kGru && !reverse;
  at::Tensor dpre = dpre_is_dxproj ? dxproj : at::empty({T, B, G}, states.options());
  at::Tensor drec = sh.norm_h ? at::empty({T, B, G}, acc_opts) : at::Tensor();
  at::Tensor dc_hat = sh.norm_c ? at::empty({T, B, H}, acc_opts) : at::Tensor();
  at::Tensor carry_h = at::zeros({B, P}, acc_opts);
  at::Tensor carry_c = lstm ? at::zeros({B, H}, acc_opts) : at::Tensor();
  at::Tensor gemm_h = at::empty({B, P}, states.options());
  const bool same_type = acc == dtype;
  // with a projection, d h~ of every step is kept (in the data's dtype) for weight_hr's gradient
  at::Tensor d_candidate_all = sh.proj ? at::empty({T, B, P}, states.options()) : at::Tensor();
  at::Tensor d_candidate = !sh.proj || !same_type ? at::empty({B, P}, acc_opts) : at::Tensor();
  at::Tensor d_hidden = sh.proj ? at::empty({B, H}, acc_opts) : at::Tensor();
  at::Tensor d_hidden_data = sh.proj && !same_type ? at::empty({B, H}, states.options()) : at::Tensor();

  const auto recurrent_gemm = plan_fixed_right_gemm(kernels.plan_gemm, weight_hh, B, T);
  const auto projection_gemm = sh.proj ? plan_fixed_right_gemm(kernels.plan_gemm, weight_hr, B, T) : nullptr;
  RnnBackwardStep st;
  st.carry_h = carry_h.mutable_data_ptr();
  st.carry_c = mut_ptr_or_null(carry_c);
  st.d_hidden = ptr_or_null(d_hidden);
  st.dxproj = dxproj.mutable_data_ptr();
  for (int64_t s = T - 1; s >= 0; --s) {
    st.step = s;
    st.grad_h_next = grad_states.select(0, s + 1).const_data_ptr();
    st.grad_c_next = step_of(grad_cells, s + 1);
    st.gemm_h = s == T - 1 ? nullptr : gemm_h.const_data_ptr();
    st.h_prev = states_c.select(0, s).const_data_ptr();
    st.c_prev = lstm ? cells_c.select(0, s).const_data_ptr() : nullptr;
    st.work = work_c.select(0, s).const_data_ptr();
    st.dpre = dpre.select(0, s).mutable_data_ptr();
    st.drec = sh.norm_h ? drec.select(0, s).mutable_data_ptr() : nullptr;
    st.dc_hat = sh.norm_c ? dc_hat.select(0, s).mutable_data_ptr() : nullptr;
    st.zoneout_h = step_of(c.zoneout_h, s);
    st.zoneout_c = step_of(c.zoneout_c, s);
    st.mask = step_of(c.mask, s);
    at::Tensor d_cand_step = sh.proj && same_type ? d_candidate_all.select(0, s) : d_candidate;
    st.d_candidate = d_cand_step.mutable_data_ptr();
    kernels.state_backward(dtype, c.params, st);
    if (sh.proj) {
      if (same_type) {
        projection_gemm->run(d_cand_step, d_hidden);
      } else {
        d_candidate_all.select(0, s).copy_(d_candidate);
        projection_gemm->run(d_candidate_all.select(0, s), d_hidden_data);
        d_hidden.copy_(d_hidden_data);
      }
    }
    kernels.cell_backward(dtype, c.params, st);
    recurrent_gemm->run(dpre.select(0, s), gemm_h);
  }

  at::Tensor dh0 = carry_h + grad_states.select(0, 0);
  if (T > 0) dh0 += gemm_h;
  at::Tensor dc0 = lstm ? carry_c : at::empty({0}, acc_opts);
  if (lstm && grad_cells.defined()) dc0 = dc0 + grad_cells.select(0, 0);
  const auto flat = [&](const at::Tensor& t) { return t.reshape({T * B, t.size(2)}); };
  at::Tensor dweight_hh = transposed_product(flat(dpre), flat(states_c.narrow(0, 0, T)), kernels);
  at::Tensor dbias_hh = has_bias_hh && !sh.norm_h ? dpre.sum({0, 1}, false, acc).to(dtype) : at::empty({0}, states.options());
  at::Tensor dweight_hr = at::empty({0}, states.options());
  if (sh.proj) {
    const at::Tensor hidden = work_c.narrow(2, 3 * H, H) * work_c.narrow(2, lay.extra, H);  // o * u
    dweight_hr = at::mm(flat(d_candidate_all).t(), flat(hidden.to(dtype)));
  }
  at::Tensor dnh_w = at::empty({0}, acc_opts), dnh_b = at::empty({0}, acc_opts);
  if (sh.norm_h) {
    dnh_w = (drec * work_c.narrow(2, lay.xh, G)).sum({0, 1});
    dnh_b = drec.sum({0, 1});
  }
  at::Tensor dnc_w = at::empty({0}, acc_opts), dnc_b = at::empty({0}, acc_opts);
  if (sh.norm_c) {
    dnc_w = (dc_hat * work_c.narrow(2, lay.xc, H)).sum({0, 1});
    dnc_b = dc_hat.sum({0, 1});
  }
  return {dxproj, dweight_hh, dbias_hh, dh0.to(dtype), dc0, dweight_hr, dnh_w, dnh_b, dnc_w, dnc_b};
}

at::Tensor transposed_product(const at::Tensor& a, const at::Tensor& b, const RnnKernels& kernels) {
  const char* op = "medkern::transposed_product";
  TORCH_CHECK_VALUE(a.dim() == 2 && b.dim() == 2, op, ": a and b must be 2-d, got shapes ", a.sizes(), " and ",
                    b.sizes());
  TORCH_CHECK_VALUE(a.size(0) == b.size(0), op, ": a (K, M) and b (K, N) must have as many rows, got ", a.size(0),
                    " and ", b.size(0));
  TORCH_CHECK_TYPE(a.is_floating_point() && a.scalar_type() == b.scalar_type(), op,
                   ": a and b must be floating point of one dtype, got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": a and b must be on one device, got ", a.device(), " and ",
                    b.device());
  return kernels.transposed_product ? kernels.transposed_product(a, b) : at::mm(a.t(), b);
}

}  // namespace medkern

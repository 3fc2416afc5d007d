// medkern::norm_act and medkern::norm_act_backward, device-independent part: argument checks,
// the memory layout the kernels walk, allocation, and the order of the device's steps: the
// streaming kernels over the data and the table steps between them, which fold statistics,
// affine parameters and gradient sums into per-(n, c) coefficients (csrc/common/norm_act.h,
// csrc/common/norm_act_tables.h). A call thus costs a few allocations besides the kernels, not
// dozens of small tensor ops.

#include "norm_act_op.h"

#include <array>
#include <cmath>
#include <string>
#include <tuple>

#include "common/checks.h"
#include "common/layout.h"

namespace medkern {
namespace {

NormKind parse_kind(const char* op, c10::string_view kind) {
  const std::string k(kind);
  if (k == "batch") return NormKind::kBatch;
  if (k == "instance") return NormKind::kInstance;
  if (k == "group") return NormKind::kGroup;
  TORCH_CHECK_VALUE(false, op, ": unknown kind='", k, "'; expected one of batch, instance, group");
}

// The op's arguments once checked, and the shape of the data.
struct Setup {
  NormKind kind;
  Act act;
  int64_t groups;  // statistics groups per sample for group norm, else 1
  NormShape shape;
};

// Whether x is dense with channels innermost, then the other dims in order (channels_last-like,
// as x.movedim(1, -1).is_contiguous() but without making a view).
bool channels_innermost(const at::Tensor& x) {
  if (x.numel() == 0) return true;
  int64_t expected = 1;
  auto next = [&](int64_t d) {
    if (x.size(d) != 1 && x.stride(d) != expected) return false;
    expected *= x.size(d);
    return true;
  };
  if (!next(1)) return false;
  for (int64_t d = x.dim() - 1; d >= 2; --d) {
    if (!next(d)) return false;
  }
  return next(0);
}

// `x` in the layout the kernels will walk (itself when it is contiguous or channels_last-like,
// else a contiguous copy), and its NormShape.
std::pair<at::Tensor, NormShape> arrange(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t s = n * c == 0 ? 0 : x.numel() / (n * c);
  const bool planar = x.is_contiguous();
  const bool rows = channels_innermost(x);
  at::Tensor arranged = x;
  bool interleaved = rows && (!planar || s == 1);
  if (!planar && !rows) {
    arranged = x.contiguous();
    interleaved = s == 1;
  }
  return {arranged, make_norm_shape(n, c, s, interleaved, x.is_cuda())};
}

void check_channel_vector(const char* op, const char* arg, const std::optional<at::Tensor>& t, const at::Tensor& x) {
  if (!t.has_value()) return;
  check_same_device(op, arg, *t, x);
  check_floating(op, arg, *t);
  const bool half_x = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  TORCH_CHECK_TYPE(t->scalar_type() == x.scalar_type() || (half_x && t->scalar_type() == at::kFloat), op, ": ", arg,
                   " must have dtype ", x.scalar_type(), " (that of x)", half_x ? " or float32" : "", ", got ",
                   t->scalar_type());
  TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == x.size(1), op, ": ", arg, " must be 1-d with x.shape[1] = ",
                    x.size(1), " elements, got shape ", t->sizes());
}

Setup check_args(const char* op, const at::Tensor& x, c10::string_view kind, const std::optional<at::Tensor>& weight,
                 const std::optional<at::Tensor>& bias, bool batch_stats, double eps, c10::string_view act,
                 double alpha, int64_t num_groups) {
  check_floating(op, "x", x);
  TORCH_CHECK_VALUE(x.dim() >= 2, op, ": x must be (N, C, *spatial) with at least 2 dims, got ", x.dim(), " dims");
  const NormKind k = parse_kind(op, kind);
  check_channel_vector(op, "weight", weight, x);
  check_channel_vector(op, "bias", bias, x);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
  TORCH_CHECK_VALUE(std::isfinite(alpha), op, ": alpha must be finite, got ", alpha);
  int64_t groups = 1;
  if (k == NormKind::kGroup) {
    TORCH_CHECK_VALUE(batch_stats, op, ": group norm has no running statistics; batch_stats must be true");
    TORCH_CHECK_VALUE(num_groups >= 1 && x.size(1) % num_groups == 0, op, ": num_groups must be >= 1 and divide ",
                      "the ", x.size(1), " channels of x, got ", num_groups);
    groups = num_groups;
  }
  return {k, parse_act(op, act), groups, NormShape{}};
}

// A per-channel vector in the op-math type, contiguous: itself when it is already (no copy).
at::Tensor as_opmath(const at::Tensor& t, at::ScalarType acc) {
  return (t.scalar_type() == acc ? t : t.to(acc)).contiguous();
}

at::Tensor as_opmath(const std::optional<at::Tensor>& t, at::ScalarType acc) {
  return t.has_value() ? as_opmath(*t, acc) : at::Tensor();
}

template <typename U>
U* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<U>() : nullptr;
}

// The view's fields every step reads: shape, statistics groups (the channels without batch
// statistics), eps, the affine parameters.
template <typename U>
NormTableView<U> table_view(const Setup& s, bool batch_stats, double eps, const at::Tensor& gamma,
                            const at::Tensor& beta) {
  NormTableView<U> v{};
  v.shape = s.shape;
  v.kind = s.kind;
  v.groups = s.groups;
  v.per_channel = !batch_stats;
  v.eps = eps;
  v.gamma = data_or_null<U>(gamma);
  v.beta = data_or_null<U>(beta);
  return v;
}

// One allocation of the op-math type handed out as consecutive tables.
template <typename U>
class Tables {
 public:
  Tables(int64_t total, const at::TensorOptions& opts) : storage_(at::empty({total}, opts)) {}
  U* take(int64_t count) {
    U* p = storage_.data_ptr<U>() + used_;
    used_ += count;
    TORCH_INTERNAL_ASSERT(used_ <= storage_.numel());
    return p;
  }

 private:
  at::Tensor storage_;
  int64_t used_ = 0;
};

template <typename U>
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_impl(const at::Tensor& x, const Setup& s,
                                                            const std::optional<at::Tensor>& weight,
                                                            const std::optional<at::Tensor>& bias,
                                                            const std::optional<at::Tensor>& running_mean,
                                                            const std::optional<at::Tensor>& running_var,
                                                            bool batch_stats, double eps, double alpha,
                                                            const NormActKernels& kernels) {
  const at::ScalarType acc = c10::CppTypeToScalarType<U>::value;
  const auto opts = x.options().dtype(acc);
  const NormShape& shape = s.shape;
  const at::Tensor gamma = as_opmath(weight, acc), beta = as_opmath(bias, acc);
  NormTableView<U> v = table_view<U>(s, batch_stats, eps, gamma, beta);
  const int64_t groups = v.group_total(), planes = shape.n * shape.c, partials = planes * shape.segments();
  Tables<U> tables((batch_stats ? 2 * partials : 0) + 2 * planes, opts);
  Tables<double> exact(groups, x.options().dtype(at::kDouble));
  at::Tensor mean, var;  // per statistics group (batch statistics) or per channel (running)
  if (batch_stats) {
    U* part_mean = tables.take(partials);
    U* part_m2 = tables.take(partials);
    if (x.numel() > 0) kernels.moments(x.scalar_type(), x.const_data_ptr(), shape, part_mean, part_m2);
    v.part_a = part_mean;
    v.part_b = part_m2;
    mean = at::empty({groups}, opts);
    var = at::empty({groups}, opts);
  } else {
    // copies: outputs must not alias inputs (a later training step updates the running
    // statistics in place, and backward still needs these)
    mean = running_mean->to(acc, /*non_blocking=*/false, /*copy=*/true).contiguous();
    var = running_var->to(acc, /*non_blocking=*/false, /*copy=*/true).contiguous();
  }
  v.mean = mean.data_ptr<U>();
  v.var = var.data_ptr<U>();
  if (batch_stats) run_table_step(kernels, NormTableStep::kStatistics, v);

  at::Tensor y = at::empty_like(x);
  if (x.numel() > 0) {
    v.rstd = exact.take(groups);
    v.scale = tables.take(planes);
    v.shift = tables.take(planes);
    run_table_step(kernels, NormTableStep::kInvStd, v);
    run_table_step(kernels, NormTableStep::kForward, v);
    kernels.forward(x.scalar_type(), s.act, alpha, x.const_data_ptr(), v.scale, v.shift, shape, y.mutable_data_ptr());
  }
  return {y, mean, var};
}

template <typename U>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(const at::Tensor& g, const at::Tensor& saved,
                                                             bool saved_is_output, const at::Tensor& mean_in,
                                                             const at::Tensor& var_in, const Setup& s,
                                                             const std::optional<at::Tensor>& weight,
                                                             const std::optional<at::Tensor>& bias, bool batch_stats,
                                                             double eps, double alpha,
                                                             std::array<bool, 3> output_mask,
                                                             const NormActKernels& kernels) {
  const at::ScalarType acc = c10::CppTypeToScalarType<U>::value;
  const auto opts = saved.options().dtype(acc);
  const NormShape& shape = s.shape;
  const int64_t c = shape.c;
  const at::Tensor gamma = as_opmath(weight, acc), beta = as_opmath(bias, acc);
  const at::Tensor mean = as_opmath(mean_in, acc), var = as_opmath(var_in, acc);
  NormTableView<U> v = table_view<U>(s, batch_stats, eps, gamma, beta);
  v.from_output = saved_is_output;
  v.mean = mean.data_ptr<U>();
  v.var = var.data_ptr<U>();

  const bool want_weight = output_mask[1] && weight.has_value();
  const bool want_bias = output_mask[2] && bias.has_value();
  // distinct tensors even when both are empty: outputs must not alias
  at::Tensor dweight = at::empty({0}, saved.options()), dbias = at::empty({0}, saved.options());
  if (saved.numel() == 0) {
    if (want_weight) dweight = at::zeros({c}, weight->options());
    if (want_bias) dbias = at::zeros({c}, bias->options());
    return {output_mask[0] ? at::empty_like(saved) : at::empty({0}, saved.options()), dweight, dbias};
  }

  const bool want_sums = batch_stats || want_weight || want_bias;
  const int64_t groups = v.group_total(), planes = shape.n * c, partials = planes * shape.segments();
  Tables<U> tables(6 * planes + (want_sums ? 2 * partials : 0), opts);
  Tables<double> exact(3 * groups, saved.options().dtype(at::kDouble));
  v.rstd = exact.take(groups);
  v.group_dxhat = exact.take(groups);
  v.group_dxhat_xhat = exact.take(groups);
  v.scale = tables.take(planes);
  v.shift = tables.take(planes);
  v.xs = tables.take(planes);
  v.xo = tables.take(planes);
  v.k2 = tables.take(planes);
  v.k3 = tables.take(planes);
  run_table_step(kernels, NormTableStep::kInvStd, v);
  run_table_step(kernels, NormTableStep::kGrad, v);
  const NormGradTables<void> grad_tables{v.xs, v.xo, v.scale, v.shift, /*k1=*/v.scale, v.k2, v.k3};

  if (want_sums) {
    U* sum_dpre = tables.take(partials);
    U* sum_dpre_xhat = tables.take(partials);
    kernels.grad_sums(saved.scalar_type(), s.act, alpha, saved_is_output, g.const_data_ptr(), saved.const_data_ptr(),
                      grad_tables, shape, sum_dpre, sum_dpre_xhat);
    v.part_a = sum_dpre;
    v.part_b = sum_dpre_xhat;
    if (want_weight || want_bias) {
      const at::Tensor dgamma = want_weight ? at::empty({c}, opts) : at::Tensor();
      const at::Tensor dbeta = want_bias ? at::empty({c}, opts) : at::Tensor();
      v.dgamma = data_or_null<U>(dgamma);
      v.dbeta = data_or_null<U>(dbeta);
      run_table_step(kernels, NormTableStep::kGradParameters, v);
      if (want_weight) dweight = dgamma.to(weight->scalar_type());
      if (want_bias) dbias = dbeta.to(bias->scalar_type());
    }
    if (batch_stats) {
      run_table_step(kernels, NormTableStep::kGradGroups, v);
      run_table_step(kernels, NormTableStep::kGradFinish, v);
    }
  }

  at::Tensor dx = at::empty({0}, saved.options());
  if (output_mask[0]) {
    dx = at::empty_like(saved);
    kernels.grad_input(saved.scalar_type(), s.act, alpha, saved_is_output, g.const_data_ptr(), saved.const_data_ptr(),
                       grad_tables, shape, dx.mutable_data_ptr());
  }
  return {dx, dweight, dbias};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_forward(
    const at::Tensor& x_in, c10::string_view kind, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, bool batch_stats, double eps, c10::string_view act, double alpha,
    int64_t num_groups, bool keep_output, const NormActKernels& kernels) {
  const char* op = "medkern::norm_act";
  Setup s = check_args(op, x_in, kind, weight, bias, batch_stats, eps, act, alpha, num_groups);
  TORCH_CHECK_VALUE(!keep_output || recoverable_from_output(s.act), op, ": keep_output needs an activation its ",
                    "output determines (linear, lrelu, elu), got act='", std::string(act), "'");
  if (!batch_stats) {
    TORCH_CHECK_VALUE(running_mean.has_value() && running_var.has_value(), op,
                      ": running_mean and running_var are required when batch_stats is false");
  }
  check_channel_vector(op, "running_mean", running_mean, x_in);
  check_channel_vector(op, "running_var", running_var, x_in);
  auto [x, shape] = arrange(x_in);
  s.shape = shape;
  if (x.scalar_type() == at::kDouble) {
    return forward_impl<double>(x, s, weight, bias, running_mean, running_var, batch_stats, eps, alpha, kernels);
  }
  return forward_impl<float>(x, s, weight, bias, running_mean, running_var, batch_stats, eps, alpha, kernels);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_backward(
    const at::Tensor& grad, const at::Tensor& saved_in, bool saved_is_output, const at::Tensor& mean,
    const at::Tensor& var, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    c10::string_view kind, bool batch_stats, double eps, c10::string_view act, double alpha, int64_t num_groups,
    std::array<bool, 3> output_mask, const NormActKernels& kernels) {
  const char* op = "medkern::norm_act_backward";
  Setup s = check_args(op, saved_in, kind, weight, bias, batch_stats, eps, act, alpha, num_groups);
  TORCH_CHECK_VALUE(!saved_is_output || recoverable_from_output(s.act), op,
                    ": saved_is_output needs an activation its output determines (linear, lrelu, elu), got act='",
                    std::string(act), "'");
  check_same_device(op, "grad", grad, saved_in);
  check_same_dtype(op, "grad", grad, saved_in);
  check_same_shape(op, "grad", grad, saved_in);
  auto [saved, shape] = arrange(saved_in);
  s.shape = shape;
  const int64_t expected_stats = batch_stats ? norm_group_total(s.kind, shape, s.groups) : shape.c;
  for (const auto& [arg, t] : {std::pair{"mean", &mean}, std::pair{"var", &var}}) {
    check_same_device(op, arg, *t, saved_in);
    check_floating(op, arg, *t);
    TORCH_CHECK_VALUE(t->dim() == 1 && t->numel() == expected_stats, op, ": ", arg, " must be 1-d with ",
                      expected_stats, " elements (one per statistics group), got shape ", t->sizes());
  }
  const at::Tensor g = with_layout_of(grad, saved);
  if (saved.scalar_type() == at::kDouble) {
    return backward_impl<double>(g, saved, saved_is_output, mean, var, s, weight, bias, batch_stats, eps, alpha,
                                 output_mask, kernels);
  }
  return backward_impl<float>(g, saved, saved_is_output, mean, var, s, weight, bias, batch_stats, eps, alpha,
                              output_mask, kernels);
}

}  // namespace medkern

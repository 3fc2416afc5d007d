// medkern::norm_act and medkern::norm_act_backward, device-independent part: argument checks,
// the memory layout the kernels walk, combining the kernels' partial sums into statistics, and
// folding statistics, affine parameters and gradient sums into per-(n, c) coefficient tables
// (csrc/common/norm_act.h). These are small tensors, handled by ATen in float64; the kernels do
// the passes over the data.

#include "norm_act_op.h"

#include <cmath>
#include <string>

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

// `x` in the layout the kernels will walk (itself when it is contiguous or channels_last-like,
// else a contiguous copy), and its NormShape.
std::pair<at::Tensor, NormShape> arrange(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t s = n * c == 0 ? 0 : x.numel() / (n * c);
  const bool planar = x.is_contiguous();
  const bool rows = x.movedim(1, -1).is_contiguous();
  at::Tensor arranged = x;
  bool interleaved = rows && (!planar || s == 1);
  if (!planar && !rows) {
    arranged = x.contiguous();
    interleaved = s == 1;
  }
  return {arranged, make_norm_shape(n, c, s, interleaved)};
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

at::ScalarType opmath_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor as_double(const std::optional<at::Tensor>& t, int64_t c, double fill, const at::Tensor& x) {
  if (t.has_value()) return t->to(at::kDouble);
  return at::full({c}, fill, x.options().dtype(at::kDouble));
}

// [N, C] values reduced over each statistics group: [C] (batch), [N * C] (instance),
// [N * G] (group).
at::Tensor sum_per_group(const at::Tensor& nc, const Setup& s) {
  switch (s.kind) {
    case NormKind::kBatch:
      return nc.sum(0);
    case NormKind::kInstance:
      return nc.reshape({-1});
    default:
      return nc.reshape({s.shape.n, s.groups, s.shape.c / s.groups}).sum(2).reshape({-1});
  }
}

// Per-group values back to [N, C]; `per_channel` values ([C], running statistics) likewise.
at::Tensor per_sample_channel(const at::Tensor& g, const Setup& s, bool per_channel) {
  const int64_t n = s.shape.n, c = s.shape.c;
  if (per_channel || s.kind == NormKind::kBatch) return g.reshape({1, c}).expand({n, c});
  if (s.kind == NormKind::kInstance) return g.reshape({n, c});
  return g.reshape({n, s.groups, 1}).expand({n, s.groups, c / s.groups}).reshape({n, c});
}

// Statistics groups in all.
int64_t group_total(const Setup& s) {
  if (s.kind == NormKind::kBatch) return s.shape.c;
  return s.shape.n * (s.kind == NormKind::kInstance ? s.shape.c : s.groups);
}

// Elements per statistics group.
int64_t group_count(const Setup& s) {
  const int64_t per_channel = s.shape.s * (s.kind == NormKind::kBatch ? s.shape.n : 1);
  return per_channel * (s.kind == NormKind::kGroup ? s.shape.c / s.groups : 1);
}

// Positions in each segment, [K] float64.
at::Tensor segment_counts(const NormShape& shape, const at::Tensor& like) {
  const int64_t k = shape.segments();
  at::Tensor counts = at::full({k}, static_cast<double>(shape.segment), like.options().dtype(at::kDouble));
  if (k > 0) counts[k - 1] = static_cast<double>(shape.s - (k - 1) * shape.segment);
  return counts;
}

// [N, C, K] per-segment values summed over the segments: [N, C]. ATen reduces a short innermost
// dim one (n, c) row at a time, which costs more than the kernels for small planes with many
// channels (channels_last, K >= 2); with the segments outermost it adds whole rows.
at::Tensor sum_segments(const at::Tensor& partials) {
  if (partials.size(2) == 1) return partials.squeeze(2);
  return partials.permute({2, 0, 1}).contiguous().sum(0);
}

// Mean and biased variance per statistics group from per-segment means and squared deviations
// ([N, C, K]), combined exactly (Chan et al.) in float64.
std::pair<at::Tensor, at::Tensor> combine_moments(const at::Tensor& mean_p, const at::Tensor& m2_p, const Setup& s,
                                                  const at::Tensor& x) {
  const at::Tensor counts = segment_counts(s.shape, x).reshape({1, 1, -1});
  const at::Tensor m = mean_p.to(at::kDouble), m2 = m2_p.to(at::kDouble);
  const double total = static_cast<double>(group_count(s));
  const at::Tensor sum_nc = sum_segments(m * counts);
  const at::Tensor group_mean = sum_per_group(sum_nc, s) / total;
  const at::Tensor spread = per_sample_channel(group_mean, s, false).unsqueeze(2);
  const at::Tensor m2_nc = sum_segments(m2) + sum_segments(counts * (m - spread).square());
  return {group_mean, sum_per_group(m2_nc, s) / total};
}

at::Tensor table(const at::Tensor& nc, const at::Tensor& x) {
  return nc.to(opmath_dtype(x)).contiguous();
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
  const int64_t n = shape.n, c = shape.c;

  at::Tensor mean, var;  // per group (batch statistics) or per channel (running), float64
  if (batch_stats) {
    const at::ScalarType acc = opmath_dtype(x);
    at::Tensor mean_p = at::empty({n, c, shape.segments()}, x.options().dtype(acc));
    at::Tensor m2_p = at::empty_like(mean_p);
    if (x.numel() > 0) kernels.moments(x.scalar_type(), x.const_data_ptr(), shape, mean_p.mutable_data_ptr(), m2_p.mutable_data_ptr());
    std::tie(mean, var) = combine_moments(mean_p, m2_p, s, x);
  } else {
    // copies, also for float64: outputs must not alias inputs (a later training step updates
    // the running statistics in place, and backward still needs these)
    mean = running_mean->to(at::kDouble, /*non_blocking=*/false, /*copy=*/true);
    var = running_var->to(at::kDouble, /*non_blocking=*/false, /*copy=*/true);
  }
  const at::Tensor rstd = (var + eps).rsqrt();
  const at::Tensor gamma = as_double(weight, c, 1.0, x), beta = as_double(bias, c, 0.0, x);
  const at::Tensor scale = per_sample_channel(rstd, s, !batch_stats) * gamma;
  const at::Tensor shift = beta - per_sample_channel(mean, s, !batch_stats) * scale;

  at::Tensor y = at::empty_like(x);
  if (x.numel() > 0) {
    const at::Tensor scale_t = table(scale, x), shift_t = table(shift, x);
    kernels.forward(x.scalar_type(), s.act, alpha, x.const_data_ptr(), scale_t.const_data_ptr(),
                    shift_t.const_data_ptr(), shape, y.mutable_data_ptr());
  }
  const at::ScalarType acc = opmath_dtype(x);
  return {y, mean.to(acc), var.to(acc)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_backward(
    const at::Tensor& grad, const at::Tensor& saved_in, bool saved_is_output, const at::Tensor& mean_in,
    const at::Tensor& var_in, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
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
  const int64_t n = shape.n, c = shape.c;
  const int64_t expected_stats = batch_stats ? group_total(s) : c;
  for (const auto& [arg, t] : {std::pair{"mean", &mean_in}, std::pair{"var", &var_in}}) {
    check_same_device(op, arg, *t, saved_in);
    TORCH_CHECK_VALUE(t->dim() == 1 && t->numel() == expected_stats, op, ": ", arg, " must be 1-d with ",
                      expected_stats, " elements (one per statistics group), got shape ", t->sizes());
  }
  const at::Tensor g = with_layout_of(grad, saved);

  const at::Tensor mean = mean_in.to(at::kDouble), var = var_in.to(at::kDouble);
  const at::Tensor rstd = (var + eps).rsqrt();
  const at::Tensor gamma = as_double(weight, c, 1.0, saved), beta = as_double(bias, c, 0.0, saved);
  const at::Tensor rstd_nc = per_sample_channel(rstd, s, !batch_stats);
  const at::Tensor mean_nc = per_sample_channel(mean, s, !batch_stats);
  const at::Tensor scale = rstd_nc * gamma, shift = beta - mean_nc * scale;
  at::Tensor xs, xo;
  if (saved_is_output) {
    xs = (1.0 / gamma).expand({n, c});
    xo = (-beta / gamma).expand({n, c});
  } else {
    xs = rstd_nc;
    xo = -mean_nc * rstd_nc;
  }

  const bool want_weight = output_mask[1] && weight.has_value();
  const bool want_bias = output_mask[2] && bias.has_value();
  at::Tensor k2 = at::zeros({n, c}, saved.options().dtype(at::kDouble)), k3 = k2;
  // distinct tensors even when both are empty: outputs must not alias
  at::Tensor dweight = at::empty({0}, saved.options()), dbias = at::empty({0}, saved.options());
  std::vector<at::Tensor> keep;  // tables alive until the kernels are done
  auto tables = [&](const at::Tensor& k2t, const at::Tensor& k3t) {
    keep = {table(xs, saved), table(xo, saved), table(scale, saved), table(shift, saved),
            table(rstd_nc * gamma, saved), table(k2t, saved), table(k3t, saved)};
    return NormGradTables<void>{keep[0].const_data_ptr(), keep[1].const_data_ptr(), keep[2].const_data_ptr(),
                                keep[3].const_data_ptr(), keep[4].const_data_ptr(), keep[5].const_data_ptr(),
                                keep[6].const_data_ptr()};
  };

  if (saved.numel() > 0 && (batch_stats || want_weight || want_bias)) {
    const at::ScalarType acc = opmath_dtype(saved);
    at::Tensor sum_dpre = at::empty({n, c, shape.segments()}, saved.options().dtype(acc));
    at::Tensor sum_dpre_xhat = at::empty_like(sum_dpre);
    kernels.grad_sums(saved.scalar_type(), s.act, alpha, saved_is_output, g.const_data_ptr(), saved.const_data_ptr(),
                      tables(k2, k3), shape, sum_dpre.mutable_data_ptr(), sum_dpre_xhat.mutable_data_ptr());
    const at::Tensor a = sum_segments(sum_dpre.to(at::kDouble)), b = sum_segments(sum_dpre_xhat.to(at::kDouble));
    if (want_weight) dweight = b.sum(0).to(weight->scalar_type());
    if (want_bias) dbias = a.sum(0).to(bias->scalar_type());
    if (batch_stats) {
      const double count = static_cast<double>(group_count(s));
      const at::Tensor mean_dxhat = per_sample_channel(sum_per_group(a * gamma, s) / count, s, false);
      const at::Tensor mean_dxhat_xhat = per_sample_channel(sum_per_group(b * gamma, s) / count, s, false);
      k2 = -rstd_nc * mean_dxhat_xhat;
      k3 = -rstd_nc * mean_dxhat;
    }
  } else if (saved.numel() == 0) {
    if (want_weight) dweight = at::zeros({c}, weight->options());
    if (want_bias) dbias = at::zeros({c}, bias->options());
  }

  at::Tensor dx = at::empty({0}, saved.options());
  if (output_mask[0]) {
    dx = at::empty_like(saved);
    if (saved.numel() > 0) {
      kernels.grad_input(saved.scalar_type(), s.act, alpha, saved_is_output, g.const_data_ptr(),
                         saved.const_data_ptr(), tables(k2, k3), shape, dx.mutable_data_ptr());
    }
  }
  return {dx, dweight, dbias};
}

}  // namespace medkern

// medkern::norm_act's autograd, in C++ (the Autograd dispatch key, every device). A Python
// autograd function (torch.library.register_autograd) costs about 60 us per training call,
// forward and backward, which is more than the kernels of a small layer take. The backward calls
// medkern::norm_act_backward through the dispatcher, so that op's own autograd (registered in
// Python by medkern/ops/norm_act.py: second-order gradients through the reference) still applies
// under create_graph.

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>

namespace medkern {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Triple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using OptionalTensor = std::optional<at::Tensor>;

using ForwardSignature = Triple(const at::Tensor&, c10::string_view, const OptionalTensor&, const OptionalTensor&,
                                const OptionalTensor&, const OptionalTensor&, bool, double, c10::string_view, double,
                                int64_t, bool);
using BackwardSignature = Triple(const at::Tensor&, const at::Tensor&, bool, const at::Tensor&, const at::Tensor&,
                                 const OptionalTensor&, const OptionalTensor&, c10::string_view, bool, double,
                                 c10::string_view, double, int64_t, std::array<bool, 3>);

OptionalTensor present(const at::Tensor& t) { return t.defined() ? OptionalTensor(t) : std::nullopt; }

class NormActFunction : public torch::autograd::Function<NormActFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, c10::string_view kind,
                               const OptionalTensor& weight, const OptionalTensor& bias,
                               const OptionalTensor& running_mean, const OptionalTensor& running_var, bool batch_stats,
                               double eps, c10::string_view act, double alpha, int64_t num_groups, bool keep_output) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("medkern::norm_act", "")
                               .typed<ForwardSignature>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, mean, var] = op.call(x, kind, weight, bias, running_mean, running_var, batch_stats, eps, act, alpha,
                                  num_groups, keep_output);
    // mean and var are statistics (for backward and the running statistics), not differentiable
    ctx->mark_non_differentiable({mean, var});
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({keep_output ? y : x, mean, var, weight.value_or(at::Tensor()),
                            bias.value_or(at::Tensor())});
    ctx->saved_data["kind"] = std::string(kind);
    ctx->saved_data["act"] = std::string(act);
    ctx->saved_data["options"] = std::vector<double>{eps, alpha};
    ctx->saved_data["flags"] = std::vector<int64_t>{batch_stats, num_groups, keep_output};
    return {y, mean, var};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("medkern::norm_act_backward", "")
                               .typed<BackwardSignature>();
    constexpr size_t kInputs = 12;
    variable_list out(kInputs);
    if (!grads[0].defined()) return out;  // only the statistics were used
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &weight = saved[3], &bias = saved[4];
    // input edges: x, then weight and bias where given (then the running statistics)
    const size_t weight_edge = 1, bias_edge = 1 + static_cast<size_t>(weight.defined());
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), weight.defined() && ctx->needs_input_grad(weight_edge),
                                   bias.defined() && ctx->needs_input_grad(bias_edge)};
    const auto options = ctx->saved_data["options"].toDoubleVector();
    const auto flags = ctx->saved_data["flags"].toIntVector();
    const std::string kind = ctx->saved_data["kind"].toStringRef(), act = ctx->saved_data["act"].toStringRef();
    auto [dx, dweight, dbias] = op.call(grads[0], saved[0], flags[2] != 0, saved[1], saved[2], present(weight),
                                        present(bias), kind, flags[0] != 0, options[0], act, options[1], flags[1],
                                        mask);
    if (mask[0]) out[0] = dx;
    if (mask[1]) out[2] = dweight;
    if (mask[2]) out[3] = dbias;
    return out;
  }
};

Triple norm_act_autograd(const at::Tensor& x, c10::string_view kind, const OptionalTensor& weight,
                         const OptionalTensor& bias, const OptionalTensor& running_mean,
                         const OptionalTensor& running_var, bool batch_stats, double eps, c10::string_view act,
                         double alpha, int64_t num_groups, bool keep_output) {
  const variable_list out = NormActFunction::apply(x, kind, weight, bias, running_mean, running_var, batch_stats, eps,
                                                   act, alpha, num_groups, keep_output);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(medkern, Autograd, m) { m.impl("norm_act", &norm_act_autograd); }

}  // namespace medkern

// Tabulated radial functions: a cubic Hermite spline through values V and scaled slopes S at the
// knots r_k = r_0 + k·h (k = 0…K, r_0 + K·h = r_c), forward and backward as CPU loops over rows.
//
//   x = (r − r_0) / h, i = ⌊x⌋, t = x − i
//   R(r)[o] = h00(t) V[i, o] + h10(t) S[i, o] + h01(t) V[i+1, o] + h11(t) S[i+1, o]     (r < r_c)
//   R(r) = 0                                                                           (r ≥ r_c)
//
// with the Hermite polynomials h00 = 2t³ − 3t² + 1, h10 = t³ − 2t² + t, h01 = 3t² − 2t³, h11 = t³ − t²
// and S = h · dR/dr at the knots. The backward gives ∂L/∂r = Σ_o g[o] · dR/dr[o] per row.
// Shapes: r (R,), V and S (K + 1, O), out (R, O).
// eqcalc/nn/kernels/__init__.py registers the autograd and shape functions of these operators.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>

namespace {

constexpr int64_t kRowsPerTask = 64;

void check_spline(const at::Tensor& r, const at::Tensor& values, const at::Tensor& slopes, double spacing) {
    TORCH_CHECK(r.device().is_cpu() && r.dim() == 1 && r.is_contiguous(), "r must be a contiguous CPU (R,) tensor");
    TORCH_CHECK(values.dim() == 2 && values.size(0) >= 2 && values.is_contiguous() && slopes.is_contiguous() &&
                    slopes.sizes() == values.sizes(),
                "values and slopes must be contiguous (K + 1, O) tensors, K ≥ 1");
    TORCH_CHECK(values.scalar_type() == r.scalar_type() && slopes.scalar_type() == r.scalar_type(),
                "r, values and slopes must share one dtype");
    TORCH_CHECK(spacing > 0, "the knot spacing must be positive");
}

// f(row, i, t) for every row: with r < r_c its interval i and position t in it, else i = −1 (zero
// outputs: every output element is written, so the operators allocate them uninitialised). A
// distance below r_0, or NaN, raises.
template <typename scalar_t, typename F>
void for_each_row(const at::Tensor& r, int64_t intervals, double start, double spacing, F&& f) {
    const scalar_t* distances = r.data_ptr<scalar_t>();
    std::atomic<bool> bad{false};
    at::parallel_for(0, r.numel(), kRowsPerTask, [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
            const scalar_t x = (distances[row] - static_cast<scalar_t>(start)) / static_cast<scalar_t>(spacing);
            if (!(x >= 0)) {
                bad.store(true, std::memory_order_relaxed);
                continue;
            }
            if (x >= static_cast<scalar_t>(intervals)) {
                f(row, int64_t(-1), scalar_t(0));
                continue;
            }
            const int64_t i = std::min(static_cast<int64_t>(x), intervals - 1);
            f(row, i, x - static_cast<scalar_t>(i));
        }
    });
    TORCH_CHECK(!bad.load(), "radial_spline: a distance is NaN or below the table's first knot, ", start,
                " Å (overlapping atoms)");
}

}  // namespace

at::Tensor radial_spline(const at::Tensor& r, const at::Tensor& values, const at::Tensor& slopes, double start,
                         double spacing) {
    check_spline(r, values, slopes, spacing);
    const int64_t O = values.size(1);
    auto out = at::empty({r.numel(), O}, values.options());
    AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "radial_spline", [&] {
        const scalar_t* V = values.data_ptr<scalar_t>();
        const scalar_t* S = slopes.data_ptr<scalar_t>();
        scalar_t* result = out.data_ptr<scalar_t>();
        for_each_row<scalar_t>(r, values.size(0) - 1, start, spacing, [&](int64_t row, int64_t i, scalar_t t) {
            if (i < 0) {
                std::fill(result + row * O, result + (row + 1) * O, scalar_t(0));
                return;
            }
            const scalar_t t2 = t * t, t3 = t2 * t;
            const scalar_t h00 = 2 * t3 - 3 * t2 + 1, h10 = t3 - 2 * t2 + t, h01 = 3 * t2 - 2 * t3, h11 = t3 - t2;
            const scalar_t *v0 = V + i * O, *v1 = v0 + O, *s0 = S + i * O, *s1 = s0 + O;
            scalar_t* o = result + row * O;
            for (int64_t k = 0; k < O; ++k) o[k] = h00 * v0[k] + h10 * s0[k] + h01 * v1[k] + h11 * s1[k];
        });
    });
    return out;
}

// Gradient of radial_spline with respect to r, for the output gradient g (R, O).
at::Tensor radial_spline_backward(const at::Tensor& g, const at::Tensor& r, const at::Tensor& values,
                                  const at::Tensor& slopes, double start, double spacing) {
    check_spline(r, values, slopes, spacing);
    const int64_t O = values.size(1);
    TORCH_CHECK(g.dim() == 2 && g.size(0) == r.numel() && g.size(1) == O && g.scalar_type() == r.scalar_type(),
                "g must be (R, O) in the dtype of r");
    auto gc = g.contiguous();
    auto grad_r = at::empty_like(r);
    AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "radial_spline_backward", [&] {
        const scalar_t* V = values.data_ptr<scalar_t>();
        const scalar_t* S = slopes.data_ptr<scalar_t>();
        const scalar_t* grad = gc.data_ptr<scalar_t>();
        scalar_t* result = grad_r.data_ptr<scalar_t>();
        for_each_row<scalar_t>(r, values.size(0) - 1, start, spacing, [&](int64_t row, int64_t i, scalar_t t) {
            if (i < 0) {
                result[row] = 0;
                return;
            }
            const scalar_t t2 = t * t;  // derivatives of the Hermite polynomials in t
            const scalar_t d00 = 6 * t2 - 6 * t, d10 = 3 * t2 - 4 * t + 1, d01 = 6 * t - 6 * t2, d11 = 3 * t2 - 2 * t;
            const scalar_t *v0 = V + i * O, *v1 = v0 + O, *s0 = S + i * O, *s1 = s0 + O, *gr = grad + row * O;
            scalar_t sum = 0;
            for (int64_t k = 0; k < O; ++k) sum += gr[k] * (d00 * v0[k] + d10 * s0[k] + d01 * v1[k] + d11 * s1[k]);
            result[row] = sum / static_cast<scalar_t>(spacing);
        });
    });
    return grad_r;
}

TORCH_LIBRARY_FRAGMENT(eqcalc_kernels, m) {
    m.def("radial_spline(Tensor r, Tensor values, Tensor slopes, float start, float spacing) -> Tensor");
    m.def("radial_spline_backward(Tensor g, Tensor r, Tensor values, Tensor slopes, float start, float spacing) "
          "-> Tensor");
}

TORCH_LIBRARY_IMPL(eqcalc_kernels, CPU, m) {
    m.impl("radial_spline", &radial_spline);
    m.impl("radial_spline_backward", &radial_spline_backward);
}

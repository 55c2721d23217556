// MACE's species-weighted product basis as a symmetric polynomial per atom and channel, forward and
// backward as CPU loops over tiles of atoms × channels: no (monomials × channels × atoms) tensor.
//
//   out[n, M_t, c] = Σ_t S[z(n), t, c] · μ_{k_t}(n, c)        over the terms t = (k_t, M_t)
//   μ_k(n, c) = a[n, k, c] (k < dim_a),   μ_k = μ_{lower[k]} · a[n, last[k], c] (k ≥ dim_a, lower[k] < k)
//
// so every monomial of the atomic basis a is one product of an earlier monomial and a component of a.
// Atoms are sorted by species: rows offsets[z] … offsets[z + 1] − 1 of a are those of species z.
// Shapes: a (N, dim_a, C), offsets (Z + 1,), S (Z, T, C), terms (T, 2) int64 rows (k_t, M_t),
// lower and last (K,) int64 (entries below dim_a unused), out (N, M, C).
// eqcalc/nn/kernels/__init__.py registers the autograd and shape functions of these operators.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <mutex>
#include <vector>

namespace {

constexpr int64_t kAtoms = 8;   // atoms of one species per tile: each S row is read once per tile
constexpr int64_t kLanes = 16;  // channels per tile (the vectorised loop)

struct Polynomial {
    const int64_t* lower;    // (K,)
    const int64_t* last;     // (K,)
    const int64_t* terms;    // (T, 2)
    const int64_t* offsets;  // (Z + 1,)
    int64_t dim_a, K, T, M, C, Z;
};

struct Tile {
    int64_t z, first_atom, atoms, first_channel, channels;
};

Polynomial checked_polynomial(const at::Tensor& a, const at::Tensor& offsets, const at::Tensor& S,
                              const at::Tensor& terms, const at::Tensor& lower, const at::Tensor& last,
                              int64_t outputs) {
    TORCH_CHECK(a.device().is_cpu() && a.dim() == 3 && a.is_contiguous(), "a must be a contiguous CPU (N, dim_a, C) tensor");
    TORCH_CHECK(S.dim() == 3 && S.is_contiguous() && S.scalar_type() == a.scalar_type() && S.size(2) == a.size(2),
                "S must be a contiguous (Z, T, C) tensor in the dtype and channel count of a");
    for (const at::Tensor* table : {&offsets, &terms, &lower, &last})
        TORCH_CHECK(table->scalar_type() == at::kLong && table->is_contiguous() && table->device().is_cpu(),
                    "offsets, terms, lower and last must be contiguous int64 CPU tensors");
    const int64_t dim_a = a.size(1), K = lower.numel(), Z = S.size(0);
    TORCH_CHECK(terms.dim() == 2 && terms.size(0) == S.size(1) && terms.size(1) == 2, "terms must be (T, 2), T = S.size(1)");
    TORCH_CHECK(last.numel() == K && K >= dim_a, "lower and last must both have K >= dim_a entries");
    TORCH_CHECK(offsets.numel() == Z + 1, "offsets must have Z + 1 entries (Z = S.size(0) species)");
    TORCH_CHECK(outputs > 0, "outputs must be positive");
    const Polynomial p{lower.data_ptr<int64_t>(), last.data_ptr<int64_t>(), terms.data_ptr<int64_t>(),
                       offsets.data_ptr<int64_t>(), dim_a, K, S.size(1), outputs, a.size(2), Z};
    TORCH_CHECK(p.offsets[0] == 0 && p.offsets[Z] == a.size(0), "offsets must run from 0 to N");
    for (int64_t z = 0; z < Z; ++z)
        TORCH_CHECK(p.offsets[z] <= p.offsets[z + 1], "offsets must not decrease");
    for (int64_t k = dim_a; k < K; ++k)
        TORCH_CHECK(p.lower[k] >= 0 && p.lower[k] < k && p.last[k] >= 0 && p.last[k] < dim_a,
                    "monomial ", k, ": lower must be an earlier monomial and last a component of a");
    for (int64_t t = 0; t < p.T; ++t)
        TORCH_CHECK(p.terms[2 * t] >= 0 && p.terms[2 * t] < K && p.terms[2 * t + 1] >= 0 && p.terms[2 * t + 1] < outputs,
                    "term ", t, " names a monomial or output out of range");
    return p;
}

std::vector<Tile> tiles_of(const Polynomial& p) {
    std::vector<Tile> tiles;
    for (int64_t z = 0; z < p.Z; ++z)
        for (int64_t n = p.offsets[z]; n < p.offsets[z + 1]; n += kAtoms)
            for (int64_t c = 0; c < p.C; c += kLanes)
                tiles.push_back({z, n, std::min(kAtoms, p.offsets[z + 1] - n), c, std::min(kLanes, p.C - c)});
    return tiles;
}

// Per-thread buffers laid out [row][atom][lane] (kAtoms · kLanes values per row). kWidth: the
// tile's channel count when it is a whole kLanes (a compile-time loop bound), 0 otherwise.
template <typename scalar_t, int64_t kWidth>
struct TileLoops {
    const Polynomial& p;
    const Tile& tile;
    static constexpr int64_t kRow = kAtoms * kLanes;

    int64_t lanes() const { return kWidth > 0 ? kWidth : tile.channels; }

    // dst[b, w] op= f(b, w) over the tile's atoms and channels
    template <typename F>
    void for_each(F&& f) const {
        const int64_t width = lanes();
        for (int64_t b = 0; b < tile.atoms; ++b)
            for (int64_t w = 0; w < width; ++w) f(b * kLanes + w, b, w);
    }

    // the tile's rows of a per component, then every monomial from earlier ones: mu (K rows)
    void monomials(const scalar_t* a, scalar_t* mu) const {
        for (int64_t i = 0; i < p.dim_a; ++i)
            for_each([&](int64_t j, int64_t b, int64_t w) {
                mu[i * kRow + j] = a[((tile.first_atom + b) * p.dim_a + i) * p.C + tile.first_channel + w];
            });
        for (int64_t k = p.dim_a; k < p.K; ++k) {
            const scalar_t* lower = mu + p.lower[k] * kRow;
            const scalar_t* last = mu + p.last[k] * kRow;
            for_each([&](int64_t j, int64_t, int64_t) { mu[k * kRow + j] = lower[j] * last[j]; });
        }
    }

    const scalar_t* weights(const scalar_t* S, int64_t t) const {
        return S + (tile.z * p.T + t) * p.C + tile.first_channel;
    }

    int64_t at(int64_t b, int64_t row, int64_t rows) const {
        return ((tile.first_atom + b) * rows + row) * p.C + tile.first_channel;
    }

    void forward(const scalar_t* a, const scalar_t* S, scalar_t* mu, scalar_t* acc, scalar_t* out) const {
        monomials(a, mu);
        std::fill(acc, acc + p.M * kRow, scalar_t(0));
        for (int64_t t = 0; t < p.T; ++t) {
            const scalar_t* s = weights(S, t);
            const scalar_t* monomial = mu + p.terms[2 * t] * kRow;
            scalar_t* sum = acc + p.terms[2 * t + 1] * kRow;
            for_each([&](int64_t j, int64_t, int64_t w) { sum[j] += s[w] * monomial[j]; });
        }
        for (int64_t m = 0; m < p.M; ++m)
            for_each([&](int64_t j, int64_t b, int64_t w) { out[at(b, m, p.M) + w] = acc[m * kRow + j]; });
    }

    // grad_S[z, t, c] += Σ_b g[b, M_t, c] · mu[k_t][b, c] over the tile's atoms (the caller's buffer)
    void add_weight_gradient(const scalar_t* g, const scalar_t* mu, scalar_t* grad_S) const {
        for (int64_t t = 0; t < p.T; ++t) {
            const scalar_t* monomial = mu + p.terms[2 * t] * kRow;
            const int64_t m = p.terms[2 * t + 1];
            scalar_t* gs = grad_S + (tile.z * p.T + t) * p.C + tile.first_channel;
            for_each([&](int64_t j, int64_t b, int64_t w) { gs[w] += g[at(b, m, p.M) + w] * monomial[j]; });
        }
    }

    // gradient of every monomial (grad_mu, K rows) from the output gradient g, then back through the
    // products from the last monomial to the first: the first dim_a rows are ∂L/∂a; with grad_S,
    // also the weight gradient (add_weight_gradient)
    void backward(const scalar_t* g, const scalar_t* a, const scalar_t* S, scalar_t* mu, scalar_t* grad_mu,
                  scalar_t* grad_a, scalar_t* grad_S) const {
        monomials(a, mu);
        if (grad_S != nullptr) add_weight_gradient(g, mu, grad_S);
        std::fill(grad_mu, grad_mu + p.K * kRow, scalar_t(0));
        for (int64_t t = 0; t < p.T; ++t) {
            const scalar_t* s = weights(S, t);
            scalar_t* grad = grad_mu + p.terms[2 * t] * kRow;
            const int64_t m = p.terms[2 * t + 1];
            for_each([&](int64_t j, int64_t b, int64_t w) { grad[j] += s[w] * g[at(b, m, p.M) + w]; });
        }
        for (int64_t k = p.K - 1; k >= p.dim_a; --k) {
            const scalar_t* grad = grad_mu + k * kRow;
            scalar_t* grad_lower = grad_mu + p.lower[k] * kRow;
            scalar_t* grad_last = grad_mu + p.last[k] * kRow;
            const scalar_t* lower = mu + p.lower[k] * kRow;
            const scalar_t* last = mu + p.last[k] * kRow;
            for_each([&](int64_t j, int64_t, int64_t) {
                grad_lower[j] += grad[j] * last[j];
                grad_last[j] += grad[j] * lower[j];
            });
        }
        for (int64_t i = 0; i < p.dim_a; ++i)
            for_each([&](int64_t j, int64_t b, int64_t w) { grad_a[at(b, i, p.dim_a) + w] = grad_mu[i * kRow + j]; });
    }

    // Forward mode along v (N, dim_a, C) through forward and backward: with μ̇ the derivative of the
    // monomials along v, out_dot = Σ_t S μ̇_t (the forward's), grad_S_dot += Σ_b g μ̇_t and grad_a_dot
    // (the backward's: the Hessian of <g, out> in a times v). buffers: 4 K rows (μ, μ̇, ∂μ, ∂μ̇).
    void tangent(const scalar_t* g, const scalar_t* a, const scalar_t* v, const scalar_t* S, scalar_t* buffers,
                 scalar_t* out_dot, scalar_t* grad_a_dot, scalar_t* grad_S_dot) const {
        scalar_t* mu = buffers;
        scalar_t* mu_dot = buffers + p.K * kRow;
        scalar_t* grad_mu = buffers + 2 * p.K * kRow;
        scalar_t* grad_mu_dot = buffers + 3 * p.K * kRow;
        monomials(a, mu);
        for (int64_t i = 0; i < p.dim_a; ++i)
            for_each([&](int64_t j, int64_t b, int64_t w) { mu_dot[i * kRow + j] = v[at(b, i, p.dim_a) + w]; });
        for (int64_t k = p.dim_a; k < p.K; ++k) {
            const int64_t lo = p.lower[k] * kRow, la = p.last[k] * kRow;
            for_each([&](int64_t j, int64_t, int64_t) {
                mu_dot[k * kRow + j] = mu_dot[lo + j] * mu[la + j] + mu[lo + j] * mu_dot[la + j];
            });
        }
        add_weight_gradient(g, mu_dot, grad_S_dot);
        for (int64_t m = 0; m < p.M; ++m)
            for_each([&](int64_t j, int64_t b, int64_t w) { out_dot[at(b, m, p.M) + w] = 0; });
        std::fill(grad_mu, grad_mu + p.K * kRow, scalar_t(0));
        std::fill(grad_mu_dot, grad_mu_dot + p.K * kRow, scalar_t(0));
        for (int64_t t = 0; t < p.T; ++t) {
            const scalar_t* s = weights(S, t);
            const int64_t k = p.terms[2 * t], m = p.terms[2 * t + 1];
            for_each([&](int64_t j, int64_t b, int64_t w) {
                out_dot[at(b, m, p.M) + w] += s[w] * mu_dot[k * kRow + j];
                grad_mu[k * kRow + j] += s[w] * g[at(b, m, p.M) + w];
            });
        }
        for (int64_t k = p.K - 1; k >= p.dim_a; --k) {
            const int64_t lo = p.lower[k] * kRow, la = p.last[k] * kRow;
            const scalar_t* grad = grad_mu + k * kRow;
            const scalar_t* grad_dot = grad_mu_dot + k * kRow;
            for_each([&](int64_t j, int64_t, int64_t) {
                grad_mu[lo + j] += grad[j] * mu[la + j];
                grad_mu[la + j] += grad[j] * mu[lo + j];
                grad_mu_dot[lo + j] += grad_dot[j] * mu[la + j] + grad[j] * mu_dot[la + j];
                grad_mu_dot[la + j] += grad_dot[j] * mu[lo + j] + grad[j] * mu_dot[lo + j];
            });
        }
        for (int64_t i = 0; i < p.dim_a; ++i)
            for_each([&](int64_t j, int64_t b, int64_t w) { grad_a_dot[at(b, i, p.dim_a) + w] = grad_mu_dot[i * kRow + j]; });
    }
};

// f(loops, mu, scratch, sums) for every tile, in parallel; mu has K rows, scratch `scratch_rows` rows;
// sums (sum_size entries, zeroed) is per thread and added into `total` (sum_size entries) at the end.
template <typename scalar_t, typename F>
void for_each_tile(const Polynomial& p, int64_t scratch_rows, F&& f, int64_t sum_size = 0, scalar_t* total = nullptr) {
    const std::vector<Tile> tiles = tiles_of(p);
    std::mutex adding;
    if (total != nullptr) std::fill(total, total + sum_size, scalar_t(0));
    at::parallel_for(0, static_cast<int64_t>(tiles.size()), 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> mu(p.K * kAtoms * kLanes), scratch(scratch_rows * kAtoms * kLanes), sums(sum_size);
        scalar_t* own = total != nullptr ? sums.data() : nullptr;
        for (int64_t i = begin; i < end; ++i) {
            if (tiles[i].channels == kLanes)
                f(TileLoops<scalar_t, kLanes>{p, tiles[i]}, mu.data(), scratch.data(), own);
            else
                f(TileLoops<scalar_t, 0>{p, tiles[i]}, mu.data(), scratch.data(), own);
        }
        if (total != nullptr) {
            std::lock_guard<std::mutex> guard(adding);
            for (int64_t i = 0; i < sum_size; ++i) total[i] += sums[i];
        }
    });
}

}  // namespace

at::Tensor symmetric_polynomial(const at::Tensor& a, const at::Tensor& offsets, const at::Tensor& S,
                                const at::Tensor& terms, const at::Tensor& lower, const at::Tensor& last,
                                int64_t outputs) {
    const Polynomial p = checked_polynomial(a, offsets, S, terms, lower, last, outputs);
    auto out = at::empty({a.size(0), outputs, a.size(2)}, a.options());
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "symmetric_polynomial", [&] {
        for_each_tile<scalar_t>(p, p.M, [&](const auto& loops, scalar_t* mu, scalar_t* acc, scalar_t*) {
            loops.forward(a.data_ptr<scalar_t>(), S.data_ptr<scalar_t>(), mu, acc, out.data_ptr<scalar_t>());
        });
    });
    return out;
}

namespace {
void check_like(const at::Tensor& t, const at::Tensor& a, int64_t size1, const char* what) {
    TORCH_CHECK(t.dim() == 3 && t.size(0) == a.size(0) && t.size(1) == size1 && t.size(2) == a.size(2) &&
                    t.scalar_type() == a.scalar_type(),
                what);
}
}  // namespace

// Gradients of symmetric_polynomial for the output gradient g (N, M, C): [grad_a, grad_S], grad_S
// (Z, T, C) only with weight_gradient (else an empty tensor).
std::vector<at::Tensor> symmetric_polynomial_backward(const at::Tensor& g, const at::Tensor& a, const at::Tensor& offsets,
                                                      const at::Tensor& S, const at::Tensor& terms, const at::Tensor& lower,
                                                      const at::Tensor& last, bool weight_gradient) {
    TORCH_CHECK(g.dim() == 3, "g must be (N, M, C) in the dtype of a");
    check_like(g, a, g.size(1), "g must be (N, M, C) in the dtype of a");
    const Polynomial p = checked_polynomial(a, offsets, S, terms, lower, last, g.size(1));
    auto gc = g.contiguous();
    auto grad_a = at::empty_like(a);
    auto grad_S = weight_gradient ? at::empty_like(S) : at::empty({0}, S.options());
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "symmetric_polynomial_backward", [&] {
        scalar_t* gs = weight_gradient ? grad_S.data_ptr<scalar_t>() : nullptr;
        for_each_tile<scalar_t>(p, p.K, [&](const auto& loops, scalar_t* mu, scalar_t* grad_mu, scalar_t* sums) {
            loops.backward(gc.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), S.data_ptr<scalar_t>(), mu, grad_mu,
                           grad_a.data_ptr<scalar_t>(), sums);
        }, weight_gradient ? S.numel() : 0, gs);
    });
    return {grad_a, grad_S};
}

// Forward mode along v (N, dim_a, C) through symmetric_polynomial and its backward (for the output
// gradient g): [out_dot (N, M, C), grad_a_dot (N, dim_a, C), grad_S_dot (Z, T, C)].
std::vector<at::Tensor> symmetric_polynomial_tangent(const at::Tensor& g, const at::Tensor& a, const at::Tensor& v,
                                                     const at::Tensor& offsets, const at::Tensor& S,
                                                     const at::Tensor& terms, const at::Tensor& lower,
                                                     const at::Tensor& last) {
    TORCH_CHECK(g.dim() == 3, "g must be (N, M, C) in the dtype of a");
    check_like(g, a, g.size(1), "g must be (N, M, C) in the dtype of a");
    check_like(v, a, a.size(1), "v must be (N, dim_a, C) like a");
    const Polynomial p = checked_polynomial(a, offsets, S, terms, lower, last, g.size(1));
    auto gc = g.contiguous(), vc = v.contiguous();
    auto out_dot = at::empty_like(gc), grad_a_dot = at::empty_like(a), grad_S_dot = at::empty_like(S);
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "symmetric_polynomial_tangent", [&] {
        // tangent keeps its own 4 K rows of buffers in the scratch; the K rows of mu go unused
        for_each_tile<scalar_t>(p, 4 * p.K, [&](const auto& loops, scalar_t*, scalar_t* buffers, scalar_t* sums) {
            loops.tangent(gc.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), vc.data_ptr<scalar_t>(),
                          S.data_ptr<scalar_t>(), buffers, out_dot.data_ptr<scalar_t>(),
                          grad_a_dot.data_ptr<scalar_t>(), sums);
        }, S.numel(), grad_S_dot.data_ptr<scalar_t>());
    });
    return {out_dot, grad_a_dot, grad_S_dot};
}

TORCH_LIBRARY_FRAGMENT(eqcalc_kernels, m) {
    m.def("symmetric_polynomial(Tensor a, Tensor offsets, Tensor S, Tensor terms, Tensor lower, Tensor last, "
          "int outputs) -> Tensor");
    m.def("symmetric_polynomial_backward(Tensor g, Tensor a, Tensor offsets, Tensor S, Tensor terms, "
          "Tensor lower, Tensor last, bool weight_gradient) -> Tensor[]");
    m.def("symmetric_polynomial_tangent(Tensor g, Tensor a, Tensor v, Tensor offsets, Tensor S, Tensor terms, "
          "Tensor lower, Tensor last) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(eqcalc_kernels, CPU, m) {
    m.impl("symmetric_polynomial", &symmetric_polynomial);
    m.impl("symmetric_polynomial_backward", &symmetric_polynomial_backward);
    m.impl("symmetric_polynomial_tangent", &symmetric_polynomial_tangent);
}

// Channel-wise ("uvu") Clebsch–Gordan convolution on the neighbour-slot table, forward and
// backward as CPU loops: one pass over each atom's slots, nothing per slot kept for the forward.
//
//   out[n, o_p + m, c] = Σ_{s < degree[n]} Σ_{m1} K_p[n,s][m1, m] · w[row[n,s], p, c] · x[j(n,s), i_p + m1, c]
//   K_p[n,s][m1, m]    = Σ_{m2} sh[n·D + s, h_p + m2] · cg[g_p + (m2·d1 + m1)·d + m]
//
// for every path p = (i_p, d1, h_p, d2, o_p, d, g_p): offsets and sizes of its input block, its
// spherical-harmonic block and its output block, and the offset of its coefficients in cg.
// Shapes: x (N_x, B_in, C), sh (N·D, H), w (R, P, C), out (N, B_out, C); slot n·D + s is atom n's
// s-th neighbour j(n, s), and slots s ≥ degree[n] are padding (skipped). With slots_of_pair (R − 1, 2),
// the rows of w are pairs of reverse slots (row[n·D + s] the pair of a slot, row R − 1 padding);
// without (an empty tensor), row is not read and the rows of w are the slots.
// eqcalc/nn/kernels/__init__.py registers the autograd and shape functions of these operators.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kMaxDim = 7;  // 2l + 1 for l ≤ 3

// One coupling path, with its Clebsch–Gordan coefficients as a list of the nonzero ones.
template <typename scalar_t>
struct Path {
    struct Coefficient {
        int64_t m2, m1, m;
        scalar_t value;
    };
    int64_t in_offset, d1, sh_offset, d2, out_offset, d;
    std::vector<Coefficient> coefficients;
    int64_t num_coupled[kMaxDim] = {};  // per m1: the m with a nonzero K[m1][m] ...
    int64_t coupled[kMaxDim][kMaxDim];  // ... listed here
};

struct Slots {
    const int64_t* neighbour;  // (S,) neighbour atom of each slot
    const int64_t* row;        // (S,) row of w of each slot; nullptr: row = slot (unpaired)
    const int64_t* degree;     // (N,) real slots of each atom
    int64_t num_nodes, width;

    int64_t row_of(int64_t slot) const { return row != nullptr ? row[slot] : slot; }
    int64_t end(int64_t n) const { return n * width + degree[n]; }  // one past atom n's last real slot
};

template <typename scalar_t>
std::vector<Path<scalar_t>> read_paths(const at::Tensor& paths, const at::Tensor& cg, int64_t B_in, int64_t H,
                                       int64_t B_out) {
    auto table = paths.contiguous();
    const int64_t* p = table.data_ptr<int64_t>();
    const scalar_t* values = cg.data_ptr<scalar_t>();
    std::vector<Path<scalar_t>> result(table.size(0));
    for (auto& path : result) {
        path.in_offset = p[0], path.d1 = p[1], path.sh_offset = p[2], path.d2 = p[3], path.out_offset = p[4];
        path.d = p[5];
        TORCH_CHECK(path.d1 >= 1 && path.d1 <= kMaxDim && path.d2 >= 1 && path.d2 <= kMaxDim && path.d >= 1 &&
                        path.d <= kMaxDim, "path dimensions must be 1…7 (l ≤ 3)");
        TORCH_CHECK(path.in_offset >= 0 && path.in_offset + path.d1 <= B_in && path.sh_offset >= 0 &&
                        path.sh_offset + path.d2 <= H && path.out_offset >= 0 && path.out_offset + path.d <= B_out &&
                        p[6] >= 0 && p[6] + path.d2 * path.d1 * path.d <= cg.numel(),
                    "path table entry outside x, sh, the output or cg");
        bool nonzero[kMaxDim][kMaxDim] = {};
        for (int64_t m2 = 0; m2 < path.d2; ++m2)
            for (int64_t m1 = 0; m1 < path.d1; ++m1)
                for (int64_t m = 0; m < path.d; ++m) {
                    const scalar_t value = values[p[6] + (m2 * path.d1 + m1) * path.d + m];
                    if (value != 0) {
                        path.coefficients.push_back({m2, m1, m, value});
                        nonzero[m1][m] = true;
                    }
                }
        for (int64_t m1 = 0; m1 < path.d1; ++m1)
            for (int64_t m = 0; m < path.d; ++m)
                if (nonzero[m1][m]) path.coupled[m1][path.num_coupled[m1]++] = m;
        p += 7;
    }
    return result;
}

void check_inputs(const at::Tensor& x, const at::Tensor& sh, const at::Tensor& w, const at::Tensor& neighbour,
                  const at::Tensor& row, const at::Tensor& degree, const at::Tensor& paths, const at::Tensor& cg,
                  const at::Tensor& slots_of_pair) {
    TORCH_CHECK(paths.dim() == 2 && paths.size(1) == 7 && paths.scalar_type() == at::kLong,
                "paths must be an int64 (P, 7) table");
    TORCH_CHECK(x.device().is_cpu(), "uvu_convolution runs on CPU tensors");
    TORCH_CHECK(x.dim() == 3 && w.dim() == 3 && sh.dim() == 2, "x (N, B, C), w (R, P, C), sh (S, H) expected");
    TORCH_CHECK(sh.scalar_type() == x.scalar_type() && w.scalar_type() == x.scalar_type() &&
                    cg.scalar_type() == x.scalar_type(),
                "x, sh, w and cg must share one dtype");
    TORCH_CHECK(x.is_contiguous() && sh.is_contiguous() && w.is_contiguous() && cg.is_contiguous(),
                "x, sh, w and cg must be contiguous");
    TORCH_CHECK(neighbour.scalar_type() == at::kLong && row.scalar_type() == at::kLong &&
                    degree.scalar_type() == at::kLong && neighbour.is_contiguous() && row.is_contiguous() &&
                    degree.is_contiguous(),
                "neighbour, row and degree must be contiguous int64");
    TORCH_CHECK(w.size(2) == x.size(2) && w.size(1) == paths.size(0),
                "w must be (rows, paths, channels of x)");
    TORCH_CHECK(neighbour.numel() == sh.size(0), "one neighbour per slot");
    TORCH_CHECK(slots_of_pair.numel() == 0 || row.numel() == sh.size(0), "with pairs, one row per slot");
    TORCH_CHECK(degree.numel() > 0 ? sh.size(0) % degree.numel() == 0 : sh.size(0) == 0, "slots must be N · width");
    TORCH_CHECK(slots_of_pair.numel() == 0 ||
                    (slots_of_pair.dim() == 2 && slots_of_pair.size(1) == 2 &&
                     slots_of_pair.scalar_type() == at::kLong && slots_of_pair.is_contiguous() &&
                     slots_of_pair.size(0) == w.size(0) - 1),
                "slots_of_pair must be a contiguous int64 (R - 1, 2) table, or empty (rows = slots)");
    TORCH_CHECK(slots_of_pair.numel() > 0 || w.size(0) == sh.size(0), "without pairs, w needs one row per slot");
}

Slots read_slots(const at::Tensor& neighbour, const at::Tensor& row, const at::Tensor& degree, bool paired) {
    return {neighbour.data_ptr<int64_t>(), paired ? row.data_ptr<int64_t>() : nullptr, degree.data_ptr<int64_t>(),
            degree.numel(), degree.numel() > 0 ? neighbour.numel() / degree.numel() : 0};
}

// Every index the kernels follow is in range (a bad table raises instead of reading or writing out of
// bounds): degrees within the width, neighbours among the atoms of x, and with pairs, each real slot's
// row a pair that lists it, each pair's slots real slots of that row and reverse edges of each other.
void check_indices(const Slots& slots, const at::Tensor& slots_of_pair, int64_t num_atoms, int64_t num_rows) {
    for (int64_t n = 0; n < slots.num_nodes; ++n) {
        TORCH_CHECK(slots.degree[n] >= 0 && slots.degree[n] <= slots.width, "degree ", slots.degree[n], " of atom ",
                    n, " outside 0…", slots.width);
        for (int64_t slot = n * slots.width; slot < slots.end(n); ++slot) {
            TORCH_CHECK(slots.neighbour[slot] >= 0 && slots.neighbour[slot] < num_atoms, "neighbour ",
                        slots.neighbour[slot], " of slot ", slot, " outside the ", num_atoms, " atoms of x");
            if (slots.row == nullptr) continue;
            const int64_t r = slots.row[slot];
            TORCH_CHECK(r >= 0 && r < num_rows - 1, "row ", r, " of slot ", slot, " is not a pair");
            const int64_t* pair = slots_of_pair.data_ptr<int64_t>() + 2 * r;
            TORCH_CHECK(pair[0] == slot || pair[1] == slot, "pair ", r, " does not list its slot ", slot);
        }
    }
    if (slots.row == nullptr) return;
    TORCH_CHECK(num_atoms == slots.num_nodes, "with pairs, every atom of x must be a centre atom");
    const int64_t* pairs = slots_of_pair.data_ptr<int64_t>();
    const int64_t num_slots = slots.num_nodes * slots.width;
    for (int64_t k = 0; k < slots_of_pair.numel(); ++k) {
        const int64_t slot = pairs[k];
        TORCH_CHECK(slot >= 0 && slot < num_slots && slot < slots.end(slot / slots.width) &&
                        slots.row[slot] == k / 2,
                    "pair ", k / 2, " lists slot ", slot, ", which is not a real slot of that pair");
        const int64_t other = pairs[k ^ 1];  // the reverse edge: its centre is this slot's neighbour
        TORCH_CHECK(other != slot && other >= 0 && other < num_slots && slots.neighbour[slot] == other / slots.width,
                    "the slots of pair ", k / 2, " are not reverse edges");
    }
}

// check_inputs and check_indices, then the slot table.
Slots checked_slots(const at::Tensor& x, const at::Tensor& sh, const at::Tensor& w, const at::Tensor& neighbour,
                    const at::Tensor& row, const at::Tensor& degree, const at::Tensor& paths, const at::Tensor& cg,
                    const at::Tensor& slots_of_pair) {
    check_inputs(x, sh, w, neighbour, row, degree, paths, cg, slots_of_pair);
    const Slots slots = read_slots(neighbour, row, degree, slots_of_pair.numel() > 0);
    check_indices(slots, slots_of_pair, x.size(0), w.size(0));
    return slots;
}

// kChannels: C at compile time (fully unrolled channel loops), 0: C = channels at run time.
template <typename scalar_t, int64_t kChannels>
struct Convolution {
    const scalar_t* x;   // (N_x, B_in, C)
    const scalar_t* sh;  // (S, H)
    const scalar_t* w;   // (R, P, C)
    Slots slots;
    const std::vector<Path<scalar_t>>& paths;
    int64_t B_in, H, channels, B_out;

    int64_t num_channels() const { return kChannels > 0 ? kChannels : channels; }

    int64_t num_paths() const { return static_cast<int64_t>(paths.size()); }

    // K[m1][m] = Σ_m2 sh[slot, h_p + m2] · cg_p[m2, m1, m], at the coupled (m1, m)
    static void coupling(const scalar_t* y, const Path<scalar_t>& path, scalar_t K[kMaxDim][kMaxDim]) {
        for (int64_t m1 = 0; m1 < path.d1; ++m1)
            for (int64_t i = 0; i < path.num_coupled[m1]; ++i) K[m1][path.coupled[m1][i]] = 0;
        for (const auto& c : path.coefficients) K[c.m1][c.m] += y[c.m2] * c.value;
    }

    const scalar_t* weights(int64_t slot, int64_t p) const {
        return w + (slots.row_of(slot) * num_paths() + p) * num_channels();
    }
    const scalar_t* neighbour_features(int64_t slot) const { return x + slots.neighbour[slot] * B_in * num_channels(); }

    // h[c] = Σ_m K[m1][m] g[o_p + m, c]: the output gradient taken back through the coupling
    void back_project(const scalar_t K[kMaxDim][kMaxDim], int64_t m1, const Path<scalar_t>& path, const scalar_t* g,
                      scalar_t* __restrict__ h) const {
        const int64_t C = num_channels();
        std::fill(h, h + C, scalar_t(0));
        for (int64_t i = 0; i < path.num_coupled[m1]; ++i) {
            const int64_t m = path.coupled[m1][i];
            const scalar_t k = K[m1][m];
            const scalar_t* __restrict__ gv = g + (path.out_offset + m) * C;
            for (int64_t c = 0; c < C; ++c) h[c] += k * gv[c];
        }
    }

    // acc (B_out, C) += the slot's message; scratch: C entries
    void add_message(int64_t slot, scalar_t* acc, scalar_t* __restrict__ scratch) const {
        const int64_t C = num_channels();
        scalar_t K[kMaxDim][kMaxDim];
        const scalar_t* x_j = neighbour_features(slot);
        for (int64_t p = 0; p < num_paths(); ++p) {
            const Path<scalar_t>& path = paths[p];
            coupling(sh + slot * H + path.sh_offset, path, K);
            const scalar_t* __restrict__ wv = weights(slot, p);
            for (int64_t m1 = 0; m1 < path.d1; ++m1) {
                const scalar_t* __restrict__ xv = x_j + (path.in_offset + m1) * C;
                for (int64_t c = 0; c < C; ++c) scratch[c] = wv[c] * xv[c];
                for (int64_t i = 0; i < path.num_coupled[m1]; ++i) {
                    const int64_t m = path.coupled[m1][i];
                    const scalar_t k = K[m1][m];
                    scalar_t* __restrict__ a = acc + (path.out_offset + m) * C;
                    for (int64_t c = 0; c < C; ++c) a[c] += k * scratch[c];
                }
            }
        }
    }

    // For the output gradient g (B_out, C) of the slot's centre atom: grad_w_row (P, C) += ∂/∂w of the
    // slot's weight row, grad_sh_row (H) += ∂/∂sh of the slot; scratch: 2 C entries
    void add_weight_and_sh_gradient(int64_t slot, const scalar_t* g, scalar_t* grad_w_row, scalar_t* grad_sh_row,
                                    scalar_t* __restrict__ scratch) const {
        const int64_t C = num_channels();
        scalar_t K[kMaxDim][kMaxDim], grad_K[kMaxDim][kMaxDim];
        scalar_t* __restrict__ h = scratch;
        scalar_t* __restrict__ wx = scratch + C;
        const scalar_t* x_j = neighbour_features(slot);
        for (int64_t p = 0; p < num_paths(); ++p) {
            const Path<scalar_t>& path = paths[p];
            coupling(sh + slot * H + path.sh_offset, path, K);
            const scalar_t* __restrict__ wv = weights(slot, p);
            scalar_t* __restrict__ gw = grad_w_row + p * C;
            for (int64_t m1 = 0; m1 < path.d1; ++m1) {
                const scalar_t* __restrict__ xv = x_j + (path.in_offset + m1) * C;
                back_project(K, m1, path, g, h);
                for (int64_t c = 0; c < C; ++c) {
                    gw[c] += xv[c] * h[c];
                    wx[c] = wv[c] * xv[c];
                }
                for (int64_t i = 0; i < path.num_coupled[m1]; ++i) {
                    const int64_t m = path.coupled[m1][i];
                    const scalar_t* __restrict__ gv = g + (path.out_offset + m) * C;
                    scalar_t dot = 0;
#pragma omp simd reduction(+ : dot)
                    for (int64_t c = 0; c < C; ++c) dot += wx[c] * gv[c];
                    grad_K[m1][m] = dot;
                }
            }
            for (const auto& c : path.coefficients) grad_sh_row[path.sh_offset + c.m2] += c.value * grad_K[c.m1][c.m];
        }
    }

    // grad_x_row (B_in, C) += ∂/∂x of the slot's neighbour, for the output gradient g of its centre;
    // scratch: C entries
    void add_feature_gradient(int64_t slot, const scalar_t* g, scalar_t* grad_x_row,
                              scalar_t* __restrict__ scratch) const {
        const int64_t C = num_channels();
        scalar_t K[kMaxDim][kMaxDim];
        for (int64_t p = 0; p < num_paths(); ++p) {
            const Path<scalar_t>& path = paths[p];
            coupling(sh + slot * H + path.sh_offset, path, K);
            const scalar_t* __restrict__ wv = weights(slot, p);
            for (int64_t m1 = 0; m1 < path.d1; ++m1) {
                back_project(K, m1, path, g, scratch);
                scalar_t* __restrict__ gx = grad_x_row + (path.in_offset + m1) * C;
                for (int64_t c = 0; c < C; ++c) gx[c] += wv[c] * scratch[c];
            }
        }
    }
};

// Every output below is written whole by its kernel (rows zeroed where they are accumulated, in
// cache), so the operators allocate them uninitialised: no separate zero-fill pass over the per-pair
// arrays, the largest the model has.
template <typename scalar_t>
void zero(scalar_t* row, int64_t size) {
    std::fill(row, row + size, scalar_t(0));
}

template <typename scalar_t, int64_t kChannels>
void forward_kernel(const Convolution<scalar_t, kChannels>& conv, scalar_t* out) {
    const Slots& slots = conv.slots;
    const int64_t out_row = conv.B_out * conv.num_channels();
    at::parallel_for(0, slots.num_nodes, 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> scratch(conv.num_channels());
        for (int64_t n = begin; n < end; ++n) {
            zero(out + n * out_row, out_row);
            for (int64_t slot = n * slots.width; slot < slots.end(n); ++slot)
                conv.add_message(slot, out + n * out_row, scratch.data());
        }
    });
}

// grad_w (R, P, C), grad_x (num_atoms, B_in, C), grad_sh (S, H), written whole. With pair_slots (R − 1, 2)
// the rows of w are pairs of reverse slots (row R − 1: padding) and a pair's weight gradient sums its two
// slots; without (nullptr: cells smaller than 2 r_c, pieces of chunked evaluation) the rows are the slots
// themselves. Each of the num_atoms atoms of x gathers the feature gradients of the slots whose neighbour it
// is (listed by a counting sort). All in parallel without conflicts.
template <typename scalar_t, int64_t kChannels>
void backward_kernel(const Convolution<scalar_t, kChannels>& conv, const scalar_t* g, const int64_t* pair_slots,
                     int64_t num_pairs, int64_t num_atoms, scalar_t* grad_w, scalar_t* grad_x, scalar_t* grad_sh) {
    const Slots& slots = conv.slots;
    const int64_t C = conv.num_channels(), w_row = conv.num_paths() * C, x_row = conv.B_in * C, g_row = conv.B_out * C;
    auto centre = [&](int64_t slot) { return slot / slots.width; };
    if (pair_slots != nullptr) {
        // padding: the padding pair's row and the padding slots' sh rows, which no pair covers
        zero(grad_w + num_pairs * w_row, w_row);
        at::parallel_for(0, slots.num_nodes, 16, [&](int64_t begin, int64_t end) {
            for (int64_t n = begin; n < end; ++n) zero(grad_sh + slots.end(n) * conv.H, ((n + 1) * slots.width - slots.end(n)) * conv.H);
        });
        at::parallel_for(0, num_pairs, 16, [&](int64_t begin, int64_t end) {
            std::vector<scalar_t> scratch(2 * C);
            for (int64_t r = begin; r < end; ++r) {
                zero(grad_w + r * w_row, w_row);
                for (int64_t slot : {pair_slots[2 * r], pair_slots[2 * r + 1]}) {
                    zero(grad_sh + slot * conv.H, conv.H);
                    conv.add_weight_and_sh_gradient(slot, g + centre(slot) * g_row, grad_w + r * w_row,
                                                    grad_sh + slot * conv.H, scratch.data());
                }
            }
        });
    } else {
        at::parallel_for(0, slots.num_nodes, 1, [&](int64_t begin, int64_t end) {
            std::vector<scalar_t> scratch(2 * C);
            for (int64_t n = begin; n < end; ++n) {
                zero(grad_w + n * slots.width * w_row, slots.width * w_row);  // the padding slots' rows too
                zero(grad_sh + n * slots.width * conv.H, slots.width * conv.H);
                for (int64_t slot = n * slots.width; slot < slots.end(n); ++slot)
                    conv.add_weight_and_sh_gradient(slot, g + n * g_row, grad_w + slot * w_row,
                                                    grad_sh + slot * conv.H, scratch.data());
            }
        });
    }
    // the real slots listed by neighbour atom (a counting sort), so each atom gathers what is sent to it
    std::vector<int64_t> first(num_atoms + 1, 0);
    for (int64_t n = 0; n < slots.num_nodes; ++n)
        for (int64_t slot = n * slots.width; slot < slots.end(n); ++slot) ++first[slots.neighbour[slot] + 1];
    for (int64_t j = 0; j < num_atoms; ++j) first[j + 1] += first[j];
    std::vector<int64_t> incoming(first[num_atoms]), next(first.begin(), first.end() - 1);
    for (int64_t n = 0; n < slots.num_nodes; ++n)
        for (int64_t slot = n * slots.width; slot < slots.end(n); ++slot)
            incoming[next[slots.neighbour[slot]]++] = slot;
    at::parallel_for(0, num_atoms, 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> scratch(C);
        for (int64_t j = begin; j < end; ++j) {
            zero(grad_x + j * x_row, x_row);
            for (int64_t k = first[j]; k < first[j + 1]; ++k)
                conv.add_feature_gradient(incoming[k], g + centre(incoming[k]) * g_row, grad_x + j * x_row,
                                          scratch.data());
        }
    });
}

// f(std::integral_constant<int64_t, C>) for the common channel counts, f(…<int64_t, 0>) for others.
template <typename F>
void with_channels(int64_t C, F&& f) {
    switch (C) {
        case 8: f(std::integral_constant<int64_t, 8>{}); break;
        case 16: f(std::integral_constant<int64_t, 16>{}); break;
        case 32: f(std::integral_constant<int64_t, 32>{}); break;
        case 64: f(std::integral_constant<int64_t, 64>{}); break;
        case 128: f(std::integral_constant<int64_t, 128>{}); break;
        default: f(std::integral_constant<int64_t, 0>{});
    }
}

// f(conv) with the Convolution of these (checked) inputs, in their dtype and channel count, B_out output blocks.
template <typename F>
void with_convolution(const at::Tensor& x, const at::Tensor& sh, const at::Tensor& w, const Slots& slots,
                      const at::Tensor& paths, const at::Tensor& cg, int64_t B_out, F&& f) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "uvu_convolution", [&] {
        const auto path_list = read_paths<scalar_t>(paths, cg, x.size(1), sh.size(1), B_out);
        with_channels(x.size(2), [&](auto channels) {
            const Convolution<scalar_t, decltype(channels)::value> conv{
                x.data_ptr<scalar_t>(), sh.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), slots, path_list,
                x.size(1), sh.size(1), x.size(2), B_out};
            f(conv);
        });
    });
}

}  // namespace

at::Tensor uvu_convolution(const at::Tensor& x, const at::Tensor& sh, const at::Tensor& w,
                           const at::Tensor& neighbour, const at::Tensor& row, const at::Tensor& degree,
                           const at::Tensor& paths, const at::Tensor& cg, const at::Tensor& slots_of_pair,
                           int64_t out_blocks) {
    const Slots slots = checked_slots(x, sh, w, neighbour, row, degree, paths, cg, slots_of_pair);
    auto out = at::empty({degree.numel(), out_blocks, x.size(2)}, x.options());
    with_convolution(x, sh, w, slots, paths, cg, out_blocks, [&](const auto& conv) {
        using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(conv.x)>>;
        forward_kernel(conv, out.data_ptr<scalar_t>());
    });
    return out;
}

// Gradients of uvu_convolution for the output gradient g (N, B_out, C): [grad_x, grad_sh, grad_w].
std::vector<at::Tensor> uvu_convolution_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& sh,
                                                 const at::Tensor& w, const at::Tensor& neighbour,
                                                 const at::Tensor& row, const at::Tensor& degree,
                                                 const at::Tensor& paths, const at::Tensor& cg,
                                                 const at::Tensor& slots_of_pair) {
    const Slots slots = checked_slots(x, sh, w, neighbour, row, degree, paths, cg, slots_of_pair);
    TORCH_CHECK(g.dim() == 3 && g.size(0) == degree.numel() && g.size(2) == x.size(2) &&
                    g.scalar_type() == x.scalar_type(),
                "g must be (N, B_out, C) in the dtype of x");
    auto gc = g.contiguous();
    auto grad_x = at::empty_like(x), grad_sh = at::empty_like(sh), grad_w = at::empty_like(w);
    const bool paired = slots_of_pair.numel() > 0;
    with_convolution(x, sh, w, slots, paths, cg, gc.size(1), [&](const auto& conv) {
        using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(conv.x)>>;
        backward_kernel(conv, gc.data_ptr<scalar_t>(), paired ? slots_of_pair.data_ptr<int64_t>() : nullptr,
                        slots_of_pair.size(0), x.size(0), grad_w.data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>(),
                        grad_sh.data_ptr<scalar_t>());
    });
    return {grad_x, grad_sh, grad_w};
}

TORCH_LIBRARY(eqcalc_kernels, m) {
    m.def("uvu_convolution(Tensor x, Tensor sh, Tensor w, Tensor neighbour, Tensor row, Tensor degree, "
          "Tensor paths, Tensor cg, Tensor slots_of_pair, int out_blocks) -> Tensor");
    m.def("uvu_convolution_backward(Tensor g, Tensor x, Tensor sh, Tensor w, Tensor neighbour, Tensor row, "
          "Tensor degree, Tensor paths, Tensor cg, Tensor slots_of_pair) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(eqcalc_kernels, CPU, m) {
    m.impl("uvu_convolution", &uvu_convolution);
    m.impl("uvu_convolution_backward", &uvu_convolution_backward);
}

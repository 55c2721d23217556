"""Hand-written CPU kernels, built with the local C++ compiler on first use.

:func:`uvu_convolution` is the channel-wise Clebsch–Gordan convolution of the NequIP and MACE
families (:class:`~eqcalc.nn.tensor_product.ConvolutionProduct`) as one loop over each atom's
neighbour slots, forward and backward (``convolution.cpp``): no per-slot tensors in memory,
one operator call per layer instead of several per coupling path. (The per-edge inputs, spherical
harmonics and radial weights, are still tensors.)

:func:`symmetric_polynomial` is MACE's species-weighted product basis
(:class:`~eqcalc.models.mace.ProductBasis`) per atom and channel (``product_basis.cpp``):
the monomials of the atomic basis are formed tile by tile in cache, never as a tensor.

:func:`radial_spline` evaluates tabulated radial functions (:class:`~eqcalc.nn.radial.RadialSpline`,
the radial MLPs of frozen NequIP and MACE models) as cubic Hermite splines
(``radial_spline.cpp``): a few multiply-adds per output instead of the MLP's matrix products,
and nothing kept for the backward pass but the distances.

The source is compiled by ``torch.utils.cpp_extension`` into torch's extension cache
(``~/.cache/torch_extensions``, or ``$TORCH_EXTENSIONS_DIR``; :func:`build_directory`) the first
time it is needed, one process at a time (a build interrupted by a kill is detected and redone),
once per CPU type (the build is tuned to the CPU it runs on, and named after it, so
a home directory shared by different nodes keeps one build per CPU type). Without a working
C++ compiler, or with ``EQCALC_KERNELS=0`` in the environment, :func:`available` is False and
the models keep their pure-torch path.

A training loss on forces and stress runs on the convolution and the product basis: the
convolution's backward is differentiable again to any order (its derivatives are the forward and
backward operators called with other arguments); the product basis gives the gradient of its
weights and a second derivative (the backward's own derivative in forward mode, one more
operator), not a third (a clear error). The spline is for inference: differentiable once, with
no gradient for its table.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import sys
import threading
import warnings
from pathlib import Path

import torch

SOURCES = [Path(__file__).with_name(name) for name in ("convolution.cpp", "product_basis.cpp", "radial_spline.cpp")]
# at::parallel_for runs the atoms on torch's OpenMP threads only when the source is built with OpenMP
# (libgomp: the one torch's own wheel loads); elsewhere the loops run on one thread
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []


class KernelSwitch:
    """A module with a CPU-kernel path, switched by ``use_kernel`` (off unless
    :meth:`~eqcalc.models.base.AtomisticModel.set_kernels` turns it on)."""

    use_kernel: bool = False


def _cpu_fingerprint() -> str:
    """A short name for this CPU type (x86 model and flags, ARM implementer, part and features):
    the build uses its instruction set (-march=native)."""
    fields = {"machine": platform.machine()}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key = line.split(":")[0].strip()
                if key in ("model name", "flags", "Features", "CPU implementer", "CPU part", "CPU variant"):
                    fields.setdefault(key, line)
    except OSError:
        fields["processor"] = platform.processor()
    return hashlib.sha1(repr(sorted(fields.items())).encode()).hexdigest()[:10]


_BUILD_LOCK = threading.Lock()


def available() -> bool:
    """Whether the kernels are built and loaded: :func:`build` on the first call, its answer
    after (thread-safe: threads that ask during the first build wait for its answer)."""
    with _BUILD_LOCK:
        return _built()


@functools.cache
def _built() -> bool:
    return build()


def build() -> bool:
    """Build the kernels (or load the cached build) and register their operators: False, with a
    warning saying why, where that fails; False without trying under ``EQCALC_KERNELS=0``."""
    if os.environ.get("EQCALC_KERNELS", "1") == "0":
        return False
    try:
        from torch.utils.cpp_extension import load

        name = f"eqcalc_kernels_{_cpu_fingerprint()}"
        directory = build_directory(name)
        with _exclusive_build(directory), _ninja_on_path():
            load(
                name,
                [str(source) for source in SOURCES],
                extra_cflags=["-O3", "-march=native", *OPENMP],
                extra_ldflags=OPENMP,
                build_directory=str(directory),
                is_python_module=False,
            )
    except Exception as error:  # no compiler, no ninja, a failed build: keep the torch path
        warnings.warn(
            f"eqcalc's CPU kernels could not be built ({type(error).__name__}: {str(error)[-500:]}); "
            "using the slower pure-torch convolutions. Install a C++ compiler (g++) and ninja "
            "(pip install ninja) to build them, or set EQCALC_KERNELS=0 to skip the attempt.",
            stacklevel=2,
        )
        return False
    _register_autograd_and_shapes()
    return True


def build_directory(name: str) -> Path:
    """Where the kernels named ``name`` are built: torch's extension cache
    (``$TORCH_EXTENSIONS_DIR``, else ``~/.cache/torch_extensions``), one folder per Python ABI and
    torch version."""
    from torch.utils.cpp_extension import get_default_build_root

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    directory = root / f"{python}_torch{torch.__version__}" / name
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@contextlib.contextmanager
def _exclusive_build(directory: Path):
    """Hold an exclusive ``flock`` on ``directory/eqcalc.lock`` while torch builds or loads there.

    torch's own lock is a file that exists while a build runs; a build that is killed leaves it
    behind, and every later build waits on it forever. The kernel lock is released by the kernel
    when its holder dies, and whoever holds it is the only eqcalc process building in
    ``directory``, so a torch lock found then is stale: it is removed, with a warning."""
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's lock alone
        yield
        return
    with open(directory / "eqcalc.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            stale = directory / "lock"
            if stale.exists():
                warnings.warn(
                    f"removed a stale build lock {stale} left by an interrupted build of eqcalc's kernels; "
                    "building again.",
                    stacklevel=4,
                )
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _ninja_on_path():
    """torch's extension builder runs ``ninja`` from PATH: add the pip package's (a dependency of
    eqcalc), which is not on PATH when the environment's python runs without activation, for the
    duration of the build only."""
    try:
        import ninja
    except ImportError:
        yield
        return
    saved = os.environ.get("PATH")
    if ninja.BIN_DIR not in (saved or "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, saved or ""])
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = saved


def uvu_convolution(
    x: torch.Tensor,
    sh: torch.Tensor,
    w: torch.Tensor,
    neighbour: torch.Tensor,
    row: torch.Tensor,
    degree: torch.Tensor,
    paths: torch.Tensor,
    cg: torch.Tensor,
    slots_of_pair: torch.Tensor,
    out_blocks: int,
) -> torch.Tensor:
    """out[n, o_p + m, c] = Σ_s Σ_m1 K_p[n,s][m1, m] w[row[n·D+s], p, c] x[neighbour[n·D+s], i_p + m1, c],
    K_p = Σ_m2 sh[n·D+s, h_p + m2] cg_p[m2, m1, m], summed over atom n's first degree[n] slots.

    Args:
        x: (N, B_in, C) neighbour features, input blocks stacked m-major.
        sh: (N·D, H) spherical harmonics per slot.
        w: (R, P, C) radial weights per row (pair or slot).
        neighbour: (N·D,) int64 neighbour atom of each slot.
        row: (N·D,) int64 the pair (row of w) of each slot when rows are pairs; not read otherwise.
        degree: (N,) int64 real slots of each atom (the rest of its D are padding).
        paths: (P, 7) int64 per path (i_p, d1, h_p, d2, o_p, d, offset of cg_p in ``cg``).
        cg: flat coefficients, cg_p laid out (d2, d1, d).
        slots_of_pair: (R − 1, 2) int64 the two slots of each row when rows are pairs of reverse
            slots (row R − 1: padding), or a (0, 2) tensor when the rows of w are the slots.
        out_blocks: B_out = Σ_p d.

    Every index is checked (a bad table raises a RuntimeError naming it).

    Returns:
        (N, B_out, C), differentiable to any order in x, sh and w.
    """
    return torch.ops.eqcalc_kernels.uvu_convolution(
        x, sh, w, neighbour, row, degree, paths, cg, slots_of_pair, out_blocks
    )


def symmetric_polynomial(
    a: torch.Tensor,
    offsets: torch.Tensor,
    weights: torch.Tensor,
    terms: torch.Tensor,
    lower: torch.Tensor,
    last: torch.Tensor,
    outputs: int,
) -> torch.Tensor:
    """out[n, M_t, c] = Σ_t weights[z(n), t, c] · μ_{k_t}(a[n, :, c]) over the terms t = (k_t, M_t),
    with the monomials μ_k = a[n, k, c] (k < dim_a) and μ_k = μ_{lower[k]} · a[n, last[k], c] above.

    Args:
        a: (N, dim_a, C) atomic basis, atoms sorted by species.
        offsets: (Z + 1,) int64, atoms offsets[z] … offsets[z + 1] − 1 are of species z.
        weights: (Z, T, C) coefficient of each term per species and channel.
        terms: (T, 2) int64 (monomial k_t, output component M_t).
        lower, last: (K,) int64 the factors of each monomial (entries below dim_a unused).
        outputs: M, the output components per channel.

    Every index is checked (a bad table raises a RuntimeError naming it).

    Returns:
        (N, M, C), differentiable twice in ``a`` and ``weights``.
    """
    return torch.ops.eqcalc_kernels.symmetric_polynomial(a, offsets, weights, terms, lower, last, outputs)


def radial_spline(
    distances: torch.Tensor, values: torch.Tensor, slopes: torch.Tensor, start: float, spacing: float
) -> torch.Tensor:
    """R(r) (R, O): the cubic Hermite spline through ``values`` and ``slopes`` (both (K + 1, O); slopes
    are h · dR/dr) at the knots ``start`` + k · ``spacing``, k = 0…K, for the distances (R,); zero from
    the last knot on. Differentiable once in the distances (a NaN distance, or one below ``start``,
    raises)."""
    return torch.ops.eqcalc_kernels.radial_spline(distances, values, slopes, start, spacing)


@functools.cache  # once per process
def _register_autograd_and_shapes() -> None:
    """Gradients (through the backward operator) and output shapes (for torch.compile) of the
    operators that the C++ source defines."""
    operators = torch.ops.eqcalc_kernels

    @torch.library.register_fake("eqcalc_kernels::uvu_convolution")
    def _(x, sh, w, neighbour, row, degree, paths, cg, slots_of_pair, out_blocks):
        return x.new_empty((degree.shape[0], out_blocks, x.shape[2]))

    @torch.library.register_fake("eqcalc_kernels::uvu_convolution_backward")
    def _(grad, x, sh, w, neighbour, row, degree, paths, cg, slots_of_pair):
        return [torch.empty_like(x), torch.empty_like(sh), torch.empty_like(w)]

    @torch.library.register_fake("eqcalc_kernels::symmetric_polynomial")
    def _(a, offsets, weights, terms, lower, last, outputs):
        return a.new_empty((a.shape[0], outputs, a.shape[2]))

    @torch.library.register_fake("eqcalc_kernels::symmetric_polynomial_backward")
    def _(grad, a, offsets, weights, terms, lower, last, weight_gradient):
        return [torch.empty_like(a), torch.empty_like(weights) if weight_gradient else weights.new_empty(0)]

    @torch.library.register_fake("eqcalc_kernels::symmetric_polynomial_tangent")
    def _(grad, a, v, offsets, weights, terms, lower, last):
        return [torch.empty_like(grad), torch.empty_like(a), torch.empty_like(weights)]

    @torch.library.register_fake("eqcalc_kernels::radial_spline")
    def _(distances, values, slopes, start, spacing):
        return values.new_empty((distances.shape[0], values.shape[1]))

    @torch.library.register_fake("eqcalc_kernels::radial_spline_backward")
    def _(grad, distances, values, slopes, start, spacing):
        return torch.empty_like(distances)

    def save_inputs(ctx, inputs, output):
        ctx.save_for_backward(*(x for x in inputs if isinstance(x, torch.Tensor)))
        ctx.numbers = [x for x in inputs if not isinstance(x, torch.Tensor)]

    def convolution_backward(ctx, grad):
        grad_x, grad_sh, grad_w = operators.uvu_convolution_backward(grad, *ctx.saved_tensors)
        return grad_x, grad_sh, grad_w, None, None, None, None, None, None, None

    def convolution_double_backward(ctx, grads):
        """The backward of the backward, from the operators themselves (so differentiable again).

        out = T(x, sh, w) is linear in each of x, sh and w, and the backward returns
        (T_x*(g, sh, w), T_sh*(g, x, w), T_w*(g, x, sh)), where backward(g, x', sh', w') computes
        all three for any arguments. With S = <vx, ·> + <vsh, ·> + <vw, ·> of those three,
        S = <g, T(vx, sh, w) + T(x, vsh, w) + T(x, sh, vw)>, so
        ∂S/∂g = T(vx, sh, w) + T(x, vsh, w) + T(x, sh, vw), and ∂S/∂x, ∂S/∂sh, ∂S/∂w are the
        matching outputs of backward(g, x, vsh, w), backward(g, x, sh, vw), backward(g, vx, sh, w).
        """
        grad, x, sh, w, *tables = ctx.saved_tensors
        vx, vsh, vw = (None if v is None else v.contiguous() for v in grads)
        out_blocks = grad.shape[1]
        d_grad = d_x = d_sh = d_w = None

        def add(total, term):
            return term if total is None else total + term

        for inputs, direction in (((vx, sh, w), vx), ((x, vsh, w), vsh), ((x, sh, vw), vw)):
            if direction is not None and ctx.needs_input_grad[0]:
                d_grad = add(d_grad, operators.uvu_convolution(*inputs, *tables, out_blocks))
        if vsh is not None:
            gx, _, gw = operators.uvu_convolution_backward(grad, x, vsh, w, *tables)
            d_x, d_w = add(d_x, gx), add(d_w, gw)
        if vw is not None:
            gx, gsh, _ = operators.uvu_convolution_backward(grad, x, sh, vw, *tables)
            d_x, d_sh = add(d_x, gx), add(d_sh, gsh)
        if vx is not None:
            _, gsh, gw = operators.uvu_convolution_backward(grad, vx, sh, w, *tables)
            d_sh, d_w = add(d_sh, gsh), add(d_w, gw)
        return d_grad, d_x, d_sh, d_w, None, None, None, None, None, None

    def polynomial_backward(ctx, grad):
        a, offsets, weights, terms, lower, last = ctx.saved_tensors
        grad_a, grad_weights = operators.symmetric_polynomial_backward(
            grad.contiguous(), a, offsets, weights, terms, lower, last, ctx.needs_input_grad[2]
        )
        return grad_a, None, grad_weights if ctx.needs_input_grad[2] else None, None, None, None, None

    def polynomial_double_backward(ctx, grads):
        """The backward of the backward: with P(a, S) = out and the backward's outputs
        (∂<g, P>/∂a, ∂<g, P>/∂S), the sum L = <va, ∂<g, P>/∂a> + <vS, ∂<g, P>/∂S> has
        ∂L/∂g = Ṗ (P's derivative along va) + P(a, vS), ∂L/∂a = H·va (the Hessian of <g, P> in a)
        + ∂<g, P(a, vS)>/∂a and ∂L/∂S = ∂<g, Ṗ>/∂S: the tangent operator gives Ṗ, H·va and
        ∂<g, Ṗ>/∂S in one pass; P(a, vS) and its gradient are the forward and backward with
        weights vS."""
        grad, a, offsets, weights, terms, lower, last = ctx.saved_tensors
        va, vS = grads[0], grads[1]
        if vS is not None and vS.numel() == 0:  # the backward's empty grad_S (no weight gradient asked for)
            vS = None
        tables = (terms, lower, last)
        d_grad = d_a = d_weights = None
        if va is not None:
            d_grad, d_a, d_weights = operators.symmetric_polynomial_tangent(
                grad, a, va.contiguous(), offsets, weights, *tables
            )
        if vS is not None:
            vS = vS.contiguous()
            by_vS = operators.symmetric_polynomial(a, offsets, vS, *tables, grad.shape[1])
            d_grad = by_vS if d_grad is None else d_grad + by_vS
            if ctx.needs_input_grad[1]:
                grad_a = operators.symmetric_polynomial_backward(grad, a, offsets, vS, *tables, False)[0]
                d_a = grad_a if d_a is None else d_a + grad_a
        return d_grad, d_a, None, d_weights, None, None, None, None

    def no_second_derivative(ctx, *grads):
        raise RuntimeError(
            "eqcalc's radial-spline kernel is differentiable once (energies, forces, stress) and its product-basis "
            "kernel twice (a training loss on forces and stress), not more: for higher derivatives use the torch "
            "path, model.set_kernels(False)."
        )

    def spline_backward(ctx, grad):
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:  # the table: values, slopes
            raise RuntimeError("eqcalc's radial-spline kernel gives no gradient for its table: it is for inference.")
        return operators.radial_spline_backward(grad, *ctx.saved_tensors, *ctx.numbers), None, None, None, None

    backwards = {
        "uvu_convolution": convolution_backward,
        "symmetric_polynomial": polynomial_backward,
        "radial_spline": spline_backward,
    }
    double_backwards = {
        "uvu_convolution": (convolution_double_backward, save_inputs),
        "symmetric_polynomial": (polynomial_double_backward, save_inputs),
    }
    refuse = (no_second_derivative, lambda ctx, inputs, output: None)
    for operator, backward in backwards.items():
        torch.library.register_autograd(f"eqcalc_kernels::{operator}", backward, setup_context=save_inputs)
        double_backward, setup = double_backwards.get(operator, refuse)
        torch.library.register_autograd(f"eqcalc_kernels::{operator}_backward", double_backward, setup_context=setup)
    torch.library.register_autograd("eqcalc_kernels::symmetric_polynomial_tangent", refuse[0], setup_context=refuse[1])

"""The CPU kernels (eqcalc.nn.kernels): the convolution of NequIP and MACE, MACE's product basis.

They must give the torch path's energies, forces, stress and parameter gradients (float64, 1e-12)
on paired (molecule, large cell) and unpaired (cell smaller than the cutoff) neighbour lists,
for channel counts compiled in (8, 16) and read at run time (12), with l up to 3; the product
basis for correlations 1–4, whole and partial channel tiles, frozen or not; forces and stress
must match finite differences and be equivariant; the convolution's backward is differentiable
again (training losses on forces and stress), the product basis's once more (a third derivative
raises a clear error); bad index
tables must raise clear errors; and a failed build must leave the torch path working.
"""

import numpy as np
import pytest
import torch
from ase.build import molecule

import eqcalc
from eqcalc import EquivariantCalculator
from eqcalc.data.graph import atoms_to_graph
from eqcalc.data.structures import water_box
from eqcalc.nn import kernels
from eqcalc.properties import compute_properties
from eqcalc.testing.physics import force_fd_error, randomize_energy_offsets, stress_fd_error, symmetry_errors

pytestmark = pytest.mark.skipif(not kernels.available(), reason="eqcalc's CPU kernels could not be built here")

CUTOFF = 4.0
MODELS = {  # l of the features (and of the edge spherical harmonics), channels
    "nequip": ("nequip", {"num_features": 12, "lmax": 2, "num_layers": 2}),
    "mace": ("mace", {"num_channels": 16, "max_L": 2, "lmax": 2}),
    "mace-l3": ("mace", {"num_channels": 8, "max_L": 1, "lmax": 3, "correlation": 2}),
}


def small_model(name):
    family, sizes = MODELS[name]
    torch.manual_seed(0)
    model = eqcalc.build_model(family, species=[1, 6, 8, 29], cutoff=CUTOFF, avg_num_neighbors=8.0, **sizes)
    return randomize_energy_offsets(model).double()


def structures(triclinic_cu):
    return {"ethanol": molecule("CH3CH2OH"), "water box": water_box(seed=2), "small cell": triclinic_cu}


def properties(model, atoms, kernel: bool):
    assert model.set_kernels(kernel) == kernel
    graph = atoms_to_graph(atoms, CUTOFF)
    return compute_properties(model, graph, forces=True, stress=bool(atoms.pbc.any()))


@pytest.mark.parametrize("family", list(MODELS))
def test_kernel_equals_torch_path(family, triclinic_cu):
    # without weight gradients, as in the calculator, so that the product-basis kernel runs; not frozen:
    # the radial MLPs, not their tables (tests/models/test_radial_spline.py), on both paths
    model = small_model(family).eval().requires_grad_(False)
    for name, atoms in structures(triclinic_cu).items():
        reference, fused = properties(model, atoms, False), properties(model, atoms, True)
        for key, value in reference.items():
            scale = float(value.detach().abs().max())
            error = float((fused[key] - value).detach().abs().max())
            assert error <= 1e-12 * max(scale, 1e-3), (name, key, error, scale)


@pytest.mark.parametrize("family", list(MODELS))
def test_kernel_parameter_gradients_equal_torch_path(family, triclinic_cu):
    """The kernel's backward also gives the gradients of its weights (radial MLP) and neighbour
    features (linear_in and everything before): an energy loss's parameter gradients."""
    model = small_model(family)
    for name, atoms in structures(triclinic_cu).items():
        gradients = []
        for kernel in (False, True):
            model.zero_grad()
            model.set_kernels(kernel)
            energy = compute_properties(model, atoms_to_graph(atoms, CUTOFF), forces=False)["energy"]
            energy.sum().backward()
            gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert gradients[0].keys() == gradients[1].keys()
        for key, reference in gradients[0].items():
            scale = max(float(reference.abs().max()), 1e-6)
            assert float((gradients[1][key] - reference).abs().max()) <= 1e-12 * scale, (name, key)


@pytest.mark.parametrize("family", ["nequip", "mace"])
def test_kernel_forces_and_stress_are_gradients_and_equivariant(family, triclinic_cu):
    model = small_model(family).eval().requires_grad_(False)
    assert model.set_kernels(True)
    assert force_fd_error(model, molecule("CH3CH2OH")) < 1e-6  # paired (central differences, δ = 1e-5 Å: ~1e-8 round-off)
    assert force_fd_error(model, triclinic_cu) < 1e-6  # unpaired: own images
    assert stress_fd_error(model, water_box(seed=4)) < 1e-6
    assert stress_fd_error(model, triclinic_cu) < 1e-6
    errors = symmetry_errors(model, molecule("CH3CH2OH"), num_transforms=3)
    assert max(errors.values()) < 1e-10, errors


def training_loss_gradients(model, atoms, kernel: bool) -> dict[str, torch.Tensor]:
    """∂L/∂θ of L = E² + Σ F² + Σ σ² (σ for cells): the force and stress terms differentiate the
    backward pass, as a training step does."""
    model.zero_grad()
    model.set_kernels(kernel)
    periodic = bool(atoms.pbc.any())
    out = compute_properties(model, atoms_to_graph(atoms, CUTOFF), forces=True, stress=periodic, training=True)
    loss = out["energy"].square().sum() + out["forces"].square().sum()
    if periodic:
        loss = loss + out["stress"].square().sum()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", list(MODELS))
def test_training_loss_gradients_on_the_kernel_equal_torch_path(family, triclinic_cu):
    """The kernel's backward is differentiable again: a force and stress loss gives every parameter
    the torch path's gradient (paired and unpaired lists)."""
    model = small_model(family).train()
    for name, atoms in structures(triclinic_cu).items():
        reference, fused = training_loss_gradients(model, atoms, False), training_loss_gradients(model, atoms, True)
        assert reference.keys() == fused.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
        for key, value in reference.items():
            scale = max(float(value.abs().max()), 1e-6)
            assert float((fused[key] - value).abs().max()) <= 1e-12 * scale, (name, key)


def test_convolution_kernel_derivatives_match_finite_differences():
    """First, second and third derivatives of the operator in every tensor input, by finite
    differences (torch.autograd.gradcheck / gradgradcheck, float64)."""
    model = small_model("nequip")
    arguments = kernel_inputs(model, molecule("H2O"))
    tensors = {k: arguments[k].detach().clone().requires_grad_() for k in ("x", "sh", "w")}
    tables = {k: v for k, v in arguments.items() if k not in tensors}

    def convolution(x, sh, w):
        return kernels.uvu_convolution(x, sh, w, **tables)

    inputs = (tensors["x"], tensors["sh"], tensors["w"])
    assert torch.autograd.gradcheck(convolution, inputs)
    assert torch.autograd.gradgradcheck(convolution, inputs)

    def backward(x, sh, w):  # the backward's own second derivative: a third derivative of the operator
        out = convolution(x, sh, w)
        grads = torch.autograd.grad(out, (x, sh, w), torch.ones_like(out), create_graph=True)
        return tuple(g.square().sum() for g in grads)

    assert torch.autograd.gradgradcheck(backward, inputs)


def test_calculator_uses_the_kernel_on_its_copy_only():
    model = small_model("mace").eval()
    assert EquivariantCalculator(model).kernels_in_use
    assert not EquivariantCalculator(model, kernels=False).kernels_in_use
    assert not any(getattr(m, "use_kernel", False) for m in model.modules())  # the user's model is untouched
    assert not eqcalc.build_model("schnet", species=[1, 8], cutoff=CUTOFF).set_kernels(True)


def test_failed_build_warns_and_keeps_the_torch_path(monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: c++: not found")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    with pytest.warns(UserWarning, match="could not be built.*c\\+\\+: not found.*EQCALC_KERNELS=0"):
        assert not kernels.build()
    monkeypatch.setenv("EQCALC_KERNELS", "0")
    assert not kernels.build()  # switched off: no attempt, no warning

    monkeypatch.setattr(kernels, "available", lambda: False)
    model = small_model("nequip").eval()
    calc = EquivariantCalculator(model)
    assert not calc.kernels_in_use
    atoms = molecule("CH3CH2OH")
    atoms.calc = calc
    reference = properties(model, atoms, False)["forces"].detach().numpy()
    np.testing.assert_allclose(atoms.get_forces(), reference, rtol=0, atol=1e-12)


def kernel_inputs(model, atoms):
    """The arguments of the first convolution's kernel call for ``atoms``."""
    from eqcalc.nn.irreps import EquivariantConvolution
    from eqcalc.nn.neighbour_slots import NeighbourSlots
    from eqcalc.testing.physics import model_inputs

    species, edge_index, vectors = model_inputs(model, atoms)
    slots = NeighbourSlots.from_edges(edge_index, len(species), vectors)
    radial, sh, _ = model.edge_embedding(vectors, slots)
    convolution = next(m for m in model.modules() if isinstance(m, EquivariantConvolution))
    product = convolution.tensor_product
    weights = convolution.radial(radial)
    return dict(
        x=product.stacked_sources(convolution.linear_in(model.embedding(species))), sh=sh,
        w=weights.reshape(weights.shape[0], product.num_paths, product.channels), neighbour=slots.neighbour_of_slot,
        row=slots.pair_of_slot, degree=slots.num_neighbours, paths=product.kernel_paths,
        cg=product.kernel_coefficients, slots_of_pair=slots.slots_of_pair, out_blocks=product.kernel_out_blocks,
    )  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a["neighbour"].__setitem__(0, 10**6), "outside the .* atoms of x"),
        (lambda a: a["degree"].__setitem__(0, a["sh"].shape[0]), "degree .* outside"),
        (lambda a: a["row"].__setitem__(0, 10**6), "is not a pair"),
        (lambda a: a["slots_of_pair"].__setitem__((0, 1), a["slots_of_pair"][1, 1].item()), "not a real slot|does not list"),
        (lambda a: a["paths"].__setitem__((0, 0), 10**3), "path table entry outside"),
        (lambda a: a.__setitem__("sh", a["sh"].float()), "share one dtype"),
    ],
    ids=["neighbour", "degree", "row", "pair", "path", "dtype"],
)
def test_kernel_rejects_bad_inputs(change, message):
    """Bad tables raise an error that names them, instead of reading or writing out of bounds."""
    model = small_model("nequip").eval()
    arguments = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in kernel_inputs(model, molecule("CH3CH2OH")).items()}
    kernels.uvu_convolution(**arguments)  # valid as built
    change(arguments)
    with pytest.raises(RuntimeError, match=message):
        kernels.uvu_convolution(**arguments)


def random_product_basis(channels, lmax, max_L, correlation):
    """A float64 ProductBasis without weight gradients (as in inference), its input and species
    (species 1 absent)."""
    from e3nn import o3

    from eqcalc.models.mace import ProductBasis

    torch.manual_seed(3)
    irreps_a = o3.Irreps([(channels, ir) for _, ir in o3.Irreps.spherical_harmonics(lmax)])
    irreps_out = o3.Irreps([(channels, ir) for _, ir in o3.Irreps.spherical_harmonics(max_L)])
    product = ProductBasis(irreps_a, irreps_out, correlation, num_species=3).double().requires_grad_(False)
    species = torch.tensor([2, 0, 2, 2, 0, 2, 2, 2, 2, 2, 2, 0, 2])  # 10 of species 2: one whole tile of 8 and a part
    basis = irreps_a.randn(len(species), -1, dtype=torch.float64, requires_grad=True)
    return product, basis, species


def values_and_gradient(product, basis, species, kernel: bool):
    product.use_kernel = kernel
    out = product(basis, species)
    (gradient,) = torch.autograd.grad((out * out.detach().sin()).sum(), basis)
    return out.detach(), gradient


@pytest.mark.parametrize(
    "channels, lmax, max_L, correlation",
    [(16, 3, 1, 3), (3, 3, 2, 3), (20, 2, 0, 2), (5, 1, 1, 4), (4, 2, 1, 1)],
    ids=["mace-like", "l2-outputs", "tile-and-part", "correlation-4", "correlation-1"],
)
@pytest.mark.parametrize("frozen", [False, True])
def test_product_basis_kernel_equals_torch_path(channels, lmax, max_L, correlation, frozen):
    """Values and gradients of the symmetric-polynomial kernel == the torch path (float64, 1e-12),
    for 16 channels (one whole tile), fewer and more (a partial tile)."""
    product, basis, species = random_product_basis(channels, lmax, max_L, correlation)
    product.freeze(frozen)
    reference, fused = values_and_gradient(product, basis, species, False), values_and_gradient(product, basis, species, True)
    for expected, actual in zip(reference, fused):
        assert float(expected.abs().max()) > 1e-3
        assert float((actual - expected).abs().max()) <= 1e-12 * float(expected.abs().max())


def test_product_basis_kernel_gives_weight_gradients():
    """Weights that need gradients (training) get the torch path's gradients from the kernel;
    freezing such weights is refused."""
    product, basis, species = random_product_basis(4, 2, 1, 2)
    product.requires_grad_(True)
    gradients = []
    for kernel in (False, True):
        product.zero_grad()
        product.use_kernel = kernel
        product(basis, species).square().sum().backward()
        gradients.append([w.grad.clone() for w in product.weights])
    for reference, actual in zip(*gradients):
        assert float(reference.abs().max()) > 0
        torch.testing.assert_close(actual, reference, rtol=0, atol=1e-12)
    with pytest.raises(RuntimeError, match="needs weights without gradients"):
        product.freeze(True)


def test_frozen_product_weights_follow_dtype_and_calculator():
    product, _, _ = random_product_basis(4, 2, 1, 2)
    product.freeze(True)
    product.to(torch.float32).to(torch.float64)  # formed again from the converted weights
    frozen = product.frozen_species_weights.clone()
    product.freeze(False)
    assert product.frozen_species_weights is None
    torch.testing.assert_close(frozen, product.species_weights(), rtol=0, atol=0)
    model = small_model("mace").eval()
    calc = EquivariantCalculator(model)
    assert all(layer.product_basis.frozen_species_weights is not None for layer in calc.model.layers)
    assert all(layer.product_basis.frozen_species_weights is None for layer in model.layers)  # the user's model: untouched


def product_kernel_inputs(product, basis, species):
    """The arguments of ``product``'s kernel call."""
    from eqcalc.models.mace import SpeciesGroups

    groups = SpeciesGroups.from_species(species, 3)
    sorted_basis = basis.index_select(0, groups.order).split(product.a_block_sizes, dim=1)
    a = torch.cat([b.reshape(len(species), product.channels, -1) for b in sorted_basis], dim=2)
    return dict(
        a=a.transpose(1, 2).contiguous(), offsets=groups.offsets, weights=product.species_weights(),
        terms=product.kernel_terms.clone(), lower=product.lower_factor.clone(), last=product.last_factor.clone(),
        outputs=sum(product.out_dims),
    )  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a["offsets"].__setitem__(-1, 5), "offsets must run from 0 to N"),
        (lambda a: a["lower"].__setitem__(-1, len(a["lower"])), "monomial .* lower must be an earlier monomial"),
        (lambda a: a["last"].__setitem__(-1, 10**3), "monomial .* last a component"),
        (lambda a: a["terms"].__setitem__((0, 1), 10**3), "term 0 names a monomial or output out of range"),
        (lambda a: a.__setitem__("weights", a["weights"].float()), "dtype and channel count of a"),
    ],
    ids=["offsets", "lower", "last", "term", "dtype"],
)
def test_product_basis_kernel_rejects_bad_inputs(change, message):
    product, basis, species = random_product_basis(4, 2, 1, 3)
    arguments = product_kernel_inputs(product, basis.detach(), species)
    kernels.symmetric_polynomial(**arguments)  # valid as built
    change(arguments)
    with pytest.raises(RuntimeError, match=message):
        kernels.symmetric_polynomial(**arguments)


@pytest.mark.parametrize("correlation", [1, 3])
def test_product_basis_kernel_derivatives_match_finite_differences(correlation):
    """First and second derivatives of the operator in the basis and the weights, by finite
    differences (gradcheck / gradgradcheck, float64, a whole tile and a partial one); a third
    derivative raises a clear error."""
    product, basis, species = random_product_basis(4, 2, 1, correlation)
    inputs = product_kernel_inputs(product, basis.detach(), species)
    a, weights = inputs.pop("a").requires_grad_(), inputs.pop("weights").clone().requires_grad_()

    def polynomial(a, weights):
        return kernels.symmetric_polynomial(a, weights=weights, **inputs)

    assert torch.autograd.gradcheck(polynomial, (a, weights))
    assert torch.autograd.gradgradcheck(polynomial, (a, weights))
    # weights without gradients (a Hessian in the basis alone): the backward returns no weight gradient
    assert torch.autograd.gradgradcheck(lambda a: polynomial(a, weights.detach()), (a,))
    out = polynomial(a, weights)
    (gradient,) = torch.autograd.grad(out.square().sum(), a, create_graph=True)
    (second,) = torch.autograd.grad(gradient.square().sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match="product-basis\\s+kernel twice"):
        second.sum().backward()


def test_kernel_outputs_are_written_whole():
    """The operators allocate their outputs uninitialised and write every element: the same results
    after the freed memory was filled with NaN (the allocator hands it out again)."""
    model = small_model("mace").eval().requires_grad_(False)
    model.set_kernels(True)
    model.freeze_weights(True)  # radial tables: the spline kernel too

    def evaluate():
        out = properties(model, water_box(seed=2), True)
        return [out[key].detach().clone() for key in ("energy", "forces", "stress")]

    reference = evaluate()
    for _ in range(3):
        # below glibc's mmap threshold (128 KiB), so freed blocks are handed out again
        poison = [torch.full((n,), float("nan"), dtype=torch.float64) for n in (10, 100, 1_000, 4_000, 15_000)]
        del poison
        assert all(torch.equal(a, b) for a, b in zip(evaluate(), reference))
    assert all(bool(torch.isfinite(value).all()) for value in reference)

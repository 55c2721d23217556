"""MACE: the shared physics suite, plus checks of the atomic and product bases."""

import copy

import numpy as np
import pytest
import torch
from ase.data import covalent_radii
from e3nn import o3
from irreps_checks import assert_equivariant_layers, assert_paths_obey_selection_rules, orthogonal_matrices, wigner_d

from eqcalc.models import build_model
from eqcalc.models.mace import ProductBasis
from eqcalc.nn.irreps import TensorProduct, coupling_paths
from eqcalc.testing import ModelPhysicsTests, physics

SMALL = {"num_channels": 4, "num_basis": 4, "radial_hidden": 8, "radial_layers": 1, "readout_hidden": 4}


class TestMACEVectors(ModelPhysicsTests):
    family = "mace"
    hyper = {**SMALL, "lmax": 1, "max_L": 1, "correlation": 3, "num_layers": 2}


class TestMACETensors(ModelPhysicsTests):
    family = "mace"
    hyper = {**SMALL, "lmax": 2, "max_L": 2, "correlation": 2, "num_layers": 3}


class TestMACERepulsionAgnesi(ModelPhysicsTests):
    """The ZBL pair repulsion and the Agnesi distance transform (the options of MPA-0 / OMAT-0)."""

    family = "mace"
    hyper = {**SMALL, "lmax": 2, "max_L": 1, "correlation": 2, "num_layers": 2, "pair_repulsion": True,
             "distance_transform": "agnesi"}

    @classmethod
    def build(cls, dtype: torch.dtype = torch.float64, seed: int = 0):
        """The suite's model with its energy scale divided by 100. The Agnesi t of the distances
        within the cutoff spans only (0, 1), where the Bessel functions of (0, r_c) are near their
        largest, so a random network's output is two orders of magnitude above a plain one's
        (forces of hundreds of eV/Å at bond lengths); the suite's tolerances in eV/Å presume
        outputs of order one, as trained models have, and float32 rounding is relative to them."""
        model = super().build(dtype, seed)
        with torch.no_grad():
            model.energy_scale.mul_(0.01)
        return model

    @staticmethod
    def squeezed(structures) -> dict:
        """The sample structures at 0.6 × their size: bonds at 0.57–0.69 × the sums of covalent
        radii, where the repulsion is large and its envelope far from zero."""
        squeezed = {}
        for kind, atoms in structures.items():
            atoms = atoms.copy()
            atoms.set_cell(atoms.cell.array * 0.6)
            atoms.positions *= 0.6
            squeezed[kind] = atoms
        return squeezed

    def test_short_contacts_forces_and_stress_match_finite_differences(self, model, structures):
        for atoms in self.squeezed(structures).values():
            assert physics.force_fd_error(model, atoms) < 1e-6
        assert physics.stress_fd_error(model, self.squeezed(structures)["periodic"]) < 1e-6

    def test_repulsion_is_the_zbl_pair_energy(self):
        """Two atoms at r: E(r) − E(∞) = V_ZBL(r) · scale + the network's part, which vanishes with
        the repulsion switched off; V_ZBL(0.3 Å) of C–O from the formula by hand. The model is
        built with float64 as the default dtype, so that its constants are not float32-rounded."""
        from ase import Atoms

        from eqcalc.importers.mace import default_dtype

        with default_dtype(torch.float64):
            model = self.build(torch.float64)
        r = 0.3
        dimer = Atoms("CO", positions=[[0, 0, 0], [r, 0, 0]])
        without = copy.deepcopy(model)
        without.repulsion = None
        pair = physics.evaluate(model, dimer)["energy"] - physics.evaluate(without, dimer)["energy"]
        a = 0.4543 * 0.529 / (6**0.3 + 8**0.3)
        phi = sum(c * np.exp(-b * r / a) for c, b in zip([0.1818, 0.5099, 0.2802, 0.02817], [3.2, 0.9423, 0.4028, 0.2016]))
        x, p = r / (covalent_radii[6] + covalent_radii[8]), 6
        envelope = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
        expected = 14.3996 * 6 * 8 / r * phi * envelope * float(model.energy_scale)
        assert abs(pair - expected) < 1e-10 * expected

    def test_kernels_without_radial_tables_equal_the_torch_path(self, model, structures):
        """The CPU kernels (inference preparation: no radial tables for a transformed distance)
        give the torch path's energy and forces to 1e-10."""
        from eqcalc.inference import inference_model

        fast, used = inference_model(model, kernels=True)
        assert used and all(c.radial_spline is None for c in fast._convolutions())
        for atoms in self.squeezed(structures).values():
            ours, reference = physics.evaluate(fast, atoms, stress=False), physics.evaluate(model, atoms, stress=False)
            assert abs(ours["energy"] - reference["energy"]) < 1e-10 * max(abs(reference["energy"]), 1.0)
            assert physics.relative_error(ours["forces"], reference["forces"]) < 1e-10

    @pytest.mark.parametrize("option", [{"max_edges": "chunks"}, {"block_slots": 300, "kernels": False}],
                             ids=["chunks", "receiver-blocks"])
    def test_pieces_equal_one_pass(self, option):
        """Squeezed water (O–H at 0.77 Å, inside the ZBL envelope) evaluated in halo chunks, or
        in blocks of centre atoms, gives the one-pass per-atom energies, forces and stress."""
        from eqcalc import EquivariantCalculator
        from eqcalc.data import atoms_to_graph
        from eqcalc.data.structures import water_box

        model = build_model("mace", species=[1, 8], cutoff=3.0, **self.hyper).double().eval()
        atoms = water_box(repeat=(2, 2, 1))
        atoms.set_cell(atoms.cell.array * 0.8, scale_atoms=True)
        atoms.rattle(0.02, seed=2)
        if option.get("max_edges") == "chunks":
            option = {"max_edges": 3 * atoms_to_graph(atoms, model.cutoff).edge_index.shape[1] // 4}
        whole = EquivariantCalculator(model, max_edges=None, block_slots=None, kernels=option.get("kernels", True))
        pieces = EquivariantCalculator(model, **option)
        results = []
        for calc in (whole, pieces):
            atoms.calc = calc
            results.append((atoms.get_potential_energies(), atoms.get_forces(), atoms.get_stress()))
        assert "max_edges" not in option or pieces.num_chunks > 1
        for ours, reference in zip(results[1], results[0]):
            np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-10 * max(1.0, np.abs(reference).max()))


def small_mace(**hyper) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mace", species=[1, 6, 8], cutoff=4.0, **{**SMALL, **hyper}).to(torch.float64)


def random_product_basis(correlation: int, lmax: int = 3, max_L: int = 2, channels: int = 3):
    """A float64 ProductBasis on the atomic basis C×(0e+1o+…+lmax), its input and species."""
    torch.manual_seed(1)
    irreps_a = o3.Irreps([(channels, ir) for _, ir in o3.Irreps.spherical_harmonics(lmax)])
    irreps_out = o3.Irreps([(channels, ir) for _, ir in o3.Irreps.spherical_harmonics(max_L)])
    product = ProductBasis(irreps_a, irreps_out, correlation, num_species=2).to(torch.float64)
    return product, irreps_a.randn(5, -1, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1])


@pytest.mark.parametrize(
    "hyper",
    [{"lmax": 1, "max_L": 1}, {"lmax": 3, "max_L": 2, "num_layers": 3}, {"lmax": 2, "max_L": 0, "correlation": 2}],
    ids=["L1", "L2-lmax3", "L0"],
)
def test_layer_features_transform_with_wigner_d(hyper):
    """h_t(R r) = D_t(R) h_t(r) for every layer, rotations and reflections alike."""
    molecule = physics.sample_structures([1, 6, 8])["molecule"]
    assert_equivariant_layers(small_mace(**hyper), molecule)


def test_product_basis_is_equivariant():
    """Σ_ν W_Z B⁽ν⁾(D_A A) = D_out Σ_ν W_Z B⁽ν⁾(A), with intermediates up to l = 5 of both parities."""
    product, basis, species = random_product_basis(correlation=3)
    output = product(basis, species).detach()
    assert all(float(output[:, s].norm()) > 1e-6 for s in product.irreps_out.slices())
    for rotation in orthogonal_matrices():
        d_in = wigner_d(product.irreps_a, rotation)
        d_out = wigner_d(product.irreps_out, rotation)
        moved = product(basis @ d_in.T, species).detach()
        torch.testing.assert_close(moved, output @ d_out.T, atol=1e-12, rtol=0)


@pytest.mark.parametrize("correlation", [1, 2, 3])
def test_product_basis_is_a_polynomial_of_degree_correlation(correlation):
    """B(λA) = Σ_{ν=1}^{correlation} λ^ν c_ν exactly, with c_correlation ≠ 0 (body order correlation + 1)."""
    product, basis, species = random_product_basis(correlation)
    product.requires_grad_(False)
    scales = torch.linspace(0.5, 2.0, correlation + 3, dtype=torch.float64)  # two more points than unknowns
    values = torch.stack([product(s * basis, species) for s in scales])
    powers = scales[:, None] ** torch.arange(1, correlation + 1, dtype=torch.float64)
    coefficients = torch.linalg.lstsq(powers, values.reshape(len(scales), -1)).solution
    residual = powers @ coefficients - values.reshape(len(scales), -1)
    assert float(residual.abs().max()) < 1e-9 * float(values.abs().max())
    assert float(coefficients[-1].abs().max()) > 1e-3 * float(coefficients.abs().max())
    assert float(product(0 * basis, species).abs().max()) == 0.0


def test_symmetric_square_drops_only_vanishing_and_duplicate_paths():
    """In A ⊗ A channel-wise, path (i, i) → odd l vanishes and (j, i) equals ±(i, j),
    so keeping i ≤ j and even l on the diagonal loses nothing."""
    irreps_a = o3.Irreps("3x0e+3x1o+3x2e+3x3o")
    allowed = {ir for l in range(7) for ir in (o3.Irrep(l, 1), o3.Irrep(l, -1))}
    irreps_full, instructions = coupling_paths(irreps_a, irreps_a, allowed, "uuu", weighted=False)
    full = TensorProduct(irreps_a, irreps_a, irreps_full, instructions).to(torch.float64)
    a = irreps_a.randn(4, -1, dtype=torch.float64)
    out = full(a, a)
    blocks = {(i1, i2, irreps_full[i].ir): out[:, irreps_full.slices()[i]] for i1, i2, i, _, _ in instructions}
    irreps_kept, kept_instructions = coupling_paths(
        irreps_a, irreps_a, allowed, "uuu", weighted=False, symmetric=True
    )
    kept = {(i1, i2, irreps_kept[i].ir) for i1, i2, i, _, _ in kept_instructions}
    assert len(kept) < len(blocks)
    for (i1, i2, ir), block in blocks.items():
        if (i1, i2, ir) in kept:
            assert float(block.abs().max()) > 1e-6
        elif (i2, i1, ir) in kept:
            sign = (-1) ** (irreps_a[i1].ir.l + irreps_a[i2].ir.l + ir.l)
            torch.testing.assert_close(block, sign * blocks[(i2, i1, ir)], atol=1e-12, rtol=0)
        else:
            assert float(block.abs().max()) < 1e-12


def test_tensor_product_paths_obey_selection_rules():
    model = small_mace(lmax=3, max_L=2, correlation=3)
    for layer in model.layers:
        tp = layer.atomic_basis.tensor_product
        assert_paths_obey_selection_rules(tp.irreps_in1, tp.irreps_in2, tp.irreps_out, tp.paths)
        for irreps_prev, irreps_next, instructions in layer.product_basis.steps:
            assert_paths_obey_selection_rules(irreps_prev, layer.product_basis.irreps_a, irreps_next, instructions)


def test_product_weights_depend_on_species():
    product, basis, _ = random_product_basis(correlation=2)
    same = product(basis, torch.zeros(5, dtype=torch.int64))
    other = product(basis, torch.ones(5, dtype=torch.int64))
    assert not np.allclose(same.detach().numpy(), other.detach().numpy())


@pytest.mark.parametrize("hyper", [{"max_L": 2, "lmax": 1}, {"lmax": 4}, {"correlation": 0}])
def test_rejects_bad_hyperparameters(hyper):
    with pytest.raises(ValueError, match="mace needs"):
        build_model("mace", species=[1], **hyper)

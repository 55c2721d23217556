"""EquivariantCalculator(compile=True): the eager model's energies, forces and stress, through
Verlet-list rebuilds, other structures and rotations, without compiling again."""

import numpy as np
import pytest
import torch
from ase import Atoms
from torch._dynamo.utils import counters

import eqcalc
from eqcalc import EquivariantCalculator
from eqcalc.nn.neighbour_slots import NeighbourSlots
from eqcalc.testing.physics import model_inputs, random_orthogonal, randomize_energy_offsets


@pytest.fixture(scope="module")
def small_nequip():
    torch.manual_seed(0)
    model = eqcalc.build_model("nequip", species=[1, 6, 8, 29], cutoff=4.0, num_features=8, num_layers=2)
    return randomize_energy_offsets(model).double().eval()


def paired(model, atoms) -> bool:
    """Whether the model's radial MLPs run per pair of reverse edges on ``atoms``."""
    species, edge_index, vectors = model_inputs(model, atoms)
    return NeighbourSlots.from_edges(edge_index, len(species), vectors).paired


def evaluate(calc, atoms):
    """(energy, forces, stress or None) of ``atoms`` through ``calc``."""
    atoms = atoms.copy()
    atoms.calc = calc
    stress = atoms.get_stress() if atoms.pbc.any() else None
    return atoms.get_potential_energy(), atoms.get_forces(), stress


def assert_same(compiled, eager, scale):
    """Energies, forces and stress equal to float64 round-off (``scale``: eV of the energy)."""
    assert abs(compiled[0] - eager[0]) < 1e-10 * scale
    np.testing.assert_allclose(compiled[1], eager[1], rtol=0, atol=1e-10 * np.abs(eager[1]).max())
    if eager[2] is not None:
        np.testing.assert_allclose(compiled[2], eager[2], rtol=0, atol=1e-10 * np.abs(eager[2]).max())


def test_compiled_calculator_equals_eager_without_recompiling(small_nequip, triclinic_cu, ethanol):
    """Two graph variants, each compiled once: edges in reverse pairs (molecules, cells of at
    least about 2 r_c) and per slot (smaller cells, where atoms see their own images)."""
    compiled, eager = EquivariantCalculator(small_nequip, compile=True), EquivariantCalculator(small_nequip)
    small_cell = triclinic_cu * (2, 2, 1)
    assert not paired(small_nequip, small_cell)
    before, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    assert_same(evaluate(compiled, small_cell), evaluate(eager, small_cell), abs(evaluate(eager, small_cell)[0]))
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > before, "nothing was compiled"
    assert sum(counters["graph_break"].values()) == breaks, dict(counters["graph_break"])  # one graph

    # past the skin: a rebuilt neighbour list with another number of edges
    small_cell.rattle(0.4, seed=3)
    first_build = compiled.neighbours.num_builds
    assert_same(evaluate(compiled, small_cell), evaluate(eager, small_cell), abs(evaluate(eager, small_cell)[0]))
    assert compiled.neighbours.num_builds > first_build
    assert counters["stats"]["unique_graphs"] == graphs, "a new neighbour count compiled again"

    # paired: a molecule (compiles the paired variant) and the same molecule rotated and reflected
    rotation = random_orthogonal(np.random.default_rng(0), reflection=True)
    turned = ethanol.copy()
    turned.positions = ethanol.positions @ rotation.T
    assert paired(small_nequip, ethanol)
    energy, forces, _ = evaluate(compiled, ethanol)
    assert_same((energy, forces, None), evaluate(eager, ethanol), abs(energy))
    graphs = counters["stats"]["unique_graphs"]
    turned_energy, turned_forces, _ = evaluate(compiled, turned)
    assert abs(turned_energy - energy) < 1e-10 * abs(energy)
    np.testing.assert_allclose(turned_forces, forces @ rotation.T, rtol=0, atol=1e-10 * np.abs(forces).max())
    assert counters["stats"]["unique_graphs"] == graphs, "a rotated structure compiled again"

    # paired with stress: a cell larger than 2 r_c, then past the skin
    large_cell = triclinic_cu * (4, 4, 2)
    assert paired(small_nequip, large_cell)
    assert_same(evaluate(compiled, large_cell), evaluate(eager, large_cell), abs(evaluate(eager, large_cell)[0]))
    graphs = counters["stats"]["unique_graphs"]
    large_cell.rattle(0.4, seed=4)
    assert paired(small_nequip, large_cell)
    assert_same(evaluate(compiled, large_cell), evaluate(eager, large_cell), abs(evaluate(eager, large_cell)[0]))
    assert counters["stats"]["unique_graphs"] == graphs, "a new neighbour count compiled again"


@pytest.mark.parametrize("kernels", [False, True], ids=["torch-path", "kernels"])
def test_compiled_mace_equals_eager_for_any_composition(kernels):
    """MACE groups atoms by species outside the graph: a new count of each species does not compile
    again (a species absent from the structure does, once per such pattern). Compiled with the CPU
    kernels (convolution, product basis, radial tables) or the torch path, against the same eagerly."""
    from ase.build import molecule

    torch.manual_seed(0)
    model = eqcalc.build_model(
        "mace", species=[1, 6, 8], cutoff=4.0, num_channels=4, max_L=1, lmax=2, correlation=2, num_layers=2
    )
    model = randomize_energy_offsets(model).double().eval()
    compiled, eager = EquivariantCalculator(model, compile=True, kernels=kernels), EquivariantCalculator(model, kernels=kernels)
    assert eager.kernels_in_use == compiled.kernels_in_use == kernels

    def check(name):
        reference = evaluate(eager, molecule(name))
        assert_same(evaluate(compiled, molecule(name)), reference, abs(reference[0]))

    before, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    check("CH3CH2OH")
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > before, "nothing was compiled"
    check("CH3OH")  # other counts of H, C and O
    check("CH3COOH")
    assert counters["stats"]["unique_graphs"] == graphs
    # species check, neighbour slots and species groups are made before the compiled function:
    # one graph, no breaks (each would cost a guard check and a wrapper on every call)
    assert sum(counters["graph_break"].values()) == breaks, dict(counters["graph_break"])


def test_compiled_chunks_equal_eager(small_nequip):
    """Chunked evaluation (pieces of different sizes with halos, only owned atoms counted)
    gives the one-pass eager results."""
    chain = Atoms("CH" * 30, positions=[(1.4 * i, 0.5 * (i % 2), 0.0) for i in range(60)])  # 83 Å, 4 neighbours an atom
    eager = evaluate(EquivariantCalculator(small_nequip, max_edges=None), chain)
    calc = EquivariantCalculator(small_nequip, max_edges=100, compile=True)
    torch._dynamo.reset()  # forget graphs of earlier tests, so this one must compile its own
    before = counters["stats"]["unique_graphs"]
    assert_same(evaluate(calc, chain), eager, abs(eager[0]))
    assert calc.num_chunks > 1
    assert counters["stats"]["unique_graphs"] > before, "nothing was compiled"


def test_blocks_are_refused_with_compile(small_nequip):
    with pytest.raises(ValueError, match="block_slots cannot be combined with compile=True"):
        EquivariantCalculator(small_nequip, block_slots=4096, compile=True)


@pytest.mark.parametrize("value", ["yes", 1])
def test_compile_must_be_a_bool(small_nequip, value):
    with pytest.raises(ValueError, match="compile must be True or False"):
        EquivariantCalculator(small_nequip, compile=value)


def test_missing_cpp_compiler_is_named(small_nequip, monkeypatch):
    from torch._inductor.exc import InvalidCxxCompiler

    def no_compiler():
        raise InvalidCxxCompiler()

    monkeypatch.setattr("eqcalc.compilation.get_cpp_compiler", no_compiler)
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler"):
        EquivariantCalculator(small_nequip, compile=True)


def test_unknown_element_is_named_with_compile(small_nequip):
    """The species check runs eagerly before the compiled graph: the same clear error."""
    atoms = Atoms("HAu", positions=[[0, 0, 0], [1.6, 0, 0]])
    atoms.calc = EquivariantCalculator(small_nequip, compile=True)
    with pytest.raises(ValueError, match="contains Au, which the model does not know"):
        atoms.get_potential_energy()


@pytest.mark.slow  # a compilation of its own: about 100 s on 2 cores
def test_compiled_mace_with_zbl_and_agnesi_equals_eager(triclinic_cu):
    """The MPA-0 / OMAT-0 options (ZBL pair repulsion, Agnesi distance transform), whose radial
    functions are evaluated per pair on the kernel path, compile to the eager results."""
    torch.manual_seed(1)
    model = eqcalc.build_model("mace", species=[1, 8, 29], cutoff=4.0, num_channels=4, max_L=1, lmax=2, correlation=2,
                               num_layers=2, pair_repulsion=True, distance_transform="agnesi")
    model = randomize_energy_offsets(model).double().eval()
    atoms = triclinic_cu * (2, 2, 1)
    atoms.numbers[:2] = [8, 1]
    atoms.positions[1] = atoms.positions[0] + [0.0, 0.0, 0.9]  # a close contact: ZBL matters
    eager = evaluate(EquivariantCalculator(model), atoms)
    assert_same(evaluate(EquivariantCalculator(model, compile=True), atoms), eager, abs(eager[0]))

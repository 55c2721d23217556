"""Chunked evaluation: a structure evaluated piece by piece (owned atoms plus their exact
message-passing halo) gives the same energy, per-atom energies, forces and stress as one pass."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

import eqcalc
from eqcalc import EquivariantCalculator
from eqcalc.data import atoms_to_graph
from eqcalc.data.chunks import ChunkCost, IncomingEdges, halo_chunk, plan_chunks, slot_width
from eqcalc.data.structures import aspirin, water_box
from eqcalc.testing.physics import randomize_energy_offsets

SMALL = {
    "schnet": {"num_features": 8, "num_interactions": 3},
    "painn": {"num_features": 8, "num_interactions": 2},
    "egnn": {"num_features": 8, "num_layers": 3},  # moves positions between layers
    "nequip": {"num_features": 4, "lmax": 1, "num_layers": 2},
    "mace": {"num_channels": 4, "max_L": 1, "lmax": 2, "correlation": 2, "num_layers": 2},
    "allegro": {"num_tensor_features": 4, "latent_features": 16, "latent_hidden": 16, "edge_hidden": 8, "num_layers": 2},
}


def small_model(family: str, cutoff: float = 3.0):
    torch.manual_seed(0)
    model = eqcalc.build_model(family, species=[1, 6, 8, 14], cutoff=cutoff, **SMALL[family])
    return randomize_energy_offsets(model).double().eval()


def results(calc, atoms) -> dict:
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "energies": atoms.get_potential_energies(), "forces": atoms.get_forces()}
    if atoms.pbc.any():
        out["stress"] = atoms.get_stress()
    return out


def block_settings(model) -> set:
    """The block_slots of every irreps convolution of ``model``."""
    from eqcalc.nn.irreps import EquivariantConvolution

    return {m.block_slots for m in model.modules() if isinstance(m, EquivariantConvolution)}


def rattled_water():
    """768 atoms, periodic."""
    atoms = water_box(repeat=(2, 2, 1))
    atoms.rattle(0.05, seed=2)
    return atoms


def silicon_cell():
    """64-atom Si cell (10.9 Å): a 3-hop halo (7.8 Å) reaches an atom's own periodic images."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=3)
    return atoms


# (structure, model cutoff in Å): cutoffs small enough that halos leave room for several chunks
STRUCTURES = {"water": (rattled_water, 3.0), "aspirin": (aspirin, 1.8), "silicon": (silicon_cell, 2.6)}


@pytest.mark.parametrize("family", list(SMALL))
@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_chunked_equals_whole(family, structure):
    build, cutoff = STRUCTURES[structure]
    model = small_model(family, cutoff)
    atoms = build()
    reference = results(EquivariantCalculator(model, max_edges=None), atoms)
    edges = atoms_to_graph(atoms, model.cutoff).edge_index.shape[1]
    chunked = EquivariantCalculator(model, max_edges=3 * edges // 4)
    pieces = results(chunked, atoms)
    assert chunked.num_chunks > 1
    for key, value in reference.items():
        np.testing.assert_allclose(pieces[key], value, rtol=0, atol=1e-10 * max(1.0, np.abs(value).max()), err_msg=key)


def test_chunks_cover_every_atom_once_and_fit():
    atoms = rattled_water()
    graph = atoms_to_graph(atoms, 3.0)
    edge_index = graph.edge_index.numpy()
    chunks = plan_chunks(atoms.get_positions(wrap=True), edge_index, hops=2, limit=edge_index.shape[1] // 3)
    owned = np.concatenate([c.atoms[: c.num_owned] for c in chunks])
    assert sorted(owned.tolist()) == list(range(len(atoms)))
    assert all(len(c.edges) <= edge_index.shape[1] // 3 for c in chunks)
    incoming = IncomingEdges(edge_index, len(atoms))
    for chunk in chunks:  # every edge ending on an atom within hops−1 of the owned ones is kept
        receiving = set(halo_chunk(chunk.atoms[: chunk.num_owned], incoming, hops=1).atoms.tolist())
        needed = np.isin(edge_index[0], list(receiving))
        assert set(np.flatnonzero(needed)) <= set(chunk.edges.tolist())


def test_halo_search_matches_a_dense_hop_by_hop_expansion():
    """The breadth-first halo equals growing a mask over all edges one hop at a time."""
    atoms = rattled_water()
    edge_index = atoms_to_graph(atoms, 3.0).edge_index.numpy()
    incoming = IncomingEdges(edge_index, len(atoms))
    owned = np.arange(40, 90)
    for hops in (0, 1, 3):
        inside = np.isin(np.arange(len(atoms)), owned)
        receiving = inside.copy()
        for _ in range(hops):
            receiving = inside.copy()
            inside[edge_index[1, inside[edge_index[0]]]] = True
        expected_edges = np.flatnonzero(receiving[edge_index[0]]) if hops else np.zeros(0, dtype=int)
        chunk = halo_chunk(owned, incoming, hops)
        assert chunk.atoms[:50].tolist() == owned.tolist() and chunk.num_owned == 50
        assert sorted(chunk.atoms.tolist()) == np.flatnonzero(inside).tolist()
        assert chunk.edges.tolist() == expected_edges.tolist()
        np.testing.assert_array_equal(chunk.atoms[chunk.edge_index], edge_index[:, chunk.edges])


def test_chunk_plan_is_made_once_per_skin_list_and_stays_exact_as_atoms_move(monkeypatch):
    """MD-like small moves inside the skin reuse the plan (no re-planning) and still equal a whole
    evaluation, as edges cross the cutoff in both directions."""
    import eqcalc.calculator as calculator

    plans = []
    monkeypatch.setattr(calculator, "plan_chunks", lambda *args: plans.append(1) or plan_chunks(*args))
    model = small_model("mace", cutoff=3.0)
    atoms = rattled_water()
    edges = atoms_to_graph(atoms, model.cutoff).edge_index.shape[1]
    chunked = EquivariantCalculator(model, max_edges=edges // 2, skin=0.6)
    whole = EquivariantCalculator(model, max_edges=None, skin=0.6)
    rng = np.random.default_rng(5)
    for _ in range(4):
        atoms.positions += rng.normal(scale=0.04, size=atoms.positions.shape)
        pieces, reference = results(chunked, atoms), results(whole, atoms)
        assert chunked.num_chunks > 1
        np.testing.assert_allclose(pieces["forces"], reference["forces"], rtol=0, atol=1e-10)
        np.testing.assert_allclose(pieces["stress"], reference["stress"], rtol=0, atol=1e-12)
    assert chunked.neighbours.num_builds == 1 and len(plans) == 1


@pytest.mark.parametrize("family", ["nequip", "mace"])
def test_convolution_in_receiver_blocks_is_exact(family):
    """Blocks of centre atoms, recomputed in the backward pass, give the one-pass energy,
    per-atom energies, forces and stress (float64)."""
    from eqcalc.nn.irreps import MAX_BLOCKS, EquivariantConvolution

    model = small_model(family)
    atoms = rattled_water()
    reference = results(EquivariantCalculator(model, max_edges=None, block_slots=None, kernels=False), atoms)
    # many blocks, an uneven last one (blocks are for the torch path: the CPU kernel keeps nothing per slot)
    calc = EquivariantCalculator(model, max_edges=None, block_slots=300, kernels=False)
    blocked = results(calc, atoms)
    product = next(m for m in calc.model.modules() if isinstance(m, EquivariantConvolution)).tensor_product
    block_atoms = []  # centre atoms of each aggregate call of the first convolution
    original = product.aggregate
    product.aggregate = lambda sources, sh, weights, slots: block_atoms.append(slots.num_nodes) or original(
        sources, sh, weights, slots)
    calc.calculate(atoms, ["energy", "forces"])
    nodes = len(atoms) + model.num_species  # the model appends one neighbour-less atom per species
    assert 2 < len(block_atoms) <= 2 * MAX_BLOCKS and sum(block_atoms) == 2 * nodes  # forward + recompute
    np.testing.assert_allclose(blocked["energies"], reference["energies"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(blocked["forces"], reference["forces"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(blocked["stress"], reference["stress"], rtol=0, atol=1e-12)


def test_block_slots_is_a_no_op_for_families_without_irreps_convolutions():
    assert not small_model("schnet").set_block_slots(300)


def test_calculator_sets_block_slots_on_its_copy_only():
    model = small_model("mace")
    assert block_settings(EquivariantCalculator(model).model) == {None}  # "auto": one pass for small structures
    assert block_settings(EquivariantCalculator(model, block_slots=500, kernels=False).model) == {500}
    assert block_settings(EquivariantCalculator(model, block_slots=None).model) == {None}
    assert block_settings(model) == {None}  # the user's model is untouched
    with pytest.raises(ValueError, match="block_slots"):
        EquivariantCalculator(model, block_slots=0)
    with pytest.raises(ValueError, match="kernels=False"):  # blocks would be silently ignored
        EquivariantCalculator(model, block_slots=500)


def test_max_edges_too_small_names_the_fix():
    model = small_model("schnet")
    calc = EquivariantCalculator(model, max_edges=5)
    atoms = rattled_water()
    atoms.calc = calc
    with pytest.raises(ValueError, match="raise max_edges"):
        atoms.get_potential_energy()


def test_bad_max_edges_option():
    with pytest.raises(ValueError, match="max_edges"):
        EquivariantCalculator(small_model("schnet"), max_edges=0)


def auto_calculator(monkeypatch, model, free_bytes: float, memory=None, **options):
    """A max_edges="auto" calculator that checks every structure, with ``free_bytes`` free and,
    if given, ``memory`` as its fitted memory model (skipping the measurement)."""
    import eqcalc.calculator as calculator

    monkeypatch.setattr(calculator, "AUTO_CHUNK_CHECK_EDGES", 10)
    monkeypatch.setattr(calculator, "available_bytes", lambda device: free_bytes)
    calc = EquivariantCalculator(model, **options)
    if memory is not None:
        calc.evaluation_memory, calc._memory_measured = memory, True
    return calc


def test_auto_mode_chunks_when_the_predicted_peak_exceeds_half_the_free_memory(monkeypatch):
    from eqcalc.calculator import EvaluationMemory

    model = small_model("schnet")
    atoms = rattled_water()
    reference = results(EquivariantCalculator(model, max_edges=None), atoms)
    memory = EvaluationMemory(fixed=1e4, per_atom=100.0, per_slot=100.0)
    calc = auto_calculator(monkeypatch, model, 2**20, memory)
    pieces = results(calc, atoms)
    assert calc.num_chunks > 1
    width = max(slot_width(c.edge_index, len(c.atoms)) for c in calc._plan)
    assert max(memory.bytes(len(c.atoms), width) for c in calc._plan) <= 2**19
    np.testing.assert_allclose(pieces["forces"], reference["forces"], atol=1e-10)
    np.testing.assert_allclose(pieces["energy"], reference["energy"], rtol=1e-13)


def test_auto_mode_evaluates_whole_when_the_prediction_fits(monkeypatch):
    """The decision uses the cutoff graph (the skin list's extra pairs are not evaluated)."""
    from eqcalc.calculator import EvaluationMemory

    model = small_model("schnet")
    atoms = rattled_water()
    graph = atoms_to_graph(atoms, model.cutoff)
    width = slot_width(graph.edge_index.numpy(), len(atoms))
    memory = EvaluationMemory(fixed=0.0, per_atom=0.0, per_slot=1.0)
    fits_cutoff_graph_only = 2 * len(atoms) * width * 1.01  # half of it: the cutoff graph, not the skin list
    calc = auto_calculator(monkeypatch, model, fits_cutoff_graph_only, memory)
    results(calc, atoms)
    assert calc.num_chunks == 1
    assert len(atoms) * slot_width(calc.neighbours.edge_index, len(atoms)) > fits_cutoff_graph_only / 2


def test_auto_mode_blocks_structures_above_the_check_size_only(monkeypatch):
    """Above the size from which memory is checked the torch convolutions run in blocks (less memory
    and, for large boxes, less time), with one-pass results; below it, one pass. The CPU kernel runs
    in one pass while the predicted memory fits; else the calculator switches to the torch
    convolutions in blocks, and chunks only if those do not fit either."""
    import eqcalc.calculator as calculator
    from eqcalc.calculator import EvaluationMemory

    model = small_model("mace")
    atoms = rattled_water()
    reference = results(EquivariantCalculator(model, max_edges=None, block_slots=None, kernels=False), atoms)
    small = EquivariantCalculator(model, kernels=False)
    results(small, atoms)
    assert block_settings(small.model) == {None}  # 768 atoms are below the check size
    large = auto_calculator(monkeypatch, model, 2**40, EvaluationMemory(0.0, 1.0, 1.0), kernels=False)
    assert calculator.AUTO_CHUNK_CHECK_EDGES == 10
    pieces = results(large, atoms)
    assert block_settings(large.model) == {4096} and large.num_chunks == 1
    np.testing.assert_allclose(pieces["forces"], reference["forces"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(pieces["stress"], reference["stress"], rtol=0, atol=1e-12)
    # the CPU kernel: one pass while the predicted memory fits; else the torch convolutions in blocks
    # (re-measured: less memory per slot), before any chunking
    with_kernel = auto_calculator(monkeypatch, model, 2**40, EvaluationMemory(0.0, 1.0, 1.0))
    pieces = results(with_kernel, atoms)
    assert with_kernel.kernels_in_use and block_settings(with_kernel.model) == {None}
    kernel_reference = results(EquivariantCalculator(model, max_edges=None, block_slots=None), atoms)  # radial tables
    np.testing.assert_allclose(pieces["forces"], kernel_reference["forces"], rtol=0, atol=1e-10)
    tight = auto_calculator(monkeypatch, model, 1e6, EvaluationMemory(0.0, 0.0, 1e3))  # does not fit
    blocked_memory = EvaluationMemory(0.0, 0.0, 1.0)  # fits half of 1e6 bytes
    monkeypatch.setattr(tight, "_measure_evaluation_memory", lambda *args: blocked_memory)
    pieces = results(tight, atoms)
    assert block_settings(tight.model) == {4096} and tight.num_chunks == 1
    # the convolutions leave the kernel; MACE's product-basis kernel (nothing per slot) stays
    assert not any(c.use_kernel for c in tight.model._convolutions()) and tight.kernels_in_use
    assert all(layer.product_basis.use_kernel for layer in tight.model.layers)
    np.testing.assert_allclose(pieces["forces"], reference["forces"], rtol=0, atol=1e-10)
    tighter = auto_calculator(monkeypatch, model, 1e6, EvaluationMemory(0.0, 0.0, 1e3))
    monkeypatch.setattr(tighter, "_measure_evaluation_memory", lambda *args: EvaluationMemory(0.0, 0.0, 100.0))
    pieces = results(tighter, atoms)  # blocks do not fit either: chunks of blocked convolutions
    assert not any(c.use_kernel for c in tighter.model._convolutions())
    assert block_settings(tighter.model) == {4096} and tighter.num_chunks > 1
    np.testing.assert_allclose(pieces["forces"], reference["forces"], rtol=0, atol=1e-10)


def simulated_peak(evaluated: list, fixed: float, per_atom: float, per_slot: float):
    """A stand-in for measure_peak: the bytes of the last evaluated chunk under a known model."""
    import contextlib

    from eqcalc.memory import PeakMemory

    @contextlib.contextmanager
    def measure(device):
        peak = PeakMemory()
        yield peak
        chunk = evaluated[-1]
        width = slot_width(chunk.edge_index, len(chunk.atoms))
        peak.bytes = int(fixed + (per_atom + per_slot * width) * len(chunk.atoms))

    return measure


def test_memory_model_separates_fixed_atom_and_slot_bytes(monkeypatch):
    """The fit recovers a simulated peak of 5 MB + 1000 B/atom + 40 B/slot from the three
    calibration evaluations: one piece with all and with every other edge (same atoms), and a
    smaller piece."""
    import eqcalc.calculator as calculator

    model = small_model("schnet")
    atoms = rattled_water()
    edges = atoms_to_graph(atoms, model.cutoff).edge_index.shape[1]
    monkeypatch.setattr(calculator, "CALIBRATION_EDGES", edges // 2)
    calc = EquivariantCalculator(model, max_edges=None)
    evaluated = []
    monkeypatch.setattr(calc, "_evaluate", lambda atoms, chunk, stress: evaluated.append(chunk))
    monkeypatch.setattr(calculator, "measure_peak", simulated_peak(evaluated, 5e6, 1000.0, 40.0))
    calc.neighbours.update(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
    within = calc._within_cutoff(atoms.positions, atoms.cell.array)
    memory = calc._measure_evaluation_memory(atoms, within, True)
    assert memory.fixed == pytest.approx(5e6) and memory.per_atom == pytest.approx(1000)
    assert memory.per_slot == pytest.approx(40)
    sample, half, small = evaluated[-3:]
    assert sample.atoms.tolist() == half.atoms.tolist() and 0 < len(half.edges) < len(sample.edges) <= edges // 2
    assert 0 < len(small.atoms) < len(sample.atoms)
    assert all(within[chunk.edges].all() for chunk in (sample, small))  # edges inside the cutoff, as steps use


def test_memory_fit_drops_terms_that_noise_makes_negative():
    from eqcalc.calculator import _fit_memory

    sizes = np.array([[1.0, 700, 50_000], [1.0, 700, 25_000], [1.0, 360, 25_000]])
    peaks = np.array([20e6, 10e6, 10.2e6])  # solved exactly, atoms would cost < 0
    memory = _fit_memory(sizes, peaks)
    assert memory.per_atom == 0.0 and memory.per_slot > 0 and memory.fixed > 0
    assert memory.bytes(700, 50_000 // 700) == pytest.approx(20e6, rel=0.05)


def test_plan_respects_a_per_atom_cost():
    """A cost dominated by atoms (halo-heavy models) bounds the atoms of each piece, not just its edges."""
    model = small_model("mace")
    atoms = rattled_water()
    edge_index = atoms_to_graph(atoms, model.cutoff).edge_index.numpy()
    cost = ChunkCost(per_atom=50.0, per_edge=1.0)
    limit = cost.of(len(atoms), edge_index.shape[1]) / 3
    chunks = plan_chunks(atoms.get_positions(wrap=True), edge_index, model.message_passing_hops, limit, cost)
    assert len(chunks) > 1 and max(cost.of(len(c.atoms), len(c.edges)) for c in chunks) <= limit
    assert sorted(np.concatenate([c.atoms[: c.num_owned] for c in chunks]).tolist()) == list(range(len(atoms)))


def test_auto_mode_says_when_even_chunks_do_not_fit(monkeypatch):
    from eqcalc.calculator import EvaluationMemory

    calc = auto_calculator(monkeypatch, small_model("schnet"), 1, EvaluationMemory(1e6, 1e6, 1e6))
    atoms = rattled_water()
    atoms.calc = calc
    with pytest.raises(MemoryError, match="need more memory than is free even in chunks"):
        atoms.get_potential_energy()


def test_failed_calibration_is_remembered(monkeypatch):
    """Where peak memory cannot be measured, "auto" evaluates whole and does not retry every step."""
    import eqcalc.calculator as calculator

    model = small_model("schnet")
    atoms = rattled_water()
    monkeypatch.setattr(calculator, "AUTO_CHUNK_CHECK_EDGES", 10)
    calls = []
    monkeypatch.setattr(EquivariantCalculator, "_measure_evaluation_memory", lambda self, *a: calls.append(1))
    calc = EquivariantCalculator(model)
    atoms.calc = calc
    for _ in range(3):
        atoms.positions += 0.001
        atoms.get_forces()
    assert len(calls) == 1 and calc.num_chunks == 1


def test_calibration_uses_a_piece_with_edges(monkeypatch):
    """The lowest grid block holds only an isolated atom: calibration measures a piece with edges."""
    import eqcalc.calculator as calculator

    model = small_model("schnet", cutoff=1.8)
    atoms = aspirin()
    atoms += Atoms("O", positions=[atoms.positions.min(axis=0) - 10.0])  # far below every other atom
    calc = EquivariantCalculator(model, max_edges=None)
    calc.neighbours.update(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
    within = calc._within_cutoff(atoms.positions, atoms.cell.array)
    monkeypatch.setattr(calculator, "CALIBRATION_EDGES", 3 * int(within.sum()) // 4)
    evaluated = []
    monkeypatch.setattr(calc, "_evaluate", lambda atoms, chunk, stress: evaluated.append(chunk))
    monkeypatch.setattr(calculator, "measure_peak", simulated_peak(evaluated, 0.0, 1000.0, 40.0))
    memory = calc._measure_evaluation_memory(atoms, within, False)
    assert memory is not None and memory.per_atom == pytest.approx(1000) and memory.per_slot == pytest.approx(40)
    assert all(len(chunk.edges) > 0 for chunk in evaluated)


def test_calibration_grows_its_sample_past_one_atoms_halo(monkeypatch):
    """Deep models (NequIP: 4 hops) have single-atom halos above the sample size: the sample grows
    instead of giving up (which left such models never chunked nor blocked)."""
    import eqcalc.calculator as calculator

    model = small_model("nequip")
    atoms = rattled_water()
    calc = EquivariantCalculator(model, max_edges=None)
    calc.neighbours.update(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
    within = calc._within_cutoff(atoms.positions, atoms.cell.array)
    monkeypatch.setattr(calculator, "CALIBRATION_EDGES", 5)  # below any atom's 2-hop halo
    evaluated = []
    monkeypatch.setattr(calc, "_evaluate", lambda atoms, chunk, stress: evaluated.append(chunk))
    monkeypatch.setattr(calculator, "measure_peak", simulated_peak(evaluated, 0.0, 1000.0, 40.0))
    memory = calc._measure_evaluation_memory(atoms, within, True)
    assert memory is not None and memory.per_slot == pytest.approx(40) and memory.per_atom == pytest.approx(1000)


def test_a_skin_halo_too_big_for_max_edges_falls_back_to_the_cutoff_graph_once_per_build(monkeypatch):
    """When one atom's skin-list halo exceeds max_edges but its cutoff halo fits, each step plans on
    its own cutoff edges (exact), and the failing skin-list plan is not retried until a rebuild."""
    import eqcalc.calculator as calculator

    calls = []
    monkeypatch.setattr(calculator, "plan_chunks", lambda *args: calls.append(args[1].shape[1]) or plan_chunks(*args))
    model = small_model("schnet", cutoff=1.8)
    atoms = aspirin()
    edges = atoms_to_graph(atoms, model.cutoff).edge_index.shape[1]
    chunked = EquivariantCalculator(model, max_edges=3 * edges // 4, skin=0.5)
    whole = EquivariantCalculator(model, max_edges=None, skin=0.5)
    for step in range(3):
        atoms.positions += 0.01
        pieces, reference = results(chunked, atoms), results(whole, atoms)
        np.testing.assert_allclose(pieces["forces"], reference["forces"], rtol=0, atol=1e-10)
        assert chunked.num_chunks > 1
    skin_edges = chunked.neighbours.edge_index.shape[1]
    assert chunked.neighbours.num_builds == 1
    assert calls[0] == skin_edges and all(c < skin_edges for c in calls[1:]) and len(calls) == 4

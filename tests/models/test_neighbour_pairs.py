"""Reverse-edge pairs: the radial MLPs of NequIP and MACE run once per pair {i → j, j → i}.

The pairing must find exactly the reverse edges of a full neighbour list, refuse lists
where it cannot (own periodic images, several images of one neighbour, one-sided lists),
and give the same energies, forces and stress as per-slot evaluation (float64, 1e-12).
"""

import pytest
import torch
from ase import Atoms
from ase.build import molecule

import eqcalc
from eqcalc.data.graph import atoms_to_graph
from eqcalc.data.structures import water_box
from eqcalc.nn import neighbour_slots
from eqcalc.nn.neighbour_slots import NeighbourSlots, reverse_pairs
from eqcalc.properties import compute_properties, edge_vectors
from eqcalc.testing.physics import randomize_energy_offsets

CUTOFF = 4.0


def graph_and_vectors(atoms):
    graph = atoms_to_graph(atoms, CUTOFF)
    return graph, edge_vectors(graph.positions, graph.cell, graph.edge_index, graph.shifts, graph.batch)


@pytest.mark.parametrize("build", [lambda: molecule("CH3CH2OH"), lambda: water_box(seed=3)], ids=["ethanol", "water-box"])
def test_pairs_are_the_reverse_edges(build):
    graph, vectors = graph_and_vectors(build())
    edges_of_pair = reverse_pairs(graph.edge_index, vectors)
    assert edges_of_pair is not None
    edge_of_pair = edges_of_pair[:, 0]
    pair_of_edge = torch.full((graph.num_edges,), -1)
    pair_of_edge[edges_of_pair] = torch.arange(edges_of_pair.shape[0])[:, None]
    assert edge_of_pair.shape[0] * 2 == graph.num_edges
    assert torch.equal(torch.bincount(pair_of_edge), torch.full((edge_of_pair.shape[0],), 2))
    partner = edge_of_pair[pair_of_edge]  # the pair's first edge, for every edge
    own = partner == torch.arange(graph.num_edges)
    reverse = ~own
    assert int(own.sum()) == int(reverse.sum())
    assert torch.equal(graph.edge_index[:, partner[reverse]], graph.edge_index[:, reverse].flip(0))
    torch.testing.assert_close(vectors[partner[reverse]], -vectors[reverse], rtol=0, atol=1e-12)
    assert torch.equal(graph.shifts[partner[reverse]], -graph.shifts[reverse])


def test_small_periodic_cell_is_not_paired(triclinic_cu):
    """A cell smaller than the cutoff: atoms see their own images and several images of a
    neighbour, so atom pairs do not identify edges; evaluation falls back to per slot."""
    graph, vectors = graph_and_vectors(triclinic_cu)
    assert reverse_pairs(graph.edge_index, vectors) is None
    assert not NeighbourSlots.from_edges(graph.edge_index, graph.num_atoms, vectors).paired


def test_cell_shorter_than_twice_the_cutoff_is_not_paired():
    """No own images (6 Å > r_c), but two images of the neighbour within r_c (2.9 and 3.1 Å):
    four edges between the same two atoms."""
    atoms = Atoms("OH", positions=[[0.0, 0.0, 0.0], [2.9, 0.0, 0.0]], cell=[6.0, 20.0, 20.0], pbc=True)
    graph, vectors = graph_and_vectors(atoms)
    assert graph.num_edges == 4 and bool((graph.edge_index[0] != graph.edge_index[1]).all())
    assert reverse_pairs(graph.edge_index, vectors) is None


def test_lists_without_reverse_pairs_are_refused():
    graph, vectors = graph_and_vectors(molecule("CH3CH2OH"))
    edge_index = graph.edge_index
    assert reverse_pairs(edge_index, vectors) is not None
    one_sided = edge_index[0] < edge_index[1]
    assert reverse_pairs(edge_index[:, one_sided], vectors[one_sided]) is None
    # even length, but one edge's reverse replaced by a second copy of the edge itself
    first = int(torch.nonzero(one_sided)[0])
    reverse = int(torch.nonzero((edge_index[0] == edge_index[1, first]) & (edge_index[1] == edge_index[0, first]))[0])
    duplicated = edge_index.clone()
    duplicated[:, reverse] = edge_index[:, first]
    assert reverse_pairs(duplicated, vectors) is None
    # the right atoms, but vectors that are not opposite (another image)
    shifted = vectors.clone()
    shifted[reverse] += torch.tensor([0.0, 0.0, 3.0], dtype=vectors.dtype)
    assert reverse_pairs(edge_index, shifted) is None
    shifted[reverse] = torch.nan
    assert reverse_pairs(edge_index, shifted) is None
    assert reverse_pairs(edge_index[:, :0], vectors[:0]) is None


@pytest.mark.parametrize("family", ["nequip", "mace"])
@pytest.mark.parametrize(
    "build", [lambda: molecule("CH3CH2OH"), lambda: water_box(seed=3)], ids=["ethanol", "water-box"]
)
def test_paired_evaluation_equals_per_slot(family, build, monkeypatch):
    torch.manual_seed(0)
    hyper = {"nequip": {"num_features": 8, "num_layers": 2}, "mace": {"num_channels": 8}}[family]
    model = eqcalc.build_model(family, species=[1, 6, 8], cutoff=CUTOFF, avg_num_neighbors=10.0, **hyper)
    model = randomize_energy_offsets(model).double().eval()
    atoms = build()
    graph, vectors = graph_and_vectors(atoms)
    assert NeighbourSlots.from_edges(graph.edge_index, graph.num_atoms, vectors).paired
    stress = bool(atoms.pbc.any())
    paired = compute_properties(model, graph, forces=True, stress=stress)
    monkeypatch.setattr(neighbour_slots, "reverse_pairs", lambda edge_index, edge_vectors: None)
    assert not NeighbourSlots.from_edges(graph.edge_index, graph.num_atoms, vectors).paired
    per_slot = compute_properties(model, graph, forces=True, stress=stress)
    assert float(per_slot["forces"].abs().max()) > 1e-3
    for key in ("energies", "forces") + (("stress",) if stress else ()):
        scale = float(per_slot[key].detach().abs().max())
        torch.testing.assert_close(paired[key], per_slot[key], rtol=0, atol=1e-12 * max(scale, 1.0))


@pytest.mark.parametrize("family", ["nequip", "mace"])
def test_paired_training_gradients_equal_per_slot(family, monkeypatch):
    """A loss on forces differentiates through the pair → slot gather twice: the parameter
    gradients equal those of per-slot evaluation."""
    torch.manual_seed(0)
    hyper = {"nequip": {"num_features": 4, "num_layers": 2}, "mace": {"num_channels": 4}}[family]
    model = eqcalc.build_model(family, species=[1, 6, 8], cutoff=CUTOFF, avg_num_neighbors=10.0, **hyper).double()
    graph, _ = graph_and_vectors(molecule("CH3CH2OH"))

    def parameter_gradients():
        forces = compute_properties(model, graph, forces=True, training=True)["forces"]
        return torch.autograd.grad((forces**2).sum(), list(model.parameters()), allow_unused=True)

    paired = parameter_gradients()
    monkeypatch.setattr(neighbour_slots, "reverse_pairs", lambda edge_index, edge_vectors: None)
    per_slot = parameter_gradients()
    assert any(g is not None and float(g.abs().max()) > 1e-6 for g in per_slot)
    for g_paired, g_slot in zip(paired, per_slot):
        if g_slot is None:
            assert g_paired is None
        else:
            torch.testing.assert_close(g_paired, g_slot, rtol=0, atol=1e-12 * max(float(g_slot.abs().max()), 1.0))

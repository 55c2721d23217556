"""The ghost exchange of eqcalc.lammps.exchange without LAMMPS: one process plays a rank whose ghosts
are the periodic images of its own atoms, with communication done by numpy (forward: every image
gets its atom's row; reverse: every image's row is added to its atom's). A message-passing model
on the local atoms, their images within one cutoff and the edges into the local atoms must then
give the periodic calculator's energy and forces; without the exchange it must not."""

import itertools

import numpy as np
import pytest
import torch

import eqcalc
from eqcalc.data.structures import water_box
from eqcalc.data.chunks import IncomingEdges, halo_chunk
from eqcalc.data.graph import structure_graph
from eqcalc.data.neighbors import neighbour_list
from eqcalc.inference import inference_model
from eqcalc.lammps.exchange import GhostExchange, anchored, exchanges_of
from eqcalc.models.base import OwnFeatures
from eqcalc.properties import compute_properties

from lammps_runs import SMALL, small_model

FAMILIES = [family for family in sorted(SMALL) if small_model(family).message_passing_hops > 1]


def periodic_water():
    """The water box (12.4 Å, 192 atoms): its images within one 3 Å cutoff are in the 26 next to it."""
    atoms = water_box()
    atoms.rattle(0.05, seed=1)
    return atoms


class ImageRank:
    """A rank holding every atom of a periodic box as local atoms (0 … n−1) and its 26 neighbouring
    images as ghosts (owner: the atom they are an image of), with what the bridge evaluates: the
    local atoms, their neighbours, the edges into the local atoms."""

    def __init__(self, atoms, cutoff: float):
        n = len(atoms)
        shifts = np.array([s for s in itertools.product([-1, 0, 1], repeat=3) if any(s)])
        images = [atoms.positions + s @ atoms.cell.array for s in shifts]
        self.positions = np.concatenate([atoms.positions, *images])
        self.owner = np.tile(np.arange(n), len(shifts) + 1)
        self.nlocal, self.nall = n, len(self.positions)
        edge_index, _ = neighbour_list(self.positions, np.zeros((3, 3)), np.zeros(3, dtype=bool), cutoff)
        self.piece = halo_chunk(np.arange(n), IncomingEdges(edge_index, self.nall), 1)
        rows = self.piece.atoms
        self.graph = structure_graph(self.positions[rows], atoms.numbers[self.owner[rows]], np.zeros((3, 3)),
                                     np.zeros(3, dtype=bool), self.piece.edge_index,
                                     np.zeros((self.piece.edge_index.shape[1], 3)))
        self.calls = {False: 0, True: 0}

    def communicate(self, rows: np.ndarray, reverse: bool) -> None:
        self.calls[reverse] += 1
        ghosts = np.arange(self.nlocal, self.nall)
        if reverse:
            np.add.at(rows, self.owner[ghosts], rows[ghosts])
        else:
            rows[ghosts] = rows[self.owner[ghosts]]

    def evaluate(self, model, exchange: GhostExchange | None):
        """Energy of the local atoms and forces folded onto them (eV, eV/Å)."""
        counted = torch.arange(self.graph.num_atoms) < self.nlocal
        if exchange is None:
            results = compute_properties(model, self.graph, counted=counted)
        else:
            exchange.place(self.piece.atoms, self.nlocal, self.nall)
            results = compute_properties(anchored(model, exchange), self.graph, counted=counted)
        forces = np.zeros((self.nlocal, 3))
        np.add.at(forces, self.owner[self.piece.atoms], results["forces"].numpy())
        return float(results["energy"].detach().sum()), forces


@pytest.mark.parametrize("family", FAMILIES)
def test_exchange_on_a_one_cutoff_shell_equals_the_calculator(family):
    model, _ = inference_model(small_model(family))  # as the pair style and the calculator prepare it
    atoms = periodic_water()
    atoms.calc = eqcalc.EquivariantCalculator(model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()

    rank = ImageRank(atoms, model.cutoff)
    width, count = exchanges_of(model)
    assert count == model.message_passing_hops and width > 0
    model.ghost_exchange = GhostExchange(rank.communicate, width, count)
    exchanged_energy, exchanged_forces = rank.evaluate(model, model.ghost_exchange)
    assert rank.calls == {False: count, True: count}  # every exchange's backward ran, once
    assert abs(exchanged_energy - energy) < 1e-10
    np.testing.assert_allclose(exchanged_forces, forces, rtol=0, atol=1e-10)

    # the same graph without the exchange: the ghosts' features after layer 1 are wrong
    model.ghost_exchange = OwnFeatures()
    own_energy, own_forces = rank.evaluate(model, None)
    assert abs(own_energy - energy) > 1e-6 or np.abs(own_forces - forces).max() > 1e-6


def test_a_failed_evaluation_still_answers_every_exchange():
    """A rank that fails part-way makes the rest of its communications (with zeros), in order:
    the other ranks are inside the same exchanges and would otherwise wait for ever."""
    model, _ = inference_model(small_model("schnet"))
    atoms = periodic_water()
    rank = ImageRank(atoms, model.cutoff)
    width, count = exchanges_of(model)
    exchange = GhostExchange(rank.communicate, width, count)
    model.ghost_exchange = exchange
    exchange.place(rank.piece.atoms, rank.nlocal, rank.nall)
    exchange.anchor = torch.zeros((), requires_grad=True)
    exchange(torch.zeros(rank.graph.num_atoms + model.num_species, 8))  # the first layer's exchange, then a failure
    assert rank.calls == {False: 1, True: 0}
    exchange.finish()
    assert rank.calls == {False: count, True: count}


def test_rows_must_begin_with_the_local_atoms():
    exchange = GhostExchange(lambda rows, reverse: None, 4, 2)
    with pytest.raises(ValueError, match="must begin with the local atoms"):
        exchange.place(np.array([1, 0, 2]), 2, 3)

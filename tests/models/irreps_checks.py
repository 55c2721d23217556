"""Checks shared by the NequIP and MACE tests: per-layer Wigner-D equivariance, CG selection rules."""

from __future__ import annotations

import numpy as np
import torch
from e3nn import o3

from eqcalc.data.graph import atoms_to_graph
from eqcalc.properties import edge_vectors
from eqcalc.testing import physics


def orthogonal_matrices(seed: int = 0) -> list[torch.Tensor]:
    """Two random rotations, two rotation-inversions (det −1) and a mirror plane, float64."""
    rng = np.random.default_rng(seed)
    matrices = [physics.random_orthogonal(rng, reflection=k % 2 == 1) for k in range(4)]
    matrices.append(np.diag([1.0, -1.0, 1.0]))
    return [torch.as_tensor(m) for m in matrices]


def wigner_d(irreps: o3.Irreps, rotation: torch.Tensor) -> torch.Tensor:
    """``irreps.D_from_matrix(rotation)`` to float64 precision (e3nn builds its so(3)
    generators in the default dtype, so they are float32-accurate unless it is float64)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return irreps.D_from_matrix(rotation.to(torch.float64))
    finally:
        torch.set_default_dtype(previous)


def layer_feature_errors(model, atoms) -> list[dict]:
    """For every layer and O(3) element R: max |h(R r) − D(R) h(r)| and the smallest block norm of h(r).

    ``model`` must expose ``node_features`` and ``feature_irreps``. The block norms
    show that no irrep block is identically zero (which would pass trivially).
    """
    graph = atoms_to_graph(atoms, model.cutoff)
    species = model.species_table[graph.numbers]
    vectors = edge_vectors(graph.positions, graph.cell, graph.edge_index, graph.shifts, graph.batch).to(model.dtype)
    with torch.no_grad():
        reference = model.node_features(species, graph.edge_index, vectors)
        results = []
        for rotation in orthogonal_matrices():
            rotation = rotation.to(model.dtype)
            moved = model.node_features(species, graph.edge_index, vectors @ rotation.T)
            for irreps, h, h_moved in zip(model.feature_irreps, reference, moved):
                wigner = wigner_d(irreps, rotation).to(model.dtype)
                smallest = min(float(h[:, s].norm()) for s in irreps.slices())
                results.append(
                    {
                        "irreps": str(irreps),
                        "det": float(torch.det(rotation)),
                        "error": float((h_moved - h @ wigner.T).abs().max()),
                        "scale": float(h.abs().max()),
                        "smallest_block": smallest,
                    }
                )
    return results


def assert_equivariant_layers(model, atoms, tolerance: float = 1e-10) -> None:
    for result in layer_feature_errors(model, atoms):
        assert result["smallest_block"] > 1e-6, f"an irrep block is zero, the check is vacuous: {result}"
        assert result["error"] < tolerance * max(1.0, result["scale"]), result


def obeys_selection_rules(ir1: o3.Irrep, ir2: o3.Irrep, ir_out: o3.Irrep) -> bool:
    """|l1 − l2| ≤ l ≤ l1 + l2 and p = p1 p2."""
    return abs(ir1.l - ir2.l) <= ir_out.l <= ir1.l + ir2.l and ir_out.p == ir1.p * ir2.p


def assert_paths_obey_selection_rules(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, paths) -> None:
    """paths: (i_in1, i_in2, i_out, …) tuples indexing the three irreps."""
    assert len(paths) > 0
    for i1, i2, i_out, *_ in paths:
        ir1, ir2, ir_out = irreps_in1[i1].ir, irreps_in2[i2].ir, irreps_out[i_out].ir
        assert obeys_selection_rules(ir1, ir2, ir_out), (ir1, ir2, ir_out)

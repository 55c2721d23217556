"""The Python side of ``pair_style eqcalc``: one model per LAMMPS pair-style instance.

``pair_eqcalc.cpp`` calls :func:`setup` from ``pair_coeff``, :func:`prepare` and then
:func:`evaluate` on every force call and :func:`release` when the pair style is deleted, each through :func:`guarded`, with the addresses
of LAMMPS's arrays as integers. No exception ever leaves this module: :func:`guarded` writes its
message into the plugin's buffer, and the plugin stops every rank with it (LAMMPS ``error->all``).

Per call, on each rank: the edges of LAMMPS's full neighbour list over local and ghost atoms
(ghosts' neighbours included) cut to the model's cutoff, and forces, −∂E_local/∂r, on local *and*
ghost atoms, through :func:`eqcalc.properties.compute_properties` (the model's usual autograd path),
the energy of the local atoms counted. What part of the graph a rank evaluates depends on the
``ghosts`` keyword:

- ``halo``: the halo of the local atoms (:func:`eqcalc.data.chunks.halo_chunk`: atoms within L hops,
  L the model's message-passing rounds, and the edges into atoms within L − 1 hops), the only part
  their energies depend on. LAMMPS's ghost shell is L·r_c + skin wide, so every local atom's L-hop
  neighbourhood is among the ghosts, and each rank recomputes its ghosts' features itself.
- ``exchange``: the local atoms, their neighbours and the edges into the local atoms only; the ghost
  shell is r_c + skin, and before each layer the ghosts' features are their owners'
  (:mod:`eqcalc.lammps.exchange`, through the pair style's own communication).

Either way the result is the serial one, whatever the number of ranks. A strictly local model
(one hop) needs no exchange, and is evaluated as in ``halo`` mode.
"""

from __future__ import annotations

import atexit
import ctypes
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from ase.data import chemical_symbols

from ..calculator import KEEP_FREED_MEMORY_ATOMS
from ..data.chunks import IncomingEdges, halo_chunk
from ..data.graph import AtomicGraph, structure_graph
from ..data.validation import MIN_DISTANCE, CloseContactError, check_min_distance
from ..inference import inference_model
from ..models.base import AtomisticModel, atomic_numbers
from ..memory import keep_freed_memory
from ..properties import compute_properties
from .exchange import GhostExchange, anchored, exchanges_of, plugin_communicate

OPTIONS = {"dtype": ("float32", "float64"), "kernels": ("yes", "no"), "ghosts": ("exchange", "halo")}
KEYWORDS = ", ".join([*OPTIONS, "min_distance"])


@dataclass
class Prepared:
    """One force call's graph on one rank, between :func:`prepare` and :func:`evaluate`."""

    graph: AtomicGraph
    atoms: np.ndarray  # (n,) LAMMPS index of each graph atom, the local atoms first
    nlocal: int
    nall: int
    started: float  # perf_counter at the start of prepare


@dataclass
class PairModel:
    """What one ``pair_style eqcalc`` instance evaluates: a model in inference mode, the atomic number
    of each LAMMPS type (index 0 unused), the closest distance allowed (Å), with ``ghosts exchange``
    the model's ghost exchange, and the graph of the force call in progress; and, for benchmarks,
    what its force calls cost on this rank: calls, seconds in :func:`prepare` and :func:`evaluate`,
    and the atoms and edges of the last call's graph (local atoms plus the ghosts it evaluates)."""

    model: AtomisticModel
    type_numbers: np.ndarray
    min_distance: float
    exchange: GhostExchange | None = None
    prepared: Prepared | None = None
    calls: int = 0
    seconds: float = 0.0
    graph_atoms: int = 0
    graph_edges: int = 0


_instances: dict[str, PairModel] = {}


def guarded(buffer: int, size: int, call: Callable[[], None]) -> None:
    """Run ``call``; write the message of any exception it raises, NUL-terminated, into the C buffer
    of ``size`` bytes at ``buffer`` (left untouched on success)."""
    try:
        call()
    except BaseException as error:  # everything: nothing may propagate into LAMMPS's C++ frames
        text = str(error) or type(error).__name__
        if not isinstance(error, (ValueError, OSError, FloatingPointError, RuntimeError)):
            text = f"{type(error).__name__}: {text}"
        data = text.encode("utf-8", "replace")[: size - 1]
        ctypes.memmove(buffer, data + b"\0", len(data) + 1)


def _options(options: dict[str, str]) -> tuple[str | None, bool, bool, float]:
    """pair_style keywords -> (dtype, kernels, exchange, min_distance); ValueError naming a bad one."""
    unknown = sorted(set(options) - {*OPTIONS, "min_distance"})
    if unknown:
        raise ValueError(f"unknown pair_style keyword {unknown[0]!r}: the keywords are {KEYWORDS}")
    for keyword, allowed in OPTIONS.items():
        if keyword in options and options[keyword] not in allowed:
            raise ValueError(f"pair_style keyword {keyword} must be {' or '.join(allowed)}, got {options[keyword]!r}")
    try:
        min_distance = float(options.get("min_distance", MIN_DISTANCE))
    except ValueError:
        min_distance = -1.0
    if not min_distance >= 0:
        raise ValueError(f"pair_style keyword min_distance must be a distance >= 0 in Angstrom, got {options['min_distance']!r}")
    exchange = options.get("ghosts", OPTIONS["ghosts"][0]) == "exchange"
    return options.get("dtype"), options.get("kernels", "yes") == "yes", exchange, min_distance


def setup(
    key: str, path: str, options: dict[str, str], elements: list[str], cutoff: int, hops: int, alive: int,
    exchange_function: int, pair: int, width: int,
) -> None:
    """Load the model for pair instance ``key`` and map LAMMPS types 1..n to ``elements``; write the
    model's cutoff (Å) and the neighbour hops the ghost shell must cover (its message-passing rounds;
    1 with ``ghosts exchange``) into the C doubles at ``cutoff`` and ``hops``, and the values per
    atom its ghost exchanges carry (0: none) into the C int at ``width``. ``exchange_function`` is
    the plugin's ``eqcalc_exchange`` and ``pair`` the pair style it communicates for. At exit the C
    int at ``alive`` is set to 0, so that pair styles deleted while Python shuts down (a driver's
    last LAMMPS instance) do not call :func:`release`."""
    dtype, kernels, exchange, min_distance = _options(options)
    model, _ = inference_model(path, dtype=dtype, kernels=kernels)
    numbers = []
    for index, element in enumerate(elements, start=1):
        try:
            (number,) = atomic_numbers([element])
        except ValueError:
            raise ValueError(f"pair_coeff * * maps atom type {index} to {element!r}, which is not an element symbol") from None
        if number not in model.species:
            known = " ".join(chemical_symbols[z] for z in model.species)
            raise ValueError(
                f"pair_coeff * * maps atom type {index} to {element}, which the model {path} does not know "
                f"(it knows {known}): map every type to one of those, or use a model trained on {element}"
            )
        numbers.append(number)
    if not _instances:
        atexit.register(setattr, ctypes.c_int.from_address(alive), "value", 0)
    ghost_exchange = None
    if exchange and model.message_passing_hops > 1:
        values, count = exchanges_of(model)
        ghost_exchange = GhostExchange(plugin_communicate(exchange_function, pair), values, count)
        model.ghost_exchange = ghost_exchange
        ctypes.c_int.from_address(width).value = values
    _instances[key] = PairModel(model, np.array([0, *numbers], dtype=np.int64), min_distance, ghost_exchange)
    ctypes.c_double.from_address(cutoff).value = model.cutoff
    ctypes.c_double.from_address(hops).value = 1.0 if ghost_exchange else float(model.message_passing_hops)


def release(key: str) -> None:
    """Forget the model of pair instance ``key``."""
    _instances.pop(key, None)


def _array(address: int, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A writable numpy view of the C array of ``shape`` at ``address`` (no copy)."""
    count = int(np.prod(shape))
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    return np.ctypeslib.as_array((np.ctypeslib.as_ctypes_type(dtype) * count).from_address(address)).reshape(shape)


def prepare(
    key: str, nlocal: int, nall: int, x: int, types: int, tags: int, offsets: int, neighbours: int, tag_bytes: int,
) -> None:
    """The first half of one force call on one rank: check the positions and build the graph.

    Everything that can fail on one rank only for bad input (non-finite positions, atoms too close)
    fails here, before the model runs: the plugin makes the ranks agree after each half, so that no
    rank is left waiting in a ghost exchange of :func:`evaluate` for one that stopped.

    Args:
        nlocal, nall: local atoms, local + ghost atoms (locals first, LAMMPS's order).
        x: address of the (nall, 3) float64 positions (Å).
        types, tags: addresses of (nall,) int32 types and (nall,) atom ids of ``tag_bytes`` bytes.
        offsets, neighbours: CSR form of LAMMPS's full neighbour list over all nall atoms: atom i's
            neighbours are neighbours[offsets[i]:offsets[i + 1]] ((nall + 1,) and (E,) int32).
    """
    started = time.perf_counter()
    pair = _instances[key]
    pair.prepared = None
    positions = _array(x, np.float64, (nall, 3))
    atom_ids = _array(tags, np.int64 if tag_bytes == 8 else np.int32, (nall,))
    starts = _array(offsets, np.int32, (nall + 1,))
    local = positions[:nlocal]
    bad = np.flatnonzero(~np.isfinite(local).all(axis=1))
    if bad.size:
        raise FloatingPointError(
            f"atoms {', '.join(map(str, atom_ids[bad[:10]]))} have NaN or infinite positions: check the input structure, or the "
            "timestep and the steps that led here"
        )
    centres = np.repeat(np.arange(nall, dtype=np.int64), np.diff(starts))
    others = _array(neighbours, np.int32, (int(starts[nall]),)).astype(np.int64)
    vectors = positions[others] - positions[centres]
    distances = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    inside = distances < pair.model.cutoff
    edge_index = np.stack([centres[inside], others[inside]])
    try:
        check_min_distance(edge_index, distances[inside], pair.min_distance)
    except CloseContactError as contact:
        raise ValueError(
            f"atoms {atom_ids[contact.i]} and {atom_ids[contact.j]} are {contact.distance:.4f} Angstrom apart, closer than "
            f"min_distance {contact.threshold}: overlapping atoms (a duplicated atom, a wrong unit, or a run that blew up)"
        ) from None
    # only what the local atoms' energies depend on: atoms within `hops` hops, edges into those within
    # hops − 1 (with the exchange: the local atoms' neighbours, edges into the local atoms)
    hops = 1 if pair.exchange else pair.model.message_passing_hops
    piece = halo_chunk(np.arange(nlocal), IncomingEdges(edge_index, nall), hops)
    numbers = pair.type_numbers[_array(types, np.int32, (nall,))[piece.atoms]]
    graph = structure_graph(
        positions[piece.atoms], numbers, np.zeros((3, 3)), np.zeros(3, dtype=bool), piece.edge_index,
        np.zeros((piece.edge_index.shape[1], 3)),
    )
    pair.prepared = Prepared(graph, piece.atoms, nlocal, nall, started)


def evaluate(key: str, f: int, energy: int, eatom: int) -> None:
    """The second half of one force call on one rank: the model on the graph :func:`prepare` built.

    Args:
        f: address of the (nall, 3) float64 forces (eV/Å; added to).
        energy: address of a double receiving the local atoms' energy (eV).
        eatom: address of LAMMPS's (nall,) per-atom energies (local ones added to), or 0.
    """
    pair = _instances[key]
    prepared, pair.prepared = pair.prepared, None
    graph, nlocal, nall = prepared.graph, prepared.nlocal, prepared.nall
    counted = torch.arange(graph.num_atoms) < nlocal
    if graph.num_atoms >= KEEP_FREED_MEMORY_ATOMS:
        keep_freed_memory()  # as the calculator does: the same large buffers every call, reuse their pages
    if pair.exchange:
        pair.exchange.place(prepared.atoms, nlocal, nall)
        try:
            results = compute_properties(anchored(pair.model, pair.exchange), graph, forces=True, counted=counted)
        except BaseException:
            pair.exchange.finish()  # the other ranks are in the model's exchanges: answer them, then fail on all
            raise
    else:
        results = compute_properties(pair.model, graph, forces=True, counted=counted)
    energies = results["energies"].detach().numpy()[:nlocal]
    forces = results["forces"].detach().numpy()
    if not (np.isfinite(energies).all() and np.isfinite(forces).all()):
        raise FloatingPointError(
            "the model returned a non-finite energy or force: the structure is far outside its training data, "
            "or the model file is damaged"
        )
    _array(f, np.float64, (nall, 3))[prepared.atoms] += forces
    ctypes.c_double.from_address(energy).value = math.fsum(energies)
    if eatom:
        _array(eatom, np.float64, (nall,))[:nlocal] += energies
    pair.calls += 1
    pair.seconds += time.perf_counter() - prepared.started
    pair.graph_atoms, pair.graph_edges = graph.num_atoms, graph.num_edges


def instances() -> list[PairModel]:
    """The pair-style instances alive in this process (their models and call statistics)."""
    return list(_instances.values())

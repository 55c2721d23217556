"""ASE calculator for any eqcalc model: energy, per-atom energies, forces, stress."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
import os
import threading
import time
import warnings

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from .committee import check_members, committee_results, resolve_models
from .compilation import compile_model
from .data.chunks import Chunk, ChunkCost, plan_chunks, slot_width
from .data.graph import stress_defined, structure_graph
from .data.validation import MIN_DISTANCE, check_min_distance, check_positions
from .data.verlet import VerletNeighbourList
from .inference import inference_model
from .llpr import last_layer_features
from .models.base import AtomisticModel
from .memory import available_bytes, keep_freed_memory, measure_peak
from .models.io import resolve_device
from .properties import compute_properties, structure_responses


# With max_edges="auto", structures with more edges than this are checked against free memory.
AUTO_CHUNK_CHECK_EDGES = 200_000
CALIBRATION_EDGES = 50_000  # size of the subgraph whose peak memory calibrates the memory model
MEMORY_FRACTION = 0.5  # share of the free memory one evaluation may use
AUTO_BLOCK_SLOTS = 4096  # neighbour slots per block of centre atoms, "auto" above the check size
KEEP_FREED_MEMORY_ATOMS = 1000  # from this size on, CPU calculations keep freed memory (reuse_memory)
#: the ASE properties each tensor output of a model gives, and the per-atom head outputs behind them
RESPONSE_PROPERTIES = {"dipole": ["dipole", "charges"], "polarizability": ["polarizability"]}
PER_ATOM_RESPONSES = {"dipole": ["charges", "atomic_dipoles"], "polarizability": ["atomic_polarizabilities"]}


def _grouping_positions(atoms) -> np.ndarray:
    """Positions for grouping atoms into compact chunks: wrapped into the cell when periodic."""
    return atoms.get_positions(wrap=True) if atoms.pbc.any() else atoms.positions


def has_stress(atoms) -> bool:
    """Whether ``atoms`` has a stress (a periodic direction and a cell of non-zero volume)."""
    return stress_defined(atoms.cell.array, atoms.pbc)


@dataclass(frozen=True)
class EvaluationMemory:
    """Peak bytes of one evaluation: fixed + per_atom·atoms + per_slot·atoms·width, where the
    width is the most edges one atom has (per-slot tables are padded to it, so it is slots, not
    edges, that per-edge tensors scale with)."""

    fixed: float
    per_atom: float
    per_slot: float

    def bytes(self, atoms: int, width: int) -> float:
        return self.fixed + (self.per_atom + self.per_slot * width) * atoms

    def chunk_cost(self, width: int) -> ChunkCost:
        """Cost of a piece whose atoms have at most ``width`` edges each, for :func:`plan_chunks`."""
        return ChunkCost(per_atom=self.per_atom + self.per_slot * width, per_edge=0.0, fixed=self.fixed)


def _fit_memory(sizes: np.ndarray, peaks: np.ndarray) -> EvaluationMemory:
    """Least-squares fixed, per-atom and per-slot bytes from rows (1, atoms, slots) of ``sizes``
    (columns of zeros: terms left out) and measured ``peaks``, keeping only terms that come out
    positive (a negative one is noise) and refitting the rest."""
    terms = [t for t in range(3) if sizes[:, t].any()]
    while True:
        solution, *_ = np.linalg.lstsq(sizes[:, terms], peaks, rcond=None)
        if (solution >= 0).all() or len(terms) == 1:
            break
        terms = [t for t, value in zip(terms, solution) if value > 0] or [2]
    coefficients = dict(zip(terms, np.maximum(solution, 0.0)))
    return EvaluationMemory(*(float(coefficients.get(t, 0.0)) for t in range(3)))


class EquivariantCalculator(Calculator):
    """ASE calculator wrapping an eqcalc model.

    Args:
        model: an :class:`AtomisticModel` (the calculator keeps its own copy, in
            inference mode) or the path of a model file; or a list of them, a committee
            (:mod:`eqcalc.committee`): one neighbour list, each member evaluated on it, the
            members' mean as energy, forces and stress and their spread as ``energy_std``,
            ``forces_std`` (per atom) and ``stress_std``. A single model whose file holds a fitted
            one-model uncertainty (:mod:`eqcalc.llpr`, ``eqcalc calibrate``) returns
            ``forces_std`` and ``energy_std`` from it (not with ``compile=True``).
        device: torch device to run on ("cpu", "cuda", …).
        dtype: "float32", "float64", or None for the model's own dtype.
        skin: Verlet-list skin in Å; the neighbour list is rebuilt only when an
            atom has moved more than skin/2 or the cell, pbc or numbers change.
        min_distance: atoms closer than this (Å) raise an error instead of giving nonsense. With
            the CPU kernels the radial tables start at 0.05 Å: closer atoms raise there even if
            ``min_distance`` is set lower.
        max_edges: most edges one model evaluation may hold, counted on the skin list
            (pairs within cutoff + skin; the evaluation uses those inside the cutoff, fewer).
            A structure with more is evaluated in chunks of atoms, each with its exact
            message-passing halo (same results, bounded memory; see
            :mod:`eqcalc.data.chunks`); the chunks are planned once per skin-list build. "auto": a
            structure above 200k skin-list edges is chunked only if its predicted peak memory
            exceeds half the free memory, with pieces predicted to fit in that half. The
            prediction (``evaluation_memory``, :class:`EvaluationMemory`) is fitted once from
            measured evaluations of ~50k- and ~25k-edge pieces. None: never chunk.
        block_slots: irreps convolutions (``nequip``, ``mace``) run their per-edge work for
            blocks of centre atoms of about this many neighbour slots, recomputed in the
            backward pass (see :meth:`AtomisticModel.set_block_slots`): the same results with
            the per-slot intermediates of one block instead of every edge, for more time on
            small structures (the recompute) and less on large ones, where one pass's large
            tensors are paged in every call. The calculator's setting replaces the model's own.
            None: one pass. "auto" (with ``max_edges="auto"``): one pass up to the 200k
            skin-list edges from which memory is checked, blocks of 4096 slots above (with the CPU
            kernel: the kernel until a structure's predicted memory does not fit, the torch
            convolutions in blocks from then on). Integers are for the torch path
            (``kernels=False``).
        compile: run the model (forward and the autograd backward that gives forces and stress)
            through ``torch.compile`` (:mod:`eqcalc.compilation`): faster calls after a one-off
            compilation on the first call. Needs a C++ compiler on CPU. Results equal the eager
            model's to round-off. Convolutions then run in one pass (no blocks; chunks as above).
        kernels: on CPU, run the irreps convolutions (``nequip``, ``mace``) and MACE's product
            basis through eqcalc's CPU kernels (:mod:`eqcalc.nn.kernels`; built with the local C++
            compiler on first use, once per CPU type), with each convolution's radial MLP
            tabulated as a cubic spline of the distance (float64: within ~1e-9 of the MLP's forces,
            relative; forces remain exact gradients of the energy): faster per call (see
            docs/performance.md) and without the per-slot tensor-product tensors (the radial
            weights of every pair and layer are kept), so an integer ``block_slots`` is refused.
            With ``max_edges`` and ``block_slots`` "auto" and without ``compile``, the first
            structure whose predicted peak memory exceeds the limit switches the calculator, from
            then on, to the torch convolutions in blocks (less memory; MACE's product-basis kernel
            stays) before chunking. Where the kernels cannot be built, a warning and the torch path.
            ``kernels_in_use`` says which runs.
        reuse_memory: opt-in, because it changes the whole process: on CPU, from the first
            structure of 1,000 atoms or more, switch glibc to keeping freed memory for reuse
            (:func:`eqcalc.memory.keep_freed_memory`; it stays on): each call then reuses the
            pages of the previous one instead of page-faulting its large per-edge buffers in
            again (see docs/performance.md). The resident size stays at the peak of the largest
            call. ``eqcalc.md.run`` and ``eqcalc.md.relax`` (and so the commands) turn it on.

    Energies in eV, forces in eV/Å, stress in eV/Å³ (Voigt order xx, yy, zz, yz, xz, xy;
    ASE sign: positive = tensile). Per-atom energies are available as "energies". A model with
    tensor outputs (:meth:`AtomisticModel.add_outputs`) also gives, from the same pass, "dipole"
    (e·Å, about the centre of mass, molecules only; ``atoms.get_dipole_moment()``) with "charges"
    (e, summing to ``atoms.info["charge"]`` or else to the sum of the initial charges), and/or
    "polarizability" (3 × 3, Å³); a committee gives the members' mean (not with ``compile=True``).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    committee_properties = ["energy_std", "forces_std", "stress_std"]

    def __init__(
        self,
        model: AtomisticModel | str | os.PathLike | list[AtomisticModel | str | os.PathLike],
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        skin: float = 0.5,
        min_distance: float = MIN_DISTANCE,
        max_edges: int | str | None = "auto",
        block_slots: int | str | None = "auto",
        compile: bool = False,
        kernels: bool = True,
        reuse_memory: bool = False,
        **kwargs,
    ):
        model = resolve_models(model)  # a committee folder → its member files
        super().__init__(**kwargs)
        device = resolve_device(device)
        if not (block_slots in (None, "auto") or (isinstance(block_slots, int) and block_slots > 0)):
            raise ValueError(f"block_slots must be a positive integer, 'auto' or None, got {block_slots!r}.")
        if not isinstance(compile, bool):
            raise ValueError(f"compile must be True or False, got {compile!r}.")
        if compile and isinstance(block_slots, int):
            raise ValueError(
                "block_slots cannot be combined with compile=True: the compiled graph would be specialised to "
                "the number of blocks and compiled again whenever it changes. Use block_slots='auto' or None "
                "(one pass; max_edges still splits structures too large for memory into chunks)."
            )
        if not isinstance(kernels, bool):
            raise ValueError(f"kernels must be True or False, got {kernels!r}.")
        if not isinstance(reuse_memory, bool):
            raise ValueError(f"reuse_memory must be True or False, got {reuse_memory!r}.")
        self.device = torch.device(device)
        self._keep_freed_memory = reuse_memory and self.device.type == "cpu"
        prepared = [inference_model(m, device, dtype, kernels) for m in (model if isinstance(model, (list, tuple)) else [model])]
        self.members = [member for member, _ in prepared]  # one model, or a committee's
        check_members(self.members)
        self.model, self.kernels_in_use = self.members[0], any(in_use for _, in_use in prepared)
        self.uncertainty = getattr(self.model, "uncertainty", None) if len(self.members) == 1 else None
        if self.uncertainty is not None and compile:
            warnings.warn("The model's one-model uncertainty (LLPR) is not computed with compile=True: no forces_std.",
                          stacklevel=2)
            self.uncertainty = None
        if len(self.members) > 1:
            self.implemented_properties = self.implemented_properties + self.committee_properties
        elif self.uncertainty is not None:
            self.implemented_properties = self.implemented_properties + ["forces_std"] + (
                ["energy_std"] if self.uncertainty.energy_scale is not None else [])
        self.response_outputs = () if compile else self.model.outputs
        if compile and self.model.outputs:
            warnings.warn("The model's tensor outputs (dipole, polarizability) are not computed with compile=True.",
                          stacklevel=2)
        self.implemented_properties = self.implemented_properties + [
            name for output in self.response_outputs for name in RESPONSE_PROPERTIES[output]
        ]
        if self.kernels_in_use and isinstance(block_slots, int):
            raise ValueError(
                f"block_slots={block_slots} has no effect with the CPU kernel, which forms no per-slot "
                "tensor-product tensors; pass kernels=False to run the torch convolutions in blocks, or "
                "block_slots='auto'."
            )
        has_convolutions = [m.set_block_slots(None if block_slots == "auto" else block_slots) for m in self.members]
        # large structures: blocked torch convolutions (the kernel's per-pair weights may not fit; see _plan_chunks)
        self._may_block = block_slots == "auto" and any(has_convolutions) and not compile
        self._energy_models = [compile_model(m, self.device) if compile else m for m in self.members]
        self.min_distance = float(min_distance)
        self.neighbours = VerletNeighbourList(self.model.cutoff, skin)
        self.neighbour_seconds = 0.0  # wall time spent updating and filtering the neighbour list
        if not (max_edges in (None, "auto") or (isinstance(max_edges, int) and max_edges > 0)):
            raise ValueError(f"max_edges must be a positive integer, 'auto' or None, got {max_edges!r}.")
        self.max_edges = max_edges
        self.evaluation_memory: EvaluationMemory | None = None  # peak-memory model, fitted on first need
        self._memory_measured = False  # whether the fit was tried (it fails where memory is unmeasurable)
        self.num_chunks = 1  # chunks the last calculation used
        self._plan: list[Chunk] = []  # chunks of the current skin list …
        self._plan_build = -1  # … made for this neighbour-list build
        self._skin_plan_failed = -1  # the build whose skin list could not be split into pieces within the limit
        self._in_use = threading.Lock()  # held during a calculation (see calculate)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """ASE's entry point. One calculation at a time: a calculator is not thread-safe (its
        neighbour list, chunk plans and results are its state), so a call while another thread's
        is running raises RuntimeError instead of mixing the two; use one calculator per thread."""
        if not self._in_use.acquire(blocking=False):
            raise RuntimeError(
                "EquivariantCalculator.calculate was called while another thread was using the same "
                "calculator; a calculator is not thread-safe: give each thread its own calculator."
            )
        try:
            self._calculate(atoms, properties, system_changes)
        finally:
            self._in_use.release()

    def _calculate(self, atoms, properties, system_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        positions = atoms.positions
        cell = atoms.cell.array
        check_positions(positions, cell)
        want_stress = "stress" in properties
        stress = has_stress(atoms)
        if "dipole" in properties and "dipole" in self.response_outputs and atoms.pbc.any():
            raise PropertyNotImplementedError(
                "The dipole of a periodic structure is not defined by its positions; this structure has "
                f"pbc={atoms.pbc.tolist()}. Ask for the dipole of molecules (pbc=False) only."
            )
        if want_stress and not stress:
            raise PropertyNotImplementedError(
                "Stress needs a periodic cell of non-zero volume; this structure has "
                f"pbc={atoms.pbc.tolist()} and cell volume {atoms.cell.volume:.3g} Å³. "
                "Give it a cell and pbc=True, or don't ask for stress."
            )
        if self._keep_freed_memory and len(atoms) >= KEEP_FREED_MEMORY_ATOMS:
            keep_freed_memory()  # the same large buffers every call: reuse pages instead of faulting them in
            self._keep_freed_memory = False  # done (the switch is process-wide; calling it again is harmless)
        start = time.perf_counter()
        self.neighbours.update(positions, cell, atoms.pbc, atoms.numbers)
        within_cutoff = self._within_cutoff(positions, cell)
        self.neighbour_seconds += time.perf_counter() - start
        if self._plan_build != self.neighbours.num_builds:  # plan once per skin-list build
            self._plan, reusable = self._plan_chunks(atoms, within_cutoff, stress)
            self._plan_build = self.neighbours.num_builds if reusable else -1
        self.num_chunks = len(self._plan)
        size = len(self.members)
        energies = np.zeros((size, len(atoms)))
        forces = np.zeros((size, len(atoms), 3))
        stress_tensor = np.zeros((size, 3, 3))
        features = None  # (N, F) last-layer features, for a one-model uncertainty
        per_atom = {}  # the heads' per-atom outputs (M, N, ...)
        for chunk in self._plan:
            owned = chunk.atoms[: chunk.num_owned]
            results = self._evaluate(atoms, chunk.within(within_cutoff), stress)
            for key in (key for output in self.response_outputs for key in PER_ATOM_RESPONSES[output]):
                if key not in per_atom:
                    per_atom[key] = np.zeros((size, len(atoms)) + results[key].shape[2:])
                per_atom[key][:, owned] = results[key][:, : chunk.num_owned]
            if "features" in results:
                if features is None:
                    features = np.zeros((len(atoms), results["features"].shape[1]))
                features[owned] = results["features"][: chunk.num_owned]
            energies[:, owned] = results["energies"][:, : chunk.num_owned]
            forces[:, chunk.atoms] += results["forces"]  # a chunk lists each atom once
            if stress:
                stress_tensor += results["stress"][:, 0]
        voigt = stress_tensor[:, [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] if stress else None
        self.results = committee_results(energies, forces, voigt)
        if features is not None:
            self.results.update(self.uncertainty.results(torch.from_numpy(features)))
        if per_atom:
            self.results.update(self._structure_responses(atoms, per_atom))
        for key, value in self.results.items():
            if not np.all(np.isfinite(value)):
                raise FloatingPointError(
                    f"The model returned a non-finite {key}. The structure may be far outside the "
                    "training data, or the model file is damaged."
                )

    def _evaluate(self, atoms, chunk: Chunk, stress: bool) -> dict[str, np.ndarray]:
        """Per-atom energies (M, n) eV, forces (M, n, 3) eV/Å and stress (M, 1, 3, 3) eV/Å³ of
        each of the M members on one chunk, forces and stress as the derivatives of the owned
        atoms' energies only, and with a one-model uncertainty the (n, F) last-layer "features".
        The chunk's edges index the skin list (all of them inside the cutoff)."""
        positions, numbers, counted = atoms.positions, atoms.numbers, None
        if chunk.num_owned < len(atoms):  # a piece: gather its atoms, count only the owned ones
            positions, numbers = positions[chunk.atoms], numbers[chunk.atoms]
            counted = torch.arange(len(chunk.atoms), device=self.device) < chunk.num_owned
        shifts = self.neighbours.shifts[chunk.edges]
        graph = structure_graph(positions, numbers, atoms.cell.array, atoms.pbc, chunk.edge_index, shifts).to(self.device)
        with last_layer_features(self.model) if self.uncertainty is not None else nullcontext() as features:
            members = [compute_properties(model, graph, forces=True, stress=stress, counted=counted,
                                          responses=bool(self.response_outputs))
                       for model in self._energy_models]
        arrays = {key: torch.stack([results[key].detach() for results in members]).cpu().numpy() for key in members[0]}
        if features is not None:
            arrays["features"] = features(graph.numbers).cpu().numpy()
        return arrays

    @staticmethod
    def _structure_responses(atoms, per_atom: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The members' mean dipole, charges and polarisability from their per-atom head outputs (M, N, ...)."""
        total_charge = atoms.info.get("charge", atoms.get_initial_charges().sum())
        positions = torch.from_numpy(atoms.positions)
        numbers = torch.from_numpy(atoms.numbers.astype(np.int64))
        batch = torch.zeros(len(atoms), dtype=torch.int64)
        members = [
            structure_responses({key: torch.from_numpy(value[m]) for key, value in per_atom.items()}, positions, numbers,
                                batch, 1, torch.tensor([float(total_charge)], dtype=torch.float64))
            for m in range(len(next(iter(per_atom.values()))))
        ]
        mean = {key: np.mean([member[key].numpy() for member in members], axis=0) for key in members[0]}
        return {key: value if key == "charges" else value[0] for key, value in mean.items()}

    def _plan_chunks(self, atoms, within_cutoff: np.ndarray, stress: bool) -> tuple[list[Chunk], bool]:
        """The whole structure as one chunk, or pieces within the limit of one evaluation, and
        whether the plan holds until the skin list is rebuilt (see :meth:`_pieces`)."""
        edge_index = self.neighbours.edge_index
        whole = [Chunk(np.arange(len(atoms)), len(atoms), np.arange(edge_index.shape[1]), edge_index)]
        if self.max_edges != "auto":
            if self.max_edges is None or edge_index.shape[1] <= self.max_edges:
                return whole, True
            return self._pieces(atoms, within_cutoff, self.max_edges, ChunkCost())
        if edge_index.shape[1] <= AUTO_CHUNK_CHECK_EDGES:
            return whole, True
        if self._may_block and not self.kernels_in_use:  # large: blocks take less memory and, from ~5k atoms, less time
            self._use_blocks()
        free = available_bytes(self.device)
        if free is None:
            return whole, True
        if not self._memory_measured:
            self.evaluation_memory = self._measure_evaluation_memory(atoms, within_cutoff, stress)
            self._memory_measured = True
        limit = MEMORY_FRACTION * free
        # whole: the graph evaluated now (cutoff edges; the plan is kept until the next rebuild, as
        # edges cross the cutoff the memory fraction leaves room); pieces: costed at the skin list's
        # width, an upper bound for any step until the rebuild
        width = slot_width(edge_index[:, within_cutoff], len(atoms))
        if self.evaluation_memory is None or self.evaluation_memory.bytes(len(atoms), width) <= limit:
            return whole, True
        if self._may_block and self.kernels_in_use:
            # the kernel keeps the radial weights of every pair and layer: the torch convolutions in blocks
            # take less memory; chunks, with their halos recomputed, cost far more time than blocks
            self._use_blocks()
            blocked = self._measure_evaluation_memory(atoms, within_cutoff, stress)
            self.evaluation_memory = blocked or self.evaluation_memory  # the kernel's fit bounds the blocks'
            if self.evaluation_memory.bytes(len(atoms), width) <= limit:
                return whole, True
        memory = self.evaluation_memory
        try:
            return self._pieces(atoms, within_cutoff, limit, memory.chunk_cost(slot_width(edge_index, len(atoms))))
        except ValueError as error:
            raise MemoryError(
                f"{len(atoms)} atoms with {int(within_cutoff.sum())} edges need more memory than is free even in "
                f"chunks ({error}). Free memory, use a smaller model or cutoff, or set max_edges yourself."
            ) from error

    def _use_blocks(self) -> None:
        """From now on, for every later structure too, the torch convolutions in blocks of
        AUTO_BLOCK_SLOTS slots (the least memory). MACE's product-basis kernel, which keeps
        nothing per slot, stays."""
        self._may_block = False
        for model in self.members:
            for convolution in model._convolutions():
                convolution.use_kernel = False
            model.set_block_slots(AUTO_BLOCK_SLOTS)
        self.kernels_in_use = any(m.use_kernel for model in self.members for m in model._kernel_switches())

    def _pieces(self, atoms, within_cutoff: np.ndarray, limit: float, cost: ChunkCost) -> tuple[list[Chunk], bool]:
        """Pieces each costing at most ``limit`` and whether they serve until the next rebuild.

        Pieces are planned on the skin list (each step then keeps the edges inside the cutoff),
        so one plan serves every step until the next rebuild. If a single atom's skin-list halo
        is already too large, they are planned on this step's cutoff edges instead, for this
        step only (and the skin list is not tried again until it is rebuilt).

        Raises:
            ValueError: when a single atom's halo over the cutoff edges costs more than ``limit``.
        """
        edge_index, hops = self.neighbours.edge_index, self.model.message_passing_hops
        positions = _grouping_positions(atoms)
        if self._skin_plan_failed != self.neighbours.num_builds:
            try:
                return plan_chunks(positions, edge_index, hops, limit, cost), True
            except ValueError:
                self._skin_plan_failed = self.neighbours.num_builds
        inside = np.flatnonzero(within_cutoff)
        pieces = plan_chunks(positions, edge_index[:, inside], hops, limit, cost)
        return [Chunk(p.atoms, p.num_owned, inside[p.edges], p.edge_index) for p in pieces], False

    def _measure_evaluation_memory(self, atoms, within_cutoff: np.ndarray, stress: bool) -> EvaluationMemory | None:
        """Fitted peak memory of one evaluation (:class:`EvaluationMemory`), or None if unmeasurable.

        Measured evaluations, after a warm-up so one-off set-up costs are left out: the largest
        piece of at most CALIBRATION_EDGES cutoff edges (doubled until one atom's halo fits); the same atoms with every other one of
        its edges (separating slots from atoms: a halo-heavy piece measured alone would charge its
        atoms' memory to its edges); and, to separate the fixed part (e.g. one block of a blocked
        convolution), the largest piece of a plan with half that piece's edges. Without the third
        (its plan fails: a single halo is larger) the fixed part is left out of the fit.
        """
        inside = np.flatnonzero(within_cutoff)
        cutoff_edges, hops = self.neighbours.edge_index[:, inside], self.model.message_passing_hops
        positions = _grouping_positions(atoms)

        def largest_piece(limit: int) -> Chunk | None:
            try:
                pieces = plan_chunks(positions, cutoff_edges, hops, limit)
            except ValueError:  # even one atom's neighbourhood is larger than the sample size
                return None
            piece = max(pieces, key=lambda chunk: len(chunk.edges))
            return Chunk(piece.atoms, piece.num_owned, inside[piece.edges], piece.edge_index)

        limit, sample = CALIBRATION_EDGES, largest_piece(CALIBRATION_EDGES)
        while sample is None and limit < len(inside):  # one atom's halo is larger (deep models): grow
            limit *= 2
            sample = largest_piece(limit)
        if sample is None or len(sample.edges) < 2:
            return None
        chunks = [sample, Chunk(sample.atoms, sample.num_owned, sample.edges[::2], sample.edge_index[:, ::2])]
        smaller = largest_piece(len(sample.edges) // 2)
        if smaller is not None and len(smaller.edges) > 0:
            chunks.append(smaller)
        sizes = np.array([[1.0, len(c.atoms), len(c.atoms) * slot_width(c.edge_index, len(c.atoms))] for c in chunks])
        if len(chunks) < 3 or np.linalg.matrix_rank(sizes) < 3:
            chunks, sizes = chunks[:2], sizes[:2] * [0.0, 1.0, 1.0]  # no fixed term
        self._evaluate(atoms, sample, stress)
        peaks = []
        for chunk in chunks:
            with measure_peak(self.device) as peak:
                self._evaluate(atoms, chunk, stress)
            if not peak.bytes:
                return None
            peaks.append(peak.bytes)
        return _fit_memory(sizes, np.array(peaks, dtype=float))

    def _within_cutoff(self, positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
        """(E_skin,) mask of the skin-list edges inside the cutoff now; checks for overlapping atoms."""
        edge_index, shifts = self.neighbours.edge_index, self.neighbours.shifts
        vectors = positions[edge_index[1]] - positions[edge_index[0]] + shifts @ cell
        distances = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        check_min_distance(edge_index, distances, self.min_distance)
        return distances < self.model.cutoff

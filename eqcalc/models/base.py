"""Base class for every model family: species handling, energy shift and scale.

A family implements :meth:`AtomisticModel.atomic_outputs`, mapping species and
edge vectors to one dimensionless scalar per atom (and, where it needs index tables
whose sizes depend on the data, :meth:`AtomisticModel.index_tables`, whose result
atomic_outputs receives as its ``tables`` argument). The base class turns those
into per-atom energies in eV,

    E_i = scale · e_i + shift[Z_i],

and returns them in float64 whatever the model's own dtype, so that total
energies (sums of many E_i around −10³ eV) keep their precision.

Families with vector features also implement :meth:`AtomisticModel.atomic_features`, from which
optional heads (:meth:`AtomisticModel.add_outputs`, :mod:`eqcalc.models.heads`) predict charges,
dipoles and polarisabilities in the same pass (:meth:`AtomisticModel.responses`).
"""

from __future__ import annotations

import inspect
import operator
from typing import Any, ClassVar, Sequence

import torch
from ase.data import chemical_symbols
from torch import nn

from ..data.validation import check_species
from ..nn import kernels
from ..nn.irreps import EquivariantConvolution
from .heads import RESPONSES, AtomFeatures, build_heads

MAX_ATOMIC_NUMBER = 118


def atomic_numbers(species: Sequence[int | str]) -> list[int]:
    """Element symbols ("H", "O") or atomic numbers (1, 8), in any mix -> atomic numbers;
    ValueError naming the entry that is neither."""
    if isinstance(species, (str, bytes)) or not hasattr(species, "__iter__"):
        raise ValueError(f"species must be a list of element symbols or atomic numbers, e.g. ['H', 'O'], got {species!r}.")
    numbers = []
    for entry in species:
        if isinstance(entry, str) and entry in chemical_symbols[1:]:
            numbers.append(chemical_symbols.index(entry))
        elif hasattr(entry, "__index__") and not isinstance(entry, (bool, str)):
            numbers.append(operator.index(entry))
        else:
            raise ValueError(f"species entry {entry!r} is neither an element symbol (e.g. 'O') nor an atomic number.")
    return numbers


class ElementEnergies(nn.Module):
    """Per-element reference energies (eV) stored and applied in float64.

    ``model.to(torch.float32)`` moves these to the new device but keeps them in
    float64: reference energies are large and need the extra digits.
    """

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.register_buffer("values", values.to(torch.float64))

    def _apply(self, fn, recurse=True):
        device = fn(torch.zeros((), dtype=torch.float64, device=self.values.device)).device
        self.values = self.values.to(device=device, dtype=torch.float64)
        return self

    def forward(self, species: torch.Tensor) -> torch.Tensor:
        """species: (N,) int64 indices -> (N,) float64 eV."""
        return self.values[species]


class OwnFeatures(nn.Module):
    """What a message-passing layer reads of the atoms' features: the tensors as they are (every atom
    of the graph is computed in this graph).

    A family calls its model's ``ghost_exchange(*features)`` before each layer, with every per-atom
    tensor the layer reads (each (N, ...), atoms first); it returns them in order. Where a graph also
    holds copies of atoms that another process computes (LAMMPS ghost atoms), the caller swaps in a
    module that overwrites the copies' rows with their owners' (:mod:`eqcalc.lammps.exchange`)."""

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return features


class AtomisticModel(nn.Module):
    """An energy model E = Σ_i E_i over atoms, E_i from a local environment.

    Args:
        species: elements the model knows, as atomic numbers or symbols (order defines species indices).
        cutoff: interaction radius r_c in Å.
        avg_num_neighbors: neighbour sums are divided by this (from training data).
        atomic_energies: per-species reference energies in eV, ordered as ``species``.
        energy_scale: eV per unit of the network's raw per-atom output.
    """

    family: ClassVar[str] = ""

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float,
        *,
        avg_num_neighbors: float = 1.0,
        atomic_energies: Sequence[float] | None = None,
        energy_scale: float = 1.0,
    ):
        super().__init__()
        species = atomic_numbers(species)
        if not species or len(set(species)) != len(species):
            raise ValueError(f"species must be a non-empty list of distinct atomic numbers, got {species}.")
        if any(not 1 <= z <= MAX_ATOMIC_NUMBER for z in species):
            raise ValueError(f"species must be atomic numbers in 1..{MAX_ATOMIC_NUMBER}, got {species}.")
        if float(cutoff) <= 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}.")
        self.species = species
        self.cutoff = float(cutoff)
        self.avg_num_neighbors = float(avg_num_neighbors)
        table = torch.full((MAX_ATOMIC_NUMBER + 1,), -1, dtype=torch.int64)
        table[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("species_table", table, persistent=False)
        shifts = torch.zeros(len(species)) if atomic_energies is None else torch.as_tensor(atomic_energies, dtype=torch.float64)
        if shifts.shape != (len(species),):
            raise ValueError(
                f"atomic_energies needs one value per species ({len(species)}), got shape {tuple(shifts.shape)}."
            )
        self.element_energies = ElementEnergies(shifts)
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale)))
        self.weights_frozen = False  # see freeze_weights
        self.ghost_exchange: nn.Module = OwnFeatures()  # see OwnFeatures
        self.outputs: tuple[str, ...] = ()  # tensor outputs beside the energy, see add_outputs
        self.output_heads = nn.ModuleDict()

    @property
    def num_species(self) -> int:
        return len(self.species)

    @property
    def dtype(self) -> torch.dtype:
        return self.energy_scale.dtype

    @property
    def message_passing_hops(self) -> int:
        """Rounds of message passing: an atom's energy depends on atoms up to this many
        neighbour-list hops away (what chunked evaluation needs to know)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how many message-passing rounds it has.")

    def _convolutions(self) -> list[EquivariantConvolution]:
        """The model's irreps convolutions (NequIP, MACE; none in the other families)."""
        return [m for m in self.modules() if isinstance(m, EquivariantConvolution)]

    def _kernel_switches(self) -> list[kernels.KernelSwitch]:
        """The modules with a CPU-kernel path (:meth:`set_kernels`)."""
        return [m for m in self.modules() if isinstance(m, kernels.KernelSwitch)]

    def set_block_slots(self, slots: int | None) -> bool:
        """Run every irreps convolution of the model in blocks of centre atoms of about ``slots``
        neighbour slots, recomputed in the backward pass (see
        :class:`~eqcalc.nn.irreps.EquivariantConvolution`): identical results with far less
        memory on large structures. None: one pass. A runtime setting, not saved with the model.

        Returns:
            whether the model has such convolutions (False: the setting has no effect).
        """
        if not (slots is None or (isinstance(slots, int) and slots > 0)):
            raise ValueError(f"block slots must be a positive integer or None, got {slots!r}.")
        convolutions = self._convolutions()
        for convolution in convolutions:
            convolution.block_slots = slots
        return bool(convolutions)

    def set_kernels(self, enabled: bool) -> bool:
        """Run the irreps convolutions' tensor products (NequIP, MACE) and MACE's product basis
        through eqcalc's CPU kernels (:mod:`eqcalc.nn.kernels`, built on first use) when the model
        runs on CPU: faster, and without the per-slot and per-monomial tensors of the torch path.
        Both give the weight gradients of a loss on energies, forces and stress (the convolution is
        differentiable to any order, the product basis twice), so training runs on them too, with
        the gradients of the torch path. A runtime setting, not saved
        with the model; :class:`~eqcalc.EquivariantCalculator` and ``eqcalc train`` turn it on.

        Returns:
            whether the kernels are in use (False: disabled, nothing they apply to, or they could
            not be built).
        """
        switches = self._kernel_switches()
        use = bool(enabled and switches and kernels.available())
        for module in switches:
            module.use_kernel = use
        return use

    def freeze_weights(self, enabled: bool) -> None:
        """Precompute, for inference, what depends on the parameters alone, or go back to
        forming it on every call: the radial MLPs of the irreps convolutions tabulated as
        splines of the distance (used on the CPU-kernel path), MACE's species-weighted
        product-basis coefficients. The parameters must need no gradients and must not change
        while frozen. A runtime setting, not saved with the model;
        :class:`~eqcalc.EquivariantCalculator` does it on its own copy; ``.to()`` does it again
        from the converted parameters. Radial tables are made for the convolutions whose CPU
        kernel is on (:meth:`set_kernels` first). Nothing to precompute in families
        without irreps convolutions."""
        if enabled and any(p.requires_grad for p in self.parameters()):
            raise RuntimeError(
                "freeze_weights(True) needs parameters without gradients (model.requires_grad_(False)): "
                "frozen values would not train."
            )
        self.weights_frozen = bool(enabled)
        self._tabulate_radial_functions()

    def _tabulate_radial_functions(self) -> None:
        """While frozen, radial tables for the convolutions whose CPU kernel is on; else none."""
        for convolution in self._convolutions():
            convolution.tabulate(self.edge_embedding if self.weights_frozen and convolution.use_kernel else None)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # tables again from the converted parameters: a table needs the embedding beside its
        # convolution, so the model re-forms it (MACE's product bases re-form themselves)
        if self.weights_frozen:
            self._tabulate_radial_functions()
        return self

    @torch.compiler.disable  # a data-dependent check: stays eager, outside any compiled graph
    def species_indices(self, numbers: torch.Tensor) -> torch.Tensor:
        """numbers (N,) atomic numbers -> (N,) int64 species indices; a clear error for an unknown element."""
        outside = (numbers < 0) | (numbers > MAX_ATOMIC_NUMBER)  # no such element: no row of the table
        species = self.species_table[numbers.clamp(0, MAX_ATOMIC_NUMBER)].masked_fill(outside, -1)
        if bool((species < 0).any()):
            check_species(numbers.cpu().numpy(), self.species)
        return species

    def hyperparameters(self) -> dict[str, Any]:
        """Family-specific constructor arguments (plain Python values).

        Every keyword-only parameter of the family's ``__init__``, read back from
        the attribute of the same name, which the family must set.
        """
        parameters = inspect.signature(type(self).__init__).parameters.values()
        return {p.name: getattr(self, p.name) for p in parameters if p.kind is p.KEYWORD_ONLY}

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this model's architecture with ``build_model(family, **config)``
        (``outputs`` only where the model has tensor outputs); the weights, element energies and
        energy scale travel in the state_dict."""
        config = {
            "species": list(self.species),
            "cutoff": self.cutoff,
            "avg_num_neighbors": self.avg_num_neighbors,
            **self.hyperparameters(),
        }
        if self.outputs:
            config["outputs"] = list(self.outputs)
        return config

    @property
    def feature_sizes(self) -> tuple[int, int]:
        """(S, V): invariant scalars and polar vectors per atom of :meth:`atomic_features`."""
        raise self._without_vector_features()

    def _without_vector_features(self) -> ValueError:
        return ValueError(
            f"The {self.family or type(self).__name__} family has no equivariant vector features, so it cannot "
            "predict dipoles or polarisabilities; use painn, egnn, nequip or mace (with l ≥ 1 features)."
        )

    def atomic_features(
        self,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        tables: Any = None,
    ) -> tuple[torch.Tensor, AtomFeatures]:
        """The raw per-atom outputs of :meth:`atomic_outputs` (N,) and, from the same pass, the
        :class:`~eqcalc.models.heads.AtomFeatures` the tensor-output heads read; arguments as there.
        Families with vector features implement it (see :attr:`feature_sizes`)."""
        raise self._without_vector_features()

    def add_outputs(self, outputs: Sequence[str]) -> None:
        """Give the model heads for tensor outputs beside the energy: "dipole" (with per-atom
        charges) and/or "polarizability" (:mod:`eqcalc.models.heads`, freshly initialised).
        ValueError for an unknown name, for one the model has already, or for a family without
        vector features."""
        outputs = tuple(outputs)
        unknown = [name for name in outputs if name not in RESPONSES]
        if unknown or len(set(outputs)) != len(outputs):
            raise ValueError(f"outputs must be distinct names from {list(RESPONSES)}, got {list(outputs)}.")
        if already := [name for name in outputs if name in self.outputs]:
            raise ValueError(f"The model already has the outputs {already}.")
        num_scalars, num_vectors = self.feature_sizes
        heads = build_heads(outputs, num_scalars, num_vectors).to(device=self.energy_scale.device, dtype=self.dtype)
        self.output_heads.update(heads)
        self.outputs = self.outputs + outputs

    def atomic_outputs(
        self,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        tables: Any = None,
    ) -> torch.Tensor:
        """Raw per-atom outputs.

        Args:
            species: (N,) int64 species indices.
            edge_index: (2, E) int64; row 0 the centre atom i, row 1 the neighbour j.
            edge_vectors: (E, 3) r_j − r_i (with image shift), Å, in the model dtype.
            batch: (N,) int64 structure index of each atom.
            num_graphs: number of structures.
            tables: what :meth:`index_tables` made for these arguments (None: make them here, or
                the family has none).

        Returns:
            (N,) dimensionless outputs in the model dtype.
        """
        raise NotImplementedError

    def readout_layers(self) -> list[nn.Module]:
        """The final linear layers whose outputs sum to the raw per-atom output (``nn.Linear`` to
        one output, or an ``o3.Linear`` to ``1x0e``): their inputs are the last-layer features that
        :mod:`eqcalc.llpr` builds its uncertainty on. Families whose output is not such a sum over
        atoms do not define them."""
        raise ValueError(
            f"The {self.family or type(self).__name__} family has no per-atom linear readout, so its one-model "
            "uncertainty (LLPR) is not available; use a committee of models instead."
        )

    def index_tables(self, species: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor) -> Any:
        """Index tables the family builds from the graph, whose sizes depend on the data (e.g.
        neighbour slots, atoms grouped by species), for :meth:`atomic_outputs`; arguments as there.
        :meth:`prepare` makes them eagerly, so that a compiled :meth:`energies` is one graph.
        None (the default): the family has none."""
        return None

    @torch.compiler.disable  # data-dependent checks and sizes: eager, outside any compiled graph
    def prepare(
        self,
        numbers: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
    ) -> tuple:
        """The arguments of :meth:`energies` for those of :meth:`forward`: species checked and
        indexed (a clear error for an unknown element), one neighbour-less reference atom per
        species appended as an extra structure, edge vectors in the model dtype, and
        :meth:`index_tables`."""
        species = self.species_indices(numbers)
        references = torch.arange(self.num_species, device=species.device)
        species = torch.cat([species, references])
        edge_vectors = edge_vectors.to(self.dtype)
        batch = torch.cat([batch, torch.full_like(references, num_graphs)])
        tables = self.index_tables(species, edge_index, edge_vectors)
        return species, edge_index, edge_vectors, batch, num_graphs + 1, tables

    def energies(
        self,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        tables: Any,
    ) -> torch.Tensor:
        """Per-atom energies (N,) in eV, float64, from what :meth:`prepare` returns: tensor
        operations only (:func:`eqcalc.compilation.compile_model` compiles this)."""
        outputs = self.atomic_outputs(species, edge_index, edge_vectors, batch, num_graphs, tables)
        return self._energies_from_outputs(outputs, species)

    def _energies_from_outputs(self, outputs: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Raw outputs (N + S,) of the atoms and the appended reference atoms -> (N,) float64 eV."""
        num_atoms = species.shape[0] - self.num_species
        species = species[:num_atoms]
        outputs = outputs[:num_atoms] - outputs[num_atoms:][species]
        return outputs.to(torch.float64) * self.energy_scale.to(torch.float64) + self.element_energies(species)

    def responses(
        self,
        numbers: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
    ) -> dict[str, torch.Tensor]:
        """Per-atom energies and tensor outputs from one pass, arguments as :meth:`forward`:
        "energies" (N,) eV, and per head (:attr:`outputs`) "charges" (N,) e and "atomic_dipoles"
        (N, 3) e·Å, or "atomic_polarizabilities" (N, 3, 3) Å³; all float64. The charges are
        the heads' own, before :func:`eqcalc.properties.structure_responses` makes each
        structure's sum its total charge."""
        species, edge_index, edge_vectors, batch, num_graphs, tables = self.prepare(
            numbers, edge_index, edge_vectors, batch, num_graphs
        )
        outputs, features = self.atomic_features(species, edge_index, edge_vectors, batch, num_graphs, tables)
        results = {"energies": self._energies_from_outputs(outputs, species)}
        num_atoms = species.shape[0] - self.num_species
        atoms = AtomFeatures(features.scalars[:num_atoms], features.vectors[:num_atoms])
        for head in self.output_heads.values():
            results.update({key: value.to(torch.float64) for key, value in head(atoms).items()})
        return results

    def forward(
        self,
        numbers: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
    ) -> torch.Tensor:
        """Per-atom energies (N,) in eV, float64, from atomic numbers and edge vectors.

        The network's output for an atom without neighbours is subtracted, so an
        isolated atom's energy is exactly its element energy. Those reference
        outputs come from the same pass: one neighbour-less virtual atom per
        species is appended as an extra structure.
        """
        return self.energies(*self.prepare(numbers, edge_index, edge_vectors, batch, num_graphs))

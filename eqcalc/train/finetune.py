"""Fine-tuning: start a training run from an eqcalc model file (``init_from``).

Rules (see docs/finetuning.md):

* The model file fixes the family, the architecture (``model.cutoff``, ``model.hyper``) and the
  weights. A ``model:`` entry in the config must either be absent or equal the file's value; any
  other value is an error naming the keys. ``dtype`` follows the file unless given.
* Per-element reference energies E0 are re-fitted to the new training data (``atomic_energies``
  auto / isolated / least_squares / a mapping); ``atomic_energies: keep`` keeps the file's. The
  energy scale and the neighbour normaliser always come from the file.
* Elements of the data that the base model lacks are an error naming them.
* ``freeze``: parameter-name prefixes, or the named groups of :data:`FREEZE_GROUPS`.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Sequence

import torch
from ase.data import chemical_symbols

from ..models.base import AtomisticModel
from ..models.io import model_from_payload, read_model_file

# Named groups of parameters per family, as parameter-name prefixes (the part before the first dot).
FREEZE_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "schnet": {"embedding": ("embedding",), "interactions": ("interactions",), "readout": ("readout",)},
    "painn": {"embedding": ("embedding",), "interactions": ("messages", "updates"), "readout": ("readout",)},
    "egnn": {"embedding": ("embedding",), "interactions": ("layers",), "readout": ("readout",)},
    "nequip": {"embedding": ("embedding", "edge_embedding"), "interactions": ("layers",), "readout": ("readout",)},
    "mace": {"embedding": ("embedding", "edge_embedding"), "interactions": ("layers",), "readout": ("readouts",)},
    "allegro": {"embedding": ("edge_embedding", "two_body", "initial_weights"), "interactions": ("layers",),
                "readout": ("readout",)},
}
ARCHITECTURE_KEYS = ("species", "cutoff", "avg_num_neighbors")


def base_model_section(payload: dict, given: dict[str, Any], source: str) -> dict[str, Any]:
    """The ``model:`` section a fine-tuning run uses: the file's family, cutoff and hyper, and its
    tensor outputs plus any more that ``given`` names (those get new heads, :func:`model_from_base`).

    Args:
        payload: the base model file's dict.
        given: the ``model:`` entries the user wrote (may be empty).
    Raises:
        ValueError naming every given key whose value differs from the file's.
    """
    config = payload["config"]
    section = {
        "family": payload["family"],
        "cutoff": float(config["cutoff"]),
        "hyper": {k: v for k, v in config.items() if k not in (*ARCHITECTURE_KEYS, "outputs")},
        "outputs": list(given.get("outputs") or config.get("outputs", [])),
    }
    clashes = []
    if dropped := [name for name in config.get("outputs", []) if name not in section["outputs"]]:
        clashes.append(f"model.outputs: {section['outputs']} (file: {config['outputs']}; {dropped} cannot be dropped)")
    for key in ("family", "cutoff"):
        if key in given and given[key] != section[key]:
            clashes.append(f"model.{key}: {given[key]!r} (file: {section[key]!r})")
    for key, value in (given.get("hyper") or {}).items():
        if section["hyper"].get(key, object()) != value:
            clashes.append(f"model.hyper.{key}: {value!r} (file: {section['hyper'].get(key, 'not a setting')!r})")
    if clashes:
        raise ValueError(
            f"{source}: init_from fixes the architecture, but the model section contradicts the file: "
            f"{'; '.join(clashes)}. Remove these keys (the file's values are used)."
        )
    return section


def resolve_freeze(family: str, entries: Iterable[str], parameter_names: Iterable[str]) -> list[str]:
    """Parameter-name prefixes for ``freeze`` entries: group names expand per family, other entries are
    prefixes that must match at least one parameter. ValueError with "did you mean" otherwise."""
    groups = FREEZE_GROUPS.get(family, {})
    names = list(parameter_names)
    prefixes: list[str] = []
    for entry in entries:
        if entry in groups:
            prefixes.extend(groups[entry])
        elif any(name == entry or name.startswith(entry + ".") for name in names):
            prefixes.append(entry)
        else:
            candidates = list(groups) + sorted({n.split(".")[0] for n in names})
            close = difflib.get_close_matches(entry, candidates, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"freeze: {entry!r} is neither a group of the {family} family ({', '.join(groups)}) nor the prefix "
                f"of a parameter name.{hint}"
            )
    return prefixes


def freeze_parameters(model: AtomisticModel, prefixes: list[str]) -> list[str]:
    """Set ``requires_grad=False`` on every parameter whose name starts with one of ``prefixes``
    (as a whole dotted component); returns the frozen names."""
    frozen = []
    for name, parameter in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def model_from_base(
    payload: dict, species: list[int], refitted_e0: dict[int, float] | None, source: str, outputs: Sequence[str] = ()
) -> AtomisticModel:
    """The base model, with the E0 (eV) of the elements in ``refitted_e0`` (atomic number → eV)
    replaced where given; the other elements keep theirs.

    Args:
        species: every element of the data the run trains on (training and replay frames).
        outputs: tensor outputs the run trains; new heads for those the base model lacks.
    Raises:
        ValueError naming the elements of ``species`` that the base model lacks.
    """
    # the base model's fitted uncertainty (eqcalc.llpr) describes the base weights, not the fine-tuned ones
    model = model_from_payload({key: value for key, value in payload.items() if key != "uncertainty"}, source=source)
    missing = [chemical_symbols[z] for z in species if z not in model.species]
    if missing:
        known = [chemical_symbols[z] for z in model.species]
        raise ValueError(
            f"The training data contain {missing}, which the base model {source} (elements {known}) lacks; a "
            f"fine-tuned {model.family} model cannot learn new elements. Drop those structures, or train from scratch."
        )
    if refitted_e0 is not None:
        values = model.element_energies.values
        with torch.no_grad():
            for z, e0 in refitted_e0.items():
                values[model.species.index(z)] = e0
    if added := [name for name in outputs if name not in model.outputs]:
        model.add_outputs(added)
    return model

"""Reference side of the MACE import tests, run with the mace-torch peer venv's python
(benchmarks/peers/.venv/mace): builds random-weight mace-torch models with mace-torch's public
API, torch.saves each module (the file a user has) and evaluates every structure with
``MACECalculator`` in float64, all in one process.

    python mace_reference.py SPEC.json

SPEC.json: {"workdir": DIR, "structures": EXTXYZ, "models": {NAME: {...}, ...}}, each model with
keys species, hidden_irreps, max_ell, correlation, num_interactions, first (interaction class of
the first block), and optionally r_max, num_bessel, num_polynomial_cutoff, MLP_irreps,
radial_MLP, avg_num_neighbors, scale, shift, seed, model_class (ScaleShiftMACE or MACE),
pair_repulsion (ZBL), distance_transform ("Agnesi"), dtype
(float64, or float32: built and saved in float32, evaluated in float64),
use_reduced_cg, save ("module": torch.save(model); "state_dict": {"state_dict": ...,
"hyperparameters": extract_config_mace_model(model)}, ScaleShiftMACE only). Writes
DIR/NAME.model per model and DIR/reference.json:
{NAME: [{"energy": eV, "forces": [[eV/Å]], "stress": [6] eV/Å³ or null}, ...]}.
"""

import json
import os
import sys

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # e3nn 0.4.4 loads its constants with torch.load

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mace import modules  # noqa: E402
from mace.calculators import MACECalculator  # noqa: E402
from mace.tools.scripts_utils import extract_config_mace_model  # noqa: E402
from e3nn import o3  # noqa: E402  # isort: skip


def hyperparameters(spec: dict) -> dict:
    """ScaleShiftMACE / MACE constructor arguments of one model spec."""
    species = spec["species"]
    rng = np.random.default_rng(spec.get("seed", 0))
    arguments = dict(
        r_max=spec.get("r_max", 5.0),
        num_bessel=spec.get("num_bessel", 8),
        num_polynomial_cutoff=spec.get("num_polynomial_cutoff", 5),
        max_ell=spec["max_ell"],
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes[spec["first"]],
        num_interactions=spec["num_interactions"],
        num_elements=len(species),
        hidden_irreps=o3.Irreps(spec["hidden_irreps"]),
        MLP_irreps=o3.Irreps(spec.get("MLP_irreps", "16x0e")),
        atomic_energies=rng.uniform(-5.0, -1.0, len(species)),
        avg_num_neighbors=spec.get("avg_num_neighbors", 9.0),
        atomic_numbers=species,
        correlation=spec["correlation"],
        gate=torch.nn.functional.silu,
        radial_MLP=spec.get("radial_MLP", [16, 16, 16]),
        radial_type="bessel",
        use_reduced_cg=spec.get("use_reduced_cg", False),
        pair_repulsion=spec.get("pair_repulsion", False),
        distance_transform=spec.get("distance_transform", "None"),
    )
    if spec.get("model_class", "ScaleShiftMACE") == "ScaleShiftMACE":
        arguments.update(atomic_inter_scale=spec.get("scale", 1.3), atomic_inter_shift=spec.get("shift", 0.2))
    return arguments


def build(spec: dict) -> torch.nn.Module:
    """A random-weight model: mace-torch's initialisation, then every parameter perturbed (seeded)
    so that no weight keeps a special value (zeros, identical entries)."""
    torch.manual_seed(spec.get("seed", 0))
    torch.set_default_dtype(getattr(torch, spec.get("dtype", "float64")))
    try:
        model = getattr(modules, spec.get("model_class", "ScaleShiftMACE"))(**hyperparameters(spec))
    finally:
        torch.set_default_dtype(torch.float64)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel():
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def save(model: torch.nn.Module, spec: dict, path: str) -> None:
    if spec.get("save", "module") == "module":
        torch.save(model, path)
    else:  # the hyper-parameters as mace-torch's own extract_config_mace_model gives them (classes, Irreps, ...)
        parameters = extract_config_mace_model(model)
        torch.save({"state_dict": model.state_dict(), "hyperparameters": parameters}, path)


def evaluate(path: str, frames) -> list[dict]:
    calculator = MACECalculator(model_paths=path, device="cpu", default_dtype="float64")
    results = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calculator
        stress = atoms.get_stress(voigt=True).tolist() if atoms.pbc.all() else None
        results.append({"energy": float(atoms.get_potential_energy()), "forces": atoms.get_forces().tolist(),
                        "stress": stress})
    return results


def main() -> int:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    torch.set_default_dtype(torch.float64)
    frames = ase.io.read(spec["structures"], index=":")
    results = {}
    for name, model_spec in spec["models"].items():
        path = os.path.join(spec["workdir"], f"{name}.model")
        model = build(model_spec)
        save(model, model_spec, path)
        if model_spec.get("save", "module") == "module":
            results[name] = evaluate(path, frames)
        else:  # MACECalculator reads modules only: evaluate the same weights saved as a module
            torch.save(model, path + ".module")
            results[name] = evaluate(path + ".module", frames)
    with open(os.path.join(spec["workdir"], "reference.json"), "w") as handle:
        json.dump(results, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Model files: every damaged or foreign file is a ModelFileError naming the problem; species by symbol."""

import copy
import json
import subprocess
import sys

import pytest
import torch
from ase.build import molecule

import eqcalc
from eqcalc.models import MODEL_FAMILIES, ModelFileError
from eqcalc.models.io import model_payload


@pytest.fixture(scope="module")
def payload():
    torch.manual_seed(0)
    model = eqcalc.build_model("schnet", species=["H", "O"], num_features=8, num_interactions=1).double()
    return model_payload(model)


def edited(payload, edit):
    changed = copy.deepcopy(payload)
    edit(changed)
    return changed


def flip_one_bit(payload):
    weight = payload["state_dict"]["embedding.weight"]
    bits = weight.view(torch.int64)
    bits[0, 0] ^= 1 << 40


CASES = {
    "unknown config key": (lambda p: p["config"].update(bogus=1), "does not build a 'schnet' model.*bogus"),
    "config not a mapping": (lambda p: p.update(config=[1, 2]), "'config' is missing or not a mapping"),
    "float16": (lambda p: p.update(dtype="float16"), "'dtype' must be one of"),
    "no state_dict": (lambda p: p.pop("state_dict"), "'state_dict' is missing"),
    "negative size": (lambda p: p["config"].update(num_features=-4), "does not build a 'schnet' model"),
    "absurd size": (lambda p: p["config"].update(num_features=300000), "asks for a tensor of 90,000,000,000 elements"),
    "cutoff text": (lambda p: p["config"].update(cutoff="five"), "does not build.*'five'"),
    "species text": (lambda p: p["config"].update(species="HO"), "element symbols or atomic numbers"),
    "bit flip": (flip_one_bit, "do not match the checksum"),
    "int64 weights, no checksum": (
        lambda p: (p.pop("checksum"), p["state_dict"].update({"embedding.weight": p["state_dict"]["embedding.weight"].long()})),
        "embedding.weight.*torch.int64, expected",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_payload_is_refused_by_name(case, payload, tmp_path):
    edit, message = CASES[case]
    path = tmp_path / "model.pt"
    torch.save(edited(payload, edit), path)
    with pytest.raises(ModelFileError, match=message):
        eqcalc.load_model(path)


@pytest.mark.parametrize("content", [b"\x00\x13random bytes" * 50, json.dumps({"a": 1}).encode(), b"a: 1\nb: [2]\n"])
def test_non_torch_file_is_named_as_such(content, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="is not a PyTorch file"):
        eqcalc.load_model(path)


def test_directory_is_not_called_missing(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory"):
        eqcalc.load_model(tmp_path)


def test_intact_file_and_file_without_checksum_load(payload, tmp_path):
    torch.save(payload, tmp_path / "a.pt")
    torch.save(edited(payload, lambda p: p.pop("checksum")), tmp_path / "b.pt")  # written before checksums
    a, b = eqcalc.load_model(tmp_path / "a.pt"), eqcalc.load_model(tmp_path / "b.pt")
    for name, tensor in a.state_dict().items():
        torch.testing.assert_close(tensor, b.state_dict()[name], rtol=0, atol=0)


def test_species_as_symbols_or_numbers():
    by_symbol = eqcalc.build_model("schnet", species=["H", "C", "O"])
    assert by_symbol.species == [1, 6, 8] == eqcalc.build_model("schnet", species=[1, "C", 8]).species
    for bad, message in (("HCO", "list of element symbols"), (["Xx"], "'Xx' is neither"), ([1.5], "1.5 is neither")):
        with pytest.raises(ValueError, match=message):
            eqcalc.build_model("schnet", species=bad)


@pytest.mark.parametrize("family", sorted(MODEL_FAMILIES))
def test_every_family_loads_in_a_fresh_process(family, tmp_path):
    """Loading is the first thing a process does with e3nn's Clebsch–Gordan cache; the file's
    checks must leave it intact (a dry run on the meta device once cached meta tensors there).
    Energies of the reloaded model equal the saved one's."""
    torch.manual_seed(0)
    config = {"mace": {"lmax": 3, "max_L": 1, "num_channels": 4}, "nequip": {"lmax": 2, "num_features": 4}}
    model = eqcalc.build_model(family, species=[1, 8], cutoff=3.0, **config.get(family, {})).double()
    path = tmp_path / "model.pt"
    eqcalc.save_model(model, path)
    script = (
        "import sys, torch, eqcalc\n"
        "from ase.build import molecule\n"
        "model = eqcalc.load_model(sys.argv[1])\n"
        "atoms = molecule('H2O'); atoms.calc = eqcalc.EquivariantCalculator(model)\n"
        "print(repr(atoms.get_potential_energy()))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    atoms = molecule("H2O")
    atoms.calc = eqcalc.EquivariantCalculator(model)
    assert float(result.stdout.split()[-1]) == pytest.approx(atoms.get_potential_energy(), abs=1e-10)


@pytest.mark.parametrize("family, size", [("schnet", "num_features"), ("painn", "num_features"),
                                          ("egnn", "num_features"), ("nequip", "num_features"),
                                          ("mace", "num_channels"), ("allegro", "num_tensor_features"),
                                          ("allegro", "latent_features")])
def test_absurd_sizes_are_refused_before_allocating(family, size, tmp_path):
    """A config asking for ~1e11-element tensors (hundreds of GB) is refused at once, in every family."""
    model = eqcalc.build_model(family, species=[1, 8], cutoff=3.0, **{size: 4})
    payload = model_payload(model)
    payload["config"][size] = 300000
    payload.pop("checksum")
    torch.save(payload, tmp_path / "huge.pt")
    with pytest.raises(ModelFileError, match="asks for a tensor of .* elements, more than"):
        eqcalc.load_model(tmp_path / "huge.pt")

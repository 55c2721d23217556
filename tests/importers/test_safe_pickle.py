import collections
import os

import torch

from eqcalc.importers.safe_pickle import Inert, load_inert, record_name


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_payload_is_inert_and_tensors_load(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"payload": _Payload(marker), "t": torch.arange(3.0)}, path)
    data = load_inert(path)
    assert not marker.exists()
    assert isinstance(data["payload"], Inert) and data["payload"].qualname in ("posix.system", "os.system")
    assert data["payload"].args == (f"touch {marker}",)
    assert torch.equal(data["t"], torch.arange(3.0))


def test_not_a_torch_file_is_one_line_error(tmp_path):
    path = tmp_path / "junk.model"
    path.write_bytes(b"not a pickle")
    try:
        load_inert(path)
    except ValueError as err:
        assert "not a readable torch model file" in str(err) and "\n" not in str(err)
    else:
        raise AssertionError("junk file loaded")


Pair = collections.namedtuple("Pair", ["mul", "name"])  # pickled as NEWOBJ (class, arguments), like e3nn's Irreps


def test_objects_and_functions_become_named_records(tmp_path):
    """Objects rebuilt by NEWOBJ keep their arguments; a referenced function is a record of its
    name, never the function itself."""
    path = tmp_path / "records.pt"
    torch.save({"pair": Pair(8, "0e"), "act": torch.nn.functional.silu, "module": torch.nn.Linear(2, 3)}, path)
    data = load_inert(path)
    assert record_name(data["pair"]).endswith(".Pair") and data["pair"].args == (8, "0e")
    assert record_name(data["act"]) == "torch.nn.functional.silu" and data["act"] is not torch.nn.functional.silu
    linear = data["module"]
    assert record_name(linear) == "torch.nn.modules.linear.Linear"
    assert linear.state["_parameters"]["weight"].shape == (3, 2)

"""eqcalc.memory: free memory, peak measurement, and glibc's keep-freed-memory switch."""

import subprocess
import sys
import textwrap

import pytest
import torch

from eqcalc.memory import available_bytes, measure_peak


def test_available_memory_is_positive_or_unknown():
    free = available_bytes(torch.device("cpu"))
    assert free is None or free > 0


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_container_memory_limit_caps_the_free_memory(tmp_path, monkeypatch, version):
    """A cgroup limit below the host's MemAvailable is what the process can really use, also when
    it is set on an ancestor of the task's cgroup (batch systems limit the job, not the task)."""
    import eqcalc.memory as memory

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       100000000 kB\nMemAvailable:    90000000 kB\n")
    if version == "v2":
        root, limit, usage, line = tmp_path / "cg", "memory.max", "memory.current", "0::/job/task\n"
        no_limit = "max\n"
    else:
        root, limit, usage = tmp_path / "cg" / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        line, no_limit = "4:memory:/job/task\n1:cpu,cpuacct:/\nmalformed line\n", "9223372036854771712\n"
    job, task = root / "job", root / "job" / "task"
    task.mkdir(parents=True)
    (job / limit).write_text(f"{8 * 2**30}\n")
    (job / usage).write_text(f"{3 * 2**30}\n")
    (task / limit).write_text(no_limit)
    (task / usage).write_text(f"{2 * 2**30}\n")
    (tmp_path / "cgroup").write_text(line)
    monkeypatch.setattr(memory, "PROC_MEMINFO", meminfo)
    monkeypatch.setattr(memory, "PROC_CGROUP", tmp_path / "cgroup")
    monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path / "cg")
    monkeypatch.setattr(memory, "free_heap_bytes", lambda: 0)
    assert memory.available_bytes(torch.device("cpu")) == 5 * 2**30
    (job / limit).write_text(no_limit)
    assert memory.available_bytes(torch.device("cpu")) == 90000000 * 1024


def test_measure_peak_sees_a_large_allocation():
    with measure_peak(torch.device("cpu")) as peak:
        block = torch.ones(64 * 2**20 // 8, dtype=torch.float64)  # 64 MiB, touched
        del block
    if peak.bytes is None:
        pytest.skip("peak memory cannot be measured on this platform")
    assert peak.bytes >= 60 * 2**20


def test_keep_freed_memory_stops_page_faults_on_reused_buffers():
    """A 64 MiB buffer allocated and freed again and again: with glibc's defaults every round
    maps fresh pages (≈16k minor faults each); with freed memory kept, the pages are reused,
    also for a 1.25 GiB buffer (a finite trim threshold of 1 GiB gave its pages back on every
    free; now and then glibc still maps part of one afresh, hence the median over
    rounds). Runs in a subprocess because the switch is process-wide."""
    script = textwrap.dedent(
        """
        import resource, torch
        from eqcalc.memory import keep_freed_memory

        def faults(mib, rounds):
            counts = []
            for _ in range(rounds):
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                block = torch.ones(mib * 2**20 // 8, dtype=torch.float64)
                del block
                counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            return sorted(counts)

        default = faults(64, 5)[2]  # medians: glibc now and then maps part of a block afresh
        switched = keep_freed_memory()
        faults(1280, 1), faults(64, 1)  # the first rounds after the switch grow the heap
        print(default, switched, faults(64, 5)[2], faults(1280, 5)[2])
        """
    )
    if (available_bytes(torch.device("cpu")) or 0) < 4 * 2**30:
        pytest.skip("needs about 3 GiB of free memory (a 1.25 GiB buffer, kept)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    default, switched, kept, kept_large = done.stdout.split()
    if switched != "True":
        pytest.skip("not glibc: keep_freed_memory is a no-op here")
    assert float(default) > 10_000  # 64 MiB / 4 KiB pages = 16,384 faults per fresh mapping
    assert float(kept) < 0.1 * float(default)
    assert float(kept_large) < 0.1 * float(default)  # not the ≈330k faults of fresh 1.25 GiB on every round

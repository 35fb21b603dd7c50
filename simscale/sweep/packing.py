"""sweep.pack: a sweep's runs cut into units, lone runs or packed groups (simscale.train.packed).

    units(runs, pack)  # [[PlannedRun, ...], ...]: runs of one config.group_key, at most max_replicas each
                       # (wsd trunks and branches alone)

`pack` is '0' (off: every run alone), a number of runs, or 'auto': as many as `replica_bytes` says
fit in half the device memory (the first GPU's, from nvidia-smi, else this host's RAM).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

from simscale.config import group_key
from simscale.model import counting
from simscale.validation import sweep_pack

if TYPE_CHECKING:
    from simscale.sweep.grid import PlannedRun


def replica_bytes(cfg) -> int:
    """Memory one replica needs, roughly: float32 parameters, gradients and two Adam moments, plus the
    activations a step keeps for its backward pass (per token: each layer's ~10 hidden-size and
    3 intermediate-size vectors and its attention weights; the logits and their gradient)."""
    mc, tc = cfg.model, cfg.train
    F = mc.intermediate or 4 * mc.hidden
    per_token = mc.layers * (10 * mc.hidden + 3 * F + mc.heads * tc.seq_len) + 2 * mc.vocab_size
    return 4 * (4 * counting.params_total(mc) + tc.batch_size * tc.seq_len * per_token)


def device_bytes() -> int:
    """The first visible GPU's memory (nvidia-smi), else this host's physical memory."""
    from simscale.sweep.executors import visible_gpus

    if visible_gpus() and shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True).stdout.split()
        if out:
            return int(float(out[0])) * 2**20
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def max_replicas(pack, cfg) -> int:
    """Runs per packed group for runs like `cfg` (1 or 0: unpacked); a bad sweep.pack raises ConfigError."""
    n = sweep_pack(pack)
    return max(1, device_bytes() // 2 // replica_bytes(cfg)) if n == "auto" else n


def units(runs: list[PlannedRun], pack) -> list[list[PlannedRun]]:
    """The runs in units of one run, or packed groups of up to max_replicas runs of one group_key (in
    the runs' order within a group). A wsd trunk or branch (simscale.sweep.branches) is a unit of its
    own: a packed group neither saves branch points nor starts from one."""
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        alone = sweep_pack(pack) == 0 or run.branch_points or run.branch_of
        groups.setdefault(run.run_id if alone else group_key(run.cfg), []).append(run)
    out = []
    for group in groups.values():
        n = max_replicas(pack, max((r.cfg for r in group), key=lambda c: c.model.vocab_size))
        out += [[r] for r in group] if n <= 1 else [group[i:i + n] for i in range(0, len(group), n)]
    return out

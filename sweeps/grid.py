"""The paper's grid and smaller presets: `--config sweeps/grid.py:preset=NAME`.

Presets: `paper` (default; 6 widths x 3 depths x 2 data variants = 36 runs for
GPUs/TPUs), `cpu` (a small real grid on BIG-bench dialogue text for a 2-core
machine), `smoke` (seconds, for tests), `isoflop` (a compute ladder, D = C / 6N), `colab` (the
paper's recipe at widths 32-512 for one Colab runtime), and two warmup-stable-decay variants whose
budgets of one shape share a trunk (simscale.sweep.branches): `isoflop_wsd` and `tokens_wsd` (the
cpu grid at 1/4, 1/2, 3/4 and 1 of its epoch).

The `sweep` section describes the grid (see docs/sweeps.md); everything else
is the base run config, so `python -m simscale.train --config sweeps/grid.py`
trains the base run alone.
"""
import inspect

from ml_collections import ConfigDict

from simscale.config import ConfigError, run_config, sweep_config

PRESETS = ("paper", "cpu", "smoke", "isoflop", "colab", "isoflop_wsd", "tokens_wsd")


def paper() -> ConfigDict:
    """The paper's recipe, as its training script (src/main.py of github.com/text-machine-lab/mini_gpt)
    sets it, on SlimPajama (Hugging Face datasets, all subsets) filtered with AO-CHILDES.

    model  Hugging Face LlamaConfig defaults: RMSNorm eps 1e-6, untied embeddings, init std 0.02;
           8 heads (num_attention_heads=8); intermediate 4 x hidden (the paper, section 3); context 128.
    optim  transformers.AdamW(betas=(0.9, 0.95), eps=10e-5 = 1e-4, weight_decay=0.1) over all of
           model.parameters() (norm scales too); no gradient clipping.
    sched  get_cosine_schedule_with_warmup(num_warmup_steps=1000, num_cycles=0.25): linear warmup,
           then a quarter cosine from the peak 2.8e-3 to half of it (cosine_cycles 0.25, lr_floor 0).
    batch  512 sequences x 128 tokens per update (total_batch_size), one epoch (train.tokens 0).
    split  train_test_split(test_size=0.003) of the packed sequences: data.validation_unit='rows'.
    data   2.1B tokens of simplified text (the paper, section 2): data.max_train_tokens.
    dtype  accelerate mixed_precision='bf16': bfloat16 matmuls (model.compute_dtype auto on GPU/TPU).
    """
    cfg = run_config()
    cfg.model.update(norm_eps=1e-6, init_std=0.02, tie_embeddings=False, heads=8, max_len=128)
    cfg.train.update(b1=0.9, b2=0.95, eps=1e-4, weight_decay=0.1, decay="all", clip_norm=0.0,
                     schedule="cosine", cosine_cycles=0.25, lr_floor=0.0, warmup_steps=1000, lr=2.8e-3,
                     batch_size=512, seq_len=128, tokens=0)
    cfg.data.update(source="hf", vocab="aochildes", validation_unit="rows", validation_fraction=0.003,
                    max_train_tokens=2_100_000_000)
    cfg.data.hf.update(name="cerebras/SlimPajama-627B", split="train", text_field="text")
    cfg.sweep = sweep_config()
    return cfg


def cpu(vocab: str = "auto", tasks: str = "auto", source: str = "auto") -> ConfigDict:
    """A small real grid for a 2-core machine: 4 widths x 2 depths x 2 variants.

    `auto` text, vocabulary and tasks are chosen by what the machine has (simscale.at_hand): BIG-bench
    dialogue when its archive is in the cache, else the State of the Union addresses; the paper's
    AO-CHILDES list and BLiMP paper-22 when $SIMSCALE_DATA or the cache has them or their URLs answer,
    else wordfreq's top 21,000 words and BIG-bench multiple choice (none without its archive). Pin
    them with preset=cpu,source=...,vocab=...,tasks=...
    """
    cfg = run_config()
    cfg.model.vocab_size = 2000
    cfg.model.max_len = 64
    cfg.train.update(
        batch_size=16, seq_len=64, tokens=0, steps=0, lr=2e-3, warmup_steps=20,
        log_every=25, eval_every=40, eval_batches=8, checkpoint_every=100,
    )
    cfg.data.source = source
    # 0.2M training tokens per run (195 steps, 4 evaluations and a final one), so that `make demo` fits
    # in 15 minutes on 2 slow cores (0.7M took 31-35 min on Zen 3, 0.3M 15-17 min with two workers).
    # What the filter keeps sets the rest: of BIG-bench dialogue the AO-CHILDES list keeps 0.76M tokens
    # and wordfreq:21000 about 3x more; of the State of the Union addresses wordfreq:21000 keeps 35% of
    # the words (over 0.2M tokens) but AO-CHILDES 3% (69k tokens: both variants then train on those,
    # 67 steps). docs/results.md also reports a 0.7M-token study.
    cfg.data.max_train_tokens = 200_000
    cfg.data.vocab = vocab
    # 100 examples per task (of each variant) keep the 16 evaluations to ~2 minutes.
    cfg.eval.tasks = tasks
    cfg.eval.max_examples = 100
    cfg.sweep = sweep_config()
    widths = (32, 64, 128, 256)
    # 16-wide heads; one epoch, where wider models want a smaller LR (w256 at 0.7M tokens: 1e-3 beat
    # 3e-3 by 0.14 nats), so lr = 2e-3 * 128 / width.
    cfg.sweep.axes = ConfigDict(dict(width=widths, heads=tuple(w // 16 for w in widths),
                                     lr=tuple(2e-3 * 128 / w for w in widths), depth=(2, 4),
                                     variant=("simplified", "unrestricted")))
    cfg.sweep.zip = ("width,heads,lr",)
    cfg.sweep.calibration_steps = 2
    return cfg


def smoke() -> ConfigDict:
    cfg = run_config()
    cfg.model.update(vocab_size=256, hidden=32, layers=1, heads=2, max_len=32)
    cfg.train.update(
        batch_size=8, seq_len=32, steps=20, lr=3e-3, warmup_steps=5,
        log_every=5, eval_every=10, eval_batches=2, checkpoint_every=5,
    )
    cfg.data.source = "synthetic"
    cfg.sweep = sweep_config()
    cfg.sweep.axes = ConfigDict(dict(width=(16, 32), depth=(1,), variant=("simplified", "unrestricted")))
    cfg.sweep.calibration_steps = 2
    return cfg


def isoflop() -> ConfigDict:
    """Chinchilla approach 2: for each budget C, every shape trains on D = C / (6N) tokens."""
    cfg = paper()
    cfg.train.warmup_steps = 100
    cfg.sweep.axes = ConfigDict(
        dict(flops=(1e15, 3e15, 1e16), width=(64, 128, 256), depth=(2, 4), variant=("simplified",))
    )
    return cfg


# The Hugging Face datasets the colab preset streams (data.hf). TinyStories is written in a young
# child's vocabulary, so the filter should keep far more of it than of web text (not measured here:
# no network); the paper's SlimPajama kept 2.1B of 627B tokens (~0.3%), so each simplified token
# costs ~300 tokens read: 40M need ~12B, far more than one runtime streams and filters.
COLAB_TEXTS = {"tinystories": dict(name="roneneldan/TinyStories", split="train", text_field="text"),
               "slimpajama": dict(name="cerebras/SlimPajama-627B", split="train", text_field="text")}


def colab(text: str = "tinystories", tokens: str = "40000000", tasks: str = "paper") -> ConfigDict:
    """One Colab runtime: the paper's recipe (`paper`) at widths {32, ..., 512} x depths {2, 4, 8} x both
    variants = 30 runs, each one epoch of `tokens` simplified tokens: data.max_train_tokens stops the
    stream once the simplified variant has them, and the control reads to the same count. `text`:
    tinystories or slimpajama (COLAB_TEXTS); `tasks`: eval.tasks (default the paper's suite: BLiMP
    paper-22 and its eight tasks, downloaded once; at most 1,000 examples a task). Warmup is 10% of
    the steps (the paper's 1,000 of 32k steps would outlast an epoch of 40M tokens, 610 steps).
    `--dry_run --device all`: the training time on each device class.
    """
    if text not in COLAB_TEXTS:
        raise ConfigError(f"preset colab: text={text!r} is not one of {', '.join(COLAB_TEXTS)}")
    if not tokens.isdigit() or int(tokens) < 1:
        raise ConfigError(f"preset colab: tokens={tokens!r} must be a positive whole number of tokens")
    cfg = paper()
    cfg.data.max_train_tokens = int(tokens)
    cfg.data.hf.update(**COLAB_TEXTS[text])
    steps = int(tokens) // (cfg.train.batch_size * cfg.train.seq_len)
    cfg.train.update(warmup_steps=max(1, steps // 10), eval_every=max(1, steps // 8),
                     checkpoint_every=max(1, steps // 8))
    cfg.eval.update(tasks=tasks, max_examples=1000)  # QQP's validation split alone has 40,430 rows
    cfg.sweep.axes.width = (32, 64, 128, 256, 512)
    cfg.sweep.epoch_tokens = int(tokens)
    return cfg


def _wsd(cfg: ConfigDict) -> ConfigDict:
    """Warmup-stable-decay with a 1-sqrt cooldown over the last 20% (Hägele et al. 2024: a 10-20%
    cooldown matches cosine); budgets of one shape branch off one trunk (sweep.branch)."""
    cfg.train.update(schedule="wsd", decay_shape="1-sqrt", decay_fraction=0.2, lr_floor=0.0)
    cfg.sweep.branch = True
    return cfg


def isoflop_wsd() -> ConfigDict:
    """isoflop on wsd: each shape trains once, to its largest budget, and branches a cooldown off that
    trunk at each smaller one."""
    return _wsd(isoflop())


def tokens_wsd(vocab: str = "auto", tasks: str = "auto") -> ConfigDict:
    """The cpu grid, each shape at 1/4, 1/2, 3/4 and 1 of its 0.2M-token epoch, on wsd: one trunk of
    195 steps per shape and cooldown branches at the three shorter budgets."""
    cfg = _wsd(cpu(vocab, tasks))
    cfg.sweep.axes.tokens = tuple(round(f * cfg.data.max_train_tokens) for f in (0.25, 0.5, 0.75, 1.0))
    return cfg


def get_config(arg: str | None = None) -> ConfigDict:
    """`arg`: "NAME" or "preset=NAME[,key=value...]" (default: paper); the keys are the preset's own
    arguments, e.g. "preset=cpu,vocab=wordfreq:21000,tasks=bigbench_mc"."""
    fields = [f.strip() for f in (arg or "paper").split(",") if f.strip()]
    first = fields[0].split("=", 1)
    name = first[1] if first[0] == "preset" and len(first) == 2 else fields[0]
    if name not in PRESETS:
        raise ConfigError(f"unknown sweep preset {name!r} in --config sweeps/grid.py:preset=...; choose from "
                          f"{PRESETS}")
    options = dict(f.split("=", 1) if "=" in f else (f, "") for f in fields[1:])
    accepted = inspect.signature(globals()[name]).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"preset {name} takes no option {unknown[0]!r}" +
                          (f"; its options: {', '.join(accepted)}" if accepted else ""))
    return globals()[name](**options)

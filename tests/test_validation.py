"""simscale.validation: unknown keys named with the nearest valid one, bad values refused."""
import pytest

from simscale.config import ConfigError, run_config
from simscale.validation import check_keys, known_keys


def smoke():
    from sweeps.grid import get_config

    return get_config("smoke")


def test_known_keys_cover_run_and_sweep_sections():
    keys = known_keys()
    assert "train.lr_floor" in keys and "model.kv_heads" in keys and "sweep.axes.tokens_per_param" in keys
    assert "sweep.axes" not in keys and "train" not in keys


@pytest.mark.parametrize("section,key,nearest", [
    ("train", "lr_flor", "train.lr_floor"),
    ("train", "nonexistent", None),  # the nearest train.* key, whatever difflib picks
    ("model", "head", "model.heads"),
])
def test_unknown_key_names_the_nearest_key_of_its_section(section, key, nearest):
    cfg = smoke()
    cfg[section][key] = 1
    with pytest.raises(ConfigError) as e:
        check_keys(cfg)
    msg = str(e.value)
    assert (msg.startswith(f"unknown config key {section}.{key} (did you mean {section}.")
            and msg.endswith("?)"))
    if nearest:
        assert msg == f"unknown config key {section}.{key} (did you mean {nearest}?)"


def test_unknown_section_and_unknown_axis():
    cfg = smoke()
    cfg.trian = {"lr": 1.0}
    with pytest.raises(ConfigError, match=r"^unknown config key trian.lr \(did you mean train.lr\?\)$"):
        check_keys(cfg)
    cfg = smoke()
    cfg.sweep.axes.depths = (1, 2)
    with pytest.raises(ConfigError,
                       match=r"^unknown config key sweep.axes.depths \(did you mean sweep.axes.depth\?\)$"):
        check_keys(cfg)


def test_every_preset_passes():
    from sweeps.grid import PRESETS, get_config

    for name in PRESETS:
        check_keys(get_config(name))
    check_keys(run_config())


def test_every_bad_value_is_listed_before_anything_trains():
    """Enumerated keys, optimiser and data values are refused with the model and mesh ones (the schedule,
    decay and data values were checked only once a run had started, so a sweep began training)."""
    from simscale.validation import problems

    cfg = smoke()
    cfg.train.update(dict(schedule="bogus", cosine_cycles=0.9, decay="some"))
    cfg.data.validation_fraction = 1.5
    cfg.data.files.format = "csv"
    cfg.model.attention = "flash"
    listed = problems(cfg, 1)
    assert "train.schedule='bogus': choose one of ('cosine', 'wsd', 'constant')" in listed
    assert "train.decay='some': choose one of ('matrices', 'all', 'none')" in listed
    assert "model.attention='flash': choose one of ('auto', 'xla', 'cudnn')" in listed
    assert "data.files.format='csv': choose one of ('auto', 'text', 'jsonl', 'parquet')" in listed
    assert any(p.startswith("train.cosine_cycles=0.9 must lie in (0, 0.5]") for p in listed)
    assert "data.validation_fraction=1.5: give a fraction in [0, 1)" in listed
    assert len(listed) == 6


def test_a_renamed_source_key_names_its_new_place():
    cfg = smoke()
    cfg.data.hf_name = "roneneldan/TinyStories"
    with pytest.raises(ConfigError, match=r"^unknown config key data.hf_name: it is data.hf.name now$"):
        check_keys(cfg)


def test_a_value_for_a_source_section_is_one_error_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "simscale.sweep", "--config", "sweeps/grid.py:preset=smoke",
                           f"--workdir={tmp_path}", "--config.data.files=corpus.txt", "--dry_run"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: --config.data.files is a section: set its keys, "
                                   "e.g. --config.data.files.KEY=VALUE")

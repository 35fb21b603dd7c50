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
    assert msg.startswith(f"unknown config key {section}.{key} (did you mean {section}.") and msg.endswith("?)")
    if nearest:
        assert msg == f"unknown config key {section}.{key} (did you mean {nearest}?)"


def test_unknown_section_and_unknown_axis():
    cfg = smoke()
    cfg.trian = {"lr": 1.0}
    with pytest.raises(ConfigError, match=r"^unknown config key trian.lr \(did you mean train.lr\?\)$"):
        check_keys(cfg)
    cfg = smoke()
    cfg.sweep.axes.depths = (1, 2)
    with pytest.raises(ConfigError, match=r"^unknown config key sweep.axes.depths \(did you mean sweep.axes.depth\?\)$"):
        check_keys(cfg)


def test_every_preset_passes():
    from sweeps.grid import PRESETS, get_config

    for name in PRESETS:
        check_keys(get_config(name))
    check_keys(run_config())

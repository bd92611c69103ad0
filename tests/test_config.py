"""The hyper-parameter declarations (minigen/config.py): checking, defaults, help, the memory estimate."""
import dataclasses
import math
from dataclasses import FrozenInstanceError, dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.config import HyperParameters, check_memory, excluded, knob
from minigen.errors import ConfigError, MinigenError
from minigen.models import get_family
from minigen.models.vae import VAEConfig

FAMILIES = ["vae", "flow", "pixelcnn", "nar", "ddpm", "flowmatch", "gan", "classifier"]


@dataclass(frozen=True)
class Knobs(HyperParameters):
    rate: float = knob(0.1, excluded(0), excluded(1), "a rate")
    width: int = knob(8, 1, 64, "a width")
    clip: float | None = knob(None, excluded(0), None, "a clip")
    kind: str = knob("a", doc="a kind", choices=("a", "b"))
    flag: bool = knob(False, doc="a flag")
    sizes: tuple[int, ...] = knob((4, 8), 1, 16, "sizes", length=(1, 3))


def test_defaults_are_plain_json_values():
    assert Knobs.defaults() == {"rate": 0.1, "width": 8, "clip": None, "kind": "a", "flag": False, "sizes": [4, 8]}
    assert Knobs.build("t").as_dict() == Knobs.defaults()


def test_values_are_normalised():
    hp = Knobs.build("t", {"width": 64.0, "rate": 0.5, "clip": 5, "sizes": [1, 16.0, 2]})
    assert (hp.width, type(hp.width), hp.rate, hp.clip, type(hp.clip), hp.sizes) == (64, int, 0.5, 5.0, float,
                                                                                      (1, 16, 2))
    with pytest.raises(FrozenInstanceError):
        hp.width = 3


@pytest.mark.parametrize("key, value, allowed", [
    ("rate", 0, "a number in (0, 1)"), ("rate", 1.0, "a number in (0, 1)"), ("rate", math.nan, "a number in (0, 1)"),
    ("rate", "0.5", "a number in (0, 1)"), ("rate", True, "a number in (0, 1)"),
    ("width", 2.5, "an integer in 1..64"), ("width", 65, "an integer in 1..64"), ("width", None, "an integer in 1..64"),
    ("width", math.inf, "an integer in 1..64"), ("width", [8], "an integer in 1..64"),
    ("clip", 0, "a number > 0 or null"), ("clip", -math.inf, "a number > 0 or null"),
    ("kind", "c", "one of a, b"), ("kind", 1, "one of a, b"),
    ("flag", 1, "true or false"), ("flag", "true", "true or false"),
    ("sizes", [], "a list of 1..3 entries, each an integer in 1..16"), ("sizes", [1, 2, 3, 4], "a list of 1..3"),
    ("sizes", [0], "a list of 1..3"), ("sizes", 8, "a list of 1..3"), ("sizes", [[1]], "a list of 1..3"),
])
def test_each_bad_value_is_one_line_naming_key_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as error:
        Knobs.build("t", {key: value})
    message = str(error.value)
    assert message.startswith(f"t: {key}=") and f"is not allowed; expected {allowed}" in message
    assert "\n" not in message


def test_unknown_keys_are_named_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"t: unknown hyper-parameter 'widht', 'x'; expected some of: rate, width"):
        Knobs.build("t", {"widht": 3, "x": 1})


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_declares_documented_knobs_with_valid_defaults(family):
    cls = get_family(family)
    defaults = cls.default_config()
    assert {"lr", "batch_size", "conditional"} <= set(defaults)
    assert cls.Config.build(family, defaults).as_dict() == defaults
    lines = cls.Config.help_lines()
    assert len(lines) == len(defaults) and all("; " in line for line in lines)   # each has a reason


@pytest.mark.parametrize("family, config", [
    ("vae", {}), ("vae", {"variant": "conv", "conditional": True}), ("flow", {}), ("flow", {"variant": "conv"}),
    ("nar", {}), ("pixelcnn", {}), ("pixelcnn", {"output": "categorical256", "conditional": True}),
    ("pixelcnn", {"channels": 24, "conditional": True, "label_map": True}), ("gan", {}),
    ("gan", {"conditional": True}), ("ddpm", {}), ("ddpm", {"channels": [16, 32], "conditional": True}),
    ("classifier", {}),
])
def test_the_memory_estimate_counts_parameters_within_ten_percent(family, config):
    model = get_family(family)(config)
    estimated, per_example = model.hparams.memory_floats()
    assert abs(estimated - model.num_parameters()) <= 0.1 * model.num_parameters()
    assert per_example > 0


def test_a_model_that_cannot_fit_is_refused_before_allocation():
    hp = VAEConfig.build("vae", {"hidden_dim": 16384, "latent_dim": 4096, "batch_size": 8192})
    with pytest.raises(MinigenError, match=r"vae: training this model would need about 9\.8 GiB \(227,016,704 "
                                           r"parameters, .* but only 1\.0 MiB is available"):
        check_memory("vae", hp, hp.batch_size, available=2**20)
    assert check_memory("vae", hp, 1, available=2**40) > 0


@settings(max_examples=60, derandomize=True, deadline=None)
@given(config=st.dictionaries(st.sampled_from(sorted(VAEConfig.defaults()) + ["nope"]),
                              st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                                        st.floats(allow_nan=True), st.text(max_size=5),
                                        st.lists(st.integers(-3, 3), max_size=3)), max_size=4))
def test_build_either_accepts_in_range_values_or_raises_config_error(config):
    try:
        hp = VAEConfig.build("vae", config)
    except ConfigError as e:
        assert str(e).startswith("vae: ") and "\n" not in str(e)
        return
    for f in dataclasses.fields(VAEConfig):    # what is accepted is what was given (or the default), in range
        value, m = getattr(hp, f.name), f.metadata
        assert value == config.get(f.name, f.default) and type(value) is not str or value in m["choices"]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value) and (m["low"] is None or value >= m["low"]) and \
                (m["high"] is None or value <= m["high"])

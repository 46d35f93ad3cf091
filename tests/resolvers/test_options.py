"""Every resolver's numeric options, checked alike (:mod:`gradsurgery.resolvers._options`).

A real option takes any real number but a bool (NumPy scalars included) and stores a
Python float; an integer option takes any integer but a bool and stores a Python int;
NaN and infinities are refused; and extreme but valid values never crash later.
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest
import torch

import gradsurgery
from gradsurgery.resolvers._options import integer_option, real_option

# A valid value of every numeric option of every registered resolver, exactly representable
# in float32 (so that np.float32(value) == value), and not the default.
OPTIONS: dict[str, dict[str, float | int]] = {
    "cagrad": {"c": 0.5},
    "db_mtl": {"beta": 0.5, "beta_sigma": 0.5},
    "dwa": {"temperature": 3.0, "epoch_length": 10},
    "famo": {"lr": 0.0625, "gamma": 0.03125},
    "gr": {"k": 3.0, "max_stretch": 10.0},
    "gr_rescale": {"k": 3.0, "max_stretch": 10.0},
    "graddrop": {"leak": 0.25, "seed": 3},
    "gradnorm": {"alpha": 1.0, "lr": 0.0625, "min_weight": 0.015625},
    "gradvac": {"beta": 0.25, "seed": 3},
    "metabalance": {"relax": 0.5, "beta": 0.5},
    "nash_mtl": {"update_weights_every": 2, "max_iterations": 20, "reg_eps": 2.0**-20},
    "olaux": {"lr": 2.0, "model_lr": 0.0078125, "horizon": 3, "initial_weight": 0.5},
    "pcgrad": {"seed": 3},
    "rlw": {"seed": 3},
    "upgrad": {"norm_eps": 0.0078125, "reg_eps": 2.0**-10},
    "uw": {"lr": 0.0078125, "initial_log_variance": 0.5},
}
CASES = [(method, option) for method, options in OPTIONS.items() for option in options]
REAL_CASES = [(m, o) for m, o in CASES if isinstance(OPTIONS[m][o], float)]
INTEGER_CASES = [(m, o) for m, o in CASES if isinstance(OPTIONS[m][o], int)]

G = torch.tensor([[1.0, 0.5, -0.25], [-0.75, 1.0, 0.5], [0.25, -1.0, 2.0]], dtype=torch.float64)
LOSSES = [1.5, 0.75, 2.0]


def _is_numeric(annotation: str) -> bool:
    """Whether a (string) annotation is ``float`` or ``int``, possibly ``| None``."""
    return bool({part.strip() for part in annotation.split("|")} & {"float", "int"})


def _resolver_class(method: str) -> type:
    return type(gradsurgery.get_resolver(method))


def _build(method: str, **options):
    return gradsurgery.get_resolver(method, **options)


def _direction(resolver) -> torch.Tensor:
    torch.manual_seed(0)
    return gradsurgery.resolve(G, method=resolver, losses=LOSSES, primary=0)


@pytest.mark.parametrize("method", gradsurgery.available())
def test_the_table_lists_every_numeric_option(method):
    signature = inspect.signature(_resolver_class(method).__init__)
    numeric = {
        name
        for name, parameter in signature.parameters.items()
        if name != "self" and _is_numeric(str(parameter.annotation))
    }
    assert numeric == set(OPTIONS.get(method, {}))


@pytest.mark.parametrize(("method", "option"), CASES)
@pytest.mark.parametrize("flag", [True, False])
def test_a_bool_is_refused_with_the_option_named(method, option, flag):
    with pytest.raises(TypeError, match=rf"^Invalid {option}: {flag} \(expected "):
        _build(method, **{option: flag})


@pytest.mark.parametrize(("method", "option"), CASES)
def test_a_string_is_refused_with_a_type_error(method, option):
    with pytest.raises(TypeError, match=rf"^Invalid {option}: '1' \(expected "):
        _build(method, **{option: "1"})


@pytest.mark.parametrize(("method", "option"), REAL_CASES)
@pytest.mark.parametrize("kind", [np.float32, np.float64, np.float16])
def test_numpy_floats_are_accepted_and_stored_as_python_floats(method, option, kind):
    value = OPTIONS[method][option]
    if float(kind(value)) != value:
        pytest.skip(f"{value} is not exact in {kind.__name__}")
    given = _build(method, **{option: kind(value)})
    plain = _build(method, **{option: value})
    assert type(getattr(given, option)) is float
    assert getattr(given, option) == value
    assert repr(given) == repr(plain)
    torch.testing.assert_close(_direction(given), _direction(plain), rtol=0, atol=0)


@pytest.mark.parametrize(("method", "option"), INTEGER_CASES)
@pytest.mark.parametrize("kind", [np.int64, np.int32, np.uint8])
def test_numpy_integers_are_accepted_and_stored_as_python_ints(method, option, kind):
    value = OPTIONS[method][option]
    given = _build(method, **{option: kind(value)})
    plain = _build(method, **{option: value})
    assert type(getattr(given, option)) is int
    assert getattr(given, option) == value
    assert repr(given) == repr(plain)
    torch.testing.assert_close(_direction(given), _direction(plain), rtol=0, atol=0)


@pytest.mark.parametrize(("method", "option"), REAL_CASES)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan"), 10**400])
def test_non_finite_values_are_refused(method, option, value):
    with pytest.raises(ValueError, match=rf"^Invalid {option}: .* \(expected "):
        _build(method, **{option: value})


@pytest.mark.parametrize(("method", "option"), INTEGER_CASES)
@pytest.mark.parametrize("value", [2.0, np.float64(2.0), 2.5])
def test_a_float_for_an_integer_option_is_refused(method, option, value):
    with pytest.raises(TypeError, match=rf"^Invalid {option}: .* \(expected (None or )?an int"):
        _build(method, **{option: value})


@pytest.mark.parametrize("rescale", ["1+c^2", "1+c", "none"])
@pytest.mark.parametrize("c", [1e-300, 1e-200, 1e-20, 1e20, 1e154, 1e200, 1e300, 1.7e308])
@pytest.mark.parametrize("scale", [1.0, 1e70, 1e-70])
def test_cagrad_extreme_c_gives_the_limit_or_a_clear_error(rescale, c, scale):
    # The direction is d = (g_0 + c ||g_0|| g_w / ||g_w||) / divisor: its two terms are
    # checked against the c -> 0 limit (the mean, weights 1/T) and the c -> infinity one
    # (the min-norm point of the hull, MGDA's, weights summing to 1 along g_w).
    resolver = gradsurgery.get_resolver("cagrad", c=c, rescale=rescale)
    mean = G.mean(0) * scale
    divisor = {"1+c^2": 1.0 + c * c, "1+c": 1.0 + c, "none": 1.0}[rescale]
    g_w = gradsurgery.resolve(G, method="mgda")  # min-norm point: the c -> inf limit
    ratio = float(mean.norm() / (g_w.norm() * scale))  # ||g_0|| / ||g_w||
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy overflow warning either
        try:
            d = gradsurgery.resolve(G * scale, method=resolver)
        except ValueError as error:  # only where d, or its weight c ||g_0|| / ||g_w||, is
            assert rescale == "none" and "overflow" in str(error)  # beyond float64's range
            assert c * max(ratio, float(mean.norm())) > 1e300
            return
    assert torch.isfinite(d).all()
    factor = {"1+c^2": 1.0 / (c + 1.0 / c), "1+c": c / (1.0 + c), "none": c}[rescale]
    expected = mean / divisor if c < 1 else (factor * ratio * scale) * g_w
    torch.testing.assert_close(d, expected, rtol=1e-7, atol=1e-300)


@pytest.mark.parametrize(("beta_sigma", "start"), [(1100.0, 0), (60.0, 2 * 10**5), (1e300, 1)])
def test_db_mtl_large_beta_sigma_decays_to_no_memory(beta_sigma, start):
    # beta_k = beta / k^beta_sigma underflows to 0 when k^beta_sigma overflows: the running
    # average is then the current gradients alone (as with beta = 0).
    resolver = gradsurgery.get_resolver("db_mtl", beta=0.9, beta_sigma=beta_sigma)
    memoryless = gradsurgery.get_resolver("db_mtl", beta=0.0)
    losses = torch.tensor(LOSSES, dtype=torch.float64)
    gradsurgery.resolve(G, method=resolver, losses=losses)
    if start:
        resolver.load_state_dict({**resolver.state_dict(), "step": start})
    d = gradsurgery.resolve(-G, method=resolver, losses=losses)
    assert torch.isfinite(d).all()
    torch.testing.assert_close(d, gradsurgery.resolve(-G, method=memoryless, losses=losses))


def test_real_option_bounds_and_messages():
    assert real_option("x", 0, minimum=0) == 0.0 and type(real_option("x", 0)) is float
    with pytest.raises(ValueError, match=r"^Invalid x: 0 \(expected a finite number > 0\)$"):
        real_option("x", 0, minimum=0, above_minimum=True)
    with pytest.raises(ValueError, match=r"^Invalid x: 1 \(expected a number in \(0, 1\)\)$"):
        real_option("x", 1, minimum=0, maximum=1, above_minimum=True, below_maximum=True)
    with pytest.raises(ValueError, match=r"expected a number in \[0, 1\); paper 0\.9\)$"):
        real_option("x", -0.5, minimum=0, maximum=1, below_maximum=True, note="paper 0.9")
    with pytest.raises(ValueError, match=r"^Invalid x: 2\.5 \(expected a finite number <= 2\)$"):
        real_option("x", 2.5, maximum=2)
    with pytest.raises(TypeError, match=r"^Invalid x: None \(expected a finite number\)$"):
        real_option("x", None)
    with pytest.raises(TypeError, match="Invalid x: tensor"):
        real_option("x", torch.tensor(1.0))
    assert real_option("x", 1, minimum=1, maximum=1) == 1.0


def test_integer_option_bounds_and_messages():
    assert integer_option("n", np.int64(-3)) == -3 and type(integer_option("n", 7)) is int
    with pytest.raises(ValueError, match=r"^Invalid n: 0 \(expected an int >= 1\)$"):
        integer_option("n", 0, minimum=1)
    with pytest.raises(TypeError, match=r"^Invalid n: (np\.True_|True) \(expected an int\)$"):
        integer_option("n", np.bool_(True))
    with pytest.raises(TypeError, match=r"^Invalid n: 1\.0 \(expected an int\)$"):
        integer_option("n", 1.0)


def test_integer_option_maximum():
    assert integer_option("n", 9, minimum=0, maximum=9) == 9
    with pytest.raises(ValueError, match=r"^Invalid n: 10 \(expected an int in \[0, 9\]\)$"):
        integer_option("n", 10, minimum=0, maximum=9)
    with pytest.raises(ValueError, match=r"^Invalid n: 3 \(expected None or an int <= 2\)$"):
        integer_option("n", 3, maximum=2, optional=True)


@pytest.mark.parametrize("method", ["graddrop", "gradvac", "pcgrad", "rlw"])
def test_seed_takes_torch_generator_range(method):
    """Every seed torch.Generator.manual_seed takes is taken (a negative one as 2**64 + s);
    one beyond it is a ValueError naming seed, not torch's RuntimeError at the first draw."""
    for seed, initial in [(2**64 - 1, 2**64 - 1), (-1, 2**64 - 1), (-(2**63), 2**63)]:
        resolver = _build(method, seed=seed)
        assert resolver.seed == seed and resolver.generator.initial_seed() == initial
    for seed in [2**64, -(2**63) - 1]:
        with pytest.raises(ValueError, match=r"^Invalid seed: -?\d+ \(expected None or an int in"):
            _build(method, seed=seed)

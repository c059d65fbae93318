"""fast_init: the classes it is applied to behave exactly like the plain frozen dataclasses they were.

Each class is compared with a plain ``@dataclass(frozen=True, slots=True)`` twin built from the
same fields (the reference): signature, repr, equality, hash, immutability, ``replace``,
``asdict``, ``copy`` and ``pickle``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.frozen_init import fast_init
from gateway.readings import ClockQuality, DeviceFlag, SampleBlock, Vital, VitalReading
from gateway.signal.heart_rate import RRInterval
from gateway.signal.rpeak_detector import Beat

FAST = [SampleBlock, VitalReading, Beat, RRInterval]


def _reference(cls: type) -> type:
    """The same class as a plain frozen slots dataclass (what it was before fast_init)."""
    fields = [
        (f.name, f.type, dataclasses.field(default=f.default))
        if f.default is not dataclasses.MISSING
        else (f.name, f.type)
        for f in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)


def test_each_class_uses_fast_init() -> None:
    for cls in FAST:
        assert cls.__init__.__code__.co_filename == "<string>", cls  # the generated one
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"


def test_signature_is_the_dataclass_one() -> None:
    for cls in FAST:
        ours = inspect.signature(cls.__init__)
        ref = inspect.signature(_reference(cls).__init__)
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
            (p.name, p.kind, p.default) for p in ref.parameters.values()
        ], cls


def _check_like_reference(obj: Any, ref: Any, changes: dict[str, Any]) -> None:
    cls = type(obj)
    assert type(obj) is cls and not type(obj).__name__.endswith("Filling")
    assert repr(obj) == repr(ref).replace(type(ref).__qualname__, cls.__qualname__, 1)
    assert dataclasses.astuple(obj) == dataclasses.astuple(ref)
    assert dataclasses.asdict(obj) == dataclasses.asdict(ref)
    twin = cls(*dataclasses.astuple(obj))
    assert twin == obj and hash(twin) == hash(obj) == hash(ref)
    for f in dataclasses.fields(obj):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, f.name, getattr(obj, f.name))
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(obj, f.name)
    with pytest.raises((AttributeError, TypeError)):
        obj.not_a_field = 1
    changed = dataclasses.replace(obj, **changes)
    assert type(changed) is cls
    assert dataclasses.asdict(changed) == {**dataclasses.asdict(obj), **changes}
    assert copy.copy(obj) == obj and copy.deepcopy(obj) == obj
    back = pickle.loads(pickle.dumps(obj))
    assert type(back) is cls and back == obj


finite = st.floats(allow_nan=False)


@given(
    rr=st.integers(-(2**40), 2**40),
    t=finite,
    ms=finite,
    normal=st.booleans(),
    hr=st.none() | finite,
    decided=st.integers(0, 2**40),
)
def test_small_classes_match_the_reference(
    rr: int, t: float, ms: float, normal: bool, hr: float | None, decided: int
) -> None:
    _check_like_reference(
        RRInterval(rr, t, ms, normal, hr), _reference(RRInterval)(rr, t, ms, normal, hr), {"rr_ms": 1.5}
    )
    _check_like_reference(
        RRInterval(end_index=rr, time=t, rr_ms=ms, normal=normal, heart_rate=hr),
        _reference(RRInterval)(rr, t, ms, normal, hr),
        {"heart_rate": None},
    )
    _check_like_reference(Beat(rr, decided, ms), _reference(Beat)(rr, decided, ms), {"energy": 2.0})


@given(
    value=st.none() | finite,
    t=finite,
    clock=st.sampled_from(ClockQuality),
    flags=st.frozensets(st.sampled_from(DeviceFlag)),
    device_time=st.none() | finite,
    n_defaults=st.integers(0, 3),
)
def test_vital_reading_matches_the_reference(
    value: float | None,
    t: float,
    clock: ClockQuality,
    flags: frozenset[DeviceFlag],
    device_time: float | None,
    n_defaults: int,
) -> None:
    args: list[Any] = ["dev", Vital.HEART_RATE, value, "/min", t, clock, flags, device_time]
    args = args[: len(args) - n_defaults]  # the trailing defaults left out
    _check_like_reference(VitalReading(*args), _reference(VitalReading)(*args), {"value": 42.0, "flags": frozenset()})


@given(first_index=st.integers(0, 2**40), gap=st.booleans(), t=finite, keyword=st.booleans())
def test_sample_block_matches_the_reference(first_index: int, gap: bool, t: float, keyword: bool) -> None:
    x = np.arange(5, dtype=np.float64)
    if keyword:
        ours = SampleBlock("d", "ecg", 250.0, t, x, "mV", first_index=first_index, gap_before=gap)
    else:
        ours = SampleBlock("d", "ecg", 250.0, t, x, "mV", first_index, gap, ClockQuality.SYNCED)
    ref = _reference(SampleBlock)("d", "ecg", 250.0, t, x, "mV", first_index, gap)
    assert repr(ours) == repr(ref).replace(type(ref).__qualname__, "SampleBlock", 1)
    assert ours.samples is x and ours.duration_s == 5 / 250.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        ours.samples = x  # type: ignore[misc]
    changed = dataclasses.replace(ours, unit="uV")
    assert type(changed) is SampleBlock and changed.unit == "uV" and changed.first_index == first_index
    back = pickle.loads(pickle.dumps(ours))
    assert type(back) is SampleBlock and back.first_index == first_index and np.array_equal(back.samples, x)


def test_missing_and_unexpected_arguments_fail_like_the_dataclass() -> None:
    with pytest.raises(TypeError):
        VitalReading("dev", Vital.SPO2, 97.0, "%")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        VitalReading("dev", Vital.SPO2, 97.0, "%", 1.0, colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Beat(1, 2, 3.0, 4)  # type: ignore[call-arg]


def test_a_subclass_with_more_slots_keeps_working() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Tagged(Beat):
        tag: str = "x"

    t = Tagged(1, 2, 3.0, "y")
    assert (t.index, t.decided_index, t.energy, t.tag) == (1, 2, 3.0, "y")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.tag = "z"  # type: ignore[misc]

    class Plain(Beat):  # no new slots: the generated __init__ hands it to the dataclass's own
        __slots__ = ()

    p = Plain(4, 5, 6.0)
    assert type(p) is Plain and (p.index, p.decided_index, p.energy) == (4, 5, 6.0)


def test_refuses_what_it_cannot_do_exactly() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class KwOnly:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class NotInit:
        a: int = dataclasses.field(default=0, init=False)

    class NotADataclass:
        pass

    for cls in (Mutable, NoSlots, Post, Factory, KwOnly, NotInit, NotADataclass):
        with pytest.raises(TypeError):
            fast_init(cls)

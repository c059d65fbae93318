"""IEEE 11073-20601 SFLOAT (16 bit) and FLOAT (32 bit) numbers as used by the Bluetooth health profiles.

Special values (NaN, NRes, ±INF, reserved) mean "the device has no number": they decode to
``None``, never to a float that could reach a chart or a billing count.  Source of the special
values: Wireshark ``epan/ftypes/ftype-ieee-11073-float.c``.
"""

from __future__ import annotations

# Only exponent 0 carries the special codes; anything else is an ordinary number.
_SFLOAT_SPECIAL = frozenset({0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801})
_FLOAT_SPECIAL = frozenset({0x007FFFFF, 0x00800000, 0x007FFFFE, 0x00800002, 0x00800001})


def _scale(mantissa: int, exponent: int) -> float:
    # Divide for negative exponents: 87 / 10 is exactly the float nearest 8.7, 87 * 0.1 is not.
    if exponent < 0:
        return mantissa / int(10 ** (-exponent))
    return float(mantissa * int(10**exponent))


def sfloat(raw: int) -> float | None:
    """Decode a 16-bit SFLOAT (as an unsigned int read little-endian)."""
    raw &= 0xFFFF
    if raw in _SFLOAT_SPECIAL:
        return None
    mantissa = raw & 0x0FFF
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    exponent = raw >> 12
    if exponent >= 0x8:
        exponent -= 0x10
    return _scale(mantissa, exponent)


def float32(raw: int) -> float | None:
    """Decode a 32-bit FLOAT (as an unsigned int read little-endian)."""
    raw &= 0xFFFFFFFF
    if raw in _FLOAT_SPECIAL:
        return None
    mantissa = raw & 0x00FFFFFF
    if mantissa >= 0x00800000:
        mantissa -= 0x01000000
    exponent = raw >> 24
    if exponent >= 0x80:
        exponent -= 0x100
    return _scale(mantissa, exponent)


def encode_sfloat(mantissa: int, exponent: int) -> int:
    """Build a raw SFLOAT (used by tests and emulated devices)."""
    if not -2048 <= mantissa <= 2047 or not -8 <= exponent <= 7:
        raise ValueError("SFLOAT mantissa or exponent out of range")
    return ((exponent & 0xF) << 12) | (mantissa & 0x0FFF)


def encode_float32(mantissa: int, exponent: int) -> int:
    """Build a raw FLOAT (used by tests and emulated devices)."""
    if not -(2**23) <= mantissa < 2**23 or not -128 <= exponent <= 127:
        raise ValueError("FLOAT mantissa or exponent out of range")
    return ((exponent & 0xFF) << 24) | (mantissa & 0x00FFFFFF)

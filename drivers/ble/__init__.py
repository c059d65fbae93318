"""Bluetooth Low Energy health devices: pure profile decoders, a bleak link and the drivers.

Only this package imports bleak, and only ``link.py``, ``driver.py`` and ``scan_cli.py`` do: the
decoders, the settings and the ``decode`` command stay importable without it.
"""

"""The serial protocols by name: the same names for ``driver:`` in the YAML and ``iomt-gateway decode``."""

from __future__ import annotations

from drivers.serial import contec, ecg_frontend, masimo, nonin
from drivers.serial.protocol import ProtocolInfo

PROTOCOLS: dict[str, ProtocolInfo] = {
    p.name: p
    for p in (
        ProtocolInfo(
            "nonin2",
            9600,
            "8N1",
            1 / nonin.FRAME_RATE_HZ,
            lambda: nonin.Nonin75Decoder(2),
            nonin.Nonin75Translator,
            "Nonin OEM Data Format #2: 75 frames/s, 8-bit pleth, HR/SpO2 3 times a second",
        ),
        ProtocolInfo(
            "nonin7",
            9600,
            "8N1",
            1 / nonin.FRAME_RATE_HZ,
            lambda: nonin.Nonin75Decoder(7),
            nonin.Nonin75Translator,
            "Nonin OEM Data Format #7: as #2 with 16-bit pleth",
        ),
        ProtocolInfo(
            "nonin8",
            9600,
            "8N1",
            1.0,
            nonin.nonin8_decoder,
            nonin.Nonin8Translator,
            "Nonin OEM Data Format #8: HR, SpO2, status and battery once a second",
        ),
        ProtocolInfo(
            "masimo",
            9600,
            "8N1",
            masimo.LINE_PERIOD_S,
            masimo.MasimoDecoder,
            masimo.MasimoTranslator,
            "Masimo Radical-7 ASCII serial output, one line a second",
        ),
        ProtocolInfo(
            "contec",
            19200,
            "8O1",
            1 / contec.PACKET_RATE_HZ,
            contec.contec_decoder,
            contec.ContecTranslator,
            "Contec CMS50D+ legacy 5-byte packets, 60/s, with pleth",
        ),
        ProtocolInfo(
            "ecgstream",
            115200,
            "8N1",
            0.25,
            ecg_frontend.EcgDecoder,
            ecg_frontend.EcgTranslator,
            "Our ECG front-end's framed stream (docs/ecg-frontend-protocol.md)",
        ),
    )
}

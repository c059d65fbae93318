"""The PUBACK tap of tests/mqtt_wire.py against a real Mosquitto: it must see exactly the records
the broker acknowledged, however the bytes are split."""

from __future__ import annotations

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.broker import MosquittoBroker, TcpProxy
from tests.mqtt_wire import PubackTap


async def test_the_tap_reads_every_acknowledged_key_from_the_wire(broker: MosquittoBroker) -> None:
    tap = PubackTap()
    chunks: list[tuple[int, bool, bytes]] = []

    def both(link: int, to_broker: bool, data: bytes) -> None:
        chunks.append((link, to_broker, data))
        tap(link, to_broker, data)

    proxy = TcpProxy(broker.port, tap=both)
    await proxy.start()
    keys = [f"k-{i:03d}-{'x' * (i % 7)}" for i in range(150)]
    try:
        async with aiomqtt.Client("127.0.0.1", proxy.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
            for i, key in enumerate(keys):
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.UserProperty = [("class", "vitals"), ("key", key)]
                props.ContentType = "application/json"
                props.MessageExpiryInterval = 3600
                # QoS 0 messages and messages without a key are not records: not counted
                await client.publish("t/x", b"{}", qos=1, properties=props)
                await client.publish("t/y", b"{}", qos=1 if i % 2 else 0)
    finally:
        await proxy.close()

    assert [a.key for a in tap.acked] == keys
    assert tap.published == len(keys)
    # the same bytes one at a time: packets split anywhere are put back together
    bytewise = PubackTap()
    for link, to_broker, data in chunks:
        for b in data:
            bytewise(link, to_broker, bytes([b]))
    assert [a.key for a in bytewise.acked] == keys

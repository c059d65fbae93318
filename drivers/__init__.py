"""Device drivers: links (serial, BLE), framing, pure decoders and the replay driver.

A driver turns bytes into typed readings (``gateway.records``) and knows nothing of MQTT or SQLite.
"""

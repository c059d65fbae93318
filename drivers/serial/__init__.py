"""Serial device drivers: Nonin, Masimo and Contec pulse oximeters and our ECG front-end stream."""

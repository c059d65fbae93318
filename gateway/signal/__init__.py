"""Edge signal processing: pure, typed, explicit state, chunk-invariant where it takes samples.

* ``ecg_filters`` — Butterworth designs (numpy) and a causal SOS filter with carried state.
* ``rpeak_detector`` — streaming QRS detector (beats with sample index and decision latency).
* ``ecg_quality`` — quality verdict per 4 s window: good, flat, saturated, noisy.
* ``heart_rate`` — median-RR heart rate robust to ectopics; RR intervals marked NN or not.
* ``hrv`` — SDNN and RMSSD over a sliding window of NN intervals.
* ``ecg_channel`` — the above glued for one channel: vitals gated by quality, "no valid ECG".
* ``spo2`` — SpO2 clean-up: device flags, plausibility, jump hold, median + exponential.

numpy is the only import at module load; scipy's compiled SOS kernel is loaded on first use
(``ecg_filters``), never scipy.signal as a whole.
"""

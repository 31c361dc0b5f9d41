"""The runner: what trains a model and keeps a run alive.

The trainer (steps, epochs, model selection) and the evaluator of a split, checkpoints, resuming,
the run's folder, signals, devices and kvstore, AdamW, the TensorBoard summary, and main.py's
flags. It imports data/, model/, loss/, metrics/ and utils/, never tools/.
"""

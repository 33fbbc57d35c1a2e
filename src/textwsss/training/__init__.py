"""Training: one loop for every trained model (loop.py), each model's step (steps.py), the torchrun relaunch
(launch.py) and the fingerprint that ties a resumable checkpoint to its run (fingerprint.py)."""

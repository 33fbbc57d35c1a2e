"""Training-free baselines from the text-image matcher alone: dense GradCAM maps (gradcam.py)."""

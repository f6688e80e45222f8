"""Torch backend tests: transformers (the oracle) must not load TensorFlow or JAX."""
import os

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")
os.environ.setdefault("USE_JAX", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

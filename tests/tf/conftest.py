"""TF backend tests: Keras 3 on TensorFlow; transformers (the oracle) in-process without
its TF classes (USE_TF=0, set in tests/conftest.py: its TFEncoderDecoderModel needs tf-keras
and runs in a subprocess)."""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.pop("TF_USE_LEGACY_KERAS", None)

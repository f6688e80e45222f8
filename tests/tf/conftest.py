"""TF backend tests: Keras 3 on TensorFlow; transformers (the oracle) in-process without
its TF/Flax classes (its TFEncoderDecoderModel needs tf-keras and runs in a subprocess)."""
import os

os.environ["USE_TF"] = "0"
os.environ["USE_FLAX"] = "0"
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.pop("TF_USE_LEGACY_KERAS", None)

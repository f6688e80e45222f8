"""Process-wide test settings: no network, and transformers (the oracle) never imports
TensorFlow in-process (its TF classes need tf-keras and run in subprocesses)."""
import os

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

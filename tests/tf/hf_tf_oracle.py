"""Run transformers' TFEncoderDecoderModel (tf-keras) on a checkpoint; used in a subprocess.

Usage: python hf_tf_oracle.py CHECKPOINT_DIR INPUTS.npz OUT.npy SAVE_DIR  (needs TF_USE_LEGACY_KERAS=1)
Writes the logits to OUT.npy and the model, saved by transformers (``tf_model.h5``), to SAVE_DIR.
"""
import sys

import numpy as np


def main(checkpoint: str, inputs: str, out: str, save_dir: str) -> None:
    import transformers

    model = transformers.TFEncoderDecoderModel.from_pretrained(checkpoint)
    feed = dict(np.load(inputs))
    np.save(out, model(**feed, training=False).logits.numpy())
    model.save_pretrained(save_dir)


if __name__ == "__main__":
    main(*sys.argv[1:5])

"""Run transformers' TFEncoderDecoderModel (tf-keras) on a checkpoint; used in a subprocess.

Usage: python hf_tf_oracle.py CHECKPOINT_DIR INPUTS.npz OUT.npy  (needs TF_USE_LEGACY_KERAS=1)
"""
import sys

import numpy as np


def main(checkpoint: str, inputs: str, out: str) -> None:
    import transformers

    model = transformers.TFEncoderDecoderModel.from_pretrained(checkpoint)
    feed = dict(np.load(inputs))
    np.save(out, model(**feed, training=False).logits.numpy())


if __name__ == "__main__":
    main(*sys.argv[1:4])

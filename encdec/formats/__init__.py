"""Framework checkpoint formats of Hugging Face (``tf_model.h5``, ``flax_model.msgpack``),
read and written with h5py / msgpack alone, mapped to canonical names by the spec."""

"""``TFEncoderDecoderModel``: any registered encoder + causal-LM decoder, as a Keras 3 model."""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import keras
import numpy as np
import tensorflow as tf

from encdec.configuration import EncoderDecoderConfig, as_config
from encdec.generation import GenerationConfig
from encdec.hub import HubModelMixin
from encdec.labels import IGNORE_INDEX, decoder_inputs_from_labels
from encdec.layout import from_backend, to_backend
from encdec.outputs import BaseModelOutput, Seq2SeqLMOutput
from encdec.registry import part_class
from encdec.routing import check_no_unknown, output_flags, split_forward_kwargs, split_pretrained_kwargs
from encdec.specs import encoder_decoder_spec, needs_projection
from encdec.training import batch_from_data, check_batch_layout, check_policy, pad_examples
from encdec.validation import PART_ID_KWARGS, validate_inputs
from encdec_tf.adapters import TFAdapterMixin
from encdec_tf.models.common import (TF_LAYOUT, Dense, ParamStore, as_int, host_values, initial_values, unpack_tf_inputs,
                                     variable_value)

logger = logging.getLogger(__name__)

#: Extra keyword arguments the parts accept through the composite call (routed by prefix).
PART_KWARGS = ("token_type_ids", "position_ids")


def assign_weights(variables: Mapping[str, keras.Variable], backend_weights: Mapping[str, np.ndarray], where: str) -> None:
    """Assign ``{backend name: array}`` to ``variables`` with clear shape errors."""
    for key, value in backend_weights.items():
        var = variables[key]
        if tuple(var.shape) != value.shape:
            raise ValueError(f"{where}: {key} has shape {value.shape}, the model expects {tuple(var.shape)}")
        var.assign(variable_value(value, var.dtype))


class TFEncoderDecoderModel(HubModelMixin, TFAdapterMixin, keras.Model):
    """Encoder-decoder model: ``TFEncoderDecoderModel(config)`` builds both parts from the
    registry with the portable random init; ``TFEncoderDecoderModel(encoder=, decoder=)``
    wraps existing parts.  All variables exist after construction.  Adapters (AdapterHub's
    bottleneck and LoRA): ``add_adapter``, ``train_adapter``, ... (:mod:`encdec_tf.adapters`).

    ``dtype`` (Keras' keyword: ``"bfloat16"``, ``"float16"``, a ``DTypePolicy``): the weights'
    and activations' dtype for parts built here; attention scores, layer-norm statistics,
    logits and the loss stay float32."""

    def __init__(self, config: EncoderDecoderConfig | None = None, encoder: keras.layers.Layer | None = None,
                 decoder: keras.layers.Layer | None = None, seed: int = 0, _init: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_policy(self.dtype_policy.name, "TFEncoderDecoderModel", training=False)
        parts_given = encoder is not None or decoder is not None
        if config is None and (encoder is None or decoder is None):
            raise ValueError("TFEncoderDecoderModel needs either `config` or both `encoder` and `decoder`")
        if config is None:  # the decoder's config is switched to is_decoder + add_cross_attention
            config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
        else:  # ours, or transformers' converted through its dict
            config = as_config(config, "config", EncoderDecoderConfig)
        cross = getattr(config.decoder, "cross_attention_hidden_size", None)
        if cross is not None and cross != config.encoder.hidden_size:
            raise ValueError(
                f"the decoder's cross_attention_hidden_size ({cross}) must equal the encoder's hidden_size "
                f"({config.encoder.hidden_size}); leave it unset to add an enc_to_dec_proj layer instead"
            )
        self.config = config
        half = self.dtype_policy.variable_dtype != "float32"
        if half and "prophetnet" in (config.encoder.model_type, config.decoder.model_type):
            raise NotImplementedError(f"dtype={self.dtype_policy.name!r}: the TF ProphetNet parts run in float32 only")
        part_kw = {"dtype": self.dtype_policy} if half else {}
        if encoder is None:
            encoder = part_class("tf", config.encoder.model_type, "encoder")(config.encoder, name="encoder", **part_kw)
        if getattr(encoder, "is_causal_lm", False):
            raise ValueError(f"the encoder {type(encoder).__name__} has an LM head; pass a base model (e.g. TFBertModel)")
        # decoder weight -> the encoder weight it is tied to (part-local names)
        pairs = {name[len("decoder."):]: src[len("encoder."):] for name, src in self.spec.ties.items()
                 if name.startswith("decoder.") and src.startswith("encoder.")}
        tied = {name: encoder.store.get(src) for name, src in pairs.items()}
        if decoder is None:
            decoder = part_class("tf", config.decoder.model_type, "decoder")(config.decoder, tied=tied, name="decoder", **part_kw)
        elif tied:
            # tie_encoder_decoder with given parts keeps the decoder's weights, as transformers does:
            # they go into the encoder's variables, and the decoder is rebuilt on them
            given = decoder.canonical_state()
            encoder.load_canonical({**encoder.canonical_state(), **{src: given[name] for name, src in pairs.items()}})
            decoder = type(decoder)(config.decoder, tied=tied, name=decoder.name)
            decoder.load_canonical(given)
        if not getattr(decoder, "accepts_encoder_states", False):
            raise ValueError(
                f"the decoder {type(decoder).__name__} cannot attend to encoder states: use a causal-LM part built with "
                "is_decoder=True and add_cross_attention=True"
            )
        for role, part in (("encoder", encoder), ("decoder", decoder)):
            shared = getattr(config, role)
            if part.config is not shared and _config_dict(part.config) != _config_dict(shared):
                logger.warning("Config of the %s: %s is overwritten by the shared %s config: %s", role,
                               type(part).__name__, role, shared)
            # as transformers: the parts use the composite's sub-configs, so edits stay in sync
            part.config = shared
        self.encoder, self.decoder = encoder, decoder
        self.store = ParamStore(self, self.spec, scope="")
        self.enc_to_dec_proj = Dense(self.store, "enc_to_dec_proj") if needs_projection(config) else None
        self.backend_variables = {
            **{f"encoder.{k}": v for k, v in encoder.store.variables.items()},
            **{f"decoder.{k}": v for k, v in decoder.store.variables.items()},
            **self.store.variables,
        }
        self.generation_config = GenerationConfig.from_model_config(config)
        self.built = True
        if _init:
            from encdec.init import init_model_weights

            fresh = init_model_weights(config, seed=seed)
            self._assign_canonical(fresh, only=set(self.store.variables) if parts_given else None)

    @property
    def spec(self) -> Any:
        """The composite's spec, rebuilt from the config when a part's vocabulary was resized."""
        key = (self.config.encoder.vocab_size, self.config.decoder.vocab_size)
        if getattr(self, "_spec_key", None) != key:
            self._spec, self._spec_key = encoder_decoder_spec(self.config), key
        return self._spec

    # --- weights -----------------------------------------------------------------------
    def _assign_canonical(self, weights: Mapping[str, np.ndarray], only: set[str] | None = None) -> None:
        backend = to_backend(weights, self.spec, TF_LAYOUT)
        if only is not None:
            backend = {k: v for k, v in backend.items() if k in only}
        assign_weights(self.backend_variables, backend, type(self).__name__)

    def canonical_state(self) -> dict[str, np.ndarray]:
        """``{canonical name: array}`` in PyTorch layout, tie targets included."""
        return from_backend({k: v.numpy() for k, v in self.backend_variables.items()}, self.spec, TF_LAYOUT)

    def load_canonical(self, weights: Mapping[str, np.ndarray]) -> None:
        """Load canonical weights; every untied spec name must be present, nothing else."""
        missing = [p.name for p in self.spec.untied if p.name not in weights]
        unexpected = [k for k in weights if k not in self.spec]
        if missing or unexpected:
            raise ValueError(f"load_canonical: weights do not match the spec; missing {missing}, unexpected {unexpected}")
        self._assign_canonical(weights)

    # --- forward -----------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Seq2SeqLMOutput | tuple:
        """transformers' TF calling convention: one dict of inputs as the first positional
        argument is unpacked (a key also given as a keyword raises a TypeError naming it);
        another first positional argument is the ``input_ids``."""
        return super().__call__(**unpack_tf_inputs(args, kwargs, type(self).__name__))

    def call(self, input_ids: Any = None, attention_mask: Any = None, decoder_input_ids: Any = None,
             decoder_attention_mask: Any = None, encoder_outputs: Any = None, past_key_values: Any = None,
             inputs_embeds: Any = None, decoder_inputs_embeds: Any = None, labels: Any = None,
             use_cache: bool | None = None, output_attentions: bool | None = None,
             output_hidden_states: bool | None = None, return_dict: bool | None = None, training: bool = False,
             **kwargs: Any) -> Seq2SeqLMOutput | tuple:
        """Forward pass (numpy arrays or tensors).  Unprefixed extra kwargs (``token_type_ids``,
        ``position_ids``) go to the encoder, ``decoder_``-prefixed ones to the decoder.  With
        ``labels`` and no decoder inputs, the decoder inputs are the labels shifted right and
        pads are masked; ``loss`` is the mean cross-entropy over labels != -100."""
        validate_inputs(
            self.config, input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, labels=labels, inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds, past_length=None if past_key_values is not None else 0,
            encoder_hidden_states=None if encoder_outputs is None else encoder_outputs[0], host=host_values,
            **{k: kwargs[k] for k in PART_ID_KWARGS if k in kwargs},
        )
        kwargs = unpack_tf_inputs((), kwargs, "TFEncoderDecoderModel")  # drops transformers' `kwargs=` dict
        kw_enc, kw_dec = split_forward_kwargs(kwargs)
        check_no_unknown("TFEncoderDecoderModel.call", {k: v for k, v in kw_enc.items() if k not in PART_KWARGS},
                         PART_KWARGS)
        check_no_unknown("TFEncoderDecoderModel.call (decoder_ arguments)",
                         {f"decoder_{k}": v for k, v in kw_dec.items() if k not in PART_KWARGS}, PART_KWARGS)
        use_cache = self.config.decoder.use_cache if use_cache is None else use_cache
        enc_attn, enc_hidden, output_attentions, output_hidden_states, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        if attention_mask is not None:
            attention_mask = as_int(attention_mask)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                           output_attentions=enc_attn, output_hidden_states=enc_hidden,
                                           training=training, return_dict=True, **kw_enc)
        elif isinstance(encoder_outputs, (tuple, list)):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        enc_h = encoder_outputs[0]
        if self.enc_to_dec_proj is not None:
            enc_h = self.enc_to_dec_proj(enc_h)
        if labels is not None:
            labels = as_int(labels)
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids, decoder_attention_mask = decoder_inputs_from_labels(
                    labels, self.config.pad_token_id, self.config.decoder_start_token_id, decoder_attention_mask,
                    xp=tf.experimental.numpy)
        out = self.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask, encoder_hidden_states=enc_h,
                           encoder_attention_mask=attention_mask, inputs_embeds=decoder_inputs_embeds,
                           past_key_values=past_key_values, use_cache=use_cache, output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states, training=training, return_dict=True, **kw_dec)
        loss = None if labels is None else masked_mean_loss(out.logits, labels)
        result = Seq2SeqLMOutput(
            loss=loss, logits=out.logits, past_key_values=out.past_key_values, decoder_hidden_states=out.hidden_states,
            decoder_attentions=out.attentions, cross_attentions=out.cross_attentions,
            encoder_last_hidden_state=encoder_outputs[0], encoder_hidden_states=encoder_outputs.get("hidden_states"),
            encoder_attentions=encoder_outputs.get("attentions"))
        return result if return_dict else result.to_tuple()

    # --- Keras training loop -------------------------------------------------------------
    # Batches are dicts of call arguments (``labels`` included), or ``(x, labels)`` pairs with
    # ``x`` such a dict or the ``input_ids``; fit/evaluate/predict check a dataset's keys and
    # shapes before the first step.  Under "mixed_float16" compile wraps the optimizer in a
    # LossScaleOptimizer and train_step scales the loss.
    def compile(self, *args: Any, **kwargs: Any) -> None:
        check_policy(self.dtype_policy.name, "TFEncoderDecoderModel.compile")
        if kwargs.get("loss") is not None or (args[1:2] and args[1] is not None):
            raise ValueError("TFEncoderDecoderModel trains on its own loss (mean cross-entropy over labels != -100); "
                             "compile it without `loss`")
        super().compile(*args, **kwargs)

    def fit(self, x: Any = None, y: Any = None, *args: Any, validation_data: Any = None, **kwargs: Any) -> Any:
        self._check_data(x, y, "fit", need_labels=True)
        if validation_data is not None:
            vx, vy, _ = batch_from_data(validation_data, "fit(validation_data=)") \
                if isinstance(validation_data, (tuple, list)) else (validation_data, None, None)
            self._check_data(vx, vy, "fit(validation_data=)", need_labels=True)
        return super().fit(x, y, *args, validation_data=validation_data, **kwargs)

    def evaluate(self, x: Any = None, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        self._check_data(x, y, "evaluate", need_labels=True)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """``{"logits": [n, target_length, vocab]}`` (teacher-forced: batches need decoder
        inputs or labels); use :meth:`generate` for new text."""
        self._check_data(x, None, "predict", need_labels=False)
        return super().predict(x, *args, **kwargs)

    def _check_data(self, x: Any, y: Any, where: str, need_labels: bool) -> None:
        where = f"TFEncoderDecoderModel.{where}"
        if isinstance(x, tf.data.Dataset):
            x, y, _ = batch_from_data(x.element_spec, where)
        if x is None:
            return
        shapes = {k: _shape(v) for k, v in (x.items() if isinstance(x, Mapping) else [("input_ids", x)])}
        if y is not None:
            if "labels" in shapes:
                raise ValueError(f"{where}: labels given twice (a `labels` key and y)")
            shapes["labels"] = _shape(y)
        teacher = "labels" in shapes or "decoder_input_ids" in shapes
        check_batch_layout(shapes, where, need_labels=need_labels)
        if not teacher:
            raise ValueError(f"{where}: batches need `labels` or `decoder_input_ids` [batch, target_length]; "
                             f"got keys {sorted(shapes)}")

    def _batch(self, data: Any, where: str) -> dict[str, Any]:
        x, y, sample_weight = batch_from_data(data, where)
        if sample_weight is not None:
            raise NotImplementedError(f"{where}: sample weights are not supported (mask labels with -100 instead)")
        batch = dict(x) if isinstance(x, Mapping) else {"input_ids": x}
        if y is not None:
            batch["labels"] = y
        return batch

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # Keras (3.15) builds a model made under a strategy from its first distributed batch,
        # merged with strategy.reduce("MEAN"): MultiWorkerMirroredStrategy refuses a dict there
        # (keras-team/keras#20329).  Building needs shapes and dtypes only: take the first local
        # replica's batch instead (consuming one batch from the iterator, as Keras does).
        if iterator is not None and self._distribute_strategy is not None:
            local = self._distribute_strategy.experimental_local_results
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda x: local(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x, next(it))
                break
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One optimizer step on the built-in loss."""
        batch = self._batch(data, "TFEncoderDecoderModel.fit")
        # under tf.distribute each replica sees its share of the batch and Keras sums the
        # replicas' gradients: scale so the sum is the gradient of the mean loss
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss = self(**batch, use_cache=False, training=True).loss
            scaled = self.optimizer.scale_loss(loss / replicas if replicas > 1 else loss)
        grads = tape.gradient(scaled, self.trainable_variables)
        # Embedding lookups give IndexedSlices gradients, one slice per looked-up row (repeats
        # kept; MirroredStrategy concatenates the replicas' slices).  Keras 3's Adam/AdamW
        # square such a gradient slice by slice, so a repeated row's second moment gets the
        # sum of squares instead of the square of the sum: a different update from torch's
        # Adam, and under tf.distribute from the one-device step.  Dense gradients (what torch
        # uses) avoid it; see docs/distributed_tf.md.
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        # variables outside the loss (the encoder's pooler) get no gradient and stay as they are
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, self.trainable_variables) if g is not None])
        return self._step_logs(loss)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        batch = self._batch(data, "TFEncoderDecoderModel.evaluate")
        return self._step_logs(self(**batch, use_cache=False, training=False).loss)

    def predict_step(self, data: Any) -> dict[str, tf.Tensor]:
        batch = self._batch(data, "TFEncoderDecoderModel.predict")
        return {"logits": self(**batch, use_cache=False, training=False).logits}

    def prepare_tf_dataset(self, examples: Any, batch_size: int = 8, shuffle: bool = True, seed: int | None = None,
                           drop_remainder: bool = False, pad_to_multiple_of: int | None = None) -> tf.data.Dataset:
        """Tokenised examples (a list of dicts of token lists, or a dict of lists such as
        ``datasets.Dataset[:]``) -> a batched ``tf.data.Dataset`` of dicts for ``fit``.

        Every example is right-padded to the longest (a multiple of ``pad_to_multiple_of``):
        ids with the pad id, masks with 0, ``labels`` with -100, so all batches have one shape
        (one XLA program with ``jit_compile=True``)."""
        pad = self.config.encoder.pad_token_id
        pad = self.config.pad_token_id if pad is None else pad
        arrays = pad_examples(examples, 0 if pad is None else pad, pad_to_multiple_of)
        data = tf.data.Dataset.from_tensor_slices(arrays)
        if shuffle:
            data = data.shuffle(len(next(iter(arrays.values()))), seed=seed)
        return data.batch(batch_size, drop_remainder=drop_remainder)

    def _step_logs(self, loss: tf.Tensor) -> dict[str, tf.Tensor]:
        """Feed ``compile``'s ``loss`` mean, which Keras reports per epoch (``fit`` history,
        ``evaluate``) in place of the step's own logs."""
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
        extended = tf.distribute.get_strategy().extended
        if getattr(extended, "_in_multi_worker_mode", lambda: False)():
            # Keras (3.15) merges the workers' step outputs with reduce("MEAN", axis=0), which
            # needs a dimension (the epoch logs come from the metric above, not from this)
            loss = tf.reshape(loss, [1])
        return {"loss": loss}

    # --- transformers' TFPreTrainedModel conveniences ------------------------------------
    main_input_name = "input_ids"
    base_model_prefix = "encoder_decoder"

    def build_in_name_scope(self) -> None:
        """transformers' explicit build: a no-op, every variable exists after construction."""

    def resize_token_embeddings(self, *args: Any, **kwargs: Any) -> None:
        """Refused as transformers does: resize ``model.encoder`` / ``model.decoder`` (their
        configs are this model's ``config.encoder`` / ``config.decoder``, so it stays in step)."""
        from encdec.resize import COMPOSITE_REFUSAL

        raise NotImplementedError(COMPOSITE_REFUSAL)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        return self.spec.num_parameters(exclude_embeddings=exclude_embeddings)

    def get_input_embeddings(self) -> keras.Variable:
        return self.encoder.get_input_embeddings()

    # --- accessors ---------------------------------------------------------------------
    def get_encoder(self) -> keras.layers.Layer:
        return self.encoder

    def get_decoder(self) -> keras.layers.Layer:
        return self.decoder

    # --- generation --------------------------------------------------------------------
    def generate(self, input_ids: Any, attention_mask: Any = None, generation_config: GenerationConfig | None = None,
                 **kwargs: Any) -> tf.Tensor:
        """Greedy / beam / sampling decoding as one XLA program (see :mod:`encdec_tf.generation`)."""
        from encdec_tf.generation import generate

        return generate(self, input_ids, attention_mask, generation_config, **kwargs)

    # --- I/O ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, dtype: Any = None,
                        **kwargs: Any) -> "TFEncoderDecoderModel":
        """Load a composite checkpoint in any format the core reads (``from_pt`` accepted, not needed).
        ``dtype``: weights and activations in that dtype (see the class docstring)."""
        from encdec.pretrained import load_pretrained

        info = kwargs.pop("output_loading_info", False)
        config, weights, generation_config, unused = load_pretrained(pretrained_model_name_or_path, **kwargs)
        if unused:
            raise TypeError(f"from_pretrained got unexpected keyword arguments: {', '.join(sorted(unused))}")
        # each variable is created holding its checkpoint value (one copy; see initial_values)
        scoped: dict[str, dict[str, np.ndarray]] = {}
        for key, value in to_backend(weights, encoder_decoder_spec(config), TF_LAYOUT).items():
            scope, _, rest = key.partition(".")
            if scope in ("encoder", "decoder"):
                scoped.setdefault(scope, {})[rest] = value
            else:
                scoped.setdefault("", {})[key] = value
        with initial_values(scoped) as used:
            model = cls(config, _init=False, **({} if dtype is None else {"dtype": dtype}))
        if len(used) != len(model.backend_variables) or len(used) != sum(map(len, scoped.values())):
            model.load_canonical(weights)  # a part kept other names: assign (and check) the usual way
        config.name_or_path = os.fspath(pretrained_model_name_or_path)
        if generation_config is not None:
            model.generation_config = generation_config
        return (model, {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}) if info else model

    def save_pretrained(self, save_directory: str | os.PathLike, format: str | None = None,
                        max_shard_size: int | str = "5GB", safe_serialization: bool | None = None,
                        push_to_hub: bool = False, **kwargs: Any) -> list[str]:
        """Write ``config.json``, ``generation_config.json`` and ``model.safetensors`` (or
        ``format="tf-h5"`` for HF's ``tf_model.h5``, ``"pt-bin"``, ``"flax-msgpack"``;
        ``safe_serialization=False`` is ``tf_model.h5``, transformers' TF default);
        ``push_to_hub=True`` uploads the folder (``repo_id``, ``token``, ``create_pr``, ...)."""
        from encdec.hub import push_folder
        from encdec.pretrained import save_pretrained, split_save_kwargs

        is_main, push = split_save_kwargs(kwargs)
        if not is_main:
            return []
        if format is None:
            format = "tf-h5" if safe_serialization is False else "safetensors"
        written = save_pretrained(save_directory, self.config, self.canonical_state(), self.generation_config,
                                  format=format, max_shard_size=max_shard_size)
        if push_to_hub:
            push_folder(save_directory, **push)
        return written

    @classmethod
    def from_encoder_decoder_pretrained(cls, encoder_pretrained_model_name_or_path: str | os.PathLike | None = None,
                                        decoder_pretrained_model_name_or_path: str | os.PathLike | None = None,
                                        **kwargs: Any) -> "TFEncoderDecoderModel":
        """Combine a pretrained encoder and decoder checkpoint; ``encoder_``/``decoder_``
        kwargs update each part's config (``encoder_model=``/``decoder_model=`` pass parts)."""
        from encdec.hub import split_hub_kwargs
        from encdec.pretrained import load_part

        kw_enc, kw_dec, rest = split_pretrained_kwargs(kwargs)
        rest.pop("from_pt", None)
        hub = split_hub_kwargs(rest)
        parts = []
        for role, path, kw in (("encoder", encoder_pretrained_model_name_or_path, kw_enc),
                               ("decoder", decoder_pretrained_model_name_or_path, kw_dec)):
            part = kw.pop("model", None)
            if part is None:
                if path is None:
                    raise ValueError(f"pass `{role}_pretrained_model_name_or_path` or `{role}_model`")
                loaded = load_part(path, role=role, config_overrides=kw, **{**hub, **split_hub_kwargs(kw)})
                if loaded.initialized:
                    from encdec.pretrained import newly_initialised_message

                    logger.warning(newly_initialised_message([f"{role}.{n}" for n in loaded.initialized]))
                part = part_class("tf", loaded.config.model_type, role)(loaded.config, name=role)
                assign_weights(part.store.variables, to_backend(loaded.weights, part.store.spec, TF_LAYOUT), f"{role} {path}")
            parts.append(part)
        config = EncoderDecoderConfig.from_encoder_decoder_configs(parts[0].config, parts[1].config, **rest)
        return cls(config=config, encoder=parts[0], decoder=parts[1])

    def export(self, filepath: str | os.PathLike, generate: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Write a SavedModel whose ``serve`` / ``serving_default`` signature maps int32
        ``input_ids``, ``attention_mask``, ``decoder_input_ids``, ``decoder_attention_mask``
        to ``{"logits": ...}``.  With ``generate`` (generation settings, e.g.
        ``{"max_new_tokens": 16, "num_beams": 3}``, fixed at export) a ``generate`` signature
        maps int32 ``input_ids``, ``attention_mask`` to ``{"sequences": ...}``: int32
        [batch * num_return_sequences, max_length], rows padded with the pad id after they end
        (``jit_compile=False`` among the settings serves the loop as a plain graph, no XLA)."""
        if kwargs:
            raise TypeError(f"export got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        generate = dict(generate or {})
        not_servable = sorted(k for k in generate if k in _NOT_SERVABLE or k.startswith("output_"))
        if not_servable:
            raise ValueError(f"export(generate=...) takes generation settings only; an exported signature returns "
                             f"ids and cannot take: {', '.join(not_servable)}")
        archive = keras.export.ExportArchive()
        archive.track(self)

        def serve(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask):
            out = self(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                       decoder_attention_mask=decoder_attention_mask, use_cache=False)
            return {"logits": out.logits}

        names = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")
        archive.add_endpoint("serve", serve, input_signature=[tf.TensorSpec([None, None], tf.int32, name=n) for n in names])
        if generate:
            def serve_generate(input_ids, attention_mask):
                return {"sequences": self.generate(input_ids, attention_mask=attention_mask, **generate)}

            archive.add_endpoint("generate", serve_generate,
                                 input_signature=[tf.TensorSpec([None, None], tf.int32, name=n) for n in names[:2]])
        archive.write_out(os.fspath(filepath))


#: ``generate`` keywords an exported signature cannot take (besides ``output_*``).
_NOT_SERVABLE = ("return_dict_in_generate", "logits_processor", "stopping_criteria", "max_time", "decoder_input_ids",
                 "encoder_outputs", "streamer")


def _shape(value: Any) -> list[int | None] | None:
    """Shape of a TensorSpec, tensor or array (``None`` when it has none)."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    return shape.as_list() if hasattr(shape, "as_list") else list(shape)


def _config_dict(config: Any) -> dict[str, Any]:
    """A config's dict without its bookkeeping keys, to tell whether two configs say the same."""
    return {k: v for k, v in config.to_dict().items() if k not in ("transformers_version", "_name_or_path")}


def masked_mean_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean cross-entropy over positions whose label is not -100 (a scalar)."""
    keep = labels != IGNORE_INDEX
    logits = tf.cast(logits, tf.float32)  # a mixed-precision policy's float16/bfloat16 logits
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(keep, labels, 0), logits=logits)
    keep = tf.cast(keep, ce.dtype)
    return tf.reduce_sum(ce * keep) / tf.reduce_sum(keep)

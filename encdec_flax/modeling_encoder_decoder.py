"""``FlaxEncoderDecoderModel``: any registered Flax encoder + causal-LM decoder, with an
explicit parameter pytree whose paths are the canonical names split on ``.``.

Everything is pure: ``__call__``, ``encode``, ``decode`` and ``init_cache`` take
``params=`` (default ``self.params``) and can be wrapped in ``jax.jit``/``jax.grad``.
Weights come from the core's portable init (``seed``) or from checkpoints through
:mod:`encdec.pretrained`; ``generate`` lives in :mod:`encdec_flax.generation`.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
from flax.traverse_util import flatten_dict, unflatten_dict

from encdec import pretrained
from encdec.checkpoint import match_state
from encdec.configuration import EncoderDecoderConfig, as_config
from encdec.generation import GenerationConfig
from encdec.hub import HUB_KWARGS, HubModelMixin
from encdec.init import init_model_weights
from encdec.labels import IGNORE_INDEX, decoder_inputs_from_labels
from encdec.layout import from_backend, to_backend
from encdec.outputs import BaseModelOutput, CausalLMOutputWithCrossAttentions, GenerateOutput, ModelOutput, Seq2SeqLMOutput
from encdec.registry import part_class
from encdec.routing import output_flags, split_pretrained_kwargs
from encdec.specs import encoder_decoder_spec, keep_decoder_side, needs_projection
from encdec.validation import validate_inputs
from encdec_flax.adapters import ActiveAdapter, FlaxAdapterMixin, adapter_scope
from encdec_flax.models import FLAX_LAYOUT
from encdec_flax.models.layers import dense, host_values, to_device

logger = logging.getLogger(__name__)


def _register_output_pytrees() -> None:
    """Make the core's output containers pytrees so jitted functions may return them."""
    for cls in (BaseModelOutput, CausalLMOutputWithCrossAttentions, Seq2SeqLMOutput, GenerateOutput):
        names = tuple(f.name for f in dataclasses.fields(cls))
        jax.tree_util.register_pytree_node(
            cls,
            lambda out, names=names: (tuple(getattr(out, n) for n in names), None),
            lambda _, children, cls=cls, names=names: cls(**dict(zip(names, children))),
        )


_register_output_pytrees()


def check_config(config: Any) -> None:
    """The composite-construction checks of transformers' ``EncoderDecoderModel``."""
    if not isinstance(config, EncoderDecoderConfig):
        raise TypeError(f"config must be an EncoderDecoderConfig, got {type(config).__name__}")
    enc, dec = config.encoder, config.decoder
    cross = getattr(dec, "cross_attention_hidden_size", None)
    if cross is not None and cross != enc.hidden_size:
        raise ValueError(
            f"decoder cross_attention_hidden_size ({cross}) must equal the encoder hidden_size "
            f"({enc.hidden_size}); leave it unset to add the enc_to_dec_proj projection"
        )
    if not (dec.is_decoder and dec.add_cross_attention):
        raise ValueError(
            f"the decoder config ({dec.model_type}) must have is_decoder=True and add_cross_attention=True to "
            "attend to the encoder; build the config with EncoderDecoderConfig.from_encoder_decoder_configs"
        )
    if getattr(enc, "is_decoder", False):
        raise ValueError(f"the encoder config ({enc.model_type}) has is_decoder=True; an encoder must be bidirectional")


class FlaxEncoderDecoderModule(nn.Module):
    """``encoder`` + optional ``enc_to_dec_proj`` + ``decoder`` (names = canonical roots).
    ``adapter``: the adapter ``encode`` / ``decode`` / ``init_cache`` run, or ``None``."""

    config: Any
    dtype: Any = jnp.float32
    adapter: ActiveAdapter | None = None

    def setup(self) -> None:
        c = self.config
        self.encoder = part_class("flax", c.encoder.model_type, "encoder")(c.encoder, dtype=self.dtype)
        self.decoder = part_class("flax", c.decoder.model_type, "decoder")(c.decoder, dtype=self.dtype)
        if needs_projection(c):
            self.enc_to_dec_proj = dense(c.decoder.hidden_size, self.dtype)

    def encode(self, input_ids, attention_mask=None, position_ids=None, deterministic: bool = True,
               output_attentions: bool = False, output_hidden_states: bool = False) -> tuple:
        with adapter_scope(self.adapter, deterministic):
            out = self.encoder(
                input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                deterministic=deterministic,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
            )
        return out[:3]

    def project(self, encoder_hidden_states):
        if encoder_hidden_states is None or not needs_projection(self.config):
            return encoder_hidden_states
        return self.enc_to_dec_proj(encoder_hidden_states)

    def init_cache(self, encoder_hidden_states, max_length: int) -> dict:
        with adapter_scope(self.adapter, deterministic=True):
            return self.decoder.init_cache(self.project(encoder_hidden_states), max_length)

    def decode(self, decoder_input_ids, encoder_hidden_states=None, encoder_attention_mask=None, decoder_attention_mask=None,
               decoder_position_ids=None, cache=None, deterministic: bool = True, output_attentions: bool = False,
               output_hidden_states: bool = False) -> tuple:
        """Returns ``(logits, hidden_states, attentions, cross_attentions, cache)``; with a
        cache the cross-attention keys/values come from it (computed in ``init_cache``)."""
        with adapter_scope(self.adapter, deterministic):
            return self.decoder(
                decoder_input_ids,
                attention_mask=decoder_attention_mask,
                position_ids=decoder_position_ids,
                encoder_hidden_states=None if cache is not None else self.project(encoder_hidden_states),
                encoder_attention_mask=encoder_attention_mask,
                cache=cache,
                deterministic=deterministic,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
            )

    def __call__(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask=None, position_ids=None,
                 decoder_position_ids=None, deterministic: bool = True, output_attentions: bool = False,
                 output_hidden_states: bool = False) -> tuple:
        enc = self.encode(input_ids, attention_mask, position_ids, deterministic, output_attentions, output_hidden_states)
        dec = self.decode(decoder_input_ids, enc[0], attention_mask, decoder_attention_mask, decoder_position_ids, None,
                          deterministic, output_attentions, output_hidden_states)
        return enc, dec


def masked_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Mean cross-entropy over positions whose label is not ``-100`` (in float32)."""
    logits = logits.astype(jnp.float32)
    valid = labels != IGNORE_INDEX
    safe = jnp.where(valid, labels, 0)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.sum(valid)


def _cast_floats(params: Any, dtype: Any, mask: Any = None) -> Any:
    def cast(x, keep=True):
        return x.astype(dtype) if keep and jnp.issubdtype(x.dtype, jnp.floating) else x

    if mask is None:
        return jax.tree_util.tree_map(cast, params)
    return jax.tree_util.tree_map(cast, params, mask)


class FlaxEncoderDecoderModel(HubModelMixin, FlaxAdapterMixin):
    """Encoder-decoder model with transformers' Flax API, plus labels/loss and adapters
    (:mod:`encdec_flax.adapters`).

    ``dtype`` is the computation dtype (float32, bfloat16, float16); parameters keep
    their own dtype (see :meth:`to_bf16`) unless ``param_dtype`` is given: then every
    floating weight is stored in it as it is loaded (``dtype=param_dtype=jnp.bfloat16``:
    bf16 weights and activations, half the bytes each decode step reads; the loss and the
    scores generation processes stay float32).  ``input_shape`` is accepted for
    compatibility with transformers: weights come from the portable init, which needs
    no example input.
    """

    #: transformers' name for the composite (its pt<->flax converters read it); no parameter path uses it
    base_model_prefix = "encoder_decoder"
    main_input_name = "input_ids"

    def __init__(self, config: EncoderDecoderConfig, input_shape: tuple | None = None, seed: int = 0,
                 dtype: Any = jnp.float32, param_dtype: Any = None, _do_init: bool = True) -> None:
        config = as_config(config, "config", EncoderDecoderConfig)  # ours, or transformers' through its dict
        check_config(config)
        shape = np.asarray(input_shape if input_shape is not None else (1, 1))
        if shape.shape not in ((2,), (2, 2)) or shape.dtype.kind not in "iu" or shape.min() < 1:
            raise ValueError(
                f"input_shape must be (batch, length) or ((batch, source_len), (batch, target_len)) with positive "
                f"sizes, got {input_shape!r}"
            )
        self.config = config
        self.dtype = dtype
        self.param_dtype = None if param_dtype is None else jnp.dtype(param_dtype)
        if self.param_dtype is not None and not jnp.issubdtype(self.param_dtype, jnp.floating):
            raise ValueError(f"param_dtype must be a floating dtype, got {param_dtype!r}")
        self.module = FlaxEncoderDecoderModule(config, dtype=dtype)
        self.spec = encoder_decoder_spec(config)
        self.generation_config = GenerationConfig.from_model_config(config)
        self.params: dict = {}
        # tie_encoder_decoder: decoder leaves that are the encoder's (held once, under the encoder)
        self._shared = [
            tuple(tuple(FLAX_LAYOUT.backend_name(n, self.spec[n].kind).split(".")) for n in (tied, source))
            for tied, source in self.spec.ties.items()
            if tied.startswith("decoder.") and source.startswith("encoder.")
        ]
        if _do_init:
            self.load_canonical(init_model_weights(config, seed=seed))

    # --- weights -------------------------------------------------------------------------
    def canonical_state(self, params: Any = None) -> dict[str, np.ndarray]:
        """``{canonical name: numpy array}`` in PyTorch layout, tie targets included."""
        params = self.params if params is None else params
        flat = {".".join(k): np.asarray(v) for k, v in flatten_dict(params).items()}
        return from_backend(flat, self.spec, FLAX_LAYOUT)

    def load_canonical(self, weights: Mapping[str, np.ndarray]) -> None:
        """Set ``params`` from canonical weights; names and shapes must match the spec
        exactly (tie targets optional).  Arrays keep their dtype; adapters are kept."""
        weights, _ = match_state(weights, self.spec)
        cast = self.param_dtype
        flat = {tuple(k.split(".")): to_device(v, cast if cast is not None and np.issubdtype(v.dtype, np.floating) else None)
                for k, v in to_backend(weights, self.spec, FLAX_LAYOUT).items()}
        flat.update(self._adapter_leaves())
        self.params = unflatten_dict(flat)

    def module_params(self, params: Any = None) -> dict:
        """``params`` (default ``self.params``) as the module reads them: with
        ``tie_encoder_decoder`` the shared decoder leaves point at the encoder's."""
        params = self.params if params is None else params
        if not self._shared:
            return params
        flat = flatten_dict(params)
        for tied, source in self._shared:
            flat[tied] = flat[source]
        return unflatten_dict(flat)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        return self.spec.num_parameters(exclude_embeddings=exclude_embeddings)

    def init_weights(self, rng: Any, input_shape: tuple, params: Any = None) -> dict:
        """transformers' ``init_weights(rng, input_shape, params=None)``: a fresh parameter
        pytree from the portable init seeded by ``rng`` (``input_shape`` is not needed: the
        spec gives every shape); leaves present in ``params`` are kept (transformers fills
        only the missing ones).  ``self.params`` is not changed."""
        seed = int(jax.random.randint(rng, (), 0, 2**31 - 1))
        fresh = {tuple(k.split(".")): to_device(v)
                 for k, v in to_backend(init_model_weights(self.config, seed=seed), self.spec, FLAX_LAYOUT).items()}
        if params is not None:
            fresh.update({k: v for k, v in flatten_dict(params).items() if k in fresh})
        return unflatten_dict(fresh)

    def to_bf16(self, params: Any, mask: Any = None) -> Any:
        """Floating leaves of ``params`` cast to bfloat16 (where ``mask`` is true)."""
        return _cast_floats(params, jnp.bfloat16, mask)

    def to_fp16(self, params: Any, mask: Any = None) -> Any:
        return _cast_floats(params, jnp.float16, mask)

    def to_fp32(self, params: Any, mask: Any = None) -> Any:
        return _cast_floats(params, jnp.float32, mask)

    # --- running -------------------------------------------------------------------------
    def _compiled(self, key: tuple, fn: Any) -> Any:
        """``jax.jit(fn)``, kept per model under ``key`` (``fn`` is only used the first time):
        a steady call costs one dispatch, not op-by-op execution.  Dropped when ``module``
        is rebuilt (adapter activation), since the programs traced it."""
        cache = self.__dict__.get("_jitted")
        if cache is None or cache[0] is not self.module:
            cache = self.__dict__["_jitted"] = (self.module, {})
        program = cache[1].get(key)
        if program is None:
            program = cache[1][key] = jax.jit(fn)
        return program

    @staticmethod
    def _rngs(train: bool, dropout_rng: Any) -> dict:
        if not train:
            return {}
        if dropout_rng is None:
            raise ValueError("train=True needs a dropout_rng (e.g. jax.random.PRNGKey(0))")
        return {"dropout": dropout_rng}

    def _apply(self, params: Any, method: str, *args: Any, train: bool = False, dropout_rng: Any = None, **kwargs: Any) -> Any:
        """``module.apply(..., method=method)`` as a compiled program (``kwargs``: static flags)."""
        rngs = self._rngs(train, dropout_rng)

        def run(params, rngs, args):
            return self.module.apply({"params": self.module_params(params)}, *args, rngs=rngs, method=method,
                                     deterministic=not train, **kwargs)

        program = self._compiled((method, train, tuple(sorted(kwargs.items()))), run)
        return program(self.params if params is None else params, rngs, args)

    def _flags(self, output_attentions: bool | None, output_hidden_states: bool | None, return_dict: bool | None,
               part: str = "both") -> tuple[bool, bool, bool]:
        """Argument, else config (:func:`encdec.routing.output_flags`) for ``part``."""
        ea, eh, da, dh, rd = output_flags(self.config, output_attentions, output_hidden_states, return_dict,
                                      follow="composite")
        if part == "encoder":
            return ea, eh, rd
        if part == "decoder":
            return da, dh, rd
        return ea or da, eh or dh, rd

    def encode(self, input_ids, attention_mask=None, position_ids=None, output_attentions: bool | None = None,
               output_hidden_states: bool | None = None, return_dict: bool | None = None, train: bool = False,
               params: Any = None, dropout_rng: Any = None) -> BaseModelOutput | tuple:
        oa, oh, rd = self._flags(output_attentions, output_hidden_states, return_dict, "encoder")
        validate_inputs(self.config, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        require_decoder=False, host=host_values)
        input_ids = jnp.asarray(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        out = self._apply(params, "encode", input_ids, attention_mask, position_ids, train=train, dropout_rng=dropout_rng,
                          output_attentions=oa, output_hidden_states=oh)
        out = BaseModelOutput(last_hidden_state=out[0], hidden_states=out[1], attentions=out[2])
        return out if rd else out.to_tuple()

    def init_cache(self, batch_size: int, max_length: int, encoder_outputs: Any, params: Any = None) -> dict:
        """Static-shape decoder cache pytree for ``max_length`` decoder positions, holding
        the cross-attention keys/values of ``encoder_outputs`` (computed here, once)."""
        states = encoder_outputs[0] if isinstance(encoder_outputs, (tuple, list, ModelOutput)) else encoder_outputs
        if states.shape[0] != batch_size:
            raise ValueError(f"init_cache: batch_size={batch_size} but encoder_outputs has batch {states.shape[0]}")
        return self.module.apply({"params": self.module_params(params)}, states, max_length, method="init_cache")

    def decode(self, decoder_input_ids, encoder_outputs, encoder_attention_mask=None, decoder_attention_mask=None,
               decoder_position_ids=None, past_key_values: dict | None = None, output_attentions: bool | None = None,
               output_hidden_states: bool | None = None, return_dict: bool | None = None, train: bool = False,
               params: Any = None, dropout_rng: Any = None) -> CausalLMOutputWithCrossAttentions | tuple:
        """Run the decoder.  With ``past_key_values`` (from :meth:`init_cache`) the new
        tokens are written at the cache index; ``decoder_attention_mask`` then covers the
        cache's ``max_length`` positions.  Positions default to ``index + arange``
        (RoBERTa: its padding rule)."""
        oa, oh, rd = self._flags(output_attentions, output_hidden_states, return_dict, "decoder")
        states = encoder_outputs[0] if isinstance(encoder_outputs, (tuple, list, ModelOutput)) else encoder_outputs
        if states is not None:
            validate_inputs(self.config, encoder_hidden_states=states, attention_mask=encoder_attention_mask,
                            decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask,
                            decoder_position_ids=decoder_position_ids, host=host_values,
                            past_length=None if past_key_values is not None else 0)
        out = self._apply(params, "decode", jnp.asarray(decoder_input_ids), states, encoder_attention_mask,
                          decoder_attention_mask, decoder_position_ids, past_key_values, train=train,
                          dropout_rng=dropout_rng, output_attentions=oa, output_hidden_states=oh)
        logits, hidden, attns, cross, cache = out
        out = CausalLMOutputWithCrossAttentions(logits=logits, past_key_values=cache, hidden_states=hidden,
                                                attentions=attns, cross_attentions=cross)
        return out if rd else out.to_tuple()

    def __call__(self, input_ids, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                 position_ids=None, decoder_position_ids=None, labels=None, output_attentions: bool | None = None,
                 output_hidden_states: bool | None = None, return_dict: bool | None = None, train: bool = False,
                 params: Any = None, dropout_rng: Any = None) -> Seq2SeqLMOutput | tuple:
        """Encoder + decoder.  With ``labels`` and no ``decoder_input_ids`` the decoder
        inputs are the labels shifted right (core rule) with a mask ignoring pads; the
        loss is the mean cross-entropy over labels != -100."""
        oa, oh, rd = self._flags(output_attentions, output_hidden_states, return_dict)
        validate_inputs(self.config, input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                           decoder_attention_mask=decoder_attention_mask, labels=labels, position_ids=position_ids,
                           decoder_position_ids=decoder_position_ids, host=host_values)
        if labels is None and decoder_input_ids is None:
            raise ValueError("pass decoder_input_ids, or labels to build them from")
        pad, start = self.config.pad_token_id, self.config.decoder_start_token_id

        def forward(params, rngs, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, position_ids,
                    decoder_position_ids, labels):
            if attention_mask is None:
                attention_mask = jnp.ones_like(input_ids)
            if decoder_input_ids is None:
                decoder_input_ids, decoder_attention_mask = decoder_inputs_from_labels(
                    labels, pad, start, decoder_attention_mask, xp=jnp)
            enc, dec = self.module.apply({"params": self.module_params(params)}, input_ids, attention_mask,
                                         decoder_input_ids, decoder_attention_mask, position_ids, decoder_position_ids,
                                         rngs=rngs, deterministic=not train, output_attentions=oa, output_hidden_states=oh)
            return Seq2SeqLMOutput(
                loss=None if labels is None else masked_cross_entropy(dec[0], labels),
                logits=dec[0],
                decoder_hidden_states=dec[1],
                decoder_attentions=dec[2],
                cross_attentions=dec[3],
                encoder_last_hidden_state=enc[0],
                encoder_hidden_states=enc[1],
                encoder_attentions=enc[2],
            )

        program = self._compiled(("__call__", train, oa, oh, pad, start), forward)
        arrays = [None if x is None else jnp.asarray(x) for x in (
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, position_ids, decoder_position_ids, labels)]
        out = program(self.params if params is None else params, self._rngs(train, dropout_rng), *arrays)
        return out if rd else out.to_tuple()

    def generate(self, input_ids, attention_mask=None, generation_config: GenerationConfig | None = None,
                 params: Any = None, prng_key: Any = None, **kwargs: Any) -> Any:
        """Greedy, beam or sampling decoding as one compiled program; see
        :func:`encdec_flax.generation.generate`."""
        from encdec_flax.generation import generate

        return generate(self, input_ids, attention_mask, generation_config, params, prng_key, **kwargs)

    # --- checkpoints ---------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, params: Any = None, format: str | None = None,
                        safe_serialization: bool = True, max_shard_size: int | str = "5GB", push_to_hub: bool = False,
                        **kwargs: Any) -> None:
        """Write ``config.json``, ``generation_config.json`` and the weights: a
        ``model.safetensors`` with canonical names by default; ``safe_serialization=False``
        or ``format="flax-msgpack"`` writes ``flax_model.msgpack`` (HF Flax naming)."""
        from encdec.hub import push_folder

        is_main, push = pretrained.split_save_kwargs(kwargs)
        if not is_main:
            return
        if format is None:
            format = "safetensors" if safe_serialization else "flax-msgpack"
        pretrained.save_pretrained(save_directory, self.config, self.canonical_state(params), self.generation_config,
                                   format=format, max_shard_size=max_shard_size)
        if push_to_hub:
            push_folder(save_directory, **push)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, dtype: Any = jnp.float32,
                        param_dtype: Any = None, **kwargs: Any) -> "FlaxEncoderDecoderModel":
        """Load any checkpoint the core reads (``model.safetensors`` [+ shards],
        ``pytorch_model.bin``, ``tf_model.h5``, ``flax_model.msgpack``); ``from_pt`` and
        the other format hints are accepted; config fields may be overridden by keyword.
        ``dtype``: computation dtype; ``param_dtype``: the weights' (see the class docstring)."""
        info = kwargs.pop("output_loading_info", False)
        do_init = kwargs.pop("_do_init", True)
        config, weights, generation_config, unused = pretrained.load_pretrained(pretrained_model_name_or_path, **kwargs)
        if unused:
            raise TypeError(f"from_pretrained got unexpected keyword argument(s): {', '.join(sorted(unused))}")
        model = cls(config, dtype=dtype, param_dtype=param_dtype, _do_init=False)
        model.load_canonical(weights)
        config.name_or_path = os.fspath(pretrained_model_name_or_path)
        if generation_config is not None:
            model.generation_config = generation_config
        if not do_init:  # transformers' Flax contract: (model, params)
            return model, model.params
        return (model, {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}) if info else model

    @classmethod
    def from_encoder_decoder_pretrained(cls, encoder_pretrained_model_name_or_path: str | os.PathLike | None = None,
                                        decoder_pretrained_model_name_or_path: str | os.PathLike | None = None,
                                        *model_args: Any, **kwargs: Any) -> "FlaxEncoderDecoderModel":
        """Build the composite from two part checkpoints.  ``encoder_*``/``decoder_*``
        keywords go to each part (hub keywords or config fields, e.g.
        ``decoder_hidden_dropout_prob=0.0``); ``dtype`` and composite config fields stay."""
        if model_args:
            raise TypeError(f"from_encoder_decoder_pretrained takes no extra positional arguments, got {len(model_args)}")
        enc_kwargs, dec_kwargs, rest = split_pretrained_kwargs(kwargs)
        dtype = rest.pop("dtype", jnp.float32)
        seed = rest.pop("seed", 0)
        parts = {}
        for role, path, part_kwargs in (("encoder", encoder_pretrained_model_name_or_path, enc_kwargs),
                                        ("decoder", decoder_pretrained_model_name_or_path, dec_kwargs)):
            built = part_kwargs.pop("model", None)
            if built is not None:  # a part object (FlaxBertModel, ...), as transformers accepts
                if not hasattr(built, "canonical_state") or not hasattr(built, "config"):
                    raise TypeError(f"{role}_model must be an encdec Flax part model (e.g. FlaxBertModel.from_pretrained"
                                    f"(...)), got {type(built).__name__}")
                if part_kwargs:
                    raise TypeError(f"{role}_model was given, so {role}_ keywords {sorted(part_kwargs)} cannot apply")
                config = copy.deepcopy(built.config)
                if role == "decoder" and not (config.is_decoder and config.add_cross_attention):
                    # transformers' rule: the decoder becomes causal + cross-attending; weights it
                    # lacks (cross-attention) are initialised below and named in the warning
                    logger.info(f"decoder_model ({type(built).__name__}) is used as a decoder: is_decoder=True and "
                                "add_cross_attention=True are set on its config")
                parts[role] = pretrained.PartLoad(config, built.canonical_state())
                continue
            if path is None:
                raise ValueError(f"If `{role}_model` is not defined as an argument, a `{role}_pretrained_model_name_or_path` "
                                 "has to be defined")
            hub = {k: part_kwargs.pop(k) for k in list(part_kwargs) if k in HUB_KWARGS}
            parts[role] = pretrained.load_part(path, role, config_overrides=part_kwargs, seed=seed, **hub)
        initialized = [f"decoder.{n}" for n in parts["decoder"].initialized] + [f"encoder.{n}" for n in parts["encoder"].initialized]
        config = EncoderDecoderConfig.from_encoder_decoder_configs(parts["encoder"].config, parts["decoder"].config)
        unknown = [k for k in rest if k not in config.__dict__]
        if unknown:
            raise TypeError(f"from_encoder_decoder_pretrained got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        for key, value in rest.items():
            setattr(config, key, value)
        model = cls(config, dtype=dtype, _do_init=False)
        weights = {f"encoder.{k}": v for k, v in parts["encoder"].weights.items()}
        weights.update({f"decoder.{k}": v for k, v in parts["decoder"].weights.items()})
        missing = [p.name for p in model.spec.untied if p.name not in weights]
        if missing:  # enc_to_dec_proj when the hidden sizes differ; a given decoder's cross-attention
            fresh = init_model_weights(config, seed=seed)
            weights.update({n: fresh[n] for n in missing})
            initialized += missing
        if initialized:
            logger.warning(pretrained.newly_initialised_message(initialized))
        if config.tie_encoder_decoder:
            weights = keep_decoder_side(weights, model.spec)
        model.load_canonical(weights)
        return model

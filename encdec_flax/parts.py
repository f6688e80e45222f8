"""Part models as objects, the way transformers' Flax part classes are used: a flax.linen
``module`` plus its ``params`` pytree (paths = the part's own canonical names), with
``from_pretrained`` / ``save_pretrained`` of HF part checkpoints (through the core's part
mapping) and a pure ``__call__(..., params=)``.  ``FlaxEncoderDecoderModel`` takes them in
``from_encoder_decoder_pretrained(encoder_model=..., decoder_model=...)``."""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from encdec.checkpoint import match_state
from encdec.configuration import as_config
from encdec.hub import HubModelMixin
from encdec.init import init_weights
from encdec.layout import from_backend, to_backend
from encdec.outputs import BaseModelOutputWithPooling, CausalLMOutputWithCrossAttentions
from encdec.registry import part_class
from encdec.specs import decoder_spec, encoder_spec
from encdec_flax.models.layers import FLAX_LAYOUT, to_device


class FlaxPartModel(HubModelMixin):
    """Base of the Flax part objects; subclasses set ``role`` (``"encoder"`` / ``"decoder"``)
    and, where the class is bound to one architecture, ``model_type``."""

    role = "encoder"
    model_type: str | None = None
    main_input_name = "input_ids"

    def __init__(self, config: Any, input_shape: tuple | None = None, seed: int = 0, dtype: Any = jnp.float32,
                 _do_init: bool = True) -> None:
        config = as_config(config, "config")
        if self.model_type is not None and config.model_type != self.model_type:
            raise ValueError(f"{type(self).__name__} needs a {self.model_type} config, got model_type {config.model_type!r}")
        self.config = config
        self.dtype = dtype
        self.module = part_class("flax", config.model_type, self.role)(config, dtype=dtype)
        self.spec = encoder_spec(config) if self.role == "encoder" else decoder_spec(config)
        self.params: dict = {}
        if _do_init:
            self.load_canonical(init_weights(self.spec, seed=seed, std=float(config.initializer_range)))

    # --- weights ---------------------------------------------------------------------
    def canonical_state(self, params: Any = None) -> dict[str, np.ndarray]:
        params = self.params if params is None else params
        flat = {".".join(k): np.asarray(v) for k, v in flatten_dict(params).items()}
        return from_backend(flat, self.spec, FLAX_LAYOUT)

    def load_canonical(self, weights: Mapping[str, np.ndarray]) -> None:
        weights, _ = match_state(weights, self.spec)
        self.params = unflatten_dict({tuple(k.split(".")): to_device(v)
                                      for k, v in to_backend(weights, self.spec, FLAX_LAYOUT).items()})

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> Any:
        """transformers' PyTorch ``resize_token_embeddings`` for a Flax part object (transformers'
        Flax parts have none): embeddings, an untied LM head and its bias get the new row count
        (:mod:`encdec.resize`), ties stay, ``config.vocab_size`` and the spec follow.  Returns the
        input embedding matrix."""
        from encdec.pretrained import input_embedding_name
        from encdec.resize import new_vocab_size, resize_canonical

        if new_num_tokens is not None or pad_to_multiple_of is not None:
            size = new_vocab_size(self.config.vocab_size, new_num_tokens, pad_to_multiple_of)
            weights, old_spec = self.canonical_state(), self.spec
            self.config.vocab_size = size
            self.spec = encoder_spec(self.config) if self.role == "encoder" else decoder_spec(self.config)
            self.module = part_class("flax", self.config.model_type, self.role)(self.config, dtype=self.dtype)
            self.load_canonical(resize_canonical(weights, old_spec, self.spec, mean_resizing,
                                                 float(self.config.initializer_range),
                                                 int(np.random.randint(0, 2**31 - 1))))
        return self.canonical_state()[input_embedding_name(self.spec)]

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        return self.spec.num_parameters(exclude_embeddings=exclude_embeddings)

    @property
    def base_model_prefix(self) -> str:
        from encdec.pretrained import base_model_prefix

        return base_model_prefix(self.config, self.role)

    def get_input_embeddings(self) -> jnp.ndarray:
        """The word-embedding table ``[vocab, hidden]`` in ``params``."""
        from encdec.pretrained import input_embedding_name

        name = input_embedding_name(self.spec)
        node = self.params
        for key in FLAX_LAYOUT.backend_name(name, self.spec[name].kind).split("."):
            node = node[key]
        return node

    # --- running ---------------------------------------------------------------------
    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, token_type_ids: Any = None,
                 encoder_hidden_states: Any = None, encoder_attention_mask: Any = None,
                 output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                 return_dict: bool | None = None, train: bool = False, params: Any = None, dropout_rng: Any = None) -> Any:
        cfg = self.config
        oa = cfg.output_attentions if output_attentions is None else bool(output_attentions)
        oh = cfg.output_hidden_states if output_hidden_states is None else bool(output_hidden_states)
        rd = cfg.use_return_dict if return_dict is None else bool(return_dict)
        if train and dropout_rng is None:
            raise ValueError("train=True needs a dropout_rng (e.g. jax.random.PRNGKey(0))")
        input_ids = jnp.asarray(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        variables = {"params": self.params if params is None else params}
        rngs = {"dropout": dropout_rng} if train else {}
        common = dict(attention_mask=attention_mask, position_ids=position_ids, deterministic=not train,
                      output_attentions=oa, output_hidden_states=oh)
        if self.role == "encoder":
            if encoder_hidden_states is not None:
                raise TypeError(f"{type(self).__name__} is an encoder: it takes no encoder_hidden_states")
            out = self.module.apply(variables, input_ids, token_type_ids=token_type_ids, rngs=rngs, **common)
            result = BaseModelOutputWithPooling(last_hidden_state=out[0], pooler_output=out[-1], hidden_states=out[1],
                                                attentions=out[2])
        else:
            if token_type_ids is not None:
                raise TypeError(f"{type(self).__name__}: token_type_ids are not a decoder input here")
            if getattr(cfg, "add_cross_attention", False) and encoder_hidden_states is None:
                raise ValueError(f"{type(self).__name__} has cross-attention (add_cross_attention=True): pass "
                                 "encoder_hidden_states")
            out = self.module.apply(variables, input_ids, encoder_hidden_states=encoder_hidden_states,
                                    encoder_attention_mask=encoder_attention_mask, cache=None, rngs=rngs, **common)
            result = CausalLMOutputWithCrossAttentions(logits=out[0], hidden_states=out[1], attentions=out[2],
                                                       cross_attentions=out[3])
        return result if rd else result.to_tuple()

    # --- checkpoints -----------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, params: Any = None, push_to_hub: bool = False,
                        max_shard_size: Any = "5GB", safe_serialization: bool = True, **kwargs: Any) -> list[str]:
        """transformers' part checkpoint of this class: ``config.json`` and
        ``model.safetensors`` (``flax_model.msgpack`` with ``safe_serialization=False``)."""
        from encdec.hub import push_folder
        from encdec.pretrained import save_part, split_save_kwargs

        is_main, push = split_save_kwargs(kwargs)
        if not is_main:
            return []
        fmt = "safetensors" if safe_serialization else "flax-msgpack"
        written = save_part(save_directory, self.config, self.canonical_state(params), self.spec, type(self).__name__,
                            fmt, max_shard_size)
        if push_to_hub:
            push_folder(save_directory, **push)
        return written

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, config: Any = None,
                        dtype: Any = jnp.float32, **kwargs: Any) -> Any:
        from encdec.pretrained import load_part_for_class, loading_info

        if model_args:
            raise TypeError("from_pretrained takes no positional arguments besides the name or path")
        kwargs.pop("_do_init", None)
        part, options = load_part_for_class(cls, pretrained_model_name_or_path, config, **kwargs)
        model = cls(part.config, dtype=dtype, _do_init=False)
        model.load_canonical(part.weights)
        return (model, loading_info(part)) if options.get("output_loading_info") else model


def _part(name: str, role: str, model_type: str | None) -> type:
    return type(name, (FlaxPartModel,), {"role": role, "model_type": model_type, "__module__": __name__,
                                        "__doc__": f"transformers' ``{name}`` as a module + params object ({role})."})


FlaxBertModel = _part("FlaxBertModel", "encoder", "bert")
FlaxBertForCausalLM = _part("FlaxBertForCausalLM", "decoder", "bert")
FlaxBertLMHeadModel = FlaxBertForCausalLM
FlaxRobertaModel = _part("FlaxRobertaModel", "encoder", "roberta")
FlaxRobertaForCausalLM = _part("FlaxRobertaForCausalLM", "decoder", "roberta")
FlaxElectraModel = _part("FlaxElectraModel", "encoder", "electra")
FlaxGPT2LMHeadModel = _part("FlaxGPT2LMHeadModel", "decoder", "gpt2")
FlaxBartForCausalLM = _part("FlaxBartForCausalLM", "decoder", "bart")
FlaxProphetNetForCausalLM = _part("FlaxProphetNetForCausalLM", "decoder", "prophetnet")
FlaxRemBertModel = _part("FlaxRemBertModel", "encoder", "rembert")
FlaxRemBertForCausalLM = _part("FlaxRemBertForCausalLM", "decoder", "rembert")
FlaxXLMRobertaModel = _part("FlaxXLMRobertaModel", "encoder", "xlm-roberta")
FlaxXLMRobertaForCausalLM = _part("FlaxXLMRobertaForCausalLM", "decoder", "xlm-roberta")
FlaxBertGenerationEncoder = _part("FlaxBertGenerationEncoder", "encoder", "bert-generation")
FlaxBertGenerationDecoder = _part("FlaxBertGenerationDecoder", "decoder", "bert-generation")
#: any registered model type, picked from the config (transformers' FlaxAutoModel idea)
FlaxAutoEncoder = _part("FlaxAutoEncoder", "encoder", None)
FlaxAutoModelForCausalLM = _part("FlaxAutoModelForCausalLM", "decoder", None)

__all__ = ["FlaxPartModel", "FlaxBertModel", "FlaxBertForCausalLM", "FlaxBertLMHeadModel", "FlaxRobertaModel",
           "FlaxRobertaForCausalLM", "FlaxElectraModel", "FlaxGPT2LMHeadModel", "FlaxBartForCausalLM",
           "FlaxProphetNetForCausalLM", "FlaxRemBertModel", "FlaxRemBertForCausalLM", "FlaxAutoEncoder",
           "FlaxAutoModelForCausalLM", "FlaxXLMRobertaModel", "FlaxXLMRobertaForCausalLM", "FlaxBertGenerationEncoder",
           "FlaxBertGenerationDecoder"]

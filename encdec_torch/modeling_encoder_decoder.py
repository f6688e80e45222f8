"""``EncoderDecoderModel``: any registered encoder + any registered causal-LM decoder.

Behaves like transformers 4.x's class of the same name: ``encoder_``/``decoder_`` keyword
routing, labels shifted into decoder inputs, loss over labels != -100, checkpoints in HF
format through :mod:`encdec.pretrained`.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encdec.configuration import EncoderDecoderConfig, as_config, set_attn_implementation
from encdec.generation import GenerationConfig
from encdec.hub import split_hub_kwargs
from encdec.init import init_model_weights
from encdec.labels import IGNORE_INDEX, decoder_inputs_from_labels, shift_tokens_right
from encdec.outputs import BaseModelOutput, Seq2SeqLMOutput
from encdec.registry import part_class
from encdec.routing import output_flags, split_forward_kwargs, split_pretrained_kwargs
from encdec.specs import encoder_decoder_spec, keep_decoder_side, needs_projection
from encdec.validation import PART_ID_KWARGS, validate_inputs
from encdec_torch.adapters import AdapterModelMixin
from encdec_torch.generation import generate
from encdec_torch.models.common import SpecModule, _state_dict_weights, host_values, no_init, past_length, tensor_to_numpy

logger = logging.getLogger(__name__)

_SAVE_FORMATS = {True: "safetensors", False: "pt-bin"}


def _torch_dtype(value: Any, config: EncoderDecoderConfig) -> Optional[torch.dtype]:
    """``torch_dtype`` argument -> a floating torch dtype (``"auto"``: the config's)."""
    if value is None:
        return None
    if value == "auto":
        value = getattr(config, "torch_dtype", None) or "float32"
    if isinstance(value, str):
        value = getattr(torch, value.replace("torch.", ""), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"torch_dtype must be a floating torch dtype, its name or 'auto', got {value!r}")
    return value


#: the core's input check; it reads ids and masks on the host, so under ``torch.compile`` it
#: runs outside the graph: one graph break before the model math instead of one per test.
_validate_inputs = torch.compiler.disable(validate_inputs)


class EncoderDecoderModel(AdapterModelMixin, SpecModule):
    """Encoder-decoder model built from two registered parts (see :mod:`encdec_torch.models`)."""

    main_input_name = "input_ids"
    base_model_prefix = "encoder_decoder"  # transformers 4.57's (the parts have their own, e.g. "bert")

    def __init__(
        self,
        config: Optional[EncoderDecoderConfig] = None,
        encoder: Optional[nn.Module] = None,
        decoder: Optional[nn.Module] = None,
        seed: Optional[int] = None,
    ) -> None:
        """``seed``: draw every weight from the core's portable init instead of torch's
        generator, so the TF and Flax backends built with the same seed hold the same weights."""
        super().__init__()
        if seed is not None and (encoder is not None or decoder is not None):
            raise ValueError("`seed` initialises a model built from a config; it cannot be combined with encoder/decoder instances")
        if config is None:
            if encoder is None or decoder is None:
                raise ValueError("EncoderDecoderModel needs either a `config` or both an `encoder` and a `decoder`")
            config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
        else:  # ours, or transformers' converted through its dict
            config = as_config(config, "config", EncoderDecoderConfig)
        cross = getattr(config.decoder, "cross_attention_hidden_size", None)
        if cross is not None and cross != config.encoder.hidden_size:
            raise ValueError(
                f"the decoder's cross_attention_hidden_size ({cross}) must equal the encoder's hidden_size "
                f"({config.encoder.hidden_size}) when it is set"
            )
        decoder_given = decoder is not None
        if encoder is None:
            encoder = part_class("torch", config.encoder.model_type, "encoder")(config.encoder)
            encoder.init_weights()
        if decoder is None:
            decoder = part_class("torch", config.decoder.model_type, "decoder")(config.decoder)
            decoder.init_weights()
        if encoder.get_output_embeddings() is not None:
            raise ValueError(
                f"the encoder {type(encoder).__name__} has an LM head; use a base model without one (e.g. BertModel)"
            )
        if not getattr(decoder.config, "add_cross_attention", False) or not hasattr(decoder, "get_output_embeddings"):
            raise ValueError(
                f"the decoder {type(decoder).__name__} cannot take encoder hidden states: build it from a config with "
                "is_decoder=True and add_cross_attention=True (EncoderDecoderConfig.from_encoder_decoder_configs does this)"
            )
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        # the parts share the composite config's sub-configs, so edits stay in sync
        self.encoder.config = config.encoder
        self.decoder.config = config.decoder
        self._set_attn_implementation(None)
        self.spec = encoder_decoder_spec(config)
        if needs_projection(config):
            self.enc_to_dec_proj = nn.Linear(config.encoder.hidden_size, config.decoder.hidden_size)
        if decoder_given and config.tie_encoder_decoder:  # transformers keeps the decoder's weights
            params = dict(self.named_parameters(remove_duplicate=False))
            with torch.no_grad():
                for tied, source in self.spec.ties.items():
                    if tied.startswith("decoder.") and source.startswith("encoder."):
                        params[source].copy_(params[tied])
        self.tie_weights()
        # transformers' names for the tie targets (its Trainer re-ties when a checkpoint lacks them)
        self._tied_weights_keys = self._keys_to_ignore_on_save = sorted(self.spec.ties)
        self.register_state_dict_post_hook(_untie_in_state_dict)
        self.register_load_state_dict_pre_hook(_retie_in_loaded_state)
        self.generation_config = GenerationConfig.from_model_config(config)
        if seed is not None:
            self.load_canonical(init_model_weights(config, seed=seed))

    @property
    def spec(self) -> Any:
        """The composite's spec, rebuilt from the config when a part's vocabulary was resized."""
        key = (self.config.encoder.vocab_size, self.config.decoder.vocab_size)
        if self.__dict__.get("_spec_key") != key:
            self.__dict__["_spec"], self.__dict__["_spec_key"] = encoder_decoder_spec(self.config), key
        return self.__dict__["_spec"]

    @spec.setter
    def spec(self, value: Any) -> None:
        self.__dict__["_spec"] = value
        self.__dict__["_spec_key"] = (self.config.encoder.vocab_size, self.config.decoder.vocab_size)

    def _set_attn_implementation(self, requested: Optional[str]) -> None:
        """transformers' rule: the composite records ``requested`` (default ``"sdpa"``) and
        each part its own choice; requesting ``"sdpa"`` where a part lacks it raises."""
        for part in (self.encoder, self.decoder):
            set_attn_implementation(part.config, requested, type(part)._supports_sdpa, type(part).__name__)
        set_attn_implementation(self.config, requested, True, type(self).__name__)

    def init_std(self, name: str) -> float:
        part = self.config.encoder if name.startswith("encoder.") else self.config.decoder
        return float(part.initializer_range)

    def tie_weights(self) -> None:
        """Make every tied parameter of the spec (word embeddings <-> LM head, and with
        ``tie_encoder_decoder`` the decoder's base model <-> encoder) one ``nn.Parameter``."""
        for tied, source in self.spec.ties.items():
            module_name, _, leaf = tied.rpartition(".")
            src_module, _, src_leaf = source.rpartition(".")
            setattr(self.get_submodule(module_name), leaf, getattr(self.get_submodule(src_module), src_leaf))

    # --- accessors ------------------------------------------------------------------------
    def get_encoder(self) -> nn.Module:
        return self.encoder

    def get_decoder(self) -> nn.Module:
        return self.decoder

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.decoder.get_output_embeddings()

    def resize_token_embeddings(self, *args: Any, **kwargs: Any) -> None:
        # transformers 4.57 refuses it on the composite too; the parts resize and keep
        # config.encoder / config.decoder (shared with them) and the spec in step
        from encdec.resize import COMPOSITE_REFUSAL

        raise NotImplementedError(COMPOSITE_REFUSAL)

    supports_gradient_checkpointing = True

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Optional[dict] = None) -> None:
        """Recompute layer activations in the backward pass (both parts; disables the cache in training).

        ``gradient_checkpointing_kwargs`` go to ``torch.utils.checkpoint.checkpoint`` (default
        ``{"use_reentrant": False}``; transformers' Trainer passes its argument of that name)."""
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = True
            module.gradient_checkpointing_kwargs = kwargs

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # --- forward --------------------------------------------------------------------------
    def encode(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=False,
               output_hidden_states=False, **kwargs: Any) -> BaseModelOutput:
        out = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True, **kwargs,
        )
        return BaseModelOutput(last_hidden_state=out.last_hidden_state, hidden_states=out.hidden_states, attentions=out.attentions)

    def project(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """Encoder states in the decoder's width (``enc_to_dec_proj`` when the sizes differ)."""
        proj = getattr(self, "enc_to_dec_proj", None)
        return encoder_hidden_states if proj is None else proj(encoder_hidden_states)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        decoder_input_ids: Optional[torch.Tensor] = None,
        decoder_attention_mask: Optional[torch.Tensor] = None,
        encoder_outputs: Optional[Union[BaseModelOutput, tuple]] = None,
        past_key_values: Optional[tuple] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        decoder_inputs_embeds: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs: Any,
    ) -> Union[Seq2SeqLMOutput, tuple]:
        """Encode (unless ``encoder_outputs`` is given) and decode; with ``labels`` and no decoder
        inputs, the decoder inputs are the labels shifted right (mask: non-pad positions) and
        ``loss`` is the mean cross-entropy over labels != -100.

        Extra keywords: unprefixed ones go to the encoder, ``decoder_``-prefixed ones to the
        decoder (e.g. ``decoder_token_type_ids``).  ``return_dict=False`` returns
        ``Seq2SeqLMOutput.to_tuple()`` (set fields in field order; unlike transformers, no
        encoder pooler output).  ``past_key_values``: per decoder layer ``(self_key,
        self_value, cross_key, cross_value)``.
        """
        enc_attn, enc_hidden, output_attentions, output_hidden_states, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        _validate_inputs(
            self.config, input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, labels=labels, inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds, past_length=past_length(past_key_values), host=host_values,
            encoder_hidden_states=None if encoder_outputs is None else encoder_outputs[0],
            loss_mean=num_items_in_batch is None, **{k: kwargs[k] for k in PART_ID_KWARGS if k in kwargs},
        )
        kwargs_encoder, kwargs_decoder = split_forward_kwargs(kwargs)
        if encoder_outputs is None:
            encoder_outputs = self.encode(
                input_ids, attention_mask, inputs_embeds, enc_attn, enc_hidden, **kwargs_encoder
            )
        elif isinstance(encoder_outputs, (tuple, list)):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        encoder_hidden_states = self.project(encoder_outputs[0])

        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids, decoder_attention_mask = decoder_inputs_from_labels(
                labels, self.config.pad_token_id, self.config.decoder_start_token_id, decoder_attention_mask, xp=torch
            )

        dec = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=attention_mask,
            inputs_embeds=decoder_inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            use_cache=self.config.decoder.use_cache if use_cache is None else use_cache,
            past_key_values=past_key_values,
            return_dict=True,  # the parts' own config may say otherwise (as transformers passes it down)
            **kwargs_decoder,
        )
        loss = None
        if labels is not None:
            logits = dec.logits
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).to(logits.device), ignore_index=IGNORE_INDEX,
                reduction="mean" if num_items_in_batch is None else "sum",
            )
            if num_items_in_batch is not None:
                loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device)
        out = Seq2SeqLMOutput(
            loss=loss,
            logits=dec.logits,
            past_key_values=dec.past_key_values,
            decoder_hidden_states=dec.hidden_states,
            decoder_attentions=dec.attentions,
            cross_attentions=dec.cross_attentions,
            encoder_last_hidden_state=encoder_outputs[0],
            encoder_hidden_states=encoder_outputs.hidden_states if isinstance(encoder_outputs, BaseModelOutput) else None,
            encoder_attentions=encoder_outputs.attentions if isinstance(encoder_outputs, BaseModelOutput) else None,
        )
        return out if return_dict else out.to_tuple()

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id, xp=torch)

    # --- generation -----------------------------------------------------------------------
    def generate(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                 generation_config: Optional[GenerationConfig] = None, **kwargs: Any) -> torch.Tensor:
        """Greedy, beam or sampled decoding (see :func:`encdec_torch.generation.generate`).

        Without ``generation_config``, ``self.generation_config`` (made from the model config at
        construction, as in transformers; special ids it lacks are read from ``self.config``).
        """
        generation_config = generation_config or self.generation_config
        return generate(self, input_ids, attention_mask, generation_config, **kwargs)

    # --- weights and checkpoints ----------------------------------------------------------
    def save_pretrained(self, save_directory: Union[str, os.PathLike], safe_serialization: bool = True,
                        max_shard_size: Union[int, str] = "5GB", format: Optional[str] = None,
                        state_dict: Optional[dict] = None, push_to_hub: bool = False, **kwargs: Any) -> list[str]:
        """Write ``config.json``, ``generation_config.json`` and ``model.safetensors``
        (``pytorch_model.bin`` with ``safe_serialization=False``) in transformers' format;
        ``format`` ("safetensors", "pt-bin", "tf-h5", "flax-msgpack") picks any format the
        core writes, as in the other backends.  ``state_dict`` (names of ``self.state_dict()``)
        replaces the weights written; ``push_to_hub=True`` then uploads the folder
        (``repo_id``, ``token``, ``private``, ``commit_message``, ...)."""
        from encdec.hub import push_folder
        from encdec.pretrained import save_pretrained, split_save_kwargs

        is_main, push = split_save_kwargs(kwargs)
        if not is_main:
            return []
        weights = self.canonical_state() if state_dict is None else _state_dict_weights(state_dict, self.spec)
        written = save_pretrained(
            save_directory, self.config, weights, self.generation_config,
            format=format or _SAVE_FORMATS[bool(safe_serialization)], max_shard_size=max_shard_size,
        )
        if push_to_hub:
            push_folder(save_directory, **push)
        return written

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], *model_args: Any,
                        torch_dtype: Any = None, dtype: Any = None, output_loading_info: bool = False,
                        attn_implementation: Optional[str] = None, **kwargs: Any) -> "EncoderDecoderModel":
        """Load a composite checkpoint (ours or transformers'); returned in eval mode.

        Keywords: ``dtype`` (transformers 4.57's name) or ``torch_dtype``; ``output_loading_info``
        (returns ``(model, info)``; a load that does not match raises instead);
        ``attn_implementation`` (``"eager"`` / ``"sdpa"``, recorded on the configs as in
        transformers; refused where a part lacks SDPA there); those of
        :func:`encdec.pretrained.load_pretrained` (``revision``, ``local_files_only``,
        ``cache_dir``, ``token``, ``subfolder``, ``config``, ``from_tf``/``from_flax``,
        ``use_safetensors``, ``low_cpu_mem_usage``, config overrides).
        """
        from encdec.pretrained import load_pretrained

        if model_args:
            raise TypeError("from_pretrained takes no positional arguments besides the name or path")
        torch_dtype = dtype if dtype is not None else torch_dtype
        config, weights, generation_config, unused = load_pretrained(pretrained_model_name_or_path, **kwargs)
        if unused:
            raise TypeError(f"from_pretrained got unexpected keyword argument(s): {', '.join(sorted(unused))}")
        with no_init():  # every parameter is loaded right below
            model = cls(config)
        model.load_canonical(weights, share=True)
        model._set_attn_implementation(attn_implementation)
        if generation_config is not None:
            model.generation_config = generation_config
        config.name_or_path = os.fspath(pretrained_model_name_or_path)
        cast = _torch_dtype(torch_dtype, config)
        if cast is not None:
            model.to(cast)
        model.eval()
        if output_loading_info:
            return model, {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
        return model

    @classmethod
    def from_encoder_decoder_pretrained(
        cls,
        encoder_pretrained_model_name_or_path: Optional[Union[str, os.PathLike]] = None,
        decoder_pretrained_model_name_or_path: Optional[Union[str, os.PathLike]] = None,
        *model_args: Any,
        **kwargs: Any,
    ) -> "EncoderDecoderModel":
        """Combine two part checkpoints (plain HF ``BertModel``, ``GPT2LMHeadModel``, ...).

        ``encoder_x``/``decoder_x`` keywords update that part's config (hub keywords such as
        ``decoder_revision`` steer its download); ``encoder_model``/``decoder_model`` pass
        ready part instances; other keywords go to the composite config.  The decoder gets
        ``is_decoder=True, add_cross_attention=True``; weights it lacks (cross-attention)
        are initialised and named in one info message.  Returned in eval mode.
        """
        from encdec.pretrained import load_part

        if model_args:
            raise TypeError("from_encoder_decoder_pretrained takes no positional model arguments")
        kw_enc, kw_dec, kw_rest = split_pretrained_kwargs(kwargs)
        torch_dtype = kw_rest.pop("torch_dtype", None)
        if kw_rest.get("dtype") is not None:  # transformers 4.57's name
            torch_dtype = kw_rest.pop("dtype")
        kw_rest.pop("dtype", None)
        parts: dict[str, Any] = {}
        weights: dict[str, np.ndarray] = {}
        initialized: list[str] = []
        for role, path, kw in (("encoder", encoder_pretrained_model_name_or_path, kw_enc),
                               ("decoder", decoder_pretrained_model_name_or_path, kw_dec)):
            model = kw.pop("model", None)
            if model is not None:
                if kw:
                    raise TypeError(f"{role}_model was given, so {role}_ keywords {sorted(kw)} cannot apply")
                parts[role] = model
                weights.update({f"{role}.{k}": v for k, v in model.canonical_state().items()})
                continue
            if path is None:
                raise ValueError(f"pass `{role}_pretrained_model_name_or_path` or `{role}_model`")
            hub = split_hub_kwargs(kw)
            part = load_part(path, role=role, config_overrides=kw, **hub)
            if role == "encoder":
                part.config.is_decoder = False
                part.config.add_cross_attention = False
            parts[role] = part.config
            weights.update({f"{role}.{k}": v for k, v in part.weights.items()})
            initialized += [f"{role}.{k}" for k in part.initialized]
        enc, dec = parts["encoder"], parts["decoder"]
        config = EncoderDecoderConfig.from_encoder_decoder_configs(
            enc.config if isinstance(enc, nn.Module) else enc, dec.config if isinstance(dec, nn.Module) else dec, **kw_rest
        )
        with no_init():  # loaded below, or initialised when missing
            model = cls(config, encoder=enc if isinstance(enc, nn.Module) else None,
                        decoder=dec if isinstance(dec, nn.Module) else None)
        missing = [p.name for p in model.spec.untied if p.name not in weights]
        if missing:  # enc_to_dec_proj when the hidden sizes differ
            model.init_weights(missing)
            state = model.state_dict()
            weights.update({n: tensor_to_numpy(state[n]) for n in missing})
            initialized += missing
        if config.tie_encoder_decoder:
            weights = keep_decoder_side(weights, model.spec)
        model.load_canonical({n: weights[n] for n in model.spec.params if n in weights}, share=True)
        if initialized:
            from encdec.pretrained import newly_initialised_message

            logger.warning(newly_initialised_message(initialized))
        dtype = _torch_dtype(torch_dtype, config)
        if dtype is not None:
            model.to(dtype)
        return model.eval()


def _untie_in_state_dict(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """``state_dict()`` keeps every name, as transformers' does, but a tie target's entry is a
    copy rather than its source's memory, so files written from it with
    ``safetensors.torch.save_file`` (transformers' Trainer checkpoints) do not fail on
    shared tensors.  ``keep_vars=True`` (parameters, not data) is left as it is."""
    for tied in module.spec.ties:
        value = state_dict.get(prefix + tied)
        if value is not None and not isinstance(value, nn.Parameter):
            state_dict[prefix + tied] = value.clone()


def _retie_in_loaded_state(module: nn.Module, state_dict: dict, prefix: str, *_: Any) -> None:
    """``load_state_dict``'s side of :func:`_untie_in_state_dict`.  A tie target's entry from
    ``state_dict()`` is a copy, so a dict changed on one side of a tie (transformers'
    ``load_flax_weights_in_pytorch_model`` sets only the word embeddings) would have the other
    side's stale copy loaded over it.  Where one side still holds the parameter's current value,
    it takes the changed side's, as transformers' shared memory gives; both changed: torch's order."""
    params = dict(module.named_parameters(remove_duplicate=False))
    for tied, source in module.spec.ties.items():
        entries = state_dict.get(prefix + tied), state_dict.get(prefix + source)
        current = params.get(tied)
        if current is None or current.is_meta or any(e is None or e.shape != current.shape for e in entries):
            continue  # a model built on the meta device has no current value to compare with
        same = [torch.equal(e.to(current.device, current.dtype), current.detach()) for e in entries]
        if same == [True, False]:
            state_dict[prefix + tied] = entries[1]
        elif same == [False, True]:
            state_dict[prefix + source] = entries[0]


def load_torch_part(cls: type, name_or_path: Any, config: Any = None, torch_dtype: Any = None, dtype: Any = None,
                    attn_implementation: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """``PartClass.from_pretrained``: an HF part checkpoint mapped by the core onto ``cls``'s
    spec; weights the checkpoint lacks are initialised and named in a WARNING."""
    from encdec.pretrained import load_part_for_class, loading_info

    part, options = load_part_for_class(cls, name_or_path, config, **kwargs)
    with no_init():
        model = cls(part.config)
    model.load_canonical(part.weights, share=True)
    set_attn_implementation(model.config, attn_implementation, cls._supports_sdpa, cls.__name__)
    cast = _torch_dtype(dtype if dtype is not None else torch_dtype, part.config)
    if cast is not None:
        model.to(cast)
    model.eval()
    return (model, loading_info(part)) if options.get("output_loading_info") else model

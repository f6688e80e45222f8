"""Model configurations with Hugging Face field names and `config.json` round-trips.

A config is a plain attribute bag with typed defaults.  Keys we do not know are kept
as attributes and written back, so an HF ``config.json`` survives a round trip.
"""
from __future__ import annotations

import copy
import json
import math
import os
from typing import Any, ClassVar

from encdec._io_utils import atomic_write_text

CONFIG_NAME = "config.json"

#: Generation settings transformers' ``PretrainedConfig`` carries, with its defaults.
LEGACY_GENERATION_DEFAULTS: dict[str, Any] = {
    "max_length": 20, "min_length": 0, "do_sample": False, "early_stopping": False, "num_beams": 1,
    "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0,
    "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None,
    "num_return_sequences": 1, "output_scores": False, "return_dict_in_generate": False,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "remove_invalid_values": False,
    "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "num_beam_groups": 1, "diversity_penalty": 0.0,
}

#: Keys of a transformers ``to_dict()`` that describe the object, not the model.
_FOREIGN_PRIVATE = ("transformers_version", "_commit_hash", "_attn_implementation_autoset")


#: attention implementations encdec computes (transformers' names).
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


def set_attn_implementation(config: "PretrainedConfig", requested: "str | None", supports_sdpa: bool,
                            where: str) -> str:
    """transformers' rule for ``attn_implementation``: a requested one must be supported by
    ``where`` (else ``ValueError``); otherwise the config's own choice stays, else ``"sdpa"``
    where supported, else ``"eager"``.  Writes it to ``config._attn_implementation``."""
    if requested is not None:
        if requested not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation={requested!r} is not supported by encdec; use one of "
                             f"{', '.join(map(repr, ATTN_IMPLEMENTATIONS))}")
        if requested == "sdpa" and not supports_sdpa:
            raise ValueError(f"{where} does not support attn_implementation='sdpa' (as in transformers); "
                             "use attn_implementation='eager'")
        choice = requested
    else:
        own = config._attn_implementation
        choice = own if own in ATTN_IMPLEMENTATIONS and (own != "sdpa" or supports_sdpa) else (
            "sdpa" if supports_sdpa else "eager")
    config._attn_implementation = choice
    return choice


class ConfigTypeError(TypeError, ValueError):
    """A config of the wrong kind (a ``TypeError``; also a ``ValueError`` as transformers raises)."""


def is_foreign_config(value: Any) -> bool:
    """A config-like object that is not ours (e.g. transformers' ``BertConfig``): duck-typed
    by a ``to_dict()`` method and a ``model_type``; encdec never imports transformers."""
    return (not isinstance(value, PretrainedConfig) and callable(getattr(value, "to_dict", None))
            and isinstance(getattr(value, "model_type", None), str))


def as_config(value: Any, where: str = "config", expected: "type[PretrainedConfig] | None" = None) -> "PretrainedConfig":
    """``value`` as one of our configs: ours as is, a dict or a transformers config (through its
    ``to_dict()``) converted by ``model_type``; anything else is refused naming ``where``."""
    if isinstance(value, PretrainedConfig):
        config = value
    elif is_foreign_config(value) or isinstance(value, dict):
        data = dict(value.to_dict() if not isinstance(value, dict) else value)
        for key in _FOREIGN_PRIVATE:
            data.pop(key, None)
        if "dtype" in data and data.get("torch_dtype") is None:  # transformers 4.57's new name
            data["torch_dtype"] = data.pop("dtype")
        config = config_class_for(data.get("model_type"), where).from_dict(data)
    else:
        raise ConfigTypeError(f"{where} must be a config or a dict (encdec's or transformers' config), got {type(value).__name__}")
    if expected is not None and not isinstance(config, expected):
        article = "an" if expected.__name__[0] in "AEIOU" else "a"
        raise ConfigTypeError(f"{where} must be {article} {expected.__name__}, got a {type(config).__name__} "
                              f"(model_type {config.model_type!r})")
    return config


class PretrainedConfig:
    """Base config: defaults per class, unknown keys kept, JSON I/O in HF format."""

    model_type: ClassVar[str] = ""
    #: field name -> default value; subclasses extend it.
    defaults: ClassVar[dict[str, Any]] = {}
    #: field name -> accepted python types (checked on construction).
    types: ClassVar[dict[str, tuple[type, ...]]] = {}

    _common_defaults: ClassVar[dict[str, Any]] = {
        "is_decoder": False,
        "add_cross_attention": False,
        "cross_attention_hidden_size": None,
        "is_encoder_decoder": False,
        "tie_word_embeddings": True,
        "pad_token_id": None,
        "bos_token_id": None,
        "eos_token_id": None,
        "decoder_start_token_id": None,
        "architectures": None,
        "torch_dtype": None,
        "use_cache": True,
        # transformers' PretrainedConfig common attributes and their defaults
        "output_attentions": False,
        "output_hidden_states": False,
        "return_dict": True,
        "torchscript": False,
        "chunk_size_feed_forward": 0,
        "tie_encoder_decoder": False,
        # legacy generation defaults a config.json may carry (transformers reads them into the
        # generation config when the checkpoint has no generation_config.json)
        **LEGACY_GENERATION_DEFAULTS,
    }

    def __init__(self, **kwargs: Any) -> None:
        values = {**copy.deepcopy(self._common_defaults), **copy.deepcopy(self.defaults)}
        values.update(kwargs)
        values.pop("model_type", None)
        for key in _FOREIGN_PRIVATE:
            values.pop(key, None)
        for key, value in values.items():
            if isinstance(getattr(type(self), key, None), property):
                continue  # derived attribute HF also writes (e.g. BART's num_hidden_layers)
            if key.startswith("__") or hasattr(type(self), key):
                raise ValueError(f"{type(self).__name__}: config key {key!r} would replace the config's own "
                                 f"{'attribute' if key.startswith('__') else 'method or class attribute'}; refusing it")
            self._check_type(key, value)
            setattr(self, key, value)

    @property
    def use_return_dict(self) -> bool:
        """transformers' rule: ``return_dict`` unless ``torchscript``."""
        return bool(self.return_dict) and not self.torchscript

    @property
    def name_or_path(self) -> str:
        return self.__dict__.get("_name_or_path", "")

    @name_or_path.setter
    def name_or_path(self, value: Any) -> None:
        self.__dict__["_name_or_path"] = str(value)

    @property
    def _attn_implementation(self) -> "str | None":
        """transformers' attention-kernel choice (``"eager"`` / ``"sdpa"``); not saved to
        config.json, set when a model is built or loaded (:func:`set_attn_implementation`)."""
        return self.__dict__.get("_attn_implementation_internal")

    @_attn_implementation.setter
    def _attn_implementation(self, value: "str | None") -> None:
        self.__dict__["_attn_implementation_internal"] = value

    def get_text_config(self, decoder: bool = False) -> "PretrainedConfig":
        """transformers' accessor: the decoder's config for a composite, else itself."""
        return getattr(self, "decoder", self) if decoder else self

    def _check_type(self, key: str, value: Any) -> None:
        expected = self.types.get(key)
        if expected is None or value is None:
            return
        if isinstance(value, bool) and bool not in expected:
            ok = False
        else:
            ok = isinstance(value, expected)
        if not ok:
            names = " or ".join(t.__name__ for t in expected)
            raise TypeError(
                f"{type(self).__name__}.{key} must be {names}, got {type(value).__name__} ({value!r})"
            )
        where = f"{type(self).__name__}.{key}={value!r}"
        if expected is _INT:  # sizes and counts: a negative or zero one breaks every shape built from it
            low = 0 if "layers" in key or key == "n_layer" else 1
            if value < low:
                raise ValueError(f"{where} must be at least {low}")
            if low == 0 and value > MAX_LAYERS:
                raise ValueError(f"{where}: more than {MAX_LAYERS} layers is refused (a hostile config.json "
                                 "would make building the model hang)")
        elif expected is _FLOAT and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{where} must be a finite number >= 0 (probabilities, epsilons, init scales)")

    # --- dict / json -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All attributes plus ``model_type``, as plain JSON-serialisable data."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if key.startswith("_"):
                continue
            out[key] = value.to_dict() if isinstance(value, PretrainedConfig) else copy.deepcopy(value)
        out["model_type"] = self.model_type
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **overrides: Any) -> "PretrainedConfig":
        if not isinstance(config_dict, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(config_dict).__name__}")
        model_type = config_dict.get("model_type")
        if cls.model_type and model_type not in (None, cls.model_type):
            raise ValueError(
                f"{cls.__name__} expects model_type={cls.model_type!r}, the config says {model_type!r}"
            )
        return cls(**{**config_dict, **overrides})

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``config.json`` into ``save_directory`` atomically."""
        os.makedirs(save_directory, exist_ok=True)
        atomic_write_text(os.path.join(save_directory, CONFIG_NAME), self.to_json_string())

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "PretrainedConfig":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(data)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> "PretrainedConfig":
        """Load ``config.json`` from a folder, a file or a Hub repo id.

        Hub keywords (``revision``, ``cache_dir``, ``local_files_only``, ``token``) are
        used for resolution; any other keyword overrides a config field.
        """
        from encdec.hub import HUB_KWARGS, resolve_file

        hub_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in HUB_KWARGS}
        if os.path.isfile(name_or_path):
            path = os.fspath(name_or_path)
        else:
            path = resolve_file(name_or_path, CONFIG_NAME, **hub_kwargs)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a config.json (not UTF-8 text); pass the checkpoint folder or its config.json") from None
        if cls is PretrainedConfig or cls is AutoConfig:
            return config_class_for(data.get("model_type"), path).from_dict(data, **kwargs)
        return cls.from_dict(data, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PretrainedConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


_INT = (int,)  # identity marks a size or count (checked >= 1; layer counts >= 0, at most MAX_LAYERS)
_FLOAT = (int, float)  # identity marks a rate, epsilon or scale (checked finite and >= 0)
#: Layer counts above this are refused: no published model comes near it.
MAX_LAYERS = 10_000
_STR = (str,)
_BOOL = (bool,)


class BertConfig(PretrainedConfig):
    model_type = "bert"
    defaults = {
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "classifier_dropout": None,
    }
    types = {
        "vocab_size": _INT,
        "hidden_size": _INT,
        "num_hidden_layers": _INT,
        "num_attention_heads": _INT,
        "intermediate_size": _INT,
        "hidden_act": _STR,
        "hidden_dropout_prob": _FLOAT,
        "attention_probs_dropout_prob": _FLOAT,
        "max_position_embeddings": _INT,
        "type_vocab_size": _INT,
        "initializer_range": _FLOAT,
        "layer_norm_eps": _FLOAT,
        "position_embedding_type": _STR,
        "is_decoder": _BOOL,
        "add_cross_attention": _BOOL,
        "use_cache": _BOOL,
        "cross_attention_hidden_size": _INT,
    }


class RobertaConfig(BertConfig):
    model_type = "roberta"
    defaults = {**BertConfig.defaults, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}


class XLMRobertaConfig(RobertaConfig):
    """XLM-RoBERTa: RoBERTa's fields, defaults and math under its own ``model_type``."""

    model_type = "xlm-roberta"


class CamembertConfig(RobertaConfig):
    """CamemBERT: RoBERTa's fields, defaults and math under its own ``model_type``."""

    model_type = "camembert"


class BertGenerationConfig(PretrainedConfig):
    """BertGeneration (Rothe et al.): BERT layers without token-type embeddings or pooler;
    the decoder's LM head is a single output projection ``lm_head.decoder`` plus bias."""

    model_type = "bert-generation"
    defaults = {
        "vocab_size": 50358,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "position_embedding_type": "absolute",
    }
    types = {k: v for k, v in BertConfig.types.items() if k != "type_vocab_size"}


class ElectraConfig(BertConfig):
    model_type = "electra"
    defaults = {
        **BertConfig.defaults,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "embedding_size": 128,
        "summary_type": "first",
        "summary_use_proj": True,
        "summary_activation": "gelu",
        "summary_last_dropout": 0.1,
    }
    types = {**BertConfig.types, "embedding_size": _INT}


class GPT2Config(PretrainedConfig):
    model_type = "gpt2"
    defaults = {
        "vocab_size": 50257,
        "n_positions": 1024,
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "attn_pdrop": 0.1,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "summary_activation": None,
        "summary_proj_to_labels": True,
        "summary_first_dropout": 0.1,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
    }
    types = {
        "vocab_size": _INT,
        "n_positions": _INT,
        "n_embd": _INT,
        "n_layer": _INT,
        "n_head": _INT,
        "n_inner": _INT,
        "activation_function": _STR,
        "resid_pdrop": _FLOAT,
        "embd_pdrop": _FLOAT,
        "attn_pdrop": _FLOAT,
        "layer_norm_epsilon": _FLOAT,
        "initializer_range": _FLOAT,
        "scale_attn_weights": _BOOL,
        "scale_attn_by_inverse_layer_idx": _BOOL,
        "reorder_and_upcast_attn": _BOOL,
        "is_decoder": _BOOL,
        "add_cross_attention": _BOOL,
        "use_cache": _BOOL,
        "cross_attention_hidden_size": _INT,
    }

    # HF's attribute_map: generic names used by the composite model.
    @property
    def hidden_size(self) -> int:
        return self.n_embd

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer

    @property
    def num_attention_heads(self) -> int:
        return self.n_head

    @property
    def max_position_embeddings(self) -> int:
        return self.n_positions


class BartConfig(PretrainedConfig):
    model_type = "bart"
    defaults = {
        "vocab_size": 50265,
        "max_position_embeddings": 1024,
        "encoder_layers": 12,
        "encoder_ffn_dim": 4096,
        "encoder_attention_heads": 16,
        "decoder_layers": 12,
        "decoder_ffn_dim": 4096,
        "decoder_attention_heads": 16,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "activation_function": "gelu",
        "d_model": 1024,
        "dropout": 0.1,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "init_std": 0.02,
        "classifier_dropout": 0.0,
        "scale_embedding": False,
        "num_labels": 3,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "is_encoder_decoder": True,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": 2,
    }
    types = {
        "vocab_size": _INT,
        "max_position_embeddings": _INT,
        "decoder_layers": _INT,
        "decoder_ffn_dim": _INT,
        "decoder_attention_heads": _INT,
        "activation_function": _STR,
        "d_model": _INT,
        "dropout": _FLOAT,
        "attention_dropout": _FLOAT,
        "activation_dropout": _FLOAT,
        "init_std": _FLOAT,
        "scale_embedding": _BOOL,
        "is_decoder": _BOOL,
        "add_cross_attention": _BOOL,
        "use_cache": _BOOL,
        "cross_attention_hidden_size": _INT,
    }

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_hidden_layers(self) -> int:
        return self.decoder_layers if self.is_decoder else self.encoder_layers

    @property
    def num_attention_heads(self) -> int:
        return self.decoder_attention_heads if self.is_decoder else self.encoder_attention_heads

    @property
    def initializer_range(self) -> float:
        return self.init_std


class RemBertConfig(PretrainedConfig):
    """RemBERT: BERT layers over decoupled input embeddings (``input_embedding_size``,
    mapped to ``hidden_size`` by ``encoder.embedding_hidden_mapping_in``) and an LM head
    with its own output embedding (``output_embedding_size``); never tied, as in
    transformers, which forces ``tie_word_embeddings=False``."""

    model_type = "rembert"
    defaults = {
        "vocab_size": 250300,
        "hidden_size": 1152,
        "num_hidden_layers": 32,
        "num_attention_heads": 18,
        "input_embedding_size": 256,
        "output_embedding_size": 1664,
        "intermediate_size": 4608,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "classifier_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "bos_token_id": 312,
        "eos_token_id": 313,
        "tie_word_embeddings": False,
    }
    types = {**BertConfig.types, "input_embedding_size": _INT, "output_embedding_size": _INT,
             "classifier_dropout_prob": _FLOAT}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tie_word_embeddings = False  # transformers' RemBertConfig overrides any value


class ProphetNetConfig(PretrainedConfig):
    """ProphetNet (transformers' field names and defaults).  encdec implements its decoder
    (``ProphetNetForCausalLM``): a main stream plus ``ngram`` predict streams with
    ``num_buckets`` relative-position buckets up to ``relative_max_distance``."""

    model_type = "prophetnet"
    defaults = {
        "activation_dropout": 0.1,
        "activation_function": "gelu",
        "vocab_size": 30522,
        "hidden_size": 1024,
        "encoder_ffn_dim": 4096,
        "num_encoder_layers": 12,
        "num_encoder_attention_heads": 16,
        "decoder_ffn_dim": 4096,
        "num_decoder_layers": 12,
        "num_decoder_attention_heads": 16,
        "attention_dropout": 0.1,
        "dropout": 0.1,
        "max_position_embeddings": 512,
        "init_std": 0.02,
        "is_encoder_decoder": True,
        "add_cross_attention": True,
        "decoder_start_token_id": 0,
        "ngram": 2,
        "num_buckets": 32,
        "relative_max_distance": 128,
        "disable_ngram_loss": False,
        "eps": 0.0,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    types = {
        "activation_dropout": _FLOAT,
        "activation_function": _STR,
        "vocab_size": _INT,
        "hidden_size": _INT,
        "encoder_ffn_dim": _INT,
        "num_encoder_layers": _INT,
        "num_encoder_attention_heads": _INT,
        "decoder_ffn_dim": _INT,
        "num_decoder_layers": _INT,
        "num_decoder_attention_heads": _INT,
        "attention_dropout": _FLOAT,
        "dropout": _FLOAT,
        "max_position_embeddings": _INT,
        "init_std": _FLOAT,
        "ngram": _INT,
        "num_buckets": _INT,
        "relative_max_distance": _INT,
        "disable_ngram_loss": _BOOL,
        "eps": _FLOAT,
        "is_decoder": _BOOL,
        "add_cross_attention": _BOOL,
        "use_cache": _BOOL,
        "cross_attention_hidden_size": _INT,
    }

    @property
    def num_hidden_layers(self) -> int:
        return self.num_decoder_layers if self.is_decoder else self.num_encoder_layers

    @property
    def num_attention_heads(self) -> int:
        return self.num_decoder_attention_heads if self.is_decoder else self.num_encoder_attention_heads

    @property
    def initializer_range(self) -> float:
        return self.init_std


class EncoderDecoderConfig(PretrainedConfig):
    """Composite config holding full ``encoder`` and ``decoder`` sub-configs."""

    model_type = "encoder-decoder"
    defaults = {"is_encoder_decoder": True, "tie_encoder_decoder": False}

    def __init__(self, **kwargs: Any) -> None:
        if "encoder" not in kwargs or "decoder" not in kwargs:
            raise ValueError(
                "EncoderDecoderConfig needs both `encoder` and `decoder` sub-configs; "
                "use EncoderDecoderConfig.from_encoder_decoder_configs(encoder_config, decoder_config)"
            )
        encoder = kwargs.pop("encoder")
        decoder = kwargs.pop("decoder")
        super().__init__(**kwargs)
        self.is_encoder_decoder = True
        self.encoder = _as_config(encoder, "encoder")
        self.decoder = _as_config(decoder, "decoder")
        if getattr(self, "vocab_size", None) is None:
            self.vocab_size = self.decoder.vocab_size

    @classmethod
    def from_encoder_decoder_configs(
        cls, encoder_config: PretrainedConfig, decoder_config: PretrainedConfig, **kwargs: Any
    ) -> "EncoderDecoderConfig":
        """Combine two part configs (ours or transformers'); the decoder is switched to causal +
        cross-attention."""
        encoder_config = as_config(encoder_config, "encoder_config")
        decoder_config = as_config(decoder_config, "decoder_config")
        decoder_config.is_decoder = True
        decoder_config.add_cross_attention = True
        return cls(encoder=encoder_config, decoder=decoder_config, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["encoder"] = self.encoder.to_dict()
        out["decoder"] = self.decoder.to_dict()
        return out


def _as_config(value: Any, role: str) -> PretrainedConfig:
    return as_config(value, f"EncoderDecoderConfig `{role}`")


CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    c.model_type: c
    for c in (BertConfig, RobertaConfig, ElectraConfig, GPT2Config, BartConfig, EncoderDecoderConfig)
}
CONFIG_CLASSES.update({c.model_type: c for c in (ProphetNetConfig, RemBertConfig)})
CONFIG_CLASSES.update({c.model_type: c for c in (XLMRobertaConfig, CamembertConfig, BertGenerationConfig)})


def config_class_for(model_type: Any, where: str = "config") -> type[PretrainedConfig]:
    """The config class registered for ``model_type``; a clear error lists the supported ones."""
    try:
        return CONFIG_CLASSES[model_type]
    except (KeyError, TypeError):
        supported = ", ".join(sorted(CONFIG_CLASSES))
        raise ValueError(
            f"unknown model_type {model_type!r} in {where}; supported model types: {supported}"
        ) from None


class AutoConfig:
    """Pick the config class from ``model_type`` (``config.json`` or a name)."""

    @staticmethod
    def for_model(model_type: str, **kwargs: Any) -> PretrainedConfig:
        return config_class_for(model_type)(**kwargs)

    @staticmethod
    def from_dict(config_dict: dict[str, Any], **overrides: Any) -> PretrainedConfig:
        return config_class_for(config_dict.get("model_type")).from_dict(config_dict, **overrides)

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> PretrainedConfig:
        return PretrainedConfig.from_pretrained.__func__(AutoConfig, name_or_path, **kwargs)  # type: ignore[attr-defined]

"""Parameter specs: the one description of every architecture's weights.

A spec lists each parameter under its canonical name (the Hugging Face PyTorch
state-dict name), its shape in PyTorch layout, and its *kind*.  Backends declare once
how they lay out each kind (see :mod:`encdec.layout`); converters, checkpoint I/O and
the portable init are generic routines driven by the spec.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

#: PyTorch ``nn.Linear`` weight, stored [out, in].
LINEAR = "linear"
#: GPT-2 ``Conv1D`` weight, stored [in, out].
CONV1D = "conv1d"
#: Embedding table [num, dim].
EMBEDDING = "embedding"
#: LayerNorm weight (gamma / scale).
NORM_SCALE = "norm_scale"
#: LayerNorm bias (beta).
NORM_BIAS = "norm_bias"
#: Any other bias vector.
BIAS = "bias"

KINDS = (LINEAR, CONV1D, EMBEDDING, NORM_SCALE, NORM_BIAS, BIAS)


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    kind: str


@dataclass
class ModelSpec:
    """Ordered parameters plus ties ``{tied name: source name}``.

    Tied names are listed in ``params`` too (they appear in HF state dicts), but a
    checkpoint only needs the source; loaders fill a missing tied name from it.
    """

    params: dict[str, ParamSpec] = field(default_factory=dict)
    ties: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, shape: tuple[int, ...], kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown parameter kind {kind!r} for {name}")
        self.params[name] = ParamSpec(name, tuple(int(s) for s in shape), kind)

    def linear(self, prefix: str, n_in: int, n_out: int, bias: bool = True) -> None:
        self.add(f"{prefix}.weight", (n_out, n_in), LINEAR)
        if bias:
            self.add(f"{prefix}.bias", (n_out,), BIAS)

    def conv1d(self, prefix: str, n_in: int, n_out: int) -> None:
        self.add(f"{prefix}.weight", (n_in, n_out), CONV1D)
        self.add(f"{prefix}.bias", (n_out,), BIAS)

    def norm(self, prefix: str, dim: int) -> None:
        self.add(f"{prefix}.weight", (dim,), NORM_SCALE)
        self.add(f"{prefix}.bias", (dim,), NORM_BIAS)

    def embedding(self, name: str, num: int, dim: int) -> None:
        self.add(f"{name}.weight", (num, dim), EMBEDDING)

    def tie(self, tied: str, source: str) -> None:
        if tied not in self.params or source not in self.params:
            raise KeyError(f"tie {tied} -> {source}: both names must be in the spec")
        root = self.ties.get(source, source)
        self.ties[tied] = root
        for name, src in self.ties.items():
            if src == tied:
                self.ties[name] = root

    def extend(self, other: "ModelSpec", prefix: str) -> None:
        """Add every parameter and tie of ``other`` under ``prefix.``."""
        for p in other.params.values():
            self.params[f"{prefix}.{p.name}"] = ParamSpec(f"{prefix}.{p.name}", p.shape, p.kind)
        for tied, source in other.ties.items():
            self.ties[f"{prefix}.{tied}"] = f"{prefix}.{source}"

    def __iter__(self) -> Iterator[ParamSpec]:
        return iter(self.params.values())

    def __len__(self) -> int:
        return len(self.params)

    def __contains__(self, name: object) -> bool:
        return name in self.params

    def __getitem__(self, name: str) -> ParamSpec:
        return self.params[name]

    @property
    def untied(self) -> list[ParamSpec]:
        """Parameters a checkpoint must hold (tie targets left out)."""
        return [p for p in self.params.values() if p.name not in self.ties]

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameters counted once (tie targets left out); ``exclude_embeddings`` leaves out
        embedding tables, as transformers' ``num_parameters(exclude_embeddings=True)``."""
        total = 0
        for p in self.untied:
            if exclude_embeddings and p.kind == EMBEDDING:
                continue
            n = 1
            for s in p.shape:
                n *= s
            total += n
        return total


SpecBuilder = Callable[..., ModelSpec]

#: model_type -> builder of the encoder spec (base model, no head).
ENCODER_SPECS: dict[str, SpecBuilder] = {}
#: model_type -> builder of the decoder spec (causal LM, cross-attention).
DECODER_SPECS: dict[str, SpecBuilder] = {}


def _lookup(table: dict[str, SpecBuilder], model_type: str, role: str) -> SpecBuilder:
    from encdec.registry import ALIASES, family

    try:
        return table[family(model_type)]
    except (KeyError, TypeError):
        supported = ", ".join(sorted({*table, *(a for a, f in ALIASES.items() if f in table)}))
        raise ValueError(
            f"model_type {model_type!r} is not supported as {role}; supported: {supported}"
        ) from None


def encoder_spec(config) -> ModelSpec:
    """Spec of the base encoder model for ``config`` (names as in HF ``AutoModel``)."""
    return _lookup(ENCODER_SPECS, config.model_type, "an encoder")(config)


def decoder_spec(config) -> ModelSpec:
    """Spec of the causal-LM decoder for ``config`` (names as in HF ``AutoModelForCausalLM``)."""
    return _lookup(DECODER_SPECS, config.model_type, "a decoder")(config)


def check_cross_width(config) -> None:
    """Refuse ``cross_attention_hidden_size`` for decoders whose cross-attention (as in
    transformers) reads ``hidden_size``-wide states; the composite model projects instead."""
    cross = getattr(config, "cross_attention_hidden_size", None)
    if cross not in (None, config.hidden_size):
        raise NotImplementedError(
            f"{config.model_type}: cross_attention_hidden_size={cross} is not supported; its cross-attention reads "
            f"hidden_size ({config.hidden_size}) wide states (leave it None: the composite model projects)"
        )


def needs_projection(config) -> bool:
    """True when the composite model needs ``enc_to_dec_proj`` (HF's rule)."""
    return (
        config.encoder.hidden_size != config.decoder.hidden_size
        and getattr(config.decoder, "cross_attention_hidden_size", None) is None
    )


def encoder_decoder_spec(config) -> ModelSpec:
    """Spec of the composite ``EncoderDecoderModel``: ``encoder.*``, ``decoder.*`` and
    the optional ``enc_to_dec_proj``; ``tie_encoder_decoder`` ties the decoder's base
    model to the encoder wherever names and shapes agree (cross-attention excluded)."""
    spec = ModelSpec()
    enc = encoder_spec(config.encoder)
    dec = decoder_spec(config.decoder)
    spec.extend(enc, "encoder")
    spec.extend(dec, "decoder")
    if needs_projection(config):
        spec.linear("enc_to_dec_proj", config.encoder.hidden_size, config.decoder.hidden_size)
    if getattr(config, "tie_encoder_decoder", False):
        for tied, source in encoder_decoder_ties(config, enc, dec).items():
            spec.tie(tied, source)
    return spec


def encoder_decoder_ties(config, enc: ModelSpec, dec: ModelSpec) -> dict[str, str]:
    """``decoder.<base prefix>.X`` -> ``encoder.X`` for every shared weight."""
    prefix = base_prefix(config.decoder.model_type)
    if prefix is None or config.encoder.model_type != config.decoder.model_type:
        raise ValueError(
            "tie_encoder_decoder=True needs encoder and decoder of the same model type "
            f"with a base model; got {config.encoder.model_type} and {config.decoder.model_type}"
        )
    ties = {}
    for p in enc:
        d = f"{prefix}.{p.name}"
        if d in dec.params and dec.params[d].shape == p.shape:
            ties[f"decoder.{d}"] = f"encoder.{p.name}"
    return ties


#: decoder model_type -> attribute holding its base model (HF ``base_model_prefix``).
DECODER_BASE_PREFIX: dict[str, str] = {}

#: model_type -> the longest sequence (cached steps included) its position table serves.
MAX_LENGTHS: dict[str, Callable[..., int]] = {}


def max_sequence_length(config) -> int | None:
    """Longest sequence ``config``'s architecture can embed (``None``: no position table)."""
    from encdec.registry import family

    rule = MAX_LENGTHS.get(family(config.model_type))
    return None if rule is None else int(rule(config))


def base_prefix(model_type: str):
    """``DECODER_BASE_PREFIX`` of ``model_type`` (aliases resolved), or ``None``."""
    from encdec.registry import family

    return DECODER_BASE_PREFIX.get(family(model_type))


def _register() -> None:
    from encdec.specs import bart, bert, gpt2  # noqa: F401  (modules register themselves)
    from encdec.specs import prophetnet, rembert  # noqa: F401


_register()


def keep_decoder_side(weights: dict, spec: "ModelSpec") -> dict:
    """``tie_encoder_decoder`` with weights of two given parts: the shared (encoder) names
    take the decoder's values, the side transformers 4.57 keeps (it points the encoder's
    parameters at the decoder's).  Returns a new dict; other names untouched."""
    out = dict(weights)
    for tied, source in spec.ties.items():
        if tied.startswith("decoder.") and source.startswith("encoder.") and tied in weights:
            out[source] = weights[tied]
    return out

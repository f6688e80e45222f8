"""Randomized differential testing against transformers 4.57 (opt-in; pytest does not collect it).

Each case draws an encoder x decoder pair with random small sizes, activations, position
embedding types, special ids and ties, loads the same random weights into transformers'
``EncoderDecoderModel`` and into an encdec backend, and compares forwards (random padding,
labels with -100, decoder masks, ``encoder_outputs``, ``inputs_embeds``) and ``generate``
(greedy, beam, sampling; processors, lengths, ids, ``generation_config`` objects, score
outputs). Errors must agree too: both raise, or neither. ``--backend tf`` or ``flax``
compares that backend with encdec's PyTorch backend instead (no sampling: the backends'
random number generators differ).

    python -m conformance_tests.fuzz_generate --cases 50 --seed 0
    python -m conformance_tests.fuzz_generate --cases 5 --backend flax

Sampled ids are not compared (only their shapes): the processed distributions are checked
against transformers' by ``test_processed_scores_match_transformers``. The differences
docs/generation.md lists as kept on purpose (exact ties in beam search, transformers bugs
not copied) are left out of the draw or accepted.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import traceback
import warnings
from typing import Any, Callable

import numpy as np

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from encdec.configuration import EncoderDecoderConfig, config_class_for  # noqa: E402
from encdec.init import init_weights  # noqa: E402
from encdec.runner import Runner, to_numpy  # noqa: E402
from encdec.specs import encoder_decoder_spec  # noqa: E402

ENCODERS = ["bert", "roberta", "electra", "xlm-roberta", "camembert", "bert-generation", "rembert"]
DECODERS = ["gpt2", "bert", "roberta", "bart", "prophetnet", "bert-generation", "rembert", "xlm-roberta", "camembert"]
ACTIVATIONS = ["gelu", "relu", "gelu_new", "silu", "tanh", "quick_gelu", "gelu_fast", "mish", "gelu_10", "relu6",
               "leaky_relu"]
WARPERS = dict(top_k=[0, 1, 5, 20], top_p=[0.5, 0.9, 1.0], typical_p=[0.5, 0.9], epsilon_cutoff=[0.01, 0.05],
               eta_cutoff=[0.01, 0.1], min_p=[0.05, 0.2], temperature=[0.5, 1.0, 1.5])


def part_kwargs(r: random.Random, model_type: str, hidden: int, vocab: int) -> dict[str, Any]:
    """Random small config kwargs of one part (dropout may be on: models run in eval mode)."""
    heads = r.choice([h for h in (1, 2, 4) if hidden % h == 0])
    layers, ffn, act, drop = r.choice([1, 2]), r.choice([8, 16, 37]), r.choice(ACTIVATIONS), r.choice([0.0, 0.1])
    eps = r.choice([1e-12, 1e-5, 1e-3])
    if model_type == "gpt2":
        return dict(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=64,
                    n_inner=r.choice([None, ffn]), resid_pdrop=drop, embd_pdrop=drop, attn_pdrop=drop,
                    activation_function=act, layer_norm_epsilon=eps, scale_attn_weights=r.random() < 0.5,
                    scale_attn_by_inverse_layer_idx=r.random() < 0.5, reorder_and_upcast_attn=r.random() < 0.5)
    # BART / ProphetNet: as many encoder as decoder layers (transformers sizes the decoder's
    # cache by the encoder's count; docs/generation.md)
    if model_type == "bart":
        return dict(vocab_size=vocab, d_model=hidden, decoder_layers=layers, encoder_layers=layers,
                    decoder_attention_heads=heads, encoder_attention_heads=heads, decoder_ffn_dim=ffn,
                    encoder_ffn_dim=ffn, max_position_embeddings=64, dropout=drop, attention_dropout=drop,
                    activation_dropout=drop, activation_function=act, scale_embedding=r.random() < 0.5,
                    pad_token_id=r.choice([0, 1]))
    if model_type == "prophetnet":  # pad 0: transformers' cached step asserts otherwise
        return dict(vocab_size=vocab, hidden_size=hidden, num_decoder_layers=layers, num_encoder_layers=layers,
                    num_decoder_attention_heads=heads, num_encoder_attention_heads=heads, decoder_ffn_dim=ffn,
                    encoder_ffn_dim=ffn, max_position_embeddings=64, ngram=r.choice([1, 2, 3]),
                    num_buckets=r.choice([4, 6, 32]), relative_max_distance=r.choice([20, 128]), dropout=drop,
                    attention_dropout=drop, activation_dropout=drop, activation_function=act, pad_token_id=0)
    kwargs = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn, max_position_embeddings=64, hidden_dropout_prob=drop,
                  attention_probs_dropout_prob=drop, hidden_act=act, layer_norm_eps=eps, pad_token_id=r.choice([0, 1, 2]))
    if model_type == "rembert":
        return dict(kwargs, input_embedding_size=r.choice([8, 16]), output_embedding_size=r.choice([8, 24]))
    if model_type == "electra":
        kwargs["embedding_size"] = r.choice([hidden, 16])
    if model_type != "bert-generation":
        kwargs["type_vocab_size"] = r.choice([1, 2])
    kwargs["position_embedding_type"] = r.choice(["absolute", "absolute", "relative_key", "relative_key_query"])
    return kwargs


def random_config(r: random.Random) -> tuple[EncoderDecoderConfig, str]:
    enc, dec = r.choice(ENCODERS), r.choice(DECODERS)
    dec_hidden = r.choice([16, 32])
    enc_hidden = dec_hidden if r.random() < 0.6 else r.choice([24, 48])  # else enc_to_dec_proj
    enc_vocab = r.choice([50, 99])
    dec_vocab = enc_vocab if r.random() < 0.5 else r.choice([50, 77])
    enc_kwargs = part_kwargs(r, enc, enc_hidden, enc_vocab)
    dec_kwargs = part_kwargs(r, dec, dec_hidden, dec_vocab)
    tied = enc == dec and r.random() < 0.3
    if tied:  # tie_encoder_decoder: the decoder's shared weights have the encoder's shapes
        dec_kwargs = dict(enc_kwargs)
    extra: dict[str, Any] = dict(decoder_start_token_id=r.randrange(dec_vocab), pad_token_id=r.choice([0, 1, r.randrange(dec_vocab)]),
                                 eos_token_id=r.randrange(dec_vocab))
    if r.random() < 0.3:
        extra["tie_word_embeddings"] = r.random() < 0.5
    if tied:
        extra["tie_encoder_decoder"] = True
    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        config_class_for(enc)(**enc_kwargs), config_class_for(dec)(**dec_kwargs), **extra)
    size = f"{enc}({enc_kwargs.get('hidden_size')})2{dec}({dec_hidden})"
    return config, f"{size} {extra}"


def random_inputs(r: random.Random, config: EncoderDecoderConfig, labels: bool) -> dict[str, np.ndarray]:
    """Random lengths, left or right padding per row, labels with -100, a decoder mask."""
    g = np.random.default_rng(r.randrange(1 << 30))
    batch, src, tgt = r.choice([1, 2, 3]), r.randint(1, 10), r.randint(1, 8)
    out = {"input_ids": g.integers(0, config.encoder.vocab_size, (batch, src)).astype(np.int64)}
    mask = np.ones((batch, src), np.int64)
    for row in range(batch):
        pads = r.randint(0, src - 1)
        if pads:  # right or left padding
            mask[row] = np.r_[np.ones(src - pads), np.zeros(pads)] if r.random() < 0.5 else np.r_[np.zeros(pads), np.ones(src - pads)]
    out["attention_mask"] = mask
    target = g.integers(0, config.decoder.vocab_size, (batch, tgt)).astype(np.int64)
    if labels:
        out["labels"] = np.where(g.random(target.shape) < 0.25, -100, target)
    if not labels or r.random() < 0.5:
        out["decoder_input_ids"] = target
        if r.random() < 0.3:
            out["decoder_attention_mask"] = (np.arange(tgt) < r.randint(1, tgt))[None].repeat(batch, 0).astype(np.int64)
    return out


def random_generate_kwargs(r: random.Random, vocab: int, sample: bool = True) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    mode = r.choice(["greedy", "greedy", "beam", "beam"] + (["sample"] if sample else []))
    if r.random() < 0.5:
        kw["max_new_tokens"] = r.randint(1, 8)
    else:
        kw["max_length"] = r.randint(1, 9)
    if mode == "beam":
        kw["num_beams"] = r.choice([2, 3, 4])
        if r.random() < 0.6:
            kw["num_return_sequences"] = r.randint(1, kw["num_beams"] + (r.random() < 0.1))
        if r.random() < 0.5:
            kw["length_penalty"] = r.choice([0.0, 0.5, 1.0, 2.0, -1.0])
        if r.random() < 0.6:
            kw["early_stopping"] = r.choice([True, False, "never"])
    if mode == "sample":
        kw["do_sample"] = True
        if r.random() < 0.3:
            kw["num_return_sequences"] = r.randint(1, 3)
        kw.update({k: r.choice(v) for k, v in WARPERS.items() if r.random() < 0.3})
    token = lambda: r.randrange(vocab)  # noqa: E731
    options: dict[str, Callable[[], Any]] = dict(
        min_length=lambda: r.randint(0, 8), min_new_tokens=lambda: r.randint(0, 6),
        no_repeat_ngram_size=lambda: r.randint(1, 3), encoder_no_repeat_ngram_size=lambda: r.randint(1, 3),
        repetition_penalty=lambda: r.choice([0.8, 1.2, 2.0]), encoder_repetition_penalty=lambda: r.choice([0.8, 1.5]),
        bad_words_ids=lambda: [[token()] for _ in range(r.randint(1, 3))] + [[token(), token()]],
        suppress_tokens=lambda: [token() for _ in range(r.randint(1, 4))],
        begin_suppress_tokens=lambda: [token() for _ in range(r.randint(1, 3))],
        forced_bos_token_id=token, forced_eos_token_id=lambda: r.choice([token(), [token(), token()]]),
        eos_token_id=lambda: r.choice([token(), [token(), token()]]), pad_token_id=token,
        exponential_decay_length_penalty=lambda: (r.randint(0, 3), r.choice([1.1, 2.0])),
        renormalize_logits=lambda: True, remove_invalid_values=lambda: True,
        sequence_bias=lambda: {(token(),): r.choice([-3.0, 5.0]), (token(), token()): 4.0},
        use_cache=lambda: False, decoder_start_token_id=token)
    kw.update({k: make() for k, make in options.items() if r.random() < 0.12})
    if r.random() < 0.4:
        kw.update(return_dict_in_generate=True, output_scores=r.random() < 0.7, output_logits=r.random() < 0.4)
    return kw


def attempt(fn: Callable[[], Any]) -> tuple[Any, Exception | None]:
    """``fn()`` and no error, or None and the error (its innermost frame noted in ``where``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(), None
        except Exception as error:  # every error is a result to compare
            frame = traceback.extract_tb(error.__traceback__)[-1]
            error.where = f"{os.path.basename(frame.filename)}:{frame.lineno}"  # type: ignore[attr-defined]
            return None, error


def compare(a: Any, b: Any, path: str, errors: list[str], atol: float = 1e-4) -> None:
    """Nested outputs equal: ids exactly, floats to ``atol`` with the same inf pattern."""
    if a is None or b is None:
        if (a is None) != (b is None):
            errors.append(f"{path}: only one side is None")
        return
    if isinstance(a, (tuple, list)):
        if not isinstance(b, (tuple, list)) or len(a) != len(b):
            errors.append(f"{path}: {len(a)} items vs {len(b) if isinstance(b, (tuple, list)) else type(b).__name__}")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            compare(x, y, f"{path}[{i}]", errors, atol)
        return
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        errors.append(f"{path}: shape {a.shape} vs {b.shape}")
    elif a.dtype.kind in "iub":
        if not np.array_equal(a, b):
            errors.append(f"{path}: ids differ\n{a}\n{b}")
    elif not np.array_equal(np.isfinite(a), np.isfinite(b)) or not np.array_equal(a[~np.isfinite(a)], b[~np.isfinite(b)],
                                                                                   equal_nan=True):
        errors.append(f"{path}: inf/nan pattern differs")
    elif np.isfinite(a).any() and np.abs(a[np.isfinite(a)] - b[np.isfinite(b)]).max() > atol:
        errors.append(f"{path}: max |d| {np.abs(a[np.isfinite(a)] - b[np.isfinite(b)]).max():.2e}")


def tie_free(ref: np.ndarray, ours: np.ndarray, kw: dict[str, Any]) -> np.ndarray:
    """``ours`` where the two differ only by exact ties that docs/generation.md documents:
    beam search among forced eos ids, or eos ids the length decay lifts to the same score."""
    tied: set[int] = set()
    if kw.get("num_beams", 1) > 1 and isinstance(kw.get("forced_eos_token_id"), list):
        tied |= set(kw["forced_eos_token_id"])
    if kw.get("num_beams", 1) > 1 and kw.get("exponential_decay_length_penalty") and isinstance(kw.get("eos_token_id"), list):
        tied |= set(kw["eos_token_id"])
    if ref.shape != ours.shape or not tied:
        return ref
    differ = np.argwhere(ref != ours)
    return ours if all(ref[i, j] in tied and ours[i, j] in tied for i, j in differ) else ref


def _beam_nan(kw: dict[str, Any]) -> bool:
    """Beam search where transformers' length decay meets a -inf eos score (docs/generation.md)."""
    blocks = ("min_length", "min_new_tokens", "forced_eos_token_id", "suppress_tokens", "bad_words_ids")
    return kw.get("num_beams", 1) > 1 and bool(kw.get("exponential_decay_length_penalty")) and any(k in kw for k in blocks)


def forward_case(r: random.Random, config: EncoderDecoderConfig, ref_model: Any, ours: Runner, errors: list[str]) -> None:
    import torch

    inputs = {k: torch.from_numpy(v) for k, v in random_inputs(r, config, labels=r.random() < 0.5).items()}
    flags = dict(output_attentions=r.random() < 0.5, output_hidden_states=r.random() < 0.5)
    with torch.no_grad():
        if r.random() < 0.2:
            inputs["encoder_outputs"] = (ref_model.encoder(input_ids=inputs["input_ids"],
                                                           attention_mask=inputs["attention_mask"])[0],)
        elif r.random() < 0.2:
            inputs["inputs_embeds"] = ref_model.encoder.get_input_embeddings()(inputs.pop("input_ids"))
        if r.random() < 0.2 and "decoder_input_ids" in inputs:
            inputs["decoder_inputs_embeds"] = ref_model.decoder.get_input_embeddings()(inputs.pop("decoder_input_ids"))
    tag = f"forward {sorted(inputs)} {flags}"
    ref, ref_error = attempt(lambda: ref_model(**inputs, **flags))
    got, error = attempt(lambda: ours.forward(**inputs, **flags))
    if (ref_error is None) != (error is None):
        errors.append(f"{tag}: transformers {ref_error!r} vs encdec {error!r} {getattr(error, 'where', '')}")
    elif ref_error is None:
        for name, value in ref.items():
            if name != "past_key_values":
                compare(to_numpy(value), got.get(name), f"{tag} {name}", errors)


def generate_case(r: random.Random, config: EncoderDecoderConfig, ref_model: Any, ours: Runner,
                  errors: list[str]) -> str:
    import torch
    import transformers

    from encdec.generation import GenerationConfig

    inputs = random_inputs(r, config, labels=False)
    ids, mask = torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"])
    kw = random_generate_kwargs(r, config.decoder.vocab_size)
    if config.encoder.vocab_size > config.decoder.vocab_size:  # transformers fails there (docs/generation.md)
        kw = {k: v for k, v in kw.items() if not k.startswith("encoder_")}
    as_object = r.random() < 0.25  # settings in a generation_config object, max_new_tokens as a keyword
    seed = r.randrange(1000)

    def run(model: Any, config_class: Any) -> Any:
        call = dict(kw)
        if as_object:
            settings = config_class(**{k: call.pop(k) for k in list(call) if k != "max_new_tokens"})
            for name in ("decoder_start_token_id", "pad_token_id", "eos_token_id", "bos_token_id"):
                if getattr(settings, name) is None:
                    setattr(settings, name, getattr(model.generation_config, name))
            call["generation_config"] = settings
        torch.manual_seed(seed)
        with torch.no_grad():
            return model.generate(ids, attention_mask=mask, **call)

    ref, ref_error = attempt(lambda: run(ref_model, transformers.GenerationConfig))
    got, error = attempt(lambda: run(ours.model, GenerationConfig))
    tag = f"generate object={as_object} {kw} input_ids {tuple(ids.shape)} attention_mask {mask.tolist()}"
    if (ref_error is None) != (error is None):
        errors.append(f"{tag}: transformers {ref_error!r} vs encdec {error!r} {getattr(error, 'where', '')}")
        return "error differs"
    if ref_error is not None:
        return "both refuse"
    ref_ids, our_ids = (to_numpy(getattr(x, "sequences", x)) for x in (ref, got))
    if kw.get("do_sample"):
        compare(ref_ids.shape, our_ids.shape, f"{tag} sampled shape", errors)
        return "sampled"
    if _beam_nan(kw):
        return "not compared"
    compare(tie_free(ref_ids, our_ids, kw), our_ids, f"{tag} sequences", errors)
    if hasattr(ref, "sequences") and ref_ids.shape == our_ids.shape and np.array_equal(ref_ids, our_ids):
        for name in ("scores", "logits", "sequences_scores", "beam_indices"):
            compare(to_numpy(getattr(ref, name, None)), to_numpy(getattr(got, name, None)), f"{tag} {name}", errors)
    return "compared"


def backend_case(r: random.Random, config: EncoderDecoderConfig, torch_runner: Runner, other: Runner,
                 errors: list[str]) -> str:
    """encdec's PyTorch backend against ``other`` on one forward and one generate call."""
    inputs = random_inputs(r, config, labels=r.random() < 0.5)
    ref, ref_error = attempt(lambda: torch_runner.forward(**inputs))
    got, error = attempt(lambda: other.forward(**inputs))
    if (ref_error is None) != (error is None):
        errors.append(f"forward {sorted(inputs)}: torch {ref_error!r} vs {other.backend} {error!r}")
    elif ref_error is None:
        for name, value in ref.items():
            compare(value, got.get(name), f"forward {sorted(inputs)} {name}", errors)
    kw = random_generate_kwargs(r, config.decoder.vocab_size, sample=False)
    source = random_inputs(r, config, labels=False)
    ref, ref_error = attempt(lambda: torch_runner.generate(source["input_ids"], source["attention_mask"], **kw))
    got, error = attempt(lambda: other.generate(source["input_ids"], source["attention_mask"], **kw))
    tag = f"generate {kw} input_ids {source['input_ids'].shape}"
    if (ref_error is None) != (error is None):
        errors.append(f"{tag}: torch {ref_error!r} vs {other.backend} {error!r} {getattr(error, 'where', '')}")
        return "error differs"
    if ref_error is None:
        compare(ref, got, tag, errors)
        return "compared"
    return "both refuse"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20, help="random configs (each: 2 forwards, 4 generate calls)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="torch", choices=["torch", "tf", "flax"],
                        help="torch: against transformers; tf/flax: against encdec's PyTorch backend")
    args = parser.parse_args(argv)
    import transformers

    from conformance_tests import oracle

    transformers.logging.set_verbosity_error()  # its padding hints, once per call

    counts: dict[str, int] = {}
    failed = 0
    for case in range(args.cases):
        r = random.Random(args.seed * 100_003 + case)
        config, description = random_config(r)
        weights, error = attempt(lambda: init_weights(encoder_decoder_spec(config), seed=r.randrange(1000), randomize_all=True))
        if error is not None:  # encdec refuses the config by name (e.g. undefined ProphetNet buckets)
            print(f"[{case}] {description}: refused: {error}")
            continue
        errors: list[str] = []
        torch_runner = Runner.from_weights("torch", config, weights)
        if args.backend == "torch":
            ref_model = oracle.torch_model(config, weights)
            for _ in range(2):
                forward_case(r, config, ref_model, torch_runner, errors)
            outcomes = [generate_case(r, config, ref_model, torch_runner, errors) for _ in range(4)]
        else:
            outcomes = [backend_case(r, config, torch_runner, Runner.from_weights(args.backend, config, weights), errors)]
        for outcome in outcomes:
            counts[outcome] = counts.get(outcome, 0) + 1
        if errors:
            failed += 1
            print(f"[{case}] {description}")
            for line in errors:
                print("   ", line[:2000])
        sys.stdout.flush()
    print(f"{args.cases} cases, {failed} with mismatches; generate calls: {counts}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Hub resolution: local folders and a fake huggingface_hub cache; nothing downloads."""
import numpy as np
import pytest

from encdec.hub import HUB_KWARGS, resolve_file, resolve_first, split_hub_kwargs
from encdec.pretrained import load_pretrained, save_pretrained

from .iohelpers import assert_same_weights, fake_hub_cache, tiny_model

REPO = "tiny-org/bert2gpt2"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def saved(tmp_path):
    config, weights, _ = tiny_model()
    folder = tmp_path / "model"
    save_pretrained(folder, config, weights, max_shard_size=40_000)
    return folder, weights


def test_hub_kwargs_tuple():
    assert isinstance(HUB_KWARGS, tuple)
    kwargs = {"revision": "main", "cache_dir": "/x", "decoder_start_token_id": 3}
    assert split_hub_kwargs(kwargs) == {"revision": "main", "cache_dir": "/x"}
    assert kwargs == {"decoder_start_token_id": 3}


def test_local_folder(saved):
    folder, _ = saved
    assert resolve_file(folder, "config.json") == str(folder / "config.json")
    with pytest.raises(FileNotFoundError, match=r"local folder .*model.* has no file 'tf_model.h5'"):
        resolve_file(folder, "tf_model.h5")
    with pytest.raises(FileNotFoundError, match="subdir.*config.json"):
        resolve_file(folder, "config.json", subfolder="subdir")


def test_resolve_first_priority(saved):
    folder, _ = saved
    name, path = resolve_first(folder, ["model.safetensors", "model.safetensors.index.json", "config.json"])
    assert name == "model.safetensors.index.json" and path.endswith(name)
    with pytest.raises(FileNotFoundError, match="none of a.bin, b.bin"):
        resolve_first(folder, ["a.bin", "b.bin"])


def test_fake_cache_local_files_only(saved, tmp_path, monkeypatch):
    folder, weights = saved
    monkeypatch.delenv("HF_HUB_OFFLINE")  # local_files_only alone must keep it offline
    cache = tmp_path / "cache"
    commit = fake_hub_cache(cache, REPO, folder)
    path = resolve_file(REPO, "config.json", cache_dir=cache, local_files_only=True)
    assert path.endswith(f"snapshots/{commit}/config.json")
    assert open(path).read() == (folder / "config.json").read_text()
    assert resolve_file(REPO, "config.json", cache_dir=cache, local_files_only=True, revision=commit) == path
    config, loaded, gen, unused = load_pretrained(REPO, cache_dir=cache, local_files_only=True)
    assert_same_weights(weights, loaded)
    assert gen is None and unused == {}


def test_fake_cache_offline_env(saved, tmp_path):
    folder, weights = saved
    cache = tmp_path / "cache"
    fake_hub_cache(cache, REPO, folder)
    _, loaded, _, _ = load_pretrained(REPO, cache_dir=str(cache))
    np.testing.assert_array_equal(loaded["decoder.lm_head.weight"], weights["decoder.transformer.wte.weight"])


def test_fake_cache_errors_name_repo_and_file(saved, tmp_path):
    folder, _ = saved
    cache = tmp_path / "cache"
    fake_hub_cache(cache, REPO, folder)
    with pytest.raises(FileNotFoundError, match=r"'tf_model.h5' of Hub repo 'tiny-org/bert2gpt2'.*offline"):
        resolve_file(REPO, "tf_model.h5", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match=r"'config.json' of Hub repo 'tiny-org/other'"):
        resolve_file("tiny-org/other", "config.json", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a valid Hub repo id"):
        resolve_file(str(tmp_path / "no" / "such" / "dir"), "config.json", cache_dir=cache)


def test_missing_shard_in_cache(saved, tmp_path):
    folder, _ = saved
    (folder / "model-00002-of-00008.safetensors").unlink()
    cache = tmp_path / "cache"
    fake_hub_cache(cache, REPO, folder)
    with pytest.raises(FileNotFoundError, match=r"shard 'model-00002-of-00008.safetensors' listed in .*model.safetensors.index.json"):
        load_pretrained(REPO, cache_dir=cache)


def test_list_files_and_checkpoint_formats(saved, tmp_path):
    from encdec.checkpoint import WEIGHT_FILES
    from encdec.hub import list_files
    from encdec.pretrained import checkpoint_formats

    folder, _ = saved
    assert list_files(folder, ["config.json", "tf_model.h5"]) == ["config.json"]
    cache = tmp_path / "cache"
    fake_hub_cache(cache, REPO, folder)
    assert list_files(REPO, WEIGHT_FILES, cache_dir=cache) == ["model.safetensors.index.json"]
    assert checkpoint_formats(REPO, cache_dir=cache) == ["safetensors"]
    assert checkpoint_formats(folder) == ["safetensors"]


def test_list_files_online_uses_repo_listing(monkeypatch):
    import huggingface_hub

    from encdec.hub import list_files

    monkeypatch.delenv("HF_HUB_OFFLINE")
    seen = {}

    def fake_list(repo_id, revision=None, token=None):
        seen.update(repo_id=repo_id, revision=revision)
        return ["sub/config.json", "sub/tf_model.h5", "model.safetensors"]

    monkeypatch.setattr(huggingface_hub, "list_repo_files", fake_list)
    assert list_files(REPO, ["model.safetensors", "tf_model.h5", "config.json"], subfolder="sub", revision="v1") == ["tf_model.h5", "config.json"]
    assert seen == {"repo_id": REPO, "revision": "v1"}

    def broken(*args, **kwargs):
        raise RuntimeError("network down")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", broken)
    with pytest.raises(OSError, match="could not list the files of Hub repo 'tiny-org/bert2gpt2': network down"):
        list_files(REPO, ["config.json"])
    with pytest.raises(TypeError, match="unknown keyword"):
        list_files(REPO, ["config.json"], revison="v1")

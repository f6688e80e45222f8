"""Resolve ``name_or_path`` (a local folder or a Hugging Face Hub repo id) to local files.

Hub files go through ``huggingface_hub.hf_hub_download`` and its cache, so ``revision``,
``cache_dir``, ``local_files_only``, ``token`` and offline mode (``HF_HUB_OFFLINE=1``,
read on every call) behave as in transformers.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

#: Keyword arguments that steer resolution (everything else belongs to the caller).
HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "subfolder")

_TRUE = {"1", "ON", "YES", "TRUE"}


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or transformers' ``TRANSFORMERS_OFFLINE``) is set."""
    return any(os.environ.get(v, "").upper() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def split_hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove and return the hub keywords of ``kwargs`` (modified in place)."""
    return {k: kwargs.pop(k) for k in list(kwargs) if k in HUB_KWARGS}


def resolve_file(
    name_or_path: str | os.PathLike,
    filename: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
    subfolder: str | None = None,
) -> str:
    """Local path of ``filename`` in a folder or Hub repo.

    Raises ``FileNotFoundError`` naming the folder / repo and file when the file does
    not exist there (or is not cached while offline), ``OSError`` for other hub failures.
    """
    name = os.fspath(name_or_path)
    if os.path.isfile(name):
        raise NotADirectoryError(f"{name!r} is a file; pass the checkpoint folder that holds it (with config.json)")
    if os.path.isdir(name):
        folder = os.path.join(name, subfolder) if subfolder else name
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"local folder {folder!r} has no file {filename!r}")
        return path

    import huggingface_hub
    from huggingface_hub import errors

    offline = local_files_only or is_offline()
    where = f"{filename!r} of Hub repo {name!r}" + (f" (revision {revision!r})" if revision else "")
    try:
        return huggingface_hub.hf_hub_download(
            repo_id=name,
            filename=filename,
            subfolder=subfolder or None,
            revision=revision,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
            local_files_only=offline,
            token=token,
            force_download=force_download,
        )
    except errors.HFValidationError:
        raise FileNotFoundError(
            f"{name!r} is neither a local folder nor a valid Hub repo id (looking for {filename!r})"
        ) from None
    except errors.LocalEntryNotFoundError:
        mode = "offline mode" if is_offline() else "local_files_only=True"
        raise FileNotFoundError(
            f"cannot find {where} in the local cache"
            + (f" {os.fspath(cache_dir)!r}" if cache_dir is not None else "")
            + f" and {mode} forbids downloading it"
        ) from None
    except errors.EntryNotFoundError:
        raise FileNotFoundError(f"Hub repo {name!r} has no file {filename!r}") from None
    except errors.RevisionNotFoundError:
        raise FileNotFoundError(f"Hub repo {name!r} has no revision {revision!r} (looking for {filename!r})") from None
    except errors.RepositoryNotFoundError:
        raise FileNotFoundError(
            f"Hub repo {name!r} does not exist or needs a token (looking for {filename!r})"
        ) from None
    except OSError as err:
        raise OSError(f"could not fetch {where}: {err}") from err


def resolve_first(name_or_path: str | os.PathLike, filenames: Sequence[str], **hub: Any) -> tuple[str, str]:
    """``(filename, local path)`` of the first of ``filenames`` present, in order.

    A missing file moves on to the next; any other failure (network, auth) is raised.
    """
    tried = []
    for filename in filenames:
        try:
            return filename, resolve_file(name_or_path, filename, **hub)
        except FileNotFoundError as err:
            tried.append(str(err))
    raise FileNotFoundError(
        f"{os.fspath(name_or_path)!r} has none of {', '.join(filenames)}:\n  " + "\n  ".join(tried)
    )



def list_files(name_or_path: str | os.PathLike, filenames: Sequence[str], **hub: Any) -> list[str]:
    """Which of ``filenames`` exist, in the given order, without downloading any:
    a folder listing, the local cache when offline, else the repo's file list.
    ``hub``: the keywords of :func:`resolve_file`."""
    unknown = set(hub) - set(HUB_KWARGS)
    if unknown:
        raise TypeError(f"list_files got unknown keyword arguments {sorted(unknown)}")
    subfolder, revision, cache_dir = hub.get("subfolder"), hub.get("revision"), hub.get("cache_dir")
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        folder = os.path.join(name, subfolder) if subfolder else name
        present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        return [f for f in filenames if f in present]

    import huggingface_hub

    def repo_path(f: str) -> str:
        return f"{subfolder}/{f}" if subfolder else f

    if hub.get("local_files_only") or is_offline():
        cache = os.fspath(cache_dir) if cache_dir is not None else None
        return [
            f for f in filenames
            if isinstance(huggingface_hub.try_to_load_from_cache(name, repo_path(f), cache_dir=cache, revision=revision), str)
        ]
    try:
        present = set(huggingface_hub.list_repo_files(name, revision=revision, token=hub.get("token")))
    except Exception as err:  # hub client errors have no common base besides Exception
        raise OSError(f"could not list the files of Hub repo {name!r}: {err}") from err
    return [f for f in filenames if repo_path(f) in present]


#: Keywords of transformers' ``push_to_hub`` / ``save_pretrained(push_to_hub=True)``.
PUSH_KWARGS = ("repo_id", "commit_message", "private", "token", "create_pr", "revision", "commit_description")


def push_folder(folder: str | os.PathLike, repo_id: str | None = None, **kwargs: Any) -> Any:
    """Upload a saved checkpoint folder with ``huggingface_hub`` (``create_repo`` then
    ``upload_folder``), as transformers' ``push_to_hub`` does; ``repo_id`` defaults to the
    folder's name.  Returns ``upload_folder``'s result."""
    unknown = sorted(set(kwargs) - set(PUSH_KWARGS))
    if unknown:
        raise TypeError(f"push_to_hub got unexpected keyword argument(s): {', '.join(unknown)}; "
                        f"accepted: {', '.join(PUSH_KWARGS)}")
    import huggingface_hub

    repo_id = repo_id or os.path.basename(os.path.normpath(os.fspath(folder)))
    token = kwargs.get("token")
    huggingface_hub.create_repo(repo_id, private=kwargs.get("private"), token=token, exist_ok=True)
    return huggingface_hub.upload_folder(
        repo_id=repo_id, folder_path=os.fspath(folder), token=token,
        commit_message=kwargs.get("commit_message") or "Upload model", commit_description=kwargs.get("commit_description"),
        create_pr=kwargs.get("create_pr", False), revision=kwargs.get("revision"),
    )


def push_model(model: Any, repo_id: str, **kwargs: Any) -> Any:
    """transformers' ``model.push_to_hub(repo_id, ...)``: save into a temporary folder with the
    model's own ``save_pretrained`` (``safe_serialization`` / ``max_shard_size`` passed on),
    then :func:`push_folder`."""
    import tempfile

    save_kwargs = {k: kwargs.pop(k) for k in ("safe_serialization", "max_shard_size") if k in kwargs}
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, **save_kwargs)
        return push_folder(tmp, repo_id=repo_id, **kwargs)


class HubModelMixin:
    """transformers' ``PreTrainedModel`` conveniences that need nothing from a framework,
    shared by every backend's composite and part classes (which carry ``config``)."""

    @property
    def name_or_path(self) -> str:
        return getattr(self.config, "name_or_path", "")

    @classmethod
    def can_generate(cls) -> bool:
        return hasattr(cls, "generate")

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Save and upload with ``huggingface_hub`` (see :func:`push_model`)."""
        return push_model(self, repo_id, **kwargs)

"""Publishing on the Hugging Face Hub: check a converted model or probe folder, then upload it in one commit.

A publishable folder (a "Hub folder") holds everything `AutoModel.from_pretrained(repo, trust_remote_code=True)`
needs and a card:

* `config.json` with a hf-jukebox-mir `model_type` and an `auto_map` naming the module files of the classes;
* safetensors weights: `model.safetensors`, or `model.safetensors.index.json` and every shard it references;
* the module files named by `auto_map` (and `custom_pipelines`, and `preprocessor_config.json`'s `auto_map`),
  plus every module they import with `from .module import name`, transitively;
* for MIR extraction folders (`model_type` `jukebox_mir`): `preprocessor_config.json` and a `feature-extraction`
  entry in `custom_pipelines`;
* for sampling chains (`model_type` `jukebox_mir_chain`): the four sub-configs (`vqvae_config`,
  `prior_level_{0,1,2}_config`, each prior of its own level) and weights for each of the four parts (a part
  missing from the weights would be silently left randomly initialised by `from_pretrained`);
* for converted folders (VQ-VAE, priors, MIR, chains): `conversion_audit.json` (provenance shown on the card);
* `README.md` whose YAML front matter passes :func:`hf_jukebox_mir.publishing.cards.validate_card_metadata`.

:func:`validate_hub_folder` lists every problem; :func:`push_folder` refuses to upload while there is one, then
creates the repo (`exist_ok=True`) and uploads exactly :func:`hub_files` in a single commit.
"""

from __future__ import annotations

import ast
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..conversion.audit import ConversionAudit
from ..models.errors import JukeboxCheckpointError, JukeboxInputError
from .cards import (
    CHAIN_PARTS,
    CONVERTED_KINDS,
    MODEL_TYPE_TO_KIND,
    REPO_ID_RE,
    inspect_weights,
    read_json_file,
    read_safetensors_header,
    validate_card_metadata,
)

logger = logging.getLogger(__name__)

# Files uploaded when present, besides the weights and the module files (both derived from the folder's JSON)
HUB_METADATA_FILES = (
    "README.md",
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "conversion_audit.json",
    "LICENSE",
)
_TRUTHY = {"1", "on", "yes", "true"}


class JukeboxHubConnectionError(JukeboxInputError, ConnectionError):
    """The Hub cannot be reached (offline mode or no connection); a `ValueError` and a `ConnectionError`."""


# ---------------------------------------------------------------------------------------------------------------
# Folder checks
# ---------------------------------------------------------------------------------------------------------------


def _module_file(reference: Any) -> str | None:
    """`"modeling_x.JukeboxModel"` -> `"modeling_x.py"`; None for code in another repo (`"repo--mod.Cls"`)."""
    if not isinstance(reference, str) or "." not in reference or "--" in reference:
        return None
    return reference.rsplit(".", 1)[0] + ".py"


def _auto_map_modules(auto_map: Any) -> list[str]:
    if not isinstance(auto_map, dict):
        return []
    modules = []
    for value in auto_map.values():
        for reference in value if isinstance(value, (list, tuple)) else [value]:
            module = _module_file(reference)
            if module:
                modules.append(module)
    return modules


def _inside_try(tree: ast.AST) -> set[int]:
    """ids of import nodes nested in a `try:` body (transformers' `check_imports` skips those too)."""
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            for child in node.body:
                for sub in ast.walk(child):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        nested.add(id(sub))
    return nested


def _module_closure(folder: Path, roots: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Module files reachable from `roots` (`(file, who needs it)`) through `from .x import y`, and the problems."""
    seen: list[str] = []
    problems: list[str] = []
    queue = list(roots)
    while queue:
        name, needed_by = queue.pop(0)
        if name in seen:
            continue
        seen.append(name)
        path = folder / name
        if not path.is_file():
            problems.append(
                f"module file {name} is missing ({needed_by} needs it). Save the model with save_pretrained after "
                "register_for_auto_class so the code is copied beside the weights."
            )
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=name)
        except (SyntaxError, UnicodeDecodeError) as err:
            problems.append(f"module file {name} does not parse: {err}")
            continue
        in_try = _inside_try(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                if node.level > 1 or not node.module or "." in node.module:
                    what = "from " + "." * node.level + (node.module or "") + " import ..."
                    problems.append(
                        f"{name}: `{what}` cannot be loaded with trust_remote_code; only flat `from .module import "
                        "name` imports between files of the folder work."
                    )
                else:
                    queue.append((node.module + ".py", name))
            elif id(node) not in in_try and isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n == "hf_jukebox_mir" or n.startswith("hf_jukebox_mir.") for n in names):
                    problems.append(
                        f"{name} imports hf_jukebox_mir, which Hub users loading with trust_remote_code may not have;"
                        " use relative `from .module import name` imports."
                    )
    return seen, problems


def _load_json_problem(path: Path, problems: list[str]) -> Any:
    try:
        data = read_json_file(path)
    except JukeboxCheckpointError as err:
        problems.append(str(err))
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name} is not a JSON object.")
        return None
    return data


def _tensor_names(folder: Path) -> set[str]:
    """Names of the stored tensors (from the index or the single file's header; the weights were checked before)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return set(read_json_file(index)["weight_map"])
    return {name for name in read_safetensors_header(folder / "model.safetensors") if name != "__metadata__"}


def _chain_config_problems(config: dict[str, Any]) -> list[str]:
    """What is wrong with the sub-configs of a `jukebox_mir_chain` config.json."""
    problems: list[str] = []
    expected_types = {"vqvae": "jukebox_mir_vqvae"} | {f"prior_level_{n}": "jukebox_mir_prior" for n in (0, 1, 2)}
    for part in CHAIN_PARTS:
        sub = config.get(f"{part}_config")
        if not isinstance(sub, dict):
            problems.append(
                f"config.json: {part}_config is missing; a sampling chain needs the VQ-VAE and the priors of levels "
                "0, 1 and 2. Re-run `jukebox-mir convert --vqvae V --prior P0 P1 P2`."
            )
            continue
        if sub.get("model_type", expected_types[part]) != expected_types[part]:
            problems.append(
                f"config.json: {part}_config has model_type {sub.get('model_type')!r}, expected "
                f"{expected_types[part]!r}."
            )
        if part.startswith("prior_level_") and sub.get("level") != int(part[-1]):
            problems.append(
                f"config.json: {part}_config has level {sub.get('level')!r}, expected {int(part[-1])}; the priors "
                "must be given as levels 0, 1, 2 (bottom upsampler, middle upsampler, top prior)."
            )
    return problems


def _chain_weight_problems(folder: Path) -> list[str]:
    """Parts of a chain (`vqvae`, `prior_level_0`, ...) without a single stored tensor."""
    names = _tensor_names(folder)
    missing = [part for part in CHAIN_PARTS if not any(name.startswith(part + ".") for name in names)]
    if not missing:
        return []
    prefixes = ", ".join(repr(part + ".") for part in missing)
    which = "that part" if len(missing) == 1 else "those parts"
    return [
        f"the weights hold no tensors for {', '.join(missing)} (names starting with {prefixes}), so "
        f"from_pretrained would leave {which} randomly initialised. Convert the whole chain again with "
        "`jukebox-mir convert --vqvae V --prior P0 P1 P2`."
    ]


def _inspect_folder(folder: str | Path) -> tuple[list[str], list[str], str | None]:
    """(files to upload, problems, kind) for `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return [], [f"{folder} is not a folder."], None
    problems: list[str] = []
    files: list[str] = []
    kind: str | None = None

    config = None
    if not (folder / "config.json").is_file():
        problems.append(
            "config.json is missing: convert the checkpoint with `jukebox-mir convert` (or save_pretrained)."
        )
    else:
        config = _load_json_problem(folder / "config.json", problems)
    roots: list[tuple[str, str]] = []
    if config is not None:
        model_type = config.get("model_type")
        kind = MODEL_TYPE_TO_KIND.get(model_type)
        if kind is None:
            problems.append(
                f"config.json: model_type {model_type!r} is not a hf-jukebox-mir model type; expected one of "
                f"{sorted(MODEL_TYPE_TO_KIND)}."
            )
        auto_map = config.get("auto_map")
        has_model = isinstance(auto_map, dict) and any(str(k).startswith("AutoModel") for k in auto_map)
        if not has_model or "AutoConfig" not in auto_map:
            problems.append(
                "config.json: auto_map with AutoConfig and AutoModel (or AutoModelFor...) entries is missing, so "
                "AutoModel.from_pretrained(repo, trust_remote_code=True) cannot find the code. Save the model after "
                "register_for_auto_class()."
                + (
                    " For a probe run, push the audio classifier that `jukebox-mir probe --model ...` writes to "
                    "OUTPUT/model/ (model + probe head, with its code) instead of best_probe/."
                    if kind == "probe"
                    else ""
                )
            )
        roots += [(m, "config.json auto_map") for m in _auto_map_modules(auto_map)]
        pipelines = config.get("custom_pipelines")
        if isinstance(pipelines, dict):
            for task, spec in pipelines.items():
                module = _module_file(spec.get("impl")) if isinstance(spec, dict) else None
                if module is None:
                    problems.append(
                        f"config.json: custom_pipelines[{task!r}] has no 'impl' of the form 'module.Class'."
                    )
                else:
                    roots.append((module, f"config.json custom_pipelines[{task!r}]"))
        if kind == "mir" and not (isinstance(pipelines, dict) and "feature-extraction" in pipelines):
            problems.append(
                "config.json: custom_pipelines has no 'feature-extraction' entry, so pipeline('feature-extraction', "
                "model=repo, trust_remote_code=True) would fall back to the text pipeline. Save the pipeline with "
                "Pipeline.save_pretrained."
            )
        if kind == "chain":
            problems += _chain_config_problems(config)

    preprocessor = folder / "preprocessor_config.json"
    if preprocessor.is_file():
        pre_config = _load_json_problem(preprocessor, problems)
        if pre_config is not None:
            roots += [(m, "preprocessor_config.json auto_map") for m in _auto_map_modules(pre_config.get("auto_map"))]
        files.append(preprocessor.name)
    elif kind == "mir":
        problems.append(
            "preprocessor_config.json is missing: a MIR extraction folder needs its feature extractor config "
            "(feature_extractor.save_pretrained(DIR))."
        )

    if kind in CONVERTED_KINDS:
        audit = folder / "conversion_audit.json"
        if not audit.is_file():
            problems.append(
                "conversion_audit.json is missing: the card's provenance (source file, SHA-256, converter version) "
                "comes from it. Re-run `jukebox-mir convert`."
            )
        else:
            try:
                ConversionAudit.read(folder)
            except JukeboxCheckpointError as err:
                problems.append(str(err))

    weights = inspect_weights(folder)
    problems += weights.problems
    files += weights.files
    if kind == "chain" and not weights.problems:
        problems += _chain_weight_problems(folder)

    modules, module_problems = _module_closure(folder, roots)
    problems += module_problems
    files += [m for m in modules if (folder / m).is_file()]

    readme = folder / "README.md"
    if not readme.is_file():
        problems.append("README.md (the model card) is missing: write it with `jukebox-mir card DIR`.")
    else:
        from huggingface_hub import metadata_load

        try:
            metadata = metadata_load(readme)
        except Exception as err:  # yaml raises several error types; all mean "front matter does not parse"
            problems.append(f"README.md: the YAML front matter does not parse ({type(err).__name__}: {err}).")
        else:
            problems += validate_card_metadata(metadata, kind) if kind else []

    files += [name for name in HUB_METADATA_FILES if (folder / name).is_file() and name not in files]
    order = {name: i for i, name in enumerate(HUB_METADATA_FILES)}
    files = sorted(dict.fromkeys(files), key=lambda n: (order.get(n, len(order)), n))
    return files, problems, kind


def validate_hub_folder(folder: str | Path) -> list[str]:
    """Every reason `folder` cannot be published; an empty list when it is complete.

    Example:

    ```python
    >>> from hf_jukebox_mir.publishing.hub import validate_hub_folder
    >>> validate_hub_folder("converted/jukebox-vqvae")  # doctest: +SKIP
    ['README.md (the model card) is missing: write it with `jukebox-mir card DIR`.']
    ```
    """
    return _inspect_folder(folder)[1]


def check_hub_folder(folder: str | Path) -> list[str]:
    """Raise `JukeboxCheckpointError` naming every missing or broken piece of `folder`; else return the upload list.

    Returns:
        `list[str]`: the files :func:`push_folder` uploads, relative to `folder` (see :func:`hub_files`).
    """
    files, problems, _ = _inspect_folder(folder)
    if problems:
        raise JukeboxCheckpointError(
            f"{folder} is not ready for the Hub ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n  - "
            + "\n  - ".join(problems)
        )
    return files


def hub_files(folder: str | Path) -> list[str]:
    """The exact files an upload of `folder` contains: card, configs, audit, weights, and the needed module files.

    Anything else in the folder (pickled `.bin` files, `training_args.bin`, checkpoints, caches) is left out.
    """
    return _inspect_folder(folder)[0]


# ---------------------------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class JukeboxPushResult:
    """What :func:`push_folder` uploaded.

    Args:
        repo_id (`str`): the Hub repository.
        revision (`str` or `None`): the branch committed to (`None`: the default branch).
        files (`list[str]`): the uploaded files, relative to the folder.
        skipped (`list[str]`): files of the folder that were not uploaded.
        commit_info: what `HfApi.create_commit` returned (`commit_url`, `oid`, ...).
    """

    repo_id: str
    revision: str | None
    files: list[str]
    skipped: list[str] = field(default_factory=list)
    commit_info: Any = None

    @property
    def commit_url(self) -> str | None:
        return getattr(self.commit_info, "commit_url", None)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY


def _connection_error_types() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import OfflineModeIsEnabled

    types: list[type[BaseException]] = [OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module_name in ("httpx2", "httpx"):  # huggingface_hub 2.x talks through httpx2 (1.x: httpx)
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        if isinstance(getattr(module, "TransportError", None), type):
            types.append(module.TransportError)
    try:
        import requests

        types.append(requests.ConnectionError)
    except ImportError:
        pass
    return tuple(types)


def check_repo_id(repo_id: Any) -> str:
    if not isinstance(repo_id, str) or not REPO_ID_RE.match(repo_id) or len(repo_id) > 96 or ".." in repo_id:
        raise JukeboxInputError(
            f"repo_id must be 'owner/name' (letters, digits, '-', '_', '.'), got {repo_id!r}; e.g. "
            "--repo-id my-user/jukebox-mir-5b-layer36."
        )
    return repo_id


def _default_commit_message(kind: str | None) -> str:
    try:
        from importlib.metadata import version

        package_version = version("hf-jukebox-mir")
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        package_version = "unknown"
    names = {
        "vqvae": "VQ-VAE",
        "prior": "prior",
        "mir": "MIR extraction model",
        "probe": "probe",
        "chain": "sampling chain",
        "classifier": "audio classifier (MIR model + probe)",
    }
    what = names.get(kind or "", "model")
    return f"Upload Jukebox {what} with hf-jukebox-mir {package_version}"


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
    api: Any = None,
    commit_message: str | None = None,
) -> JukeboxPushResult:
    """Check `folder` (:func:`check_hub_folder`), then create `repo_id` if needed and upload the folder in one commit.

    Nothing is sent when the folder has a problem. Only :func:`hub_files` are uploaded.

    Args:
        folder (`str` or `Path`): a converted model or probe folder with its card.
        repo_id (`str`): `"owner/name"`.
        private (`bool`): create the repository private (an existing repository keeps its visibility).
        revision (`str`, *optional*): branch to commit to; created from the default branch when missing.
        token (*optional*): Hub token; defaults to the logged-in user (`hf auth login`) or `HF_TOKEN`.
        api (`huggingface_hub.HfApi`, *optional*): client to use (tests pass a mock or a local endpoint).
        commit_message (`str`, *optional*): defaults to `"Upload Jukebox <kind> with hf-jukebox-mir <version>"`.

    Raises:
        `JukeboxCheckpointError`: the folder is incomplete (every problem listed).
        `JukeboxInputError`: a malformed `repo_id`, or the Hub refused the token.
        `JukeboxHubConnectionError`: `HF_HUB_OFFLINE=1` or the Hub cannot be reached.

    Example:

    ```python
    >>> from hf_jukebox_mir.publishing.hub import push_folder
    >>> result = push_folder("converted/jukebox-vqvae", "me/jukebox-vqvae")  # doctest: +SKIP
    >>> result.commit_url  # doctest: +SKIP
    ```
    """
    folder = Path(folder)
    check_repo_id(repo_id)
    if revision is not None and (not isinstance(revision, str) or not revision.strip() or " " in revision):
        raise JukeboxInputError(f"revision must be a branch name without spaces, got {revision!r}.")
    files, problems, kind = _inspect_folder(folder)
    if problems:
        check_hub_folder(folder)  # raises with the full list
    if _hub_offline():
        raise JukeboxHubConnectionError(
            f"Cannot push {folder} to {repo_id}: HF_HUB_OFFLINE is set, so the Hub is not contacted. Unset it "
            "(e.g. `HF_HUB_OFFLINE=0 jukebox-mir push ...`) on a machine with network access. The folder itself "
            "passed all checks."
        )
    readme = (folder / "README.md").read_text(encoding="utf-8", errors="replace")
    if repo_id not in readme:
        logger.warning(
            "The card in %s does not mention %s; its usage examples name another repo. Re-render it with "
            "`jukebox-mir card %s --repo-id %s` before pushing.",
            folder,
            repo_id,
            folder,
            repo_id,
        )
    present = (str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    skipped = sorted(name for name in present if name not in files)
    if skipped:
        logger.info("Not uploading %d file(s) of %s: %s", len(skipped), folder, ", ".join(skipped[:20]))

    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = api if api is not None else HfApi(token=token)
    message = commit_message or _default_commit_message(kind)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
    try:
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True, token=token)
        if revision is not None and revision != "main":
            api.create_branch(repo_id=repo_id, branch=revision, repo_type="model", exist_ok=True, token=token)
        commit_info = api.create_commit(
            repo_id=repo_id,
            repo_type="model",
            operations=operations,
            commit_message=message,
            revision=revision,
            token=token,
        )
    except _connection_error_types() as err:
        raise JukeboxHubConnectionError(
            f"Cannot push {folder} to {repo_id}: the Hugging Face Hub cannot be reached ({type(err).__name__}: "
            f"{err}). Check the network connection and HF_ENDPOINT, and that HF_HUB_OFFLINE is not set."
        ) from err
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            raise JukeboxInputError(
                f"The Hub refused the upload to {repo_id} (HTTP {status}): log in with `hf auth login`, set "
                "HF_TOKEN, or pass --token with write access to that namespace."
            ) from err
        raise
    return JukeboxPushResult(repo_id=repo_id, revision=revision, files=files, skipped=skipped, commit_info=commit_info)


__all__ = [
    "HUB_METADATA_FILES",
    "JukeboxHubConnectionError",
    "JukeboxPushResult",
    "check_hub_folder",
    "check_repo_id",
    "hub_files",
    "push_folder",
    "validate_hub_folder",
]

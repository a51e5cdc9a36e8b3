"""Each Ray node makes its own copy of a packaged model, in the exact folder the driver chose.

The driver resolves `packaged:NAME` to a local folder (converting it there), then starts the
engine actors with `runtime_env={"env_vars": env}` where env comes from engine_env. On another
node that folder does not exist yet: the hook (ensure_model, run by Ray in each new worker
process before its actor) converts the node's own copy of the package file into it, first
checking that the file is the same content the folder is named after. Module level stays
light: the hook runs in every worker process of those actors.
"""

from __future__ import annotations

import os

ENV_MODEL = "MDREC_PACKAGED_MODEL"
ENV_FOLDER = "MDREC_PACKAGED_FOLDER"
SETUP_HOOK = "mdrec.packaged.node_setup.ensure_model"
# Ray turns `worker_process_setup_hook` into this env var only for the job's runtime_env (ray.init);
# in an actor's or task's runtime_env the key is silently ignored (Ray 2.60), so the engine
# actors get the variable itself. Name: ray._private.ray_constants.WORKER_PROCESS_SETUP_HOOK_ENV_VAR.
RAY_HOOK_ENV = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"


def ensure_model() -> None:
    """The worker_process_setup_hook: make $MDREC_PACKAGED_FOLDER from $MDREC_PACKAGED_MODEL if missing."""
    name, folder = os.environ.get(ENV_MODEL), os.environ.get(ENV_FOLDER)
    if not name or not folder:
        return
    from mdrec.packaged.cache import is_complete, stderr_log

    if is_complete(folder):  # the common case: converted before, or a shared file system
        return
    ensure_folder(name, folder, log=stderr_log)


def ensure_folder(name: str, folder: str, log=None) -> str:
    """Convert packaged model NAME into FOLDER (named `<name>-<sha16>`), refusing a package file
    of other content than the folder's name says."""
    from mdrec.errors import DataError
    from mdrec.packaged.cache import ensure_converted, file_sha256, folder_name, is_complete, stderr_log
    from mdrec.packaged.registry import find

    if is_complete(folder):
        return folder
    model = find(name)
    source = model.locate()
    here = folder_name(model, file_sha256(source, os.path.dirname(folder)))
    if here != os.path.basename(folder.rstrip("/")):
        raise DataError(f"packaged model '{name}': the driver chose {folder}, but this node's {model.package} "
                        f"{model.installed_version()} has other content ({here}); install the driver's version of "
                        f"{model.package} on every node")
    return ensure_converted(model, source, folder, log or stderr_log)


def engine_env(model: str, cache: str | None = None, log=None) -> tuple[str, dict[str, str]]:
    """(what vLLM loads, env vars for the engine actors' runtime_env) for a config's `model`.

    `packaged:NAME` is prepared here (on the driver); a local folder comes with the env vars that
    make Ray run SETUP_HOOK in each engine worker, so every other node makes the same folder; an
    s3:// URI (ray.data.llm downloads it on the engine's node), a package's own folder and any
    model that is not packaged need none.
    """
    from mdrec.packaged.registry import PackagedFormat, find, is_packaged

    if not is_packaged(model):
        return model, {}
    from mdrec.packaged.cache import prepare_packaged, stderr_log

    entry = find(model)
    source = prepare_packaged(entry.name, cache, log or stderr_log)
    if source.startswith("s3://") or entry.format is PackagedFormat.hf_folder:
        return source, {}
    return source, {ENV_MODEL: entry.name, ENV_FOLDER: source, RAY_HOOK_ENV: SETUP_HOOK}

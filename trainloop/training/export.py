"""Where the improved model is: a promoted round's merged model as a loadable ``MODEL=`` value.

The loop merges each promoted adapter into its base (``loops/<loop_id>/round-<r>/model``, a
transformers folder with tokenizer), and that folder's absolute path is the round's
``promoted_model``: ``make eval MODEL=<that path>`` loads it like any local model. With
``export_dir`` the folder is also copied to a place of the user's choosing, which must not exist
yet: an export never overwrites a model.
"""

from __future__ import annotations

import os
import shutil

from evalkit.errors import EvalkitError


def check_export_dir(path: str | None) -> None:
    """Refuse, before anything runs, an export folder that already exists (one line)."""
    if path and os.path.exists(path) and os.listdir(path):
        raise EvalkitError(f"loop: export_dir '{path}' already exists and is not empty; choose a new folder "
                           "(an export never overwrites a model)")


def export_model(model_dir: str, dest: str) -> str:
    """Copy a merged model folder to ``dest`` (must not exist); returns ``dest``."""
    if os.path.exists(dest):
        raise EvalkitError(f"loop: export path '{dest}' already exists; an export never overwrites a model")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise EvalkitError(f"loop: '{model_dir}' is not a model folder (no config.json)")
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    os.replace(tmp, dest)
    return dest

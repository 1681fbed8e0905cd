"""An operator's edit of a gated artifact: the edited content (text, or a JSON merge patch of a
JSON artifact) stored as a new artifact of the node under keys of its own, beside the original,
which stays. Its files are written before the decision's transaction and removed if that does not
commit (see `decisions`)."""

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from apps.core.errors import Unprocessable
from apps.orchestrator.infra.storage.base import ArtifactStore, encode_sidecar, sidecar_key
from apps.orchestrator.model.models import Artifact

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Edit:
    """An operator's edit of a gated artifact, written to the store, to be recorded."""

    artifact: dict[str, Any]
    edited_from: uuid.UUID

    @property
    def storage_keys(self) -> tuple[str, str]:
        key = self.artifact["storage_key"]
        return key, sidecar_key(key)


def edit_of(original: Artifact, content: bytes) -> Edit:
    """The edited copy of `original`: a new artifact of the node, which its dependents read;
    the original stays, and the copy's sidecar keeps the original call's figures."""
    artifact_id = uuid.uuid4()
    storage_key = f"{original.run_id}/edited-{artifact_id.hex}/{original.name}"
    row = {
        "id": artifact_id,
        "run_id": original.run_id,
        "node_id": original.node_id,
        "name": original.name,
        "media_type": original.media_type,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "storage_key": storage_key,
        "sidecar": original.sidecar,
    }
    return Edit(row, original.id)


async def write_edit(store: ArtifactStore, edit: Edit, content: bytes) -> None:
    """Write the edit's content and sidecar (in a thread); nothing is left if that fails."""
    try:
        await asyncio.to_thread(_write_files, store, edit, content)
    except BaseException:
        await discard(store, edit)
        raise


def _write_files(store: ArtifactStore, edit: Edit, content: bytes) -> None:
    key, sidecar = edit.storage_keys
    store.write(key, content)
    store.write(sidecar, encode_sidecar(edit.artifact["sidecar"]))


async def discard(store: ArtifactStore, edit: Edit) -> None:
    """Remove the files of an edit nothing refers to, as far as the store lets us."""
    try:
        await asyncio.to_thread(_delete_files, store, edit.storage_keys)
    except Exception as error:
        key = edit.artifact["storage_key"]
        logger.warning("could not remove the files of unrecorded edit %s: %s", key, error)


def _delete_files(store: ArtifactStore, keys: Collection[str]) -> None:
    for key in keys:
        store.delete(key)


def apply_patch(media_type: str, content: bytes, patch: str | dict[str, Any]) -> bytes:
    """The gated content as the patch edits it: replaced by a text, or merge-patched."""
    if isinstance(patch, str):
        return patch.encode()
    if media_type != "application/json":
        raise Unprocessable("a JSON merge patch applies to a JSON artifact; send text instead")
    try:
        document = json.loads(content)
    except ValueError:
        raise Unprocessable("the gated artifact is not valid JSON") from None
    return json.dumps(merge_patch(document, patch)).encode()


def merge_patch(target: Any, patch: Any) -> Any:
    """`target` with the JSON merge patch `patch` applied (RFC 7396)."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged

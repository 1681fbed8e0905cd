"""Where artifact files and their sidecars live: a local directory (`local`, the default) or an
S3-compatible bucket (`s3`), chosen by ARTIFACT_STORE. What a store offers is `base.ArtifactStore`.
"""

from apps.core.settings import Settings
from apps.orchestrator.infra.storage.base import ArtifactStore
from apps.orchestrator.infra.storage.local import LocalArtifactStore


def open_artifact_store(settings: Settings) -> ArtifactStore:
    """The store ARTIFACT_STORE names, configured by the settings."""
    if settings.artifact_store == "s3":
        # Imported here: boto3 adds ~0.2 s and ~10 MB to start-up, which local setups never need.
        from apps.orchestrator.infra.storage.s3 import S3ArtifactStore

        return S3ArtifactStore.from_settings(settings)
    return LocalArtifactStore(settings.artifacts_dir)

"""Where render inputs and results live: a local folder (the default) or an S3-compatible bucket.

Keys are ``inputs/<job id>`` and ``renders/<job id>.<format>``. A put is atomic in both (a
folder: written aside, then renamed; S3: an object appears whole when its upload completes), so
a job run twice leaves one object. Methods block (boto3 is synchronous): callers on an event loop
run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from avatar.config import RendersConfig
from avatar.errors import ConfigError


class ResultStore(Protocol):
    def put(self, key: str, path: Path) -> None: ...

    def get(self, key: str, path: Path) -> None: ...

    def exists(self, key: str) -> bool: ...

    def url(self, key: str) -> str | None:
        """A URL a client can fetch the object from, or None: this server serves it
        (``GET /v1/renders/{id}/result``)."""

    def local_path(self, key: str) -> Path | None:
        """The object as a local file (the folder store), else None."""


class FolderStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)

    def get(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def url(self, key: str) -> str | None:
        return None

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def _path(self, key: str) -> Path:
        if ".." in key.split("/"):
            raise ValueError(f"bad key {key!r}")
        return self.root / key


class S3Store:
    """A bucket (and key prefix) on S3 or an S3-compatible server (``renders.s3_endpoint``);
    credentials from the usual ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` variables.
    Results are handed out as presigned GET URLs valid for ``renders.url_ttl_s``."""

    def __init__(self, bucket: str, prefix: str, endpoint: str, url_ttl_s: int) -> None:
        import boto3  # only deployments with S3 need it (pip install avatar[s3])
        from botocore.config import Config as BotoConfig

        self.bucket, self.prefix, self.ttl = bucket, prefix.strip("/"), url_ttl_s
        config = BotoConfig(signature_version="s3v4", retries={"max_attempts": 3},
                            s3={"addressing_style": "path"})  # fmt: skip
        region = os.environ.get("AWS_REGION", "us-east-1")
        self.client: Any = boto3.client("s3", endpoint_url=endpoint or None, config=config,
                                        region_name=region)  # fmt: skip

    def put(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(key))

    def get(self, key: str, path: Path) -> None:
        self.client.download_file(self.bucket, self._key(key), str(path))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def url(self, key: str) -> str | None:
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        return str(self.client.generate_presigned_url("get_object", Params=params,
                                                      ExpiresIn=self.ttl))  # fmt: skip

    def local_path(self, key: str) -> Path | None:
        return None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key


def open_store(cfg: RendersConfig) -> ResultStore:
    """``renders.store``: ``s3://bucket[/prefix]`` or a local folder."""
    if cfg.store.startswith("s3://"):
        url = urlparse(cfg.store)
        if not url.netloc:
            raise ConfigError(f"renders.store {cfg.store!r}: expected s3://bucket[/prefix]")
        return S3Store(url.netloc, url.path, cfg.s3_endpoint, cfg.url_ttl_s)
    if "://" in cfg.store:
        raise ConfigError(f"renders.store {cfg.store!r}: a folder or s3://bucket[/prefix]")
    return FolderStore(Path(cfg.store))

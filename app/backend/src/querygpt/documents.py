"""The original of every upload, kept in the S3 documents bucket.

Qdrant only holds derived data (chunks and vectors). If it and its snapshots are lost,
``querygpt-backend reindex`` rebuilds every collection from these originals, so an upload
is stored here *before* anything is indexed, and every point records which object (key,
version id, sha256) it was made from.

Key layout: ``<prefix>/<collection>/<filename>``. The filename is the identity of a
document within a collection: uploading the same name again makes a new version of the
same key (the bucket is versioned), and the index then holds the new version only. The
sha256 of the bytes is stored as object metadata so a reindex can refuse a damaged or
tampered object.

Only this module knows boto3. It turns botocore failures into UpstreamError (502) or
UpstreamUnavailable (503) naming S3, the bucket and what to check, and it never logs
credentials (the client is built here and kept private).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from .config import Settings, require_documents_bucket
from .errors import UpstreamError, UpstreamUnavailable

log = logging.getLogger(__name__)

SERVICE = "s3"

#: Object metadata names (S3 lower-cases them and adds the ``x-amz-meta-`` prefix).
META_SHA256 = "sha256"
META_FILENAME = "filename"  # percent-encoded: metadata values must be ASCII

#: Namespace of document ids: uuid5 of the object's key, version and sha256, so an upload
#: and a later reindex of the same object produce the same document id and point ids.
DOCUMENT_NAMESPACE = uuid.UUID("8f7f0a52-6c55-5d0e-9d4e-2f1a0b6c4e11")

# Characters kept verbatim in the key's filename part: letters and digits of any script,
# and punctuation that needs no special handling in S3 keys or URLs; others become "_".
_KEY_SAFE_PUNCTUATION = frozenset(" ._-()+,=@!'")
_MAX_FILENAME_KEY_BYTES = 255


@dataclass(frozen=True)
class StoredDocument:
    """One version of an original in the bucket; what every point of it records."""

    key: str
    version_id: str | None  # None when the bucket is not versioned
    sha256: str
    filename: str  # the name users see in /query sources

    @property
    def document_id(self) -> str:
        """Deterministic, so reindexing the same object overwrites instead of duplicating."""
        name = f"{self.key}\n{self.version_id or 'null'}\n{self.sha256}"
        return str(uuid.uuid5(DOCUMENT_NAMESPACE, name))


@dataclass(frozen=True)
class FetchedDocument:
    """An original read back from the bucket, with the checksum it actually has."""

    stored: StoredDocument  # sha256 as recorded in the object's metadata ("" if absent)
    data: bytes
    actual_sha256: str
    last_modified: datetime | None = None

    @property
    def intact(self) -> bool:
        return bool(self.stored.sha256) and self.stored.sha256 == self.actual_sha256


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_filename(filename: str) -> str:
    """The filename as it appears in the object key: readable, and safe in any S3 store.

    Dot-only names ("." and "..") are path segments to some tools, so they are replaced.
    """
    safe = "".join(
        ch if ch.isalnum() or ch in _KEY_SAFE_PUNCTUATION else "_" for ch in filename
    ).strip()
    if not safe.strip("."):
        safe = "document.pdf"
    encoded = safe.encode()[:_MAX_FILENAME_KEY_BYTES]
    return encoded.decode(errors="ignore")


class DocumentStore:
    """Put and read back the originals; list what a collection holds."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        *,
        kms_key_id: str | None = None,
        location: str = "S3",
    ) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._kms_key_id = kms_key_id
        self._location = location

    @classmethod
    def connect(cls, settings: Settings, client: Any | None = None) -> DocumentStore:
        """Build the boto3 client from the settings unless one is given (tests).

        No network traffic happens here; credentials come from the static keys if set,
        otherwise from boto3's default chain (the instance profile on EC2).
        """
        require_documents_bucket(settings)
        if client is None:
            client = make_client(settings)
        location = settings.s3_endpoint_url or "S3"
        return cls(
            client,
            settings.documents_bucket,
            settings.documents_prefix,
            kms_key_id=settings.s3_kms_key_id,
            location=location,
        )

    def key_for(self, collection: str, filename: str) -> str:
        return f"{self.prefix}/{collection}/{key_filename(filename)}"

    def put(self, collection: str, filename: str, data: bytes) -> StoredDocument:
        """Store ``data`` as the current version of the collection's ``filename``."""
        key = self.key_for(collection, filename)
        digest = sha256_hex(data)
        extra: dict[str, Any] = {}
        if self._kms_key_id:
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self._kms_key_id}
        note = " Nothing was indexed; try again."
        with self._errors("store the uploaded PDF as", key, note=note):
            response = self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType="application/pdf",
                Metadata={META_SHA256: digest, META_FILENAME: quote(filename, safe="")},
                **extra,
            )
        stored = StoredDocument(key, response.get("VersionId"), digest, filename)
        log.info(
            "original stored",
            extra={
                "bucket": self.bucket,
                "key": key,
                "version_id": stored.version_id,
                "sha256": digest,
                "bytes": len(data),
            },
        )
        return stored

    def is_current(self, stored: StoredDocument) -> bool:
        """True if ``stored`` is still the key's current version (no newer upload)."""
        with self._errors("check the current version of", stored.key):
            head = self._client.head_object(Bucket=self.bucket, Key=stored.key)
        metadata = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return (head.get("VersionId"), metadata.get(META_SHA256, "")) == (
            stored.version_id,
            stored.sha256,
        )

    def delete_all_versions(self, key: str) -> int:
        """Delete every version of ``key`` and every delete marker but one, so nothing of it
        can be restored; return how many were deleted (0 the second time: safe to repeat).

        The one marker kept is the newest, from a plain delete: it is what S3 replication
        carries to the replica bucket (deleting a version or a marker by id is never
        replicated), where the copies become noncurrent and expire with the bucket's
        noncurrent-version lifecycle. Deleting it here too, before replication has read it,
        would leave the replica's copy current for good. It holds no content, and the
        bucket's lifecycle removes it once it is the key's only version (terraform/storage.tf).
        """
        with self._errors("list the versions of", key):
            paginator = self._client.get_paginator("list_object_versions")
            pages = list(paginator.paginate(Bucket=self.bucket, Prefix=key))
        # The prefix also matches "<key>.old" and the like.
        stored = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for page in pages
            for item in page.get("Versions") or []
            if item["Key"] == key
        ]
        markers = [
            item for page in pages for item in page.get("DeleteMarkers") or [] if item["Key"] == key
        ]
        if stored:
            with self._errors("delete", key):
                kept = self._client.delete_object(Bucket=self.bucket, Key=key).get("VersionId")
        else:  # erased before (or a retry after the plain delete): keep the current marker
            current = [item for item in markers if item.get("IsLatest")]
            kept = current[0]["VersionId"] if current else None
        doomed = stored + [
            {"Key": key, "VersionId": item["VersionId"]}
            for item in markers
            if item["VersionId"] != kept
        ]
        for start in range(0, len(doomed), 1000):  # DeleteObjects takes at most 1000
            batch = doomed[start : start + 1000]
            with self._errors("delete the versions of", key):
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise UpstreamError(
                    SERVICE,
                    f"S3 could not delete {len(errors)} of the {len(doomed)} versions of "
                    f"{self.uri(key)}: {first.get('Code', '')} ({first.get('Message', '')}); "
                    "check that the instance profile may s3:DeleteObjectVersion, then retry.",
                    where=self._location,
                )
        log.info(
            "original erased",
            extra={"bucket": self.bucket, "key": key, "versions": len(doomed), "marker": kept},
        )
        return len(doomed)

    def collections(self) -> list[str]:
        """Collection names that have a folder under the prefix, sorted."""
        names = []
        for common in self._list(f"{self.prefix}/", "list collections in", "CommonPrefixes"):
            names.append(common["Prefix"][len(self.prefix) + 1 :].rstrip("/"))
        return sorted(names)

    def keys(self, collection: str) -> list[str]:
        """Keys of the current objects directly under the collection's folder, sorted."""
        prefix = f"{self.prefix}/{collection}/"
        return sorted(obj["Key"] for obj in self._list(prefix, "list documents in", "Contents"))

    def fetch(self, key: str) -> FetchedDocument:
        """Read the current version of ``key`` and checksum it."""
        with self._errors("read", key):
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            data = response["Body"].read()
        metadata = {k.lower(): v for k, v in (response.get("Metadata") or {}).items()}
        filename = unquote(metadata.get(META_FILENAME, "")) or key.rsplit("/", 1)[-1]
        stored = StoredDocument(
            key=key,
            version_id=response.get("VersionId"),
            sha256=metadata.get(META_SHA256, ""),
            filename=filename,
        )
        return FetchedDocument(stored, data, sha256_hex(data), response.get("LastModified"))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- helpers -------------------------------------------------------------

    def _list(self, prefix: str, action: str, field: str) -> Iterator[dict[str, Any]]:
        with self._errors(action, prefix):
            paginator = self._client.get_paginator("list_objects_v2")
            pages = list(paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"))
        for page in pages:
            yield from page.get(field) or []

    @contextmanager
    def _errors(self, action: str, key: str, *, note: str = "") -> Iterator[None]:
        """Map botocore failures to 502 (S3 answered with an error) or 503 (no answer)."""
        where = self.uri(key)
        try:
            yield
        except ClientError as exc:
            raise UpstreamError(
                SERVICE, self._client_error(exc, action, where) + note, where=self._location
            ) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise UpstreamError(
                SERVICE,
                f"Could not {action} {where}: no AWS credentials were found; attach the "
                "instance profile, or set QUERYGPT_S3_ACCESS_KEY_ID and "
                "QUERYGPT_S3_SECRET_ACCESS_KEY." + note,
                status_code=503,
            ) from exc
        except (BotoConnectionError, HTTPClientError) as exc:
            raise UpstreamUnavailable(
                SERVICE,
                f"S3 is unreachable or timed out ({type(exc).__name__}); "
                f"could not {action} {where}." + note,
                where=self._location,
            ) from exc
        except BotoCoreError as exc:
            raise UpstreamError(
                SERVICE, f"Could not {action} {where}: {type(exc).__name__}: {exc}." + note
            ) from exc

    def _client_error(self, exc: ClientError, action: str, where: str) -> str:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or str(
            exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        )
        message = str(error.get("Message", "")).strip()
        base = f"S3 could not {action} {where}: {code}" + (f" ({message})" if message else "")
        if code in ("NoSuchBucket",):
            hint = (
                f"create bucket '{self.bucket}' (versioned), or set "
                "QUERYGPT_DOCUMENTS_BUCKET to the bucket Terraform created "
                "(output documents_bucket)."
            )
        elif code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            hint = (
                "check that the instance profile (or QUERYGPT_S3_ACCESS_KEY_ID) may read and "
                f"write '{self.bucket}' and use its KMS key."
            )
        elif code.startswith("KMS") or "kms" in message.lower():
            hint = "check QUERYGPT_S3_KMS_KEY_ID and that the role may use that key."
        elif code in ("NoSuchKey", "404"):
            hint = "the object is gone; it may have been deleted since it was listed."
        elif code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IncorrectEndpoint"):
            hint = "set QUERYGPT_S3_REGION to the bucket's region."
        else:
            hint = "try again; if it persists, check the bucket and the S3 endpoint."
        return f"{base}; {hint}"


def make_client(settings: Settings) -> Any:
    """A boto3 S3 client for the settings (the same shape as the backup role's)."""
    import boto3
    from botocore.config import Config

    timeout = settings.request_timeout
    kwargs: dict[str, Any] = {
        "config": Config(
            connect_timeout=min(timeout, 10),
            read_timeout=timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            # S3-compatible stores (MinIO, Ceph, the lab's moto) serve buckets by path.
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        )
    }
    if settings.s3_endpoint_url:
        kwargs["endpoint_url"] = settings.s3_endpoint_url
    if settings.s3_region:
        kwargs["region_name"] = settings.s3_region
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        kwargs["aws_access_key_id"] = settings.s3_access_key_id
        kwargs["aws_secret_access_key"] = settings.s3_secret_access_key
    # A session per client: boto3's default session is not thread-safe to build clients on.
    return boto3.session.Session().client("s3", **kwargs)

"""POST /upload keeps the original in the documents bucket before indexing it.

The bucket is moto's in-process S3 (versioned, like the one Terraform creates).
Every point records the object it came from (key, version id, sha256), an S3
failure refuses the upload with nothing indexed, and a re-upload of the same
filename is a new version that replaces the earlier one in the collection.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from qdrant_client import QdrantClient
from querygpt.documents import StoredDocument, key_filename
from querygpt.pdf import extract_pages
from querygpt_testkit import DOCUMENTS_BUCKET, make_pdf, metric_value, points, upload


def _versions(s3: Any, key: str) -> list[dict[str, Any]]:
    listed = s3.list_object_versions(Bucket=DOCUMENTS_BUCKET, Prefix=key)
    return [v for v in listed.get("Versions", []) if v["Key"] == key]


def test_upload_stores_the_original_and_every_point_references_it(
    make_client, s3, schema_pdf
) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant)
    response = upload(client, schema_pdf, filename="C:\\docs\\shop schema.pdf")
    assert response.status_code == 200, response.text
    body = response.json()
    digest = hashlib.sha256(schema_pdf).hexdigest()
    key = "documents/querygpt/shop schema.pdf"
    assert (body["s3_key"], body["sha256"]) == (key, digest)
    assert body["s3_version_id"]

    stored = s3.get_object(Bucket=DOCUMENTS_BUCKET, Key=key)
    assert stored["Body"].read() == schema_pdf
    assert stored["VersionId"] == body["s3_version_id"]
    assert stored["Metadata"]["sha256"] == digest
    assert stored["ContentType"] == "application/pdf"

    payloads = list(points(qdrant, "querygpt").values())
    assert len(payloads) == body["chunks"]
    for payload in payloads:
        # What the payload carried before, plus the original it was made from.
        assert {"document_id", "filename", "page", "chunk", "text"} <= set(payload)
        assert payload["s3_key"] == key
        assert payload["s3_version_id"] == body["s3_version_id"]
        assert payload["sha256"] == digest
        assert payload["document_id"] == body["document_id"]
    expected = StoredDocument(key, body["s3_version_id"], digest, "shop schema.pdf")
    assert body["document_id"] == expected.document_id  # derived, so a reindex matches


def test_collection_is_a_folder_under_the_prefix(make_client, s3, schema_pdf) -> None:
    client = make_client(documents_prefix="prod/documents")
    response = upload(client, schema_pdf, filename="sales.pdf", collection_name="sales-db")
    assert response.status_code == 200, response.text
    assert response.json()["s3_key"] == "prod/documents/sales-db/sales.pdf"
    assert _versions(s3, "prod/documents/sales-db/sales.pdf")


@pytest.mark.parametrize(
    ("filename", "in_key"),
    [
        ("Schemaübersicht v2.pdf", "Schemaübersicht v2.pdf"),  # readable, any script
        ("orders?#{x}.pdf", "orders___x_.pdf"),  # characters S3 tools trip over
        ("..", "document.pdf"),  # never a path segment
    ],
)
def test_filenames_become_safe_readable_keys(filename: str, in_key: str) -> None:
    assert key_filename(filename) == in_key


def test_long_filenames_fit_in_a_key() -> None:
    assert len(key_filename("é" * 300).encode()) <= 255


def test_reupload_of_the_same_filename_is_a_new_version_that_replaces_the_old(
    make_client, s3, schema_pdf
) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant)
    first = upload(client, schema_pdf, filename="shop.pdf").json()
    revised = make_pdf([["Table invoices: one row per invoice.", "invoices.id INTEGER"]])
    second = upload(client, revised, filename="shop.pdf").json()

    key = "documents/querygpt/shop.pdf"
    assert first["s3_key"] == second["s3_key"] == key
    assert first["s3_version_id"] != second["s3_version_id"]
    versions = _versions(s3, key)
    assert {v["VersionId"] for v in versions} == {first["s3_version_id"], second["s3_version_id"]}
    assert [v["VersionId"] for v in versions if v["IsLatest"]] == [second["s3_version_id"]]

    payloads = list(points(qdrant, "querygpt").values())
    assert len(payloads) == second["chunks"]  # the earlier version's points are gone
    assert {p["s3_version_id"] for p in payloads} == {second["s3_version_id"]}
    assert {p["sha256"] for p in payloads} == {hashlib.sha256(revised).hexdigest()}
    assert {p["document_id"] for p in payloads} == {second["document_id"]}
    assert metric_value(client, "querygpt_documents_indexed") == 1


def test_an_upload_overtaken_by_a_newer_one_steps_aside(make_client, schema_pdf) -> None:
    """Two concurrent uploads of one filename: the bucket's current version wins,
    whichever finishes indexing first."""
    qdrant = QdrantClient(":memory:")
    services = make_client(qdrant).app.state.services
    newer_pdf = make_pdf([["Table invoices: one row per invoice.", "invoices.id INTEGER"]])
    older = services.documents.put("querygpt", "shop.pdf", schema_pdf)
    newer = services.documents.put("querygpt", "shop.pdf", newer_pdf)
    assert not services.indexer.index("querygpt", newer, extract_pages(newer_pdf)).superseded
    late = services.indexer.index("querygpt", older, extract_pages(schema_pdf))
    assert late.superseded
    payloads = points(qdrant, "querygpt").values()
    assert {p["s3_version_id"] for p in payloads} == {newer.version_id}


def test_same_filename_in_another_collection_is_another_document(
    make_client, schema_pdf
) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant)
    a = upload(client, schema_pdf, filename="shop.pdf", collection_name="a").json()
    b = upload(client, schema_pdf, filename="shop.pdf", collection_name="b").json()
    assert a["s3_key"] != b["s3_key"]
    assert qdrant.count("a").count == a["chunks"] and qdrant.count("b").count == b["chunks"]


def test_rejected_files_are_not_stored(make_client, s3) -> None:
    client = make_client()
    assert upload(client, b"SELECT 1;", filename="query.pdf").status_code == 415
    assert upload(client, b"", filename="empty.pdf").status_code == 400
    assert s3.list_object_versions(Bucket=DOCUMENTS_BUCKET).get("Versions") is None


def test_missing_bucket_is_502_naming_it_and_nothing_is_indexed(
    make_client, fake_ollama, schema_pdf
) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant, documents_bucket="querygpt-no-such-bucket")
    response = upload(client, schema_pdf)
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert set(response.json()) == {"detail"}
    assert "NoSuchBucket" in detail and "querygpt-no-such-bucket" in detail
    assert "QUERYGPT_DOCUMENTS_BUCKET" in detail and "Nothing was indexed" in detail
    assert fake_ollama.embed_calls == []  # stopped before embedding
    assert not qdrant.collection_exists("querygpt")


class UnreachableS3:
    """Stands for a client whose endpoint does not answer (botocore's own error)."""

    def put_object(self, **_: Any) -> Any:
        raise EndpointConnectionError(endpoint_url="http://s3.invalid:9000/bucket/key")


def test_unreachable_s3_is_503_and_nothing_is_indexed(
    make_client, fake_ollama, schema_pdf, caplog
) -> None:
    qdrant = QdrantClient(":memory:")
    client = make_client(qdrant, s3_client=UnreachableS3(), s3_endpoint_url="http://s3.invalid:9000")
    with caplog.at_level(logging.WARNING, logger="querygpt.app"):
        response = upload(client, schema_pdf)
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "S3 is unreachable" in detail and "s3.invalid" not in detail  # no internal address
    assert "Nothing was indexed; try again." in detail
    logged = [r.error for r in caplog.records if r.getMessage() == "upstream failure"]
    assert logged and "(s3 at http://s3.invalid:9000)" in logged[0]  # the operator's log has it
    assert fake_ollama.embed_calls == []
    assert not qdrant.collection_exists("querygpt")
    assert any(getattr(r, "service", None) == "s3" for r in caplog.records)


def test_access_denied_says_what_to_check(make_client, s3, schema_pdf) -> None:
    s3.put_bucket_policy(
        Bucket=DOCUMENTS_BUCKET,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{DOCUMENTS_BUCKET}/*",
                    }
                ],
            }
        ),
    )
    qdrant = QdrantClient(":memory:")
    response = upload(make_client(qdrant), schema_pdf)
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert "403" in detail or "AccessDenied" in detail
    assert "instance profile" in detail and "QUERYGPT_S3_ACCESS_KEY_ID" in detail
    assert not qdrant.collection_exists("querygpt")


def test_sse_kms_key_is_used_when_configured(make_client, s3, schema_pdf) -> None:
    kms_key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    client = make_client(s3_kms_key_id=kms_key)
    key = upload(client, schema_pdf).json()["s3_key"]
    head = s3.head_object(Bucket=DOCUMENTS_BUCKET, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == kms_key


def test_static_keys_are_scrubbed_from_logs(make_client, capsys) -> None:
    make_client(s3_access_key_id="AKIATESTSCRUB", s3_secret_access_key="s3-secret-to-scrub")
    logging.getLogger("querygpt.test").warning("leak AKIATESTSCRUB s3-secret-to-scrub")
    out = capsys.readouterr().out
    assert "leak *** ***" in out
    assert "s3-secret-to-scrub" not in out and "AKIATESTSCRUB" not in out

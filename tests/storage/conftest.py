"""Fixtures of the storage tests: the S3 test server (tests/s3server.py) and the QA media kit
(real WebM segments, tests/qa/simulate.py)."""

from tests.qa.conftest import media_kit
from tests.s3server import s3_endpoint

__all__ = ["media_kit", "s3_endpoint"]

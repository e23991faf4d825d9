"""The audit trail: signed, hash-chained JSONL records; offline verification and queries."""

from ._log import SCHEMA_VERSION, AuditLog, canonical, key_id_of, load_or_create_key, record_hash
from ._process import close_process_logs, process_log
from ._record import StatementStatic, param_digests
from ._verify import (
    DECISIONS,
    TrailReport,
    VerificationError,
    VerifyReport,
    iter_records,
    load_public_key,
    query,
    report,
    summary,
    verify,
    verify_many,
)

__all__ = [
    "DECISIONS",
    "AuditLog",
    "TrailReport",
    "SCHEMA_VERSION",
    "StatementStatic",
    "VerificationError",
    "VerifyReport",
    "canonical",
    "close_process_logs",
    "iter_records",
    "key_id_of",
    "load_or_create_key",
    "process_log",
    "load_public_key",
    "param_digests",
    "query",
    "record_hash",
    "report",
    "summary",
    "verify",
    "verify_many",
]

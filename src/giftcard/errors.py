"""The error codes of giftcard and the exceptions that carry them.

Every failure a caller can see has one stable, lowercase code (SPEC §5). The domain
raises :class:`GiftcardError` subclasses carrying such a code; one handler in the HTTP
layer turns each into an RFC 9457 problem response, the CLI into a message and a
non-zero exit. The tree::

    GiftcardError                 any refusal a caller should see, with its ErrorCode
    ├── RedemptionError           a code cannot be redeemed (code_* and region_mismatch)
    └── TooManyAttempts           a requester is locked out; carries retry_after_s
    LedgerInvariantError          the ledger was asked to break one of its invariants;
                                  a bug, never the caller's fault, so it is not a
                                  GiftcardError and surfaces as a 500
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Stable error codes with the HTTP status each is reported with."""

    CODE_MALFORMED = "code_malformed"
    CODE_MISTYPED = "code_mistyped"
    CODE_NOT_FOUND = "code_not_found"
    CODE_ALREADY_REDEEMED = "code_already_redeemed"
    CODE_NOT_ACTIVE = "code_not_active"
    CODE_FROZEN = "code_frozen"
    CODE_EXPIRED = "code_expired"
    REGION_MISMATCH = "region_mismatch"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    VALIDATION_ERROR = "validation_error"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    CURRENCY_MISMATCH = "currency_mismatch"
    INVALID_STATE = "invalid_state"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IDEMPOTENCY_KEY_IN_USE = "idempotency_key_in_use"
    EMAIL_TAKEN = "email_taken"
    INVALID_CREDENTIALS = "invalid_credentials"
    INTERNAL_ERROR = "internal_error"
    SERVICE_UNAVAILABLE = "service_unavailable"

    @property
    def status(self) -> int:
        return _STATUS[self]

    @property
    def problem_title(self) -> str:
        return _TITLES[self]


_STATUS: dict[ErrorCode, int] = {
    ErrorCode.CODE_MALFORMED: 422,
    ErrorCode.CODE_MISTYPED: 422,
    ErrorCode.CODE_NOT_FOUND: 404,
    ErrorCode.CODE_ALREADY_REDEEMED: 409,
    ErrorCode.CODE_NOT_ACTIVE: 409,
    ErrorCode.CODE_FROZEN: 409,
    ErrorCode.CODE_EXPIRED: 409,
    ErrorCode.REGION_MISMATCH: 409,
    ErrorCode.TOO_MANY_ATTEMPTS: 429,
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.INSUFFICIENT_BALANCE: 409,
    ErrorCode.CURRENCY_MISMATCH: 409,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 409,
    ErrorCode.IDEMPOTENCY_KEY_IN_USE: 409,
    ErrorCode.EMAIL_TAKEN: 409,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
}

_TITLES: dict[ErrorCode, str] = {
    ErrorCode.CODE_MALFORMED: "This is not a gift card code",
    ErrorCode.CODE_MISTYPED: "The code looks mistyped",
    ErrorCode.CODE_NOT_FOUND: "No gift card has this code",
    ErrorCode.CODE_ALREADY_REDEEMED: "This gift card was already redeemed",
    ErrorCode.CODE_NOT_ACTIVE: "This gift card is not active yet",
    ErrorCode.CODE_FROZEN: "This gift card is on hold",
    ErrorCode.CODE_EXPIRED: "This gift card has expired",
    ErrorCode.REGION_MISMATCH: "This gift card is for another store",
    ErrorCode.TOO_MANY_ATTEMPTS: "Too many attempts",
    ErrorCode.VALIDATION_ERROR: "The request is not valid",
    ErrorCode.UNAUTHORIZED: "Authentication required",
    ErrorCode.FORBIDDEN: "Not allowed",
    ErrorCode.NOT_FOUND: "Not found",
    ErrorCode.METHOD_NOT_ALLOWED: "Method not allowed",
    ErrorCode.PAYLOAD_TOO_LARGE: "Request body too large",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "Unsupported media type",
    ErrorCode.INSUFFICIENT_BALANCE: "Insufficient balance",
    ErrorCode.CURRENCY_MISMATCH: "Currency mismatch",
    ErrorCode.INVALID_STATE: "Not possible in the current state",
    ErrorCode.IDEMPOTENCY_KEY_REUSED: "Idempotency key reused",
    ErrorCode.IDEMPOTENCY_KEY_IN_USE: "Idempotency key in use",
    ErrorCode.EMAIL_TAKEN: "Email already registered",
    ErrorCode.INVALID_CREDENTIALS: "Wrong email or password",
    ErrorCode.INTERNAL_ERROR: "Internal error",
    ErrorCode.SERVICE_UNAVAILABLE: "Service unavailable",
}


class GiftcardError(Exception):
    """A refusal the caller should see: an error code, a human sentence, maybe a field."""

    def __init__(self, code: ErrorCode, detail: str, *, param: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.param = param

    @property
    def status(self) -> int:
        return self.code.status


class RedemptionError(GiftcardError):
    """A code was refused at redemption; every one of these counts towards lock-outs."""


class TooManyAttempts(GiftcardError):
    """The requester is locked out for `retry_after_s` seconds."""

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(ErrorCode.TOO_MANY_ATTEMPTS, detail)
        self.retry_after_s = max(1, retry_after_s)


class LedgerInvariantError(Exception):
    """The ledger refused a movement that would break an invariant. Always a bug."""


def validation_error(detail: str, param: str | None = None) -> GiftcardError:
    return GiftcardError(ErrorCode.VALIDATION_ERROR, detail, param=param)

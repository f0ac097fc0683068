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

    @property
    def problem_when(self) -> str:
        """When the code is given; README.md's table of codes says the same."""
        return _EXPLANATIONS[self][0]

    @property
    def problem_what_to_do(self) -> str:
        """What the caller (or the person behind them) can do about it."""
        return _EXPLANATIONS[self][1]


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

# (when it happens, what to do), served at GET /problems/{code}. README.md's table of codes
# holds the same sentences, with names in backticks; a test compares the two.
_EXPLANATIONS: dict[ErrorCode, tuple[str, str]] = {
    ErrorCode.CODE_MALFORMED: (
        "not a code at all: wrong length, or symbols no code contains",
        "copy the code again from the card or email: 16 letters and digits, dashes optional",
    ),
    ErrorCode.CODE_MISTYPED: (
        "the check symbol does not match: almost surely a typo",
        "compare each character with the card and type it again; O and 0, and I, L and 1, "
        "count as the same",
    ),
    ErrorCode.CODE_NOT_FOUND: (
        "a well-formed code that no card has",
        "check that the code is from this store; if it is, ask the store's support",
    ),
    ErrorCode.CODE_ALREADY_REDEEMED: (
        "redeemed before; the detail says whether into this account (and when) or another",
        "nothing, if it was redeemed into this account; otherwise ask the store's support",
    ),
    ErrorCode.CODE_NOT_ACTIVE: (
        "a physical card not yet activated, or a cancelled card",
        "a card bought in a shop is activated at the till: ask the shop, or the store's support",
    ),
    ErrorCode.CODE_FROZEN: (
        "held by support",
        "ask the store's support, who can say why and release it",
    ),
    ErrorCode.CODE_EXPIRED: (
        "past its expiry date",
        "ask the store's support; an expired card cannot be redeemed",
    ),
    ErrorCode.REGION_MISMATCH: (
        "the card belongs to another store than the account",
        "redeem it with an account of the card's store",
    ),
    ErrorCode.TOO_MANY_ATTEMPTS: (
        "an abuse limit is reached; see Retry-After",
        "wait the seconds Retry-After gives, then try again",
    ),
    ErrorCode.VALIDATION_ERROR: (
        "invalid input (the body is not JSON, a field is missing or out of range, ...)",
        "correct the input that param names, as detail says",
    ),
    ErrorCode.UNAUTHORIZED: (
        "no valid credentials",
        "send an API key or a session token as Authorization: Bearer, or log in again",
    ),
    ErrorCode.INVALID_CREDENTIALS: (
        "wrong email or password at log-in",
        "check both and try again; a forgotten password is reset from the log-in page",
    ),
    ErrorCode.FORBIDDEN: (
        "the caller may not do this",
        "use credentials with a role that may; detail names the roles",
    ),
    ErrorCode.NOT_FOUND: (
        "no such resource or address",
        "check the id or address",
    ),
    ErrorCode.METHOD_NOT_ALLOWED: (
        "the address does not take this method",
        "use a method the Allow header lists",
    ),
    ErrorCode.PAYLOAD_TOO_LARGE: (
        "the body exceeds GIFTCARD_REQUEST_BODY_MAX_BYTES",
        "send a smaller body, or fewer items at once",
    ),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: (
        "a body sent as something other than application/json",
        "send JSON with Content-Type: application/json",
    ),
    ErrorCode.INSUFFICIENT_BALANCE: (
        "a deduction larger than the balance it is taken from",
        "take no more than the balance holds",
    ),
    ErrorCode.EMAIL_TAKEN: (
        "sign-up with an email that has an account",
        "log in instead, or reset the password",
    ),
    ErrorCode.CURRENCY_MISMATCH: (
        "a currency that is not the region's",
        "leave currency out, or send the account's own",
    ),
    ErrorCode.INVALID_STATE: (
        "e.g. activating a card that is not inactive",
        "read the resource's current state before acting on it",
    ),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: (
        "the same Idempotency-Key with another request",
        "use a new key for a new request; resend a retry exactly as first sent",
    ),
    ErrorCode.IDEMPOTENCY_KEY_IN_USE: (
        "kept for clients that know it; today a request whose key is still running waits "
        "for it and gets its answer instead",
        "retry with the same key",
    ),
    ErrorCode.INTERNAL_ERROR: (
        "a bug; the details are in the server log, not the answer",
        "retry later; an operator finds the details in the server log by Request-Id",
    ),
    ErrorCode.SERVICE_UNAVAILABLE: (
        "/readyz when the database (or Redis, when configured) does not answer; a limited "
        "request (redeem, sign-up, log-in) while Redis does not answer; a transaction "
        "that still met serialization failures, deadlocks or a locked SQLite database "
        "after its bounded retries; or a request that could not reach the database, or "
        "lost its connection to it (a restart of PostgreSQL)",
        "retry it, with the same Idempotency-Key: nothing was done, or (a connection lost "
        "while committing) it was done once and the retry gets its answer",
    ),
}
if _EXPLANATIONS.keys() != set(ErrorCode):
    raise RuntimeError("every error code needs an explanation")


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

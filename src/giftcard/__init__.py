"""giftcard: a self-hostable gift card service for online stores.

The public surface others may import is listed in ``__all__``; everything else is the
service's own business.
"""

from giftcard.errors import ErrorCode, GiftcardError

__version__ = "0.1.0"

__all__ = ["ErrorCode", "GiftcardError", "__version__"]

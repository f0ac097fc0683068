"""Customer support's use cases: looking up cards and customers, putting things right
(freeze, unfreeze, cancel, replace; balance adjustments with a second pair of eyes;
a gift's recipient), each recorded in the audit log (:mod:`giftcard.audit`) in the
same transaction as what it did."""

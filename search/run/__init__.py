"""One ``fmsearch run`` or ``fmsearch worker`` from its options to its result: check, open the
study, run its trials, finish (finals, refit, promotion, report)."""

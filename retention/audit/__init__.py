"""The audit trail: what was removed, when, under which rule, hash-chained."""

"""million_ird/sources package."""

"""million_ird/stages package."""

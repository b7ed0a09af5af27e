"""dynet_ref package."""

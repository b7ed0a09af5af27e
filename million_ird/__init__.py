"""Curation of the Million-IRD pre-training set: ingest, download, verify, score, filter, patch."""

import os

# img2dataset imports albumentations, which checks the network for updates at import time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

"""Session-wide fixtures: the seeded tiny backbone and synthetic trees (real loaders, real layouts)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_vlm():
    from xdomain_bench.vlm import load_backbone

    return load_backbone("tiny-clip")


@pytest.fixture(scope="session")
def synth_domainnet(tmp_path_factory):
    """A tiny synthetic DomainNet tree in the official layout; returns the data root."""
    from xdomain_bench.data.base import get_dataset

    root = tmp_path_factory.mktemp("synth_domainnet")
    get_dataset("domainnet").synth(root, scale="tiny", seed=0)
    return root

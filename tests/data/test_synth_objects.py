"""The synthetic renderer's domains: what each style keeps of an object's appearance."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from xdomain_bench.data.synth.objects import COLOURS, ObjectSpec, class_specs, render


@pytest.mark.parametrize("domain", ["sketch", "quickdraw"])
def test_line_domains_draw_unfilled_strokes_in_the_object_colour(domain):
    spec = ObjectSpec("square", "blue", "plain", "none")
    img, (x0, y0, x1, y1) = render(spec, domain, np.random.default_rng(3), size=64)
    px = np.asarray(img).reshape(-1, 3).astype(int)
    ink = px[(px != 255).any(1)]
    assert len(ink) > 20  # strokes were drawn
    assert np.abs(ink - np.array(COLOURS["blue"])).max() <= 15  # only the jittered class colour, no black
    centre = np.asarray(img)[(y0 + y1) // 2, (x0 + x1) // 2]
    assert (centre == 255).all()  # not filled


def test_sketch_strokes_are_wider_than_quickdraw_and_hatch_patterns():
    def ink(domain, pattern):
        img, _ = render(ObjectSpec("circle", "red", pattern, "none"), domain, np.random.default_rng(0), size=64)
        return int((np.asarray(img) != 255).any(-1).sum())

    assert ink("sketch", "plain") > ink("quickdraw", "plain")
    assert ink("sketch", "striped") > ink("sketch", "plain")


# sha256[:16] of 3 renders x 3 classes per source domain. demo-clip is pretrained on these renders and cached by
# its config hash only: if they change, bump xdomain_bench.vlm.demo_clip.VERSION, then update these values.
SOURCE_RENDERS = {"real": "8a69b3804e96442a", "clipart": "51d2955011ff03a6", "painting": "6fd3964ca1257699"}


@pytest.mark.parametrize("domain", sorted(SOURCE_RENDERS))
def test_source_domain_renders_are_pinned(domain):
    names = ["cat", "dog", "zebra"]
    specs = class_specs(names, salt="t")
    h = hashlib.sha256()
    for i, name in enumerate(names):
        rng = np.random.default_rng(i)
        for _ in range(3):
            img, box = render(specs[name], domain, rng, size=64)
            h.update(np.asarray(img).tobytes())
            h.update(str(box).encode())
    assert h.hexdigest()[:16] == SOURCE_RENDERS[domain], "source renders changed: bump demo_clip.VERSION"


def test_filled_domains_fill_the_object_with_its_colour():
    spec = ObjectSpec("star", "green", "dotted", "wings")
    img, (x0, y0, x1, y1) = render(spec, "real", np.random.default_rng(7), size=64)
    filled = np.asarray(img)[(y0 + y1) // 2, (x0 + x1) // 2].astype(int)
    assert np.abs(filled - np.array(COLOURS["green"])).max() < 80

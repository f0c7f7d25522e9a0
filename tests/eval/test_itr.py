"""Image-text R@K / RSUM (PROTOCOLS.md §7.2): hand-built duplicate-caption cases and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from xdomain_bench.errors import InputError
from xdomain_bench.eval.itr import evaluate_image_text

E = np.eye(3, dtype=np.float32)


def duplicate_case():
    """Images 0 and 1 are identical; their captions are the same text (spacing differs) and embedding."""
    images = E[[0, 0, 2]]
    texts_emb = E[[0, 0, 2]]
    owner = [0, 1, 2]
    texts = ["a dog", "a  dog ", "a cat"]
    return images, texts_emb, owner, texts


def test_duplicate_captions_clean_vs_instance_level():
    images, texts_emb, owner, texts = duplicate_case()
    clean = evaluate_image_text(images, texts_emb, owner, texts, dedupe_equivalent=True)
    paper = evaluate_image_text(images, texts_emb, owner, texts, dedupe_equivalent=False)
    # clean: caption 0 is equivalent to image 1's caption, so the tie cannot hurt
    assert clean["i2t_R@1"] == pytest.approx(100.0) and clean["t2i_R@1"] == pytest.approx(100.0)
    assert clean["RSUM"] == pytest.approx(600.0)
    # paper: image 1 ranks caption 0 first (tie, lower index) -> miss at 1; caption 1 ranks image 0 first
    assert paper["i2t_R@1"] == pytest.approx(200 / 3) and paper["t2i_R@1"] == pytest.approx(200 / 3)
    assert paper["i2t_R@5"] == pytest.approx(100.0) and paper["t2i_R@10"] == pytest.approx(100.0)
    assert paper["RSUM"] == pytest.approx(400 + 400 / 3)
    assert (paper["n_images"], paper["n_texts"]) == (3, 3)


def test_instance_level_depends_on_file_order_but_clean_does_not():
    images, texts_emb, owner, texts = duplicate_case()
    # swap the two duplicate captions' rows: caption of image 1 now comes first
    perm = [1, 0, 2]
    owner_p = [owner[i] for i in perm]
    texts_p = [texts[i] for i in perm]
    paper = evaluate_image_text(images, texts_emb[perm], owner_p, texts_p, dedupe_equivalent=False)
    clean = evaluate_image_text(images, texts_emb[perm], owner_p, texts_p)
    # i2t: image 0 now loses the tie; t2i is unchanged (images keep their order)
    assert paper["i2t_R@1"] == pytest.approx(200 / 3) and paper["t2i_R@1"] == pytest.approx(200 / 3)
    assert clean["RSUM"] == pytest.approx(600.0)


def test_several_captions_per_image_any_caption_counts():
    # image 0 owns captions 0 and 1 (caption 0 points the wrong way); image 1 owns caption 2
    images = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    texts_emb = np.array([[0.0, 1.0], [1.0, 0.1], [0.1, 1.0]], dtype=np.float32)
    got = evaluate_image_text(images, texts_emb, [0, 0, 1], ["x", "y", "z"], ks=(1, 2))
    # i2t: image 0 -> caption 1 first (its own: hit); image 1 -> caption 0 first (miss), caption 2 second
    assert got["i2t_R@1"] == pytest.approx(50.0) and got["i2t_R@2"] == pytest.approx(100.0)
    # t2i: caption 0 -> image 1 first (miss); captions 1 and 2 hit at 1
    assert got["t2i_R@1"] == pytest.approx(200 / 3) and got["t2i_R@2"] == pytest.approx(100.0)
    assert got["RSUM"] == pytest.approx(50 + 100 + 200 / 3 + 100)
    assert set(got) == {"i2t_R@1", "i2t_R@2", "t2i_R@1", "t2i_R@2", "RSUM", "n_images", "n_texts"}


@pytest.mark.parametrize("dedupe", [True, False])
def test_random_duplicates_match_bruteforce(brute, dedupe):
    rng = np.random.default_rng(5)
    n_img, per = 12, 3
    owner = np.repeat(np.arange(n_img), per)
    owner = owner[owner != 4]  # image 4 has no caption: R = 0, always a miss
    vocab = ["a red bird", "a  red bird", "a dog", "two cats ", "a plane", "a car"]
    texts = [vocab[i] for i in rng.integers(0, len(vocab), len(owner))]
    # few distinct directions so similarity ties are frequent and exact (one-hot sums)
    images = rng.integers(0, 2, (n_img, 4)).astype(np.float32) + np.eye(n_img, 4, dtype=np.float32)
    texts_emb = rng.integers(0, 2, (len(owner), 4)).astype(np.float32)
    texts_emb[texts_emb.sum(axis=1) == 0, 0] = 1
    images[images.sum(axis=1) == 0, 1] = 1
    got = evaluate_image_text(images, texts_emb, owner, texts, dedupe_equivalent=dedupe, chunk_size=5)
    want = brute.itr_metrics(images, texts_emb, owner, texts, dedupe)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def test_itr_input_errors():
    images, texts_emb, owner, texts = duplicate_case()
    with pytest.raises(InputError, match="needs the caption strings"):
        evaluate_image_text(images, texts_emb, owner)
    with pytest.raises(InputError, match="outside 0..2"):
        evaluate_image_text(images, texts_emb, [0, 1, 3], texts)
    with pytest.raises(InputError, match="3 integer image indices"):
        evaluate_image_text(images, texts_emb, [0, 1], texts)
    with pytest.raises(InputError, match="image dim 3 != text dim 2"):
        evaluate_image_text(images, texts_emb[:, :2], owner, texts)
    with pytest.raises(InputError, match="ks must be positive"):
        evaluate_image_text(images, texts_emb, owner, texts, ks=(0, 5))

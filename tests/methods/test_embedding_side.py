"""Each method's declared embedding side (none / image / text / both) against what one training step per
phase actually changes, measured against the frozen model's own image and text embeddings; and the
leaderboard label of text-only training on image-to-image protocols."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xdomain_bench.data.datamodule import RetrievalDataModule
from xdomain_bench.leaderboard.identity import IMAGE_ZERO_SHOT, selection_tag
from xdomain_bench.methods.base import EMBEDDING_SIDES, get_method_class, method_names
from xdomain_bench.methods.config import resolve_config

TEXTS = ["a photo of an ant.", "a red apple on a bench", "X-ray of a barn"]
DECLARED = {("dalsclip", "full"): "both", ("dalsclip", "dpl"): "text"}


@pytest.fixture(scope="module")
def batches(synth_domainnet, tiny_vlm):
    dm = RetrievalDataModule("domainnet", synth_domainnet, "ucdr", "clean", "sketch",
                             preprocess=tiny_vlm.preprocess, batch_size=8, seed=0)
    dm.setup()
    train = next(iter(dm.train_dataloader()))
    query = next(iter(dm.eval_dataloader("query")))
    return dm.info, train, query


def _frozen(vlm, query):
    with torch.no_grad():
        img = F.normalize(vlm.encode_image(query["pixels"]).float(), dim=-1)
        txt = F.normalize(vlm.encode_text(TEXTS).float(), dim=-1)
    return img, txt


def _embeddings(method, query):
    method.eval()
    with torch.no_grad():
        return (F.normalize(method.embed_images(query).float(), dim=-1),
                F.normalize(method.embed_texts(TEXTS).float(), dim=-1))


def _train_one_step_per_phase(method, batch) -> None:
    for phase in method.phases():
        method.set_phase(phase)
        params = [p for p in method.parameters() if p.requires_grad]
        if not params:
            continue
        opt = torch.optim.SGD(params, lr=0.5)
        method.train()
        loss, _ = method.training_loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()


CASES = [(name, None) for name in method_names() if name != "dalsclip"] + [("dalsclip", "full"), ("dalsclip", "dpl")]


@pytest.mark.parametrize(("name", "variant"), CASES, ids=[f"{n}-{v}" if v else n for n, v in CASES])
def test_declared_side_is_what_training_changes(name, variant, batches, tiny_vlm):
    info, train, query = batches
    torch.manual_seed(0)
    cls = get_method_class(name)
    method = cls(tiny_vlm, info, resolve_config(name, variant, "domainnet", {}))
    side = method.changed_embeddings()
    assert side in EMBEDDING_SIDES
    if (name, variant) in DECLARED:
        assert side == DECLARED[(name, variant)]
    if method.has_training():
        _train_one_step_per_phase(method, train)
    img, txt = _embeddings(method, query)
    ref_img, ref_txt = _frozen(tiny_vlm, query)
    image_moved = (img - ref_img).abs().max().item() > 1e-4
    text_moved = (txt - ref_txt).abs().max().item() > 1e-4
    measured = {(False, False): "none", (True, False): "image", (False, True): "text", (True, True): "both"}
    assert measured[(image_moved, text_moved)] == side, (
        f"{name}: declares '{side}', one step per phase moved image={image_moved}, text={text_moved}")


def _record(side, task="class", **extra):
    return {"status": "ok", "embedding_side": side, "task": task, "selection": {"split": "val", "tag": None}, **extra}


def test_text_only_training_is_labelled_on_image_protocols_only():
    assert selection_tag(_record("text")) == IMAGE_ZERO_SHOT
    assert selection_tag(_record("text", task="itr")) == ""  # image-text retrieval uses the trained text side
    for side in ("none", "image", "both"):
        assert selection_tag(_record(side)) == ""
    both = selection_tag(_record("text", selection={"split": "test", "tag": "test-selected"}))
    assert both == f"test-selected, {IMAGE_ZERO_SHOT}"

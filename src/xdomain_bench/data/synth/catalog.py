"""Every synthetic class's appearance, exactly as each dataset's synthetic writer draws it.

The demo backbone is pretrained on fresh renders of these (source domains only), so that its
zero-shot knowledge of a class name matches the synthetic trees it is later evaluated on.
"""

from __future__ import annotations

from dataclasses import dataclass

from .objects import ObjectSpec, class_specs

SOURCE_DOMAINS = {"domainnet": ("real", "clipart", "painting"), "sketchy": ("photo",), "tuberlin": ("photo",),
                  "cub": ("photo",), "fdrd": ("photo",)}


@dataclass(frozen=True)
class CatalogEntry:
    dataset: str
    class_name: str
    display: str  # how captions name the class
    spec: ObjectSpec
    domains: tuple[str, ...]


def appearance_catalog() -> list[CatalogEntry]:
    from ..base import get_dataset, read_class_list
    from ..fdrd import __name__ as _fdrd  # noqa: F401  (registers fdrd)
    from . import fdrd as synth_fdrd
    from .birds import bird_specs

    out: list[CatalogEntry] = []
    dn = get_dataset("domainnet")
    for name, spec in class_specs(dn.class_names, salt="domainnet").items():
        out.append(CatalogEntry("domainnet", name, name.replace("_", " "), spec, SOURCE_DOMAINS["domainnet"]))
    for ds in ("sketchy", "tuberlin"):
        adapter = get_dataset(ds)
        for name, spec in class_specs(read_class_list(adapter.card["class_list"]), salt=ds).items():
            out.append(CatalogEntry(ds, name, name.replace("_", " "), spec, SOURCE_DOMAINS[ds]))
    cub = get_dataset("cub")
    for name, spec in bird_specs(cub.card["class_names"]).items():
        out.append(CatalogEntry("cub", name, name.split(".", 1)[-1].replace("_", " "), spec, SOURCE_DOMAINS["cub"]))
    for ds, names in (("oxford_pets", synth_fdrd.PETS), ("oxford_flowers", synth_fdrd.FLOWERS),
                      ("fgvc_aircraft", synth_fdrd.AIRCRAFT)):
        for name, spec in class_specs(list(names), salt=f"fdrd/{ds}").items():
            out.append(CatalogEntry("fdrd", name, synth_fdrd._display(ds, name), spec, SOURCE_DOMAINS["fdrd"]))
    return out

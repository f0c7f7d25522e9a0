"""A method and a dataset for xdomain_bench, registered through entry points."""

from pydantic import BaseModel, ConfigDict

from xdomain_bench.data.base import load_card
from xdomain_bench.data.cub import CUBAdapter
from xdomain_bench.methods.zero_shot import ZeroShot


class ToyOptions(BaseModel):  # every option of the card, typed; unknown keys are errors
    model_config = ConfigDict(extra="forbid")
    template: str
    eval_batch_size: int = 128


class ToyZeroShot(ZeroShot):
    """Zero-shot retrieval with another prompt template."""

    config_schema = ToyOptions


class ToyBirds(CUBAdapter):
    """CUB-200-2011's layout and protocols under another folder name."""

    name = "toy_birds"
    folder = "ToyBirds"

    def __init__(self) -> None:
        self.card = {**load_card("cub"), "name": self.name, "title": "Toy birds (CUB layout)"}

"""The text tower's architecture (pipeline.networks.text_tower), torch-free: it is params.yaml's `text_tower`."""
from typing import Annotated

from pydantic import ConfigDict, Field, StrictInt
from pydantic.dataclasses import dataclass

PositiveInt = Annotated[StrictInt, Field(gt=0)]


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TextTowerCfg:
    """open_clip's text transformer, randomly initialised (SimZSS notes §2); the defaults are the paper's."""

    width: PositiveInt = 512
    layers: PositiveInt = 12
    heads: PositiveInt = 8
    context_length: PositiveInt = 77

"""One file per paper; importing this package registers every family."""

from plmkit.models import (  # noqa: F401  (registers the families)
    albert,
    bert,
    electra,
    ernie,
    roberta,
    transfo_xl,
    transformer,
    xlnet,
)
from plmkit.models.registry import FAMILIES, Family, build, get_family, preset_config

__all__ = ["FAMILIES", "Family", "albert", "bert", "build", "electra", "ernie", "get_family",
           "preset_config", "roberta", "transformer"]

"""One file per paper; importing this package registers every family."""

from plmkit.models import albert, bert, electra, roberta, transfo_xl, transformer, xlnet  # noqa: F401  (registers the families)
from plmkit.models.registry import FAMILIES, Family, build, get_family, preset_config

__all__ = ["FAMILIES", "Family", "albert", "bert", "build", "electra", "get_family",
           "preset_config", "roberta", "transformer"]

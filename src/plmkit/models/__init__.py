"""One file per paper; importing this package registers every family."""

from plmkit.models import bert
from plmkit.models.registry import FAMILIES, Family, build, get_family, preset_config

__all__ = ["FAMILIES", "Family", "bert", "build", "get_family", "preset_config"]

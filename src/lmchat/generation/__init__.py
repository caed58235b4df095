"""Engine-independent generation pieces: sampling options and stop strings."""

from lmchat.generation.sampling import SamplingParams, resolve_sampling
from lmchat.generation.stop import StopMatcher

__all__ = ["SamplingParams", "StopMatcher", "resolve_sampling"]

"""Text-image matchers ("guides"): a frozen model scoring images against concepts."""
from textwsss.guide.base import SIM_MAX, SIM_MIN, Matcher
from textwsss.guide.factory import KINDS, build_matcher

__all__ = ["Matcher", "SIM_MIN", "SIM_MAX", "build_matcher", "KINDS"]

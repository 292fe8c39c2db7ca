"""The one help layout of the command-line tools: jsonargparse's help (types and defaults) with
a description's examples kept as written."""

from __future__ import annotations

import argparse

from jsonargparse import DefaultHelpFormatter


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help with the description's lines and examples kept as written."""

"""medgen: generative models for medical imaging with privacy and lineage built in.

The library is quiet: it logs to the ``medgen`` logger (a NullHandler by default) and never prints.
The command line (``medgen.cli``) is where output to a person happens.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]

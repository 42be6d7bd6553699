"""wsss_lib: the library behind the wsss-pipeline Snakemake workflow.

Everything testable lives here and is importable without Snakemake.
"""

__version__ = "0.1.0"

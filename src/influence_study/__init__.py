"""influence_study: which training data makes a language model say what it says.

The package holds all the logic of the study; the Snakemake workflow (``Snakefile``) only wires its steps.
"""

__version__ = "0.1.0"

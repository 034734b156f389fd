"""Evaluators, one per metric family; a data set's spec names its own (see ``mrfbench.datasets.spec``)."""

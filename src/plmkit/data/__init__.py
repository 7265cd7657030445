"""Data: raw corpora to documents (`plmkit.data.corpus`), memory-mapped token shards
(`plmkit.data.shards`), BERT pretraining instances (`plmkit.data.bert`).

Import from the submodules; this package imports nothing, so that objectives may import data
modules and data modules `plmkit.objectives.masking` without a cycle.
"""

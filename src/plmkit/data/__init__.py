"""Data: raw corpora to documents (`plmkit.data.corpus`), memory-mapped token shards
(`plmkit.data.shards`), token selection for masking (`plmkit.data.masking`), BERT pretraining
instances (`plmkit.data.bert`). Import from the submodules.
"""

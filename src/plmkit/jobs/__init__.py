"""What runs a job end to end: pretraining (`pretrain`, `seq2seq`), `compare` and the `demo`."""

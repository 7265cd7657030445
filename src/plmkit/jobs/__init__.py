"""What runs a job end to end: pretraining (`pretrain`, `seq2seq`), fine-tuning (`finetune`),
`compare` and the `demo`."""

"""`plmkit compare`: pretrain several arms (each a preset with its objective) on the same
corpus, vocabulary and compute budget, each with several pretraining seeds, beside a 1-step
control arm; score each seed on one fixed held-out mask set along its run (learning curves),
with linear probes on its frozen features and by fine-tuning on each task; report each arm's
mean with its 95% interval over pretraining seeds, and the verdict of each claim from a paired
test. See docs/compare.md.

The budget is counted in model FLOPs: one training step of each model (forward + backward of
its objective, generator included for ELECTRA) is run once under
`torch.utils.flop_counter.FlopCounterMode`, which counts every matrix product; the number of
steps follows from the budget. `steps`, `tokens` (batch x sequence length per step) and
`minutes` (seconds per step measured on a few steps) are the other units.

Modules: `run` (arms, pretraining, resuming), `heldout` (the fixed mask sets), `downstream`
(fine-tuning and linear probes), `stats` (intervals, paired test, verdicts), `report` (files).
"""

from plmkit.jobs.compare.downstream import cut
from plmkit.jobs.compare.report import machine
from plmkit.jobs.compare.run import CompareArgs, compare, pretrain_args, training_step_flops
from plmkit.jobs.options import Entry, parse_entry

__all__ = ["CompareArgs", "Entry", "compare", "cut", "machine", "parse_entry", "pretrain_args",
           "training_step_flops"]

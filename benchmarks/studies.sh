#!/usr/bin/env bash
# The evidence studies of docs/compare.md (issue 25), one after another, at the lowest CPU
# priority. Every step resumes: run it again after an interruption and it goes on where it
# stopped (plmkit compare keeps each run's checkpoints; finished runs are reused).
#
#   benchmarks/studies.sh [STUDY...]   # default: those not done, s2b3 s2a s4 s6 s7 s9
#                                      # (done and committed: s1 s5 s8 dapt distill_albert)
#   STUDIES=/data/studies benchmarks/studies.sh s1
#
# Two processes can share the studies (one per core): the second, started with SECOND=1, waits
# until the first has built the corpora, then runs the same studies in its own run folders.
# Each holds the seed it trains by a claim in the study's records, passes by the seeds the
# other holds and takes the seeds the other has finished (and the vocabulary it trained).
# Each process goes through its studies twice: first training every seed no one holds (compare
# --no-wait), then once more to write each study's report, waiting for the other's last seeds.
#
#   benchmarks/studies.sh s1 & SECOND=1 benchmarks/studies.sh s1 &
#
# On a CPU shared with other jobs, give each study one thread (OMP_NUM_THREADS=1): torch's
# threads spin waiting for each other when the cores are oversubscribed, and a step can take
# 10x longer; on a quiet machine leave it unset.
#
# Run directories and data go to $STUDIES (default /work/studies, outside the checkout). Each
# finished pretraining seed's scores, each study's setup and tokenizer are kept in
# $RECORDS/<name>/seeds (default docs/studies: commit them as they come): a study resumes from
# them on another machine, where $STUDIES is gone. Each finished study's results.json,
# results.md and plots are copied to docs/studies/<name>/.
set -euo pipefail
cd "$(dirname "$0")/.."
PLMKIT=${PLMKIT:-.venv/bin/plmkit}
PYTHON=${PYTHON:-.venv/bin/python}
STUDIES=${STUDIES:-/work/studies}
RECORDS=${RECORDS:-docs/studies}
# Model FLOPs per pretraining run: BIG for studies 1-3, 7 and 8, SMALL for the others. On a GPU,
# the budget that takes bert-mini to held-out MLM accuracy 0.30 (docs/compare.md):
#   STUDIES=/data/studies BIG=3e16 SMALL=3e16 benchmarks/studies.sh
BIG=${BIG:-3e14}
SMALL=${SMALL:-1e14}
DATA=$STUDIES/data
mkdir -p "$STUDIES"

data() {  # the English corpora; a second process waits for the first to build them
  if [ -n "${SECOND:-}" ]; then
    until [ -f "$DATA/en-docs-500k.txt" ]; do sleep 60; done
    return
  fi
  [ -f "$DATA/en-docs/train.txt" ] || nice -n 19 "$PLMKIT" data build --name en-docs --out "$DATA/en-docs"
  # Static masking must repeat its masks: a slice small enough for >= 10 epochs at the budget.
  [ -f "$DATA/en-docs-500k.txt" ] || {
    awk 'BEGIN{RS="";ORS="\n\n"}{print; w+=NF; if (w>=500000) exit}' "$DATA/en-docs/train.txt" \
      > "$DATA/.en-docs-500k.txt"
    mv "$DATA/.en-docs-500k.txt" "$DATA/en-docs-500k.txt"
  }
}

# The shared setting: bert-mini-sized encoders (ELECTRA-Small's discriminator shape for study 1),
# a 16k WordPiece vocabulary, 3 pretraining seeds, BIG model FLOPs per run.
# Fine-tuning, its evaluations and the probes run in bf16 autocast (about 2x faster on this CPU).
COMMON=(--heldout "$DATA/en-docs/heldout.txt" --budget flops "$BIG" --pretrain-seeds 3 --seeds 1
        --tasks sentiment-en,nsp-en,bible-paraphrase --vocab-size 16000 --finetune-bf16)

BERT12='bert-mini:mlm:num_layers=12:embedding_size=128'
# ELECTRA-Small at the paper's learning rate (Clark et al. 2020, Table 6: 5e-4), the BERT arm's.
# A seed at 1.25e-4 (5e-4 scaled to the batch of 32) learnt no more context by the end of the
# budget, its generator less (docs/compare.md, "Study 1: ELECTRA's discriminator at 3e14 FLOPs").
ELECTRA='electra-small'
FULL='bert-mini:mlm:input_format=full-sentences:masking=dynamic'
STATIC='bert-mini:mlm:input_format=full-sentences:masking=static:dupe_factor=10'

run() {  # name, then compare's arguments; in the first pass (TRAINING=1) no report
  local name=$1 out=$STUDIES/$1 wait=(); shift
  [ -z "${SECOND:-}" ] || out=$out-2  # the second process: see the top of this file
  [ -z "${TRAINING:-}" ] || wait=(--no-wait)
  nice -n 19 "$PLMKIT" compare "$@" --out "$out" --records "$RECORDS/$name/seeds" "${wait[@]}"
  [ -z "${TRAINING:-}" ] || return 0
  mkdir -p "docs/studies/$name"
  cp "$out"/results.{json,md} "$out"/*.png "docs/studies/$name/"
  claims
}

one_process() {  # false in the second process (with a line on stderr) and in the second pass:
  # study $1 runs whole in the first process's first pass
  [ -z "${SECOND:-}" ] || { echo "studies.sh: $1 runs in the first process only" >&2; return 1; }
  [ -n "${TRAINING:-}" ]
}

claims() {  # docs/compare.md's first figure: every claim of the studies finished so far
  local folders=(docs/studies/*-"$BIG" docs/studies/*-"$SMALL" docs/studies/dapt-bible
                 docs/studies/distill docs/studies/distill-albert)
  nice -n 19 "$PYTHON" benchmarks/claims_plot.py "${folders[@]}" --out docs/studies/claims.png
}

s1() {  # ELECTRA vs BERT MLM at equal FLOPs
  run "electra-vs-bert-$BIG" --models "$BERT12,$ELECTRA" --corpus "$DATA/en-docs/train.txt" \
    "${COMMON[@]}" --lr 5e-4 --finetune-lr 3e-4 --claim "$ELECTRA > $BERT12"
}

s2b3() {  # FULL-SENTENCES without NSP vs SEGMENT-PAIR with NSP; NSP vs SOP on one architecture
  run "nsp-sop-$BIG" --models "bert-mini:mlm+nsp:masking=dynamic,bert-mini:mlm+sop:masking=dynamic,$FULL" \
    --corpus "$DATA/en-docs/train.txt" "${COMMON[@]}" --lr 5e-4 --finetune-lr 3e-4 \
    --claim "$FULL > bert-mini:mlm+nsp:masking=dynamic" \
    --claim "bert-mini:mlm+sop:masking=dynamic > bert-mini:mlm+nsp:masking=dynamic"
}

s2a() {  # static (dupe factor 10, masks repeat) vs dynamic masking
  run "masking-$BIG" --models "$STATIC,$FULL" --corpus "$DATA/en-docs-500k.txt" "${COMMON[@]}" \
    --lr 5e-4 --finetune-lr 3e-4 --claim "$FULL > $STATIC"
}

# ALBERT at bert-mini's shape (4 layers, H 256, 4 heads), E 128 unless stated.
ALBERT='albert-small:mlm+sop:hidden_size=256:num_heads=4:intermediate_size=1024'

s4() {  # ALBERT's sharing modes (Table 4) and embedding sizes (Table 3) at equal FLOPs
  run "albert-$SMALL" --models "$ALBERT,$ALBERT:sharing=none,$ALBERT:sharing=attention,$ALBERT:sharing=ffn,$ALBERT:embedding_size=64" \
    --corpus "$DATA/en-docs/train.txt" "${COMMON[@]/$BIG/$SMALL}" --lr 5e-4 \
    --finetune-lr 3e-4 --claim "$ALBERT:sharing=none > $ALBERT" \
    --claim "$ALBERT > $ALBERT:embedding_size=64"
}

ADV='electra-small:electra:generator_training=adversarial'

s8() {  # ELECTRA's generator by maximum likelihood vs adversarially (Clark et al. 2020, appendix F):
  # study 1's run with the adversarial arm added, so its three maximum-likelihood runs are reused
  run "electra-vs-bert-$BIG" --models "$BERT12,$ELECTRA,$ADV" \
    --corpus "$DATA/en-docs/train.txt" "${COMMON[@]}" --lr 5e-4 --finetune-lr 3e-4 \
    --claim "$ELECTRA > $BERT12" --claim "$ELECTRA > $ADV"
}

s5() {  # Transformer-XL: memory vs sliding window up to the paper's attention length 3,800
  one_process s5 || return 0
  nice -n 19 "$PYTHON" benchmarks/transfo_xl_memory.py --flops "$SMALL" --out "$STUDIES/transfo-xl-memory" \
    --work "$STUDIES/transfo-xl-memory-runs"
  mkdir -p docs/studies/transfo-xl-memory
  cp "$STUDIES"/transfo-xl-memory/* docs/studies/transfo-xl-memory/
}

# ERNIE at bert-mini's shape (4 layers, H 256, 4 heads) on People's Daily, one character vocabulary
# (18,000 characters).
ERNIE='ernie-small::hidden_size=256:num_heads=4:intermediate_size=1024'

s6() {  # ERNIE knowledge masking with jieba's entity list (not ner-zh's annotations) vs characters
  [ -f "$DATA/pd/train.txt" ] || nice -n 19 "$PLMKIT" data build --name peoples-daily --out "$DATA/pd"
  local knowledge="${ERNIE/::/:ernie:entities=jieba:}" chars="${ERNIE/::/:mlm+nsp:}"
  run "ernie-$SMALL" --models "$knowledge,$chars" --corpus "$DATA/pd/train.txt" \
    --heldout "$DATA/pd/heldout.txt" --tokenizer-kind char --vocab-size 18000 --budget flops "$SMALL" \
    --pretrain-seeds 3 --seeds 1 --tasks sentiment-zh,ner-zh --finetune-bf16 --lr 5e-4 \
    --finetune-lr 3e-4 --claim "$knowledge > $chars"
}

s7() {  # the original Transformer on Bible EN->ES against copying the source, 3 seeds
  one_process s7 || return 0
  nice -n 19 "$PYTHON" benchmarks/translation_study.py --flops "$BIG" --out "$STUDIES/translation-en-es" \
    --records "$RECORDS/translation-en-es/seeds"
  mkdir -p docs/studies/translation-en-es
  cp "$STUDIES"/translation-en-es/results.{json,md} docs/studies/translation-en-es/
}

distill_albert() {  # issue 27: task distillation from an ALBERT teacher (no pretrained ALBERT
  # installs offline, so the teacher is study 4's first arm, pretrained here alone at SMALL FLOPs)
  one_process distill_albert || return 0
  nice -n 19 "$PLMKIT" compare --models "$ALBERT" --corpus "$DATA/en-docs/train.txt" \
    --heldout "$DATA/en-docs/heldout.txt" --budget flops "$SMALL" --pretrain-seeds 1 \
    --control none --tasks "" --vocab-size 16000 --lr 5e-4 --out "$STUDIES/albert-teacher-$SMALL"
  nice -n 19 "$PYTHON" benchmarks/distill_study.py --teacher "$STUDIES/albert-teacher-$SMALL"/runs/*/seed-0 \
    --teacher-name "ALBERT (4 shared layers, H 256; plmkit, $SMALL FLOPs on en-docs)" --layers 2 \
    --work "$STUDIES/distill-albert" --out docs/studies/distill-albert --seeds 6
  mkdir -p docs/studies/distill-albert/teacher
  cp "$STUDIES/albert-teacher-$SMALL"/results.{json,md} "$STUDIES/albert-teacher-$SMALL"/heldout_vs_flops.png \
    docs/studies/distill-albert/teacher/
}

dapt() {  # issue 24: all-MiniLM-L6-v2 before and after continued pretraining on the Bible
  one_process dapt || return 0
  nice -n 19 "$PYTHON" benchmarks/dapt_study.py --out "$STUDIES/dapt-bible"
  mkdir -p docs/studies/dapt-bible
  cp "$STUDIES"/dapt-bible/results.{json,md} docs/studies/dapt-bible/
  claims
}

s9() {  # induced-set attention (Set Transformer ISAB) vs full attention at equal FLOPs
  local len full induced
  for len in 128 1024; do
    full="bert-mini:mlm:max_positions=$len"
    induced="$full:attention=induced:num_inducing=32"
    run "induced-$len-$SMALL" --models "$full,$induced" --corpus "$DATA/en-docs/train.txt" \
      --seq-len "$len" --batch-size $((4096 / len)) "${COMMON[@]/$BIG/$SMALL}" \
      --lr 5e-4 --finetune-lr 3e-4 --claim "$induced > $full"
  done
}

data
read -ra studies <<< "${*:-s2b3 s2a s4 s6 s7 s9}"
TRAINING=1
for s in "${studies[@]}"; do "$s"; done  # every seed no other process holds
TRAINING=
for s in "${studies[@]}"; do "$s"; done  # the reports

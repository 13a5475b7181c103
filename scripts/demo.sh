#!/usr/bin/env bash
# The whole pipeline in Spark local mode on built-in demo data (run by `make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUTPUT:-demo-output}
MASTER=${SPARK_MASTER:-local[2]}
SUBMIT=(scripts/ser-submit --master "$MASTER")  # spark-submit with .venv and conf/log4j2.properties
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1/6 generating the demo corpus (synthetic speech, RAVDESS-style names)"
python -m jobs.make_demo_corpus --output "$OUT/corpus" --actors 8

echo "== 2/6 extracting features with Spark ($MASTER), plus one telephone-channel copy of each clip,"
echo "         with the log-mel floor 40 dB under each clip's peak (robust to a line's noise floor)"
"${SUBMIT[@]}" jobs/extract_features.py \
  --input "$OUT/corpus" --output "$OUT/features" --log-level WARNING --set mel.top_db=40 \
  --augment 1 --set 'augment.settings.effects=["telephone"]' --set augment.settings.max_effects_per_variant=1
python - "$OUT/features" <<'PY'
import json, sys
manifest = json.load(open(f"{sys.argv[1]}/_manifest.json"))
print("features:", sys.argv[1] + "/features", "| counts:", manifest["counts"], "| seconds:", manifest["timings_s"])
PY

echo "== 3/6 training: logistic regression (6-fold, speaker-independent) and a CNN fused with"
echo "         per-speaker standardised statistics, the adaptive model (holdout of speakers)"
"${SUBMIT[@]}" jobs/train.py --features "$OUT/features" \
  --model logreg --taxonomy core6 --output "$OUT/models/logreg-core6" --log-level WARNING
"${SUBMIT[@]}" jobs/train.py --features "$OUT/features" \
  --model cnn --taxonomy core6 --folds 1 --set cnn.max_epochs=12 --set cnn.stats_fusion_weight=0.35 \
  --output "$OUT/models/adaptive-core6" --log-level WARNING

echo "== 4/6 evaluating the adaptive bundle on the table (rows grouped by speaker; its test speakers were held out)"
"${SUBMIT[@]}" jobs/evaluate.py --features "$OUT/features" \
  --model "$OUT/models/adaptive-core6" --output "$OUT/reports/adaptive-core6" --log-level WARNING

echo "== 5/6 scoring the customer's channel of a generated stereo call (agent ch. 0, customer ch. 1, 8 kHz mu-law),"
echo "         adapted to the customer as one speaker (the README's advice: --channels customer)"
python -m ser_udfs.synthetic.calls "$OUT/calls/demo_call.wav" --duration-s 120
"${SUBMIT[@]}" jobs/score_calls.py --input "$OUT/calls" \
  --model "$OUT/models/adaptive-core6" --output "$OUT/scores" --channels customer --plot demo_call.wav \
  --log-level WARNING
python - "$OUT/scores" <<'PY'
import json, sys
import pandas as pd
m = json.load(open(f"{sys.argv[1]}/_manifest.json"))
print("tables:", ", ".join(f"{sys.argv[1]}/{name}" for name in ("segments", "turns", "channels", "calls", "errors")))
print("timeline plot:", m["plot"], "| counts:", m["counts"])
for row in pd.read_parquet(f"{sys.argv[1]}/calls").to_dict("records"):
    reasons = "; ".join(reason["detail"] for reason in row["escalation_reasons"]) or "none"
    print(f"call {row['call_id']}: escalation score {row['escalation_score']:.2f} (reasons: {reasons}); "
          f"{row['analytics_note'] or ''}")
for row in pd.read_parquet(f"{sys.argv[1]}/channels").sort_values(["call_id", "channel"]).to_dict("records"):
    print(f"  channel {row['channel']} ({row['role']}): talk share {row['talk_share']:.0%}, dominant "
          f"{row['dominant_emotion']}, negative {row['negative_share'] or 0:.0%}, ended negative {row['ended_negative']}; "
          f"adaptation {row['adaptation']} from {row['windows']} windows")
PY

echo "== 6/6 the run report: counts, distributions, calls to review with their timelines (offline HTML)"
python -m jobs.report_calls --scores "$OUT/scores" --output "$OUT/report" --log-level WARNING
echo "report: $OUT/report/index.html"

#!/usr/bin/env bash
# The whole pipeline in Spark local mode on built-in demo data (run by `make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUTPUT:-demo-output}
MASTER=${SPARK_MASTER:-local[2]}
SUBMIT_OPTS="--driver-java-options -Dlog4j.configurationFile=conf/log4j2.properties"
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1/2 generating the demo corpus (synthetic speech, RAVDESS-style names)"
python -m jobs.make_demo_corpus --output "$OUT/corpus" --actors 8

echo "== 2/2 extracting features with Spark ($MASTER)"
spark-submit --master "$MASTER" $SUBMIT_OPTS jobs/extract_features.py \
  --input "$OUT/corpus" --output "$OUT/features" --log-level WARNING
python - "$OUT/features" <<'PY'
import json, sys
manifest = json.load(open(f"{sys.argv[1]}/_manifest.json"))
print("features:", sys.argv[1] + "/features", "| counts:", manifest["counts"], "| seconds:", manifest["timings_s"])
PY

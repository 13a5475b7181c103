# ser-spark: the two quick-start commands are `make demo` and `make test`; each sets itself up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup demo test package clean cluster-start cluster-stop

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@scripts/check_java.sh
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	scripts/demo.sh

test: setup
	$(VENV)/bin/pytest

# Zip of the project's packages for `spark-submit --py-files` on a cluster.
package: setup
	rm -f dist/ser_spark.zip && mkdir -p dist
	zip -qr dist/ser_spark.zip ser_udfs training jobs -x '*/__pycache__/*'
	@echo "dist/ser_spark.zip: pass it with --py-files; ship conf/ with --files or point --config at it"

clean:
	rm -rf $(VENV) dist demo-output .pytest_cache

# A standalone Spark cluster on 127.0.0.1 (one master, two workers) from .venv's PySpark.
cluster-start: setup
	scripts/cluster.sh start

cluster-stop:
	scripts/cluster.sh stop

"""Train an emotion model on a features table and write a model bundle.

Usage::

    spark-submit jobs/train.py --features /tables/ser_features --model logreg|cnn \\
        --taxonomy core6 --split speaker --output /models/cnn-core6 \\
        [--config conf/train_cnn.toml] [--folds 6] [--distributed 2] [--set cnn.max_epochs=30]
    spark-submit jobs/train.py --features T --model wav2vec2 --pretrained /models/wav2vec2-base ...
    spark-submit jobs/train.py --features T|E --model embed-logreg|embed-mlp --pretrained P [--layer 6] ...

Transformer models (docs/TRANSFORMERS.md) read the ``waveform`` column (extract with
``--set output.keep_waveform=true``); ``embed-*`` also read an embeddings table ``E`` written by
``jobs/extract_embeddings.py`` with the same ``--pretrained``.

The default split is speaker-independent (``--split random`` only when asked for, and every
report says which). ``--folds K`` cross-validates grouped by speaker and reports mean ± std;
``--folds 1`` holds out ``split.test_fraction`` of the speakers; ``--set
split.assignment=ravdess_emobox`` takes predefined folds from a file (``conf/splits/``). The bundle (``--output``, a
local folder) holds the weights (safetensors/JSON), ``config.json``, ``metrics.json`` and plots.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # started as a script by spark-submit
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs._cli import CONF_DIR, base_parser, print_config, run, setup_logging
from jobs._spark import build_spark
from ser_udfs.errors import UserError
from ser_udfs.spark.feature_table import columns_for, read_feature_table
from ser_udfs.spark.path_checks import check_local_inputs_exist
from ser_udfs.settings import resolve_config
from training.models.embedding_head import EmbeddingHeadTrainConfig
from training.models.wav2vec2 import Wav2Vec2TrainConfig
from training.protocol import TrainConfig, train_from_frame
from training.taxonomy import load_taxonomy

log = logging.getLogger("ser_spark.train")

MODELS = ("logreg", "cnn", "wav2vec2", "embed-logreg", "embed-mlp")
EMBEDDING_MODELS = ("embed-logreg", "embed-mlp")


def parse_args(argv: Sequence[str] | None):
    parser = base_parser(__doc__.split("\n\n")[0], "train_<model>.toml")
    parser.add_argument("--features", required=True, help="a features table (the extraction job's --output)")
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--output", required=True, help="bundle folder to write (local path)")
    parser.add_argument("--taxonomy", help="core6, ravdess8, basic4, or your own TOML file")
    parser.add_argument("--split", choices=["speaker", "random"], help="speaker (default) or random")
    parser.add_argument("--folds", type=int, help="cross-validation folds (1 = one holdout split)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--distributed", type=int, metavar="N",
                        help="train the CNN with TorchDistributor on N processes (gloo, CPU)")
    parser.add_argument("--pretrained", help="wav2vec2/embed-*: Hugging Face model folder (or hub id)")
    parser.add_argument("--layer", type=int, help="embed-*: hidden state the head reads (-1: learned weighted sum)")
    args = parser.parse_args(argv)
    if args.config.endswith("train_<model>.toml"):
        name = "embeddings.toml" if args.model in EMBEDDING_MODELS else f"train_{args.model}.toml"
        args.config = str(CONF_DIR / name)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    transformer = args.model in ("wav2vec2", *EMBEDDING_MODELS)
    if args.pretrained and not transformer:
        raise UserError("--pretrained is for the wav2vec2 and embed-* models")
    if args.layer is not None and args.model not in EMBEDDING_MODELS:
        raise UserError("--layer is for the embed-* models")
    if args.distributed and args.model != "cnn":
        raise UserError(f"--distributed trains the CNN only; drop it for {'transformer models' if transformer else 'logreg'}")
    config_class = (EmbeddingHeadTrainConfig if args.model in EMBEDDING_MODELS
                    else Wav2Vec2TrainConfig if transformer else TrainConfig)
    config = resolve_config(config_class, args.config, _overrides(args))
    if args.print_config:
        return print_config(config)
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise UserError(f"--output {args.output} exists and is not a folder")
    # What can be checked without Spark is checked before it starts (it takes seconds).
    check_local_inputs_exist("--features", [args.features])
    load_taxonomy(config.taxonomy)

    spark = build_spark("ser-train")
    frame, manifest = _read_rows(spark, args, config)
    log.info("%d labelled rows from %s", len(frame), args.features)
    runner = None
    if args.distributed:
        from pyspark.ml.torch.distributor import TorchDistributor

        runner = TorchDistributor(num_processes=args.distributed, local_mode=True, use_gpu=False).run
    result = train_from_frame(frame, config, feature_config=manifest["feature_config"], output_dir=args.output,
                              distributed_runner=runner)
    return _report(result)


def _overrides(args) -> list[str]:
    """``--set`` values after the flags that stand for config keys (``--pretrained``, ``--layer``, ...)."""
    pretrained_key = "embedding.pretrained" if args.model in EMBEDDING_MODELS else "wav2vec2.pretrained"
    overrides = [f"model={json.dumps(args.model)}", *args.overrides]
    for key, value in (("taxonomy", args.taxonomy), ("split.method", args.split), ("split.folds", args.folds),
                       ("seed", args.seed), (pretrained_key, args.pretrained), ("head.layer", args.layer)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return overrides


def _read_rows(spark, args, config):
    """The rows to train on and the table's manifest: a features table, or for ``embed-*`` an embeddings table."""
    from ser_udfs.spark.embeddings import is_embeddings_table, read_embeddings_table

    if isinstance(config, EmbeddingHeadTrainConfig) and is_embeddings_table(spark, args.features):
        return read_embeddings_table(spark, args.features)
    inputs = config.feature_inputs() if isinstance(config, TrainConfig) else ["waveform"]
    return read_feature_table(spark, args.features, feature_columns=columns_for(inputs))


def _report(result: dict) -> int:
    metrics = result["metrics"]
    print(f"{result['model']} on {result['taxonomy']} ({result['split']}): "
          + ", ".join(f"{name} {_format(value)}" for name, value in metrics.items()))
    if result["per_corpus"]:
        print("ua per corpus: " + ", ".join(f"{corpus} {_format(ua)}" for corpus, ua in result["per_corpus"].items()))
    print(f"bundle: {result['bundle_dir']}")
    return 0


def _format(value) -> str:
    if isinstance(value, dict) and "mean" in value:
        return f"{value['mean']:.3f} ± {value['std']:.3f}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def cli() -> None:
    """The console entry point of an installed copy (``pyproject.toml``'s ``[project.scripts]``)."""
    sys.exit(run(main))


if __name__ == "__main__":
    cli()

"""Non-LLM baselines of the template track, written as ``predictions.parquet`` for model_evaluate.py.

    python benchmarks/template_baselines.py --train DIR/train.parquet --test DIR/test.parquet \
        --baseline tfidf --out OUT/predictions.parquet

Two baselines, one table (:data:`BASELINES`):

- ``majority``: every test template gets the training split's most frequent label.
- ``tfidf``: TF-IDF of word and character n-grams of the template, then a class-balanced logistic
  regression (scikit-learn, deterministic ``liblinear`` solver), trained on the training split.

Each writes the contract's prediction columns (``data_source``, ``log``, ``label``, ``response``,
``pred``) with ``response = <answer>LABEL</answer>``, so ``model_evaluate.py`` scores them with the
same parser and metrics as the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reward.labels import ABNORMAL, NORMAL  # noqa: E402
from validation.model_evaluate import RUN_METADATA_KEY  # noqa: E402


def rows_of(path: Path) -> pd.DataFrame:
    """``data_source``, ``log`` and ``label`` of a VeRL RL parquet (train/val/test.parquet)."""
    frame = pd.read_parquet(path)
    return pd.DataFrame({
        "data_source": frame["data_source"].astype(str),
        "log": [info["log"] for info in frame["extra_info"]],
        "label": [rm["ground_truth"] for rm in frame["reward_model"]],
    })


def majority(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> list[str]:
    """The training split's most frequent label for every test row (ties go to ``normal``)."""
    counts = train["label"].value_counts()
    top = ABNORMAL if counts.get(ABNORMAL, 0) > counts.get(NORMAL, 0) else NORMAL
    return [top] * len(test)


def tfidf_logistic(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> list[str]:
    """TF-IDF (words 1-2, characters 2-5) + class-balanced logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"[A-Za-z]{2,}",
                        sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    model = make_pipeline(features, LogisticRegression(class_weight="balanced", solver="liblinear",
                                                       C=4.0, random_state=seed, max_iter=1000))
    model.fit(train["log"], train["label"])
    return [str(p) for p in model.predict(test["log"])]


#: baseline name → function(train rows, test rows, seed) → predicted labels
BASELINES: dict[str, Callable[[pd.DataFrame, pd.DataFrame, int], list[str]]] = {
    "majority": majority,
    "tfidf": tfidf_logistic,
}


def write_predictions(test: pd.DataFrame, preds: Sequence[str], out: Path, baseline: str) -> None:
    """Write the prediction columns, with the baseline's name in the run metadata."""
    frame = test.assign(response=[f"<answer>{p}</answer>" for p in preds], pred=list(preds))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {"model": f"baseline:{baseline}", "rows": len(frame)}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           RUN_METADATA_KEY: json.dumps(meta).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True, help="train.parquet of the split")
    parser.add_argument("--test", type=Path, required=True, help="test.parquet of the split")
    parser.add_argument("--baseline", choices=sorted(BASELINES), required=True)
    parser.add_argument("--out", type=Path, required=True, help="predictions.parquet to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model (default: 0)")
    args = parser.parse_args(argv)
    train, test = rows_of(args.train), rows_of(args.test)
    preds = BASELINES[args.baseline](train, test, args.seed)
    write_predictions(test, preds, args.out, args.baseline)
    flagged = sum(p == ABNORMAL for p in preds)
    print(f"{args.baseline}: {len(preds)} test rows, {flagged} flagged abnormal -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

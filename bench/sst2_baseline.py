"""The SST-2 baseline the encoder classifier is measured against: TF-IDF of word 1- and 2-grams
and logistic regression (scikit-learn), trained on train.tsv, accuracy on dev.tsv.

    .venv/bin/python bench/sst2_baseline.py ../shared/data/sst2/train.tsv.gz ../shared/data/sst2/dev.tsv.gz
"""
from __future__ import annotations

import sys
import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from aiayn.family.classifier import read_labelled


def main() -> None:
    (train_x, train_y), (dev_x, dev_y) = read_labelled(sys.argv[1]), read_labelled(sys.argv[2])
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    model = LogisticRegression(C=4.0, max_iter=2000).fit(vectorizer.fit_transform(train_x), train_y)
    accuracy = (model.predict(vectorizer.transform(dev_x)) == dev_y).mean()
    print(f"TF-IDF (word 1-2 grams) + logistic regression: SST-2 dev accuracy {100 * accuracy:.2f}% "
          f"({len(train_x):,} training examples, {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

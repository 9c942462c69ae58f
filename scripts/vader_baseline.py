#!/usr/bin/env python3
"""The word-list baseline palate's sentiment must beat: VADER (PyPI vaderSentiment, 2014) on the
English reviews of the sample data, scored exactly as `palate eval` scores palate.

  scripts/vader_baseline.py [data/reviews.jsonl data/reviews.csv ...]

Truth: rating 1-2 negative, 4-5 positive (3 is left out of accuracy and counts as not positive
in a restaurant's true positive share). VADER's label: compound >= 0.05 positive, <= -0.05
negative, else neutral (its authors' thresholds). Prints one JSON object.
"""
import csv
import json
import sys
from collections import defaultdict

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


def rows(paths):
    for p in paths:
        with open(p, encoding="utf-8") as f:
            if p.endswith(".csv"):
                yield from csv.DictReader(f)
            else:
                yield from (json.loads(line) for line in f if line.strip())


def main(paths):
    sia = SentimentIntensityAnalyzer()
    correct = judged = 0
    per = defaultdict(lambda: [0, 0, 0])  # reviews, truly positive, labelled positive
    for r in rows(paths):
        if r.get("lang") != "en" or r.get("rating") in (None, ""):
            continue
        rating = float(r["rating"])
        compound = sia.polarity_scores(r["text"])["compound"]
        label = "positive" if compound >= 0.05 else "negative" if compound <= -0.05 else "neutral"
        d = per[r["restaurant_id"]]
        d[0] += 1
        d[1] += rating >= 4
        d[2] += label == "positive"
        if rating != 3:
            judged += 1
            correct += label == ("positive" if rating >= 4 else "negative")
    errors = [abs(t / n - s / n) for n, t, s in per.values()]
    print(json.dumps({
        "baseline": "VADER 3.3.2, English reviews",
        "reviews_judged": judged,
        "accuracy": round(correct / judged, 4),
        "restaurants": len(errors),
        "aggregate_error_en": round(sum(errors) / len(errors), 4),
    }))


if __name__ == "__main__":
    main(sys.argv[1:] or ["data/reviews.jsonl", "data/reviews.csv"])

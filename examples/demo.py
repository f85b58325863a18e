"""The second half of ``make demo``: what the embeddings in demo-output/ give.

Reads the vectors ``skbert embed`` wrote (demo-output/demo.parquet, or the
file given as the first argument), shows each text's nearest neighbour, and
runs the tutorial's recipes as one-liners on the bundled model.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from skbert import BertSentenceVectorizer

demo_csv = Path(__file__).with_name("demo.csv")
texts = pd.read_csv(demo_csv, keep_default_na=False)["text"].tolist()
path = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-output/demo.parquet")
if not path.is_file():
    sys.exit(
        f"{path} not found: write it first with skbert embed examples/demo.csv "
        f"--column text --output {path} (or run make demo)."
    )
vectors = pd.read_parquet(path).to_numpy()
print(f"{path}: {vectors.shape[0]} texts x {vectors.shape[1]} features")

unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
similarity = unit @ unit.T
np.fill_diagonal(similarity, -1)
print("\nNearest neighbours (cosine):")
for i in range(3):
    j = int(similarity[i].argmax())
    print(f"  {similarity[i, j]:.2f}  {texts[i][:50]!r} -> {texts[j][:50]!r}")

sentence = "Here is the sentence I want embeddings for."
print(
    "\nThe tutorial's layer choices as sentence vectors (mean over the tokens), one "
    "line each\n(bundled model, hidden size 384; the first call loads the model):"
)
recipes = {
    "second-to-last layer": BertSentenceVectorizer(layers=-2, pooling="mean"),
    "last four layers, concatenated": BertSentenceVectorizer(
        layers=[-1, -2, -3, -4], layer_combine="concat", pooling="mean"
    ),
    "last four layers, summed": BertSentenceVectorizer(
        layers=[-1, -2, -3, -4], layer_combine="sum", pooling="mean"
    ),
}
for name, vectorizer in recipes.items():
    start = time.perf_counter()
    X = vectorizer.fit_transform([sentence])
    print(f"  {name:32s} shape {X.shape}  {time.perf_counter() - start:.2f} s")
print("\nWordPiece tokens, as the tutorial prints them:")
tokens = BertSentenceVectorizer().fit().tokenize([sentence])
print(tokens[["token", "token_id"]].to_string(index=False))

print('\nThe tutorial\'s "bank" experiment, BertWordVectorizer (last 4 layers summed):')
from skbert import BertWordVectorizer  # noqa: E402

text = (
    "After stealing money from the bank vault, the bank robber was seen "
    "fishing on the Mississippi river bank."
)
spans = [(text, m.start(), m.end()) for m in re.finditer(r"\bbank\b", text)]
X = BertWordVectorizer().fit().transform(spans)
X = X / np.linalg.norm(X, axis=1, keepdims=True)
print(f"  bank vault  vs bank robber (same meaning):      {X[0] @ X[1]:.2f}")
print(f"  bank robber vs river bank  (different meaning): {X[1] @ X[2]:.2f}")

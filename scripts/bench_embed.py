"""Python fastembed on palate's embedding model, for `scripts/bench_embed.sh`: the same ONNX file,
tokenizer, "query: " prefix, mean pooling, batch size, 512-token cut and thread count as palate's
local embedder. Prints one reviews/s figure per round."""
import argparse, json, time

from fastembed import TextEmbedding
from fastembed.common.model_description import ModelSource, PoolingType

ap = argparse.ArgumentParser()
ap.add_argument("--model-dir", required=True)
ap.add_argument("--texts", required=True, help="JSONL with a text field")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--rounds", type=int, default=3)
a = ap.parse_args()

TextEmbedding.add_custom_model(
    model="palate/multilingual-e5-small-q4",
    pooling=PoolingType.MEAN,
    normalization=True,
    sources=ModelSource(hf="palate/multilingual-e5-small-q4"),
    dim=384,
    model_file="model.onnx",
)
te = TextEmbedding(
    model_name="palate/multilingual-e5-small-q4",
    specific_model_path=a.model_dir,
    threads=a.threads,
)
texts = ["query: " + json.loads(l)["text"] for l in open(a.texts, encoding="utf-8") if l.strip()]
list(te.embed(texts[: a.batch], batch_size=a.batch))  # warm-up
for _ in range(a.rounds):
    t = time.perf_counter()
    n = sum(1 for _ in te.embed(texts, batch_size=a.batch))
    print(f"{n / (time.perf_counter() - t):.1f}", flush=True)

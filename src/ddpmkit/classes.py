"""The classes of a conditional run as a user names them: indices, names, lists, and the data's proportions.

`ddpm sample --class 3`, `--class cat`, `--class 0,1,2` (cycled over the samples), and with no --class the labels of
a conditional run are drawn in the proportions of its training data (seeded), which is also what FID, precision /
recall and IS of a conditional model use, so that they compare the model with the data as a whole.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import ConfigError
from .models.unet import NO_CLASS


def unconditional_error(flag: str, where) -> ConfigError:
    return ConfigError(f"{flag}: {where} is an unconditional run (it has no classes); train one with "
                       "ddpm train --conditional to choose classes and use guidance")


def class_index(value, names: Sequence[str], flag: str = "--class") -> int:
    """One class as an index 0 .. K-1, from an index (int or digits) or a name; NO_CLASS passes through."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        index = int(value)
    elif isinstance(value, str) and value.strip() in names:
        return list(names).index(value.strip())
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        index = int(value.strip())
    else:
        raise ConfigError(f"{flag} {value!r}: no such class; the run has {len(names)}: {_show(names)}")
    if index == NO_CLASS:
        return index
    if not 0 <= index < len(names):
        raise ConfigError(f"{flag} {value!r}: no such class; use an index 0 .. {len(names) - 1} or a name: "
                          f"{_show(names)}")
    return index


def parse_classes(text: str) -> list[str]:
    """'0,1,2' or 'cat' -> ['0', '1', '2'] or ['cat'] (names may not contain commas)."""
    parts = [p.strip() for p in str(text).split(",")]
    if not all(parts):
        raise ConfigError(f"--class {text!r}: expected a class or a comma list of classes, e.g. --class 0,1,2")
    return parts


def labels_for(n: int, classes, names: Sequence[str], counts: Sequence[int] | None, seed: int | None,
               flag: str = "--class") -> np.ndarray:
    """int64 (n,) labels: `classes` (one, or a sequence cycled over the n samples), or None: drawn in the data's
    proportions `counts` with `seed` (uniform over the classes without counts)."""
    if classes is None:
        p = np.asarray(counts if counts else [1] * len(names), dtype=np.float64)
        rng = np.random.default_rng(seed)
        return rng.choice(len(names), size=n, p=p / p.sum()).astype(np.int64)
    seq = [classes] if isinstance(classes, (str, int, np.integer)) else list(classes)
    if not seq:
        raise ConfigError(f"{flag}: empty list of classes")
    index = np.asarray([class_index(c, names, flag) for c in seq], dtype=np.int64)
    return np.resize(index, n)  # cycled


def sample_labels(pipe, classes: str | None, per_class: int | None, guidance: float | None, *, n: int,
                  seed: int, where) -> tuple[np.ndarray | None, float | None]:
    """`ddpm sample`'s (labels (n,) or None, guidance w) from --class, --per-class and --guidance."""
    from .guidance import check_guidance

    given = [f for f, v in (("--class", classes), ("--per-class", per_class), ("--guidance", guidance)) if v is not None]
    if pipe.classes is None:
        if given:
            raise unconditional_error(given[0], where)
        return None, None
    w = check_guidance(guidance if guidance is not None else 0.0, "--guidance")
    parsed = parse_classes(classes) if classes is not None else None
    if per_class is None:
        return pipe.labels(n, parsed, seed), w
    if per_class < 1:
        raise ConfigError(f"--per-class {per_class}: must be at least 1")
    rows = pipe.labels(len(parsed), parsed) if parsed else np.arange(len(pipe.classes))
    return np.repeat(rows, per_class), w


def guided_pipeline(pipe, classes: str | None, guidance: float | None, *, n: int, per_batch: int, where):
    """The pipeline with --class/--guidance applied: one class, or a list cycled over n <= per_batch samples (one
    batch). Without --class a conditional run keeps its plain net, whose default label is the "no class" token:
    the unconditional model."""
    from .guidance import check_guidance

    if classes is None and guidance is None:
        return pipe
    if pipe.classes is None:
        raise unconditional_error("--class" if classes is not None else "--guidance", where)
    if classes is None:
        raise ConfigError("--guidance needs --class: guidance pushes towards a class (e.g. --class 3)")
    labels = pipe.labels(n, parse_classes(classes))
    if len(set(labels.tolist())) > 1 and n > per_batch:
        raise ConfigError(f"--class with several classes: one batch must hold every sample here; use --n <= "
                          f"{per_batch} or one class")
    w = check_guidance(guidance if guidance is not None else 0.0, "--guidance")
    return pipe.guided(labels if n <= per_batch else labels[:1], w)


def _show(names: Sequence[str]) -> str:
    shown = ", ".join(f"{i}={n}" for i, n in enumerate(names[:12]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > 12 else "")

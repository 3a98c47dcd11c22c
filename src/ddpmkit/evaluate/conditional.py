"""`ddpm eval` of a class-conditional run: which classes are sampled, the acc metric, the conditional bound.

- FID, precision/recall and IS of a conditional model sample the classes in the proportions of its training data
  (seeded), unless --class names them, so that they compare the model with the data set as a whole.
- acc: the share of the samples that a classifier from `ddpm train-classifier` (--features) assigns to the class
  they were sampled for, overall and per class: how well the model (and guidance) hits the class asked for.
- nll of a conditional model is the conditional bound, -log p(x_0 | c) <= L [DDPM Eq. 5] with each real image's own
  label, unguided (guidance changes the sampler, not a likelihood).
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError


def sample_labels(pipe, request) -> np.ndarray | None:
    """The labels (n,) the samples are drawn for: --class (cycled) or the data's proportions; None if unconditional."""
    from ..classes import parse_classes, unconditional_error

    if pipe.classes is None:
        if request.classes is not None or request.guidance is not None:
            raise unconditional_error("--class" if request.classes is not None else "--guidance", request.run_dir)
        return None
    if request.guidance is not None:
        from ..guidance import check_guidance

        check_guidance(request.guidance, "--guidance")
    classes = parse_classes(request.classes) if request.classes is not None else None
    return pipe.labels(request.n, classes, request.seed)


def accuracy(logits: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
    """{"acc": share with argmax logits == label, "acc_per_class": {name: share}} over the classes sampled."""
    hit = logits.argmax(1) == labels
    per = {names[c] if c < len(names) else str(c): float(hit[labels == c].mean()) for c in np.unique(labels)}
    return {"acc": float(hit.mean()), "acc_per_class": per}


def check_acc(ctx) -> None:
    r = ctx.request
    if r.features is None:
        raise UserError("--metrics acc needs --features CLASSIFIER (a .safetensors from ddpm train-classifier on the "
                        "run's data) to tell the class of each sample")
    if ctx.labels() is None:
        raise UserError("--metrics acc needs labelled samples: a conditional run (ddpm train --conditional), or "
                        "--samples with the labels in arr_1 (as ddpm sample --npz writes them)")


def nll_model(pipe, real, n: int):
    """(model, batch) for the bound: the conditional run's net on the real labels, in one batch of n images."""
    if pipe.classes is None:
        return pipe.model, None
    if real.labels is None:
        raise UserError(f"--metrics nll of a conditional run needs the real images' labels; {real.name} has none: "
                        "evaluate on its own labelled data set")
    return pipe.guided(real.labels[:n], 0.0).model, n

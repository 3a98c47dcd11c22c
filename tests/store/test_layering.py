"""Reading a model never loads the trainer: ddpmkit.load, ddpm sample / eval and the figures run without any
ddpmkit.train module, and the reading layers do not name it in their source."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from ddpmkit import UNet
from ddpmkit.config import RunConfig
from ddpmkit.store import write_run

SRC = Path(__file__).resolve().parents[2] / "src" / "ddpmkit"


def tiny_run(path: Path) -> Path:
    """A run directory with one checkpoint of the tiny preset, written through store/ alone (no trainer)."""
    config = RunConfig().with_values({"model.preset": "tiny", "diffusion.timesteps": 8, "sample.steps": 4})
    torch.manual_seed(0)
    net = UNet.from_preset("tiny")
    weights = {"model": net.state_dict(), "ema": net.state_dict()}
    write_run(path, config, {"image_size": 8, "channels": 1, "data": {"name": "digits"}}, weights)
    return path


def test_load_sample_eval_and_figures_never_import_the_trainer(tmp_path):
    run = tiny_run(tmp_path / "run")
    script = textwrap.dedent(f"""
        import sys
        import ddpmkit
        from ddpmkit.cli import main
        pipe = ddpmkit.load({str(run)!r}, device="cpu")
        assert pipe.sample(2, seed=0).shape == (2, 8, 8, 1)
        common = ["--device", "cpu", "--no-progress"]
        assert main(["sample", {str(run)!r}, "--n", "2", *common]) == 0
        assert main(["eval", {str(run)!r}, "--metrics", "nll", "--nll-n", "4", *common]) == 0
        assert main(["trajectory", {str(run)!r}, "--n", "2", "--columns", "3", *common]) == 0
        assert main(["rate-distortion", {str(run)!r}, "--n", "4", *common]) == 0
        assert main(["interpolate", {str(run)!r}, "--data", "digits", "--a", "0", "--b", "1", "--lambdas", "3",
                     "--t", "4", *common]) == 0
        loaded = sorted(m for m in sys.modules if m == "ddpmkit.train" or m.startswith("ddpmkit.train."))
        print("TRAIN_MODULES", loaded)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TRAIN_MODULES []" in out.stdout, out.stdout[-2000:]


def _imports(path: Path) -> list[str]:
    """Every module an `import` or `from ... import` in `path` names, relative ones resolved against ddpmkit."""
    package = ["ddpmkit", *path.parent.relative_to(SRC).parts]
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


def test_reading_layers_do_not_import_the_trainer():
    files = [SRC / "pipeline.py", SRC / "jobs.py", SRC / "noise.py", SRC / "distributed.py",
             *sorted((SRC / "store").glob("*.py")), *sorted((SRC / "evaluate").glob("*.py")),
             *sorted((SRC / "figures").glob("*.py")), *sorted((SRC / "edit").glob("*.py"))]
    offenders = [f"{p.relative_to(SRC)}: {name}" for p in files for name in _imports(p)
                 if name == "ddpmkit.train" or name.startswith("ddpmkit.train.")]
    assert offenders == []


def test_the_old_import_paths_are_shims_for_the_same_objects():
    from ddpmkit import store
    from ddpmkit.store import faults
    from ddpmkit.train import checkpoint, distributed, safeload
    from ddpmkit.train import faults as old_faults

    assert checkpoint.save_checkpoint is store.save_checkpoint and checkpoint.load_checkpoint is store.load_checkpoint
    assert safeload.load_weights_file is store.load_weights_file and distributed.pick_device is store.pick_device
    from ddpmkit import distributed as shared

    assert distributed.setup is shared.setup and distributed.DistInfo is shared.DistInfo
    assert old_faults._hits is faults._hits and old_faults.fault_point is faults.fault_point


def test_store_and_models_never_import_the_pipeline():
    """store/ sits below the pipeline and the network builder below store/ (models/build.py): no import circle."""
    files = [*sorted((SRC / "store").glob("*.py")), *sorted((SRC / "models").glob("*.py"))]
    offenders = [f"{p.relative_to(SRC)}: {name}" for p in files for name in _imports(p)
                 if name == "ddpmkit.pipeline" or name.startswith("ddpmkit.pipeline.")]
    assert offenders == []


def test_build_model_is_one_function_reexported_by_the_pipeline():
    from ddpmkit import pipeline
    from ddpmkit.models.build import build_model

    assert pipeline.build_model is build_model

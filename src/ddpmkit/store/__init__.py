"""Stored models: safetensors-only loading, the checkpoint format and its verification, the run directory, the
device a model is read onto, and the bridge to diffusers' folders (import and export).

Read by the pipeline, evaluate/ and figures/; written by train/ (through `save_checkpoint`) and by the diffusers
importer. Nothing here imports ddpmkit.train, so reading a model never loads the trainer.

    safeload.py      load_weights_file (safetensors only, header checked first), check_weights_fit
    checkpoint.py    save_checkpoint, load_checkpoint, latest_valid_checkpoint, list_checkpoints
    faults.py        the kill points that prove a crash during a save is harmless (tests only)
    rundir.py        open_run (a run directory or checkpoint folder -> StoredRun), write_run (atomic)
    device.py        pick_device
    diffusers_*.py   ddpm import-diffusers / export-diffusers
"""

from .checkpoint import Checkpoint, latest_valid_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .device import pick_device
from .diffusers_io import export_diffusers, import_diffusers
from .rundir import StoredRun, find_checkpoint, open_run, write_run
from .safeload import CheckpointFileError, check_weights_fit, file_sha256, load_weights_file

__all__ = ["Checkpoint", "CheckpointFileError", "StoredRun", "check_weights_fit", "export_diffusers", "file_sha256", "find_checkpoint",
           "import_diffusers", "latest_valid_checkpoint", "list_checkpoints", "load_checkpoint", "load_weights_file", "open_run",
           "pick_device", "save_checkpoint", "write_run"]

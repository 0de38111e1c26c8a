"""Where each artifact of a run folder lives, so no module spells a path twice."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from demo.artifacts import atomic_write_json, read_json
from demo.bundle_layout import BUNDLE_DIR, VOCAB


@dataclass(frozen=True)
class RunFiles:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def captions(self) -> Path:
        return self.root / "captions.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def vocab(self) -> Path:
        return self.root / VOCAB  # the same file is copied into the bundle

    @property
    def prepare_report(self) -> Path:
        return self.root / "prepare_report.json"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    @property
    def model(self) -> Path:
        """The best model by validation loss: what evaluation and export use."""
        return self.root / "model.keras"

    @property
    def last_checkpoint(self) -> Path:
        return self.root / "checkpoints" / "last.keras"

    @property
    def train_state(self) -> Path:
        return self.root / "checkpoints" / "state.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def bundle(self) -> Path:
        """The exported ONNX bundle (`python -m export`): what the runtime and the app load."""
        return self.root / BUNDLE_DIR

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def synthetic_dir(self) -> Path:
        return self.root / "synthetic"


def update_run_config(files: RunFiles, section: str, values: dict) -> None:
    """Record one command's settings in `config.json`, keeping the other commands' sections."""
    config = read_json(files.config, "run config") if files.config.is_file() else {}
    config[section] = values
    atomic_write_json(files.config, config)

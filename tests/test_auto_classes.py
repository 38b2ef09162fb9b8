"""``import rlsyn_trl`` registers the saved recognizer with the transformers Auto classes without importing
transformers: ``AutoModel.from_pretrained`` then loads it in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from rlsyn_trl.recognizer import RecognizerModel
from rlsyn_trl.recognizer.model_configs import RecognizerModelConfig

ROOT = Path(__file__).resolve().parents[1]


def test_auto_model_loads_a_saved_recognizer_after_a_light_import(tmp_path):
    backbone = {"model_type": "resnet", "num_channels": 1, "embedding_size": 8, "hidden_sizes": [8, 16],
                "depths": [1, 1], "layer_type": "basic", "num_labels": 3}  # fmt: skip
    config = RecognizerModelConfig(backbone=backbone, embedding_width=16, image_size=[16, 16], num_labels=3)
    torch.manual_seed(0)
    model = RecognizerModel(config).eval()
    model.save_pretrained(tmp_path)
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.save({"images": images, "logits": model(images).logits}, tmp_path / "expected.pt")
    code = (
        "import sys, torch, rlsyn_trl\n"
        "assert 'transformers' not in sys.modules\n"
        "from transformers import AutoConfig, AutoModel\n"
        f"folder = {str(tmp_path)!r}\n"
        "assert AutoConfig.from_pretrained(folder).model_type == 'rlsyn_identity_recognizer'\n"
        "model = AutoModel.from_pretrained(folder).eval()\n"
        "expected = torch.load(folder + '/expected.pt')\n"
        "with torch.no_grad():\n"
        "    torch.testing.assert_close(model(expected['images']).logits, expected['logits'])\n"
        "print(type(model).__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("RecognizerModel")
